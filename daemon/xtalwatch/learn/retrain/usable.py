"""What a run trains on: the catalogue's usable images with their latest labels, and a fingerprint of them.

Usable means preprocessed, not flagged, not failed, with its model-size crop on disk. The
fingerprint is how a scheduled run knows that nothing changed since the serving model was trained.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass

from xtalwatch.config import Settings
from xtalwatch.store.catalogue import Catalogue, count_usable_images, usable_images
from xtalwatch.store.labels import latest_labels

__all__ = ["UsableImages", "count_usable", "gather_usable", "data_fingerprint", "open_catalogue"]

log = logging.getLogger("xtalwatch.learn.retrain")

@dataclass
class UsableImages:
    """The catalogue's usable images: ids, content hashes, crop paths and the latest label of each."""

    ids: list[int]
    sha256: list[str]
    crop_paths: list[str]
    labels: dict[int, str]  # image id → label as stored (fine names kept)

    def __len__(self) -> int:
        return len(self.ids)


def count_usable(settings: Settings) -> int:
    """How many usable images the catalogue holds (0 when there is no catalogue yet); never writes."""
    try:
        conn = Catalogue.readonly_for(settings)
    except FileNotFoundError:
        return 0
    try:
        return count_usable_images(conn)
    finally:
        conn.close()


def open_catalogue(settings: Settings) -> Catalogue:
    """The catalogue a run reads and registers into; FileNotFoundError when there is none (none is created)."""
    Catalogue.readonly_for(settings).close()
    return Catalogue.for_settings(settings)


def gather_usable(catalogue: Catalogue) -> UsableImages:
    """Every usable image (not flagged or failed, crop on disk) and the latest label of each."""
    rows = usable_images(catalogue)
    kept = [r for r in rows if os.path.isfile(r[2])]
    if len(kept) < len(rows):
        log.warning("retrain: %d usable images have no crop file on disk; left out", len(rows) - len(kept))
    ids = [r[0] for r in kept]
    present = set(ids)
    labels = {image_id: label for image_id, label in latest_labels(catalogue).items() if image_id in present}
    return UsableImages(ids, [r[1] for r in kept], [r[2] for r in kept], labels)


def data_fingerprint(usable: UsableImages, image_size: int) -> str:
    """A hash of which images and labels a model is trained on: equal fingerprints, nothing new."""
    h = hashlib.sha256(f"retrain-v1 size={image_size}\n".encode())
    for image_id, sha in sorted(zip(usable.ids, usable.sha256, strict=True), key=lambda t: t[1]):
        h.update(f"{sha}\t{usable.labels.get(image_id, '')}\n".encode())
    return h.hexdigest()[:20]
