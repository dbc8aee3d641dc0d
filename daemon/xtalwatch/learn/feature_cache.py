"""Encoder features of every classified image, kept per encoder, so that a new head costs no embedding.

Classifying an image embeds its crop with the serving encoder; the features are kept here under
that encoder's id (``ModelBundle.encoder_version``). A head re-fitted from a few new labels
shares the encoder, so the re-fit, the review queue's ordering and re-classification by the new
head all read features from here instead of decoding and embedding crops again.

Only the newest encoder's features are kept (a new encoder makes the old ones useless). They are
stored as float16 (512 values, 1 KiB per image: 100 MB at 100,000 images) in memory, and in
``<state>/features/<encoder>/`` on :meth:`FeatureCache.save` (atomically, ``ids.npy`` and
``features.npy``), so a restart does not embed everything again. Safe to use from several
threads.
"""

from __future__ import annotations

import logging
import shutil
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from xtalwatch.files import atomic_dir

__all__ = ["FeatureCache", "FEATURES_DIR"]

log = logging.getLogger(__name__)

FEATURES_DIR = "features"
_GROW = 1024  # rows added at a time when the arrays fill up


class FeatureCache:
    """image id → (D,) features of one encoder; ``state_dir`` None keeps them in memory only."""

    def __init__(self, state_dir: Path | None = None):
        self.root = Path(state_dir) / FEATURES_DIR if state_dir is not None else None
        self._lock = threading.Lock()
        self._encoder: str | None = None
        self._index: dict[int, int] = {}  # image id → row
        self._ids = np.zeros(0, np.int64)
        self._features = np.zeros((0, 0), np.float16)
        self._dirty = False

    # -- which encoder ----------------------------------------------------------------------
    @property
    def encoder(self) -> str | None:
        """The encoder whose features are held now (None before the first)."""
        return self._encoder

    def _switch(self, encoder: str) -> None:
        """Drop another encoder's features and load this one's from disk, if saved (lock held)."""
        if encoder == self._encoder:
            return
        self._encoder, self._index, self._dirty = encoder, {}, False
        self._ids, self._features = np.zeros(0, np.int64), np.zeros((0, 0), np.float16)
        folder = self.root / encoder if self.root is not None else None
        if folder is None or not (folder / "ids.npy").is_file():
            return
        try:
            ids = np.load(folder / "ids.npy")
            features = np.load(folder / "features.npy")
        except (OSError, ValueError) as exc:
            log.warning("feature cache %s unreadable (%s); features are computed again", folder, exc)
            return
        if len(ids) != len(features):
            log.warning("feature cache %s has %d ids but %d rows; features are computed again", folder,
                        len(ids), len(features))
            return
        self._ids, self._features = ids.astype(np.int64), features.astype(np.float16)
        self._index = {int(i): row for row, i in enumerate(self._ids)}

    # -- reading and writing ----------------------------------------------------------------
    def put(self, encoder: str, image_ids: Sequence[int], features: np.ndarray) -> None:
        """Keep (N, D) ``features`` of ``image_ids`` from ``encoder`` (replacing what another encoder left)."""
        features = np.asarray(features)
        if features.ndim != 2 or len(features) != len(image_ids):
            raise ValueError(f"need (N, D) features for N ids, got {features.shape} for {len(image_ids)} ids")
        with self._lock:
            self._switch(encoder)
            if self._features.shape[1] not in (0, features.shape[1]):
                raise ValueError(f"features of {encoder} have {self._features.shape[1]} dimensions, "
                                 f"not {features.shape[1]}")
            for image_id, row in zip(image_ids, features, strict=True):
                at = self._index.get(int(image_id))
                if at is None:
                    at = len(self._index)
                    self._reserve(at + 1, features.shape[1])
                    self._index[int(image_id)] = at
                    self._ids[at] = int(image_id)
                self._features[at] = row
            self._dirty = True

    def _reserve(self, rows: int, dims: int) -> None:
        if rows <= len(self._ids):
            return
        size = max(rows, len(self._ids) + _GROW, 2 * len(self._ids))
        ids = np.zeros(size, np.int64)
        features = np.zeros((size, dims), np.float16)
        used = len(self._index)  # rows written so far
        if used:
            ids[:used], features[:used] = self._ids[:used], self._features[:used]
        self._ids, self._features = ids, features

    def get(self, encoder: str, image_ids: Sequence[int]) -> tuple[list[int], np.ndarray]:
        """(the ids of ``image_ids`` held, their (M, D) float32 features in that order)."""
        with self._lock:
            self._switch(encoder)
            rows = [(int(i), self._index[int(i)]) for i in image_ids if int(i) in self._index]
            dims = self._features.shape[1]
            if not rows:
                return [], np.zeros((0, dims), np.float32)
            return [i for i, _ in rows], self._features[[r for _, r in rows]].astype(np.float32)

    def snapshot(self, encoder: str) -> tuple[np.ndarray, np.ndarray]:
        """Every held (ids (N,) int64, features (N, D) float32) of ``encoder``, ids ascending."""
        with self._lock:
            self._switch(encoder)
            used = len(self._index)
            ids, features = self._ids[:used].copy(), self._features[:used].astype(np.float32)
        order = np.argsort(ids, kind="stable")
        return ids[order], features[order]

    def count(self, encoder: str) -> int:
        with self._lock:
            self._switch(encoder)
            return len(self._index)

    # -- disk -------------------------------------------------------------------------------
    def save(self) -> bool:
        """Write the held features to disk if they changed (and delete other encoders' folders); True if written."""
        if self.root is None:
            return False
        with self._lock:
            if not self._dirty or self._encoder is None:
                return False
            encoder, used = self._encoder, len(self._index)
            ids, features = self._ids[:used].copy(), self._features[:used].copy()
            self._dirty = False
        self.root.mkdir(parents=True, exist_ok=True)
        target = self.root / encoder
        shutil.rmtree(target, ignore_errors=True)  # atomic_dir wants a new name; the old copy is only a cache
        with atomic_dir(target) as tmp:
            np.save(tmp / "ids.npy", ids)
            np.save(tmp / "features.npy", features)
        for other in self.root.iterdir():
            if other.is_dir() and other.name != encoder and not other.name.startswith("."):
                shutil.rmtree(other, ignore_errors=True)
        return True
