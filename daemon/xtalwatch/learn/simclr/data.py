"""Training images as one uint8 array of model-size drop crops, decoded once and cached.

A folder is decoded once into ``<cache_dir>/crops-<fingerprint>.npy`` (N, S, S, 3) RGB uint8,
then memory-mapped: an epoch is array indexing, not a JPEG decode per image. The fingerprint
covers every file's relative path, size and mtime plus the crop size, so a changed folder gets a
new cache and a checkpoint can tell whether it was trained on the same data.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import cv2
import numpy as np

from xtalwatch.config import IMAGE_EXTENSIONS, PreprocessConfig
from xtalwatch.files import atomic_path, write_json_atomic

__all__ = ["CropDataset", "list_images", "prepare_crop", "load_folder", "from_arrays", "array_fingerprint",
           "take_rows"]

log = logging.getLogger(__name__)


@dataclass
class CropDataset:
    """(N, S, S, 3) RGB uint8 crops (possibly a read-only memmap) and what identifies them."""

    images: np.ndarray
    fingerprint: str
    paths: list[str] = field(default_factory=list)  # relative paths, one per row, when from a folder
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason) of unreadable files

    def __post_init__(self) -> None:
        a = self.images
        if a.dtype != np.uint8 or a.ndim != 4 or a.shape[3] != 3 or a.shape[1] != a.shape[2]:
            raise ValueError(f"images must be uint8 (N, S, S, 3), got {a.dtype} {a.shape}")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def image_size(self) -> int:
        return int(self.images.shape[1])


def list_images(root: Path) -> list[Path]:
    """Every image file under ``root`` (recursively, hidden files skipped), in a stable order."""
    exts = {"." + e for e in IMAGE_EXTENSIONS}
    found = [p for p in Path(root).rglob("*")
             if p.suffix.lower() in exts and p.is_file() and not any(s.startswith(".") for s in p.relative_to(root).parts)]
    return sorted(found)


def prepare_crop(image_bgr: np.ndarray, image_size: int, preprocess: PreprocessConfig | None = None) -> np.ndarray:
    """A decoded BGR (or grey) frame → the model-size RGB uint8 crop (S, S, 3) that training sees.

    With ``preprocess`` (the default for folders of whole frames), the service's own drop finder
    (``xtalwatch.preprocess.preprocess_array``) locates, crops and normalises the drop, so training
    sees what classification will see. Without it, a centre square crop resized with area
    averaging: for images that are already drop crops (``--preprocess none``).
    """
    if preprocess is not None:
        from xtalwatch.preprocess import preprocess_array

        cfg = preprocess.model_copy(update={"image_size": image_size, "channels": 3})
        return np.ascontiguousarray(cv2.cvtColor(preprocess_array(image_bgr, cfg).crop, cv2.COLOR_BGR2RGB))
    if image_bgr.ndim == 2:
        image_bgr = cv2.cvtColor(image_bgr, cv2.COLOR_GRAY2BGR)
    h, w = image_bgr.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    square = image_bgr[top:top + side, left:left + side]
    interp = cv2.INTER_AREA if side > image_size else cv2.INTER_LINEAR
    small = cv2.resize(square, (image_size, image_size), interpolation=interp)
    return np.ascontiguousarray(cv2.cvtColor(small, cv2.COLOR_BGR2RGB))


def _decode(path: Path, image_size: int, preprocess: PreprocessConfig | None) -> np.ndarray | str:
    data = np.fromfile(str(path), dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        return "not a decodable image"
    try:
        return prepare_crop(image, image_size, preprocess)
    except ValueError as exc:  # a frame the drop finder cannot use is skipped, not fatal
        return f"preprocessing failed: {exc}"


def _decode_into(rows: np.ndarray, paths: list[Path], image_size: int, preprocess: PreprocessConfig | None,
                 i: int) -> str | None:
    """Decode ``paths[i]`` into ``rows[i]``; the reason it was skipped, or None."""
    r = _decode(paths[i], image_size, preprocess)
    if isinstance(r, str):
        return r
    rows[i] = r
    return None


def _folder_fingerprint(root: Path, paths: list[Path], image_size: int, preprocess: PreprocessConfig | None) -> str:
    how = preprocess.model_dump_json() if preprocess is not None else "centre"
    h = hashlib.sha256(f"crops-v1 size={image_size} preprocess={how}\n".encode())
    for p in paths:
        st = p.stat()
        h.update(f"{p.relative_to(root).as_posix()}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:20]


def array_fingerprint(images: np.ndarray) -> str:
    """A content hash of an image array, shape included."""
    h = hashlib.sha256(f"array-v1 {images.dtype} {images.shape}\n".encode())
    h.update(np.ascontiguousarray(images).data)
    return h.hexdigest()[:20]


def load_folder(root: Path, image_size: int, cache_dir: Path, workers: int = 0,
                preprocess: PreprocessConfig | None = None) -> CropDataset:
    """The crops of every image under ``root``, from the cache or decoded once into it.

    ``preprocess``: crop each frame to its drop with the service's preprocessing (None: centre
    square, for images that are already crops); see :func:`prepare_crop`.

    Unreadable files are skipped and listed in ``skipped``, never fatal. Concurrent callers
    (one per torchrun rank) are safe: each writes a private temporary file and renames it.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"no such folder: {root}")
    paths = list_images(root)
    fp = _folder_fingerprint(root, paths, image_size, preprocess)
    cache_dir = Path(cache_dir)
    npy, index = cache_dir / f"crops-{fp}.npy", cache_dir / f"crops-{fp}.json"
    if npy.is_file() and index.is_file():
        meta = json.loads(index.read_text(encoding="utf-8"))
        log.info("train: crop cache hit %s (%d images)", npy, len(meta["paths"]))
        return CropDataset(np.load(npy, mmap_mode="r"), fp, meta["paths"], [tuple(s) for s in meta["skipped"]])
    cache_dir.mkdir(parents=True, exist_ok=True)
    n_workers = workers or os.cpu_count() or 1
    log.info("train: decoding %d images from %s into %s (%d threads)", len(paths), root, npy, n_workers)
    shape = (image_size, image_size, 3)
    with atomic_path(npy, suffix=".npy") as tmp:
        # Each crop goes straight into the memory-mapped file as it is decoded: memory holds a few
        # crops, never the folder. OpenCV releases the GIL while decoding and resizing, so threads
        # are enough; each writes its own row.
        rows = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(paths), *shape))
        with ThreadPoolExecutor(max_workers=n_workers) as pool:
            reasons = list(pool.map(partial(_decode_into, rows, paths, image_size, preprocess), range(len(paths))))
        rows.flush()
        keep = np.flatnonzero([r is None for r in reasons])
        if len(keep) < len(paths):  # unreadable files leave gaps: copy the good rows, a block at a time
            gappy = tmp.with_name(tmp.name + ".gaps")
            os.replace(tmp, gappy)
            del rows
            src = np.load(gappy, mmap_mode="r")
            rows = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(keep), *shape))
            for a in range(0, len(keep), 512):
                rows[a:a + 512] = src[keep[a:a + 512]]
            rows.flush()
            del src
            gappy.unlink()
        del rows
    skipped = [(p.relative_to(root).as_posix(), r) for p, r in zip(paths, reasons, strict=True) if r is not None]
    for rel, reason in skipped:
        log.warning("train: skipped %s: %s", rel, reason)
    rel_paths = [p.relative_to(root).as_posix() for p, r in zip(paths, reasons, strict=True) if r is None]
    write_json_atomic(index, {"root": str(root), "image_size": image_size, "paths": rel_paths, "skipped": skipped})
    return CropDataset(np.load(npy, mmap_mode="r"), fp, rel_paths, skipped)


def take_rows(dataset: CropDataset, index: np.ndarray, cache_dir: Path, block: int = 64) -> CropDataset:
    """The rows ``index`` of ``dataset`` (in that order) as their own memory-mapped cache.

    A subset (a train/test split, a labelled fraction) without a copy in memory: ``images[index]``
    would put every selected crop in RAM at once, and a float copy four times that. The rows are
    written ``block`` at a time into ``<cache_dir>/rows-<fingerprint>.npy``, named by the parent's
    fingerprint and the index, so a rerun finds them. An index of every row returns ``dataset``.
    """
    idx = np.asarray(index, np.int64)
    if idx.ndim != 1 or (len(idx) and (idx.min() < 0 or idx.max() >= len(dataset))):
        raise ValueError(f"index must be 1-d positions into {len(dataset)} rows")
    if np.array_equal(idx, np.arange(len(dataset))):
        return dataset
    h = hashlib.sha256(f"rows-v1 {dataset.fingerprint}\n".encode())
    h.update(idx.tobytes())
    fp = h.hexdigest()[:20]
    npy = Path(cache_dir) / f"rows-{fp}.npy"
    size = dataset.image_size
    if not npy.is_file():
        npy.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(npy, suffix=".npy") as tmp:
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(idx), size, size, 3))
            for a in range(0, len(idx), block):
                out[a:a + block] = dataset.images[idx[a:a + block]]
            out.flush()
            del out
    paths = [dataset.paths[i] for i in idx] if dataset.paths else []
    return CropDataset(np.load(npy, mmap_mode="r"), fp, paths)


def from_arrays(images: np.ndarray, image_size: int | None = None) -> CropDataset:
    """A dataset from uint8 (N, H, W, 3) RGB arrays, e.g. crops from the catalogue.

    Arrays that are not already square at ``image_size`` go through :func:`prepare_crop`
    (which expects BGR, so they are flipped to BGR first).
    """
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] not in (1, 3):
        raise ValueError(f"images must be uint8 (N, H, W, 1|3), got {images.dtype} {images.shape}")
    if images.shape[3] == 1:
        images = np.repeat(images, 3, axis=3)
    n, h, w, _ = images.shape
    if image_size is not None and (h != image_size or w != image_size):
        images = np.stack([prepare_crop(im[:, :, ::-1], image_size) for im in images]) if n else \
            np.zeros((0, image_size, image_size, 3), np.uint8)
    return CropDataset(np.ascontiguousarray(images), array_fingerprint(images))
