"""The processes of a service under test, read from /proc (Linux): its children, and whether one is still running."""

from __future__ import annotations

from pathlib import Path

__all__ = ["alive", "children", "descendants", "preprocess_workers"]


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of ``pid``, or None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()
    return fields[0], int(fields[1])


def alive(pid: int) -> bool:
    stat = _stat(pid)
    return stat is not None and stat[0] not in ("Z", "X")  # a zombie has finished: only its exit status is left


def children(pid: int) -> list[int]:
    kids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _stat(int(entry.name))
            if stat is not None and stat[1] == pid and stat[0] not in ("Z", "X"):
                kids.append(int(entry.name))
    return kids


def descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        kids = children(todo.pop())
        found += kids
        todo += kids
    return found


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def preprocess_workers(service_pid: int) -> list[int]:
    """The preprocessing workers: the fork server's children."""
    servers = [p for p in children(service_pid) if b"multiprocessing.forkserver" in _cmdline(p)]
    return [w for s in servers for w in children(s)]
