"""A catalogue for the review app's tests, filled the way the service fills it: real frames on disk,
``record_image``, real preprocessing (``preprocess_file`` + ``record_preprocess``), stored predictions."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import cv2
import httpx
from preprocess_helpers import make_frame
from xtalwatch.config import Settings, load_settings
from xtalwatch.observe.metrics import Metrics
from xtalwatch.observe.web import WebServer, build_app
from xtalwatch.plate import ImageIdentity
from xtalwatch.preprocess.pipeline import preprocess_file
from xtalwatch.preprocess.probe import probe_bytes
from xtalwatch.review.app import ReviewContext
from xtalwatch.stages.preprocess import status_for
from xtalwatch.store.catalogue import Catalogue
from xtalwatch.store.predictions import StoredCall, insert_predictions

CLASSES = ["clear", "precipitate", "crystals", "other"]


def review_settings(tmp_path: Path, **overrides: Any) -> Settings:
    base = {"state.dir": tmp_path / "state", "watch.dir": tmp_path / "imager", "web.thumbnail_px": 48,
            "web.frame_px": 80, "logging.level": "INFO"}
    base.update(overrides)
    Path(base["watch.dir"]).mkdir(parents=True, exist_ok=True)
    return load_settings(None, base)


class Filler:
    """Adds images to a catalogue through the service's own store and preprocessing functions."""

    def __init__(self, settings: Settings, catalogue: Catalogue):
        self.settings = settings
        self.catalogue = catalogue
        self.imager = Path(settings.watch.dir)
        self.crops = Path(settings.state.dir) / "crops"
        self.seed = 0

    def image(self, plate: str, well: str, inspection: int, *, drop: int = 1, label: str | None = None,
              confidence: float = 0.9, version: str = "v1", uncertain: bool = False) -> int:
        """One frame of ``plate``/``well``, preprocessed, and classified as ``label`` (None: not classified)."""
        self.seed += 1
        frame, _ = make_frame(size=(96, 128), seed=self.seed)
        ok, buf = cv2.imencode(".jpg", frame)
        assert ok
        data = buf.tobytes()
        path = self.imager / plate / f"{well}_i{inspection}_d{drop}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        sha = hashlib.sha256(data).hexdigest()
        new = self.catalogue.record_image(str(path), len(data), path.stat().st_mtime_ns, sha,
                                          probe_bytes(data, "jpg", 10**8),
                                          ImageIdentity(plate, well, drop, inspection, adapter="folders"))
        result = preprocess_file(path, self.settings.preprocess, self.crops, max_pixels=10**8, sha256=sha)
        self.catalogue.record_preprocess(new.image_id, result.method, result.flags, result.crop_path, result.error,
                                         json.dumps(result.to_dict()), status_for(result))
        if label is not None:
            rest = (1.0 - confidence) / (len(CLASSES) - 1)
            probs = {c: (confidence if c == label else rest) for c in CLASSES}
            insert_predictions(self.catalogue, [StoredCall(new.image_id, version, label, confidence, probs, uncertain)],
                               time.time())
        return new.image_id


@contextmanager
def client_for(settings: Settings, catalogue: Catalogue, *, bound_host: str = "127.0.0.1",
               **ctx: Any) -> Iterator[httpx.Client]:
    """An HTTP client on the service's real app (``/metrics`` and all, the review pages mounted), served
    by uvicorn on a free loopback port. ``bound_host`` is the address the app believes it is bound to,
    which decides its write rule."""
    metrics = ctx.pop("metrics", None) or Metrics(process_collectors=False)
    review = ReviewContext(settings=settings, state_dir=Path(settings.state.dir), catalogue=catalogue,
                           metrics=metrics, bound_host=bound_host, **ctx)
    web = WebServer(build_app(metrics, review=review), "127.0.0.1", 0)
    web.start()
    try:
        with httpx.Client(base_url=web.url, timeout=30) as client:
            yield client
    finally:
        web.stop()


def csrf_of(page: str) -> str:
    """The CSRF token a page carries in ``<meta name="csrf-token">``."""
    marker = '<meta name="csrf-token" content="'
    start = page.index(marker) + len(marker)
    return page[start:page.index('"', start)]
