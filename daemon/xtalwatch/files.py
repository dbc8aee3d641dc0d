"""Atomic file writes: a reader sees the old file or the whole new one, never half of either.

Every writer of a file that someone else may read while it is written (crops, caches,
checkpoints, the registry's JSON, model bundles, results) goes through here. The data is written
to a private temporary name in the same folder and renamed over the target; if anything fails
on the way, the temporary file is removed and the error propagates. ``durable=True`` also
fsyncs the file and the folder, so the rename survives a power cut (checkpoints, the registry);
the hot path (per-image crops) leaves that to the OS.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["atomic_path", "atomic_write", "atomic_dir", "write_json_atomic", "fsync_dir", "fsync_file"]


def fsync_dir(folder: Path) -> None:
    """Make the renames inside ``folder`` durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    """Make a file's written data durable."""
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


@contextmanager
def atomic_path(path: Path, *, suffix: str = "", durable: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; write it inside the block, and it replaces ``path``.

    ``suffix``: what the temporary name must end with, for writers that append one themselves
    (``np.save`` adds ``.npy`` to a name without it).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=f".tmp{suffix}")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        if durable:
            fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        fsync_dir(path.parent)


def atomic_write(path: Path, data: bytes | str, *, durable: bool = False) -> None:
    """Write ``data`` (text as UTF-8) to ``path`` atomically."""
    payload = data.encode("utf-8") if isinstance(data, str) else data
    with atomic_path(path, durable=durable) as tmp:
        tmp.write_bytes(payload)


def write_json_atomic(path: Path, obj: Any, *, indent: int | None = 1, durable: bool = False) -> None:
    """``obj`` as JSON at ``path``, atomically."""
    atomic_write(path, json.dumps(obj, indent=indent), durable=durable)


@contextmanager
def atomic_dir(folder: Path) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``folder``; fill it, and it is renamed to ``folder``.

    ``folder`` must not exist (a folder is written once). Every file in it is fsynced first;
    on failure the temporary folder is removed.
    """
    folder = Path(folder)
    if folder.exists():
        raise FileExistsError(f"{folder} exists; it is written once")
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.", suffix=".tmp"))
    try:
        yield tmp
        for child in tmp.iterdir():
            if child.is_file():
                fsync_file(child)
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_dir(folder.parent)
