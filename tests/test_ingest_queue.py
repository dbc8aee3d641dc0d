"""The ingest queue: a file in hand is not queued twice, and stop() keeps to its deadline."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from conftest import wait_for
from xtalwatch.observe.metrics import Metrics
from xtalwatch.stages.ingest import IngestQueue


class SlowIngestor:
    """Stands in for the Ingestor: records each path, and holds it until ``release`` is set."""

    def __init__(self) -> None:
        self.taken: list[str] = []
        self.release = threading.Event()

    def ingest(self, path: Path, completed_at: float | None = None) -> None:
        self.taken.append(str(path))
        self.release.wait(10)


def test_a_path_in_hand_is_not_queued_twice_and_all_are_finished() -> None:
    ingestor = SlowIngestor()
    metrics = Metrics(process_collectors=False)
    queue = IngestQueue(ingestor, size=10, metrics=metrics, workers=1)  # type: ignore[arg-type]
    queue.start()
    queue.submit("/imager/a.jpg")
    wait_for(lambda: ingestor.taken == ["/imager/a.jpg"])
    queue.submit("/imager/a.jpg")  # the observer and a rescan both hand it over
    queue.submit("/imager/b.jpg")
    assert not queue.idle() and len(queue) == 1
    assert metrics.registry.get_sample_value("xtalwatch_queue_depth", {"stage": "ingest"}) == 1
    ingestor.release.set()
    wait_for(queue.idle)
    assert queue.stop(time.monotonic() + 5) == 0
    assert ingestor.taken == ["/imager/a.jpg", "/imager/b.jpg"]


def test_stop_gives_up_at_the_deadline_and_says_how_many_are_busy() -> None:
    ingestor = SlowIngestor()
    queue = IngestQueue(ingestor, size=1, metrics=Metrics(process_collectors=False), workers=2)  # type: ignore[arg-type]
    queue.start()
    for name in ("a", "b", "c"):
        queue.submit(f"/imager/{name}.jpg")  # two in hand, one waiting: the queue is full
    wait_for(lambda: len(ingestor.taken) == 2)
    start = time.monotonic()
    assert queue.stop(start + 0.5) == 2
    assert time.monotonic() - start < 2
    ingestor.release.set()  # what was left is taken by the next start-up scan; here the workers just end
