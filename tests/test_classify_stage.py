"""The classify stage's worker: idle() is true only when nothing is queued and no batch is in hand."""

from __future__ import annotations

import queue
import threading
from pathlib import Path
from typing import Any

from conftest import wait_for
from prometheus_client import CollectorRegistry
from xtalwatch.observe.metrics import Metrics
from xtalwatch.stages.classify import ClassifyStage
from xtalwatch.store.catalogue import Catalogue


def test_idle_is_false_while_a_batch_is_in_hand(tmp_path: Path) -> None:
    """The worker has taken the item off the queue but not yet started on it: not idle."""
    taken, release = threading.Event(), threading.Event()

    class HeldQueue(queue.Queue):  # holds the worker just after it took an item, where the race was
        def get(self, *args: Any, **kwargs: Any) -> Any:
            item = super().get(*args, **kwargs)
            if item is not None:
                taken.set()
                release.wait(30)
            return item

    catalogue = Catalogue(tmp_path)
    stage = ClassifyStage(tmp_path, catalogue, Metrics(CollectorRegistry(), process_collectors=False))
    stage._queue = HeldQueue()
    stage.start()
    try:
        assert stage.idle()
        stage.submit(1, str(tmp_path / "crop.png"), None)
        assert taken.wait(30)
        assert stage._queue.empty()
        assert not stage.idle(), "idle() while the worker holds a batch"
        release.set()
        wait_for(stage.idle, 30)
    finally:
        release.set()
        stage.stop()
        catalogue.close()
