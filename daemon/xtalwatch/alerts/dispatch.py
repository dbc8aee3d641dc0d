"""Alert delivery: the dispatcher that never blocks ingest, and ``raise_event`` (alert, then store).

``AlertDispatcher.publish`` only checks the dedupe window and each sink's token bucket and puts
the alert on that sink's bounded queue; one worker thread per sink does the sending, retrying a
failure with exponential back-off. A slow or dead sink therefore delays nothing but its own
queue: not the caller (the service loop), and not the other sinks. What an alert says is each
event kind's business (``events.py``); what a sink is, ``alert.py``.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from xtalwatch.alerts import events as ev
from xtalwatch.alerts.alert import Alert, AlertSink
from xtalwatch.config import AlertsConfig, LogSinkConfig
from xtalwatch.observe.metrics import Metrics
from xtalwatch.plugins import PluginError, PluginRegistry
from xtalwatch.store.catalogue import Catalogue
from xtalwatch.store.maintenance import is_disk_full

__all__ = ["AlertDispatcher", "TokenBucket", "raise_event"]

log = logging.getLogger(__name__)


# -- rate limit -------------------------------------------------------------------------------
class TokenBucket:
    """``burst`` tokens, refilled at ``rate_per_second``; ``take()`` is True when one was there."""

    def __init__(self, rate_per_second: float, burst: int, clock: Callable[[], float] = time.monotonic):
        if rate_per_second <= 0 or burst < 1:
            raise ValueError(f"rate_per_second must be > 0 and burst >= 1, got {rate_per_second}, {burst}")
        self.rate, self.burst, self._clock = rate_per_second, burst, clock
        self._tokens, self._at = float(burst), clock()

    def take(self) -> bool:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False


# -- the dispatcher ---------------------------------------------------------------------------
_CLOSE = object()


def build_sinks(config: AlertsConfig, registry: PluginRegistry) -> list[tuple[str, AlertSink]]:
    """Instantiate the configured sinks (one ``log`` sink when none are), each with its label."""
    built: list[tuple[str, AlertSink]] = []
    for section in config.sinks or [LogSinkConfig()]:
        label = section.name or section.type
        cls = registry.get("sink", section.type)  # raises PluginError naming the sink
        try:
            sink = cls(section)
        except Exception as exc:
            raise PluginError(f"alert sink {label!r} ({section.type}): {type(exc).__name__}: {exc}") from exc
        if not isinstance(sink, AlertSink) or getattr(sink, "kind", None) != "sink":
            raise PluginError(f"alert sink {label!r} ({section.type}): not a sink (needs name, kind='sink', send())")
        built.append((label, sink))
    return built


class _Worker:
    """One sink's queue, bucket and thread."""

    def __init__(self, label: str, sink: AlertSink, config: AlertsConfig):
        self.label, self.sink = label, sink
        self.queue: queue.Queue[Any] = queue.Queue(maxsize=config.queue_size)
        self.bucket = TokenBucket(config.rate_per_minute / 60.0, config.burst)
        self.suppressed = 0  # alerts dropped by the rate limit since the last one that went through
        self.thread: threading.Thread | None = None


class AlertDispatcher:
    """Deduplicates, rate-limits and delivers alerts to every sink on its own thread.

    ``publish`` returns at once; ``close(timeout)`` lets the queues drain, then gives up.
    """

    def __init__(self, config: AlertsConfig, registry: PluginRegistry, metrics: Metrics):
        self.config, self.metrics = config, metrics
        self._workers = [_Worker(label, sink, config) for label, sink in build_sinks(config, registry)]
        self._seen: dict[str, float] = {}  # dedupe key -> monotonic time it was last published
        self._lock = threading.Lock()
        self._abort = threading.Event()  # set when close() runs out of time: stop retrying
        self._closed = False
        for w in self._workers:
            metrics.alerts_sent.labels(sink=w.label)  # the series exist (at 0) before the first alert
            metrics.alerts_failed.labels(sink=w.label)
            w.thread = threading.Thread(target=self._run, args=(w,), name=f"alert-sink-{w.label}", daemon=True)
            w.thread.start()

    @property
    def sinks(self) -> dict[str, AlertSink]:
        """The sink objects by label, in config order."""
        return {w.label: w.sink for w in self._workers}

    def publish(self, alert: Alert) -> bool:
        """Queue ``alert`` for every sink; False when it was a duplicate (or alerts are off or closed)."""
        if not self.config.enabled or self._closed:
            return False
        now = time.monotonic()
        with self._lock:
            if alert.dedupe_key:
                last = self._seen.get(alert.dedupe_key)
                if last is not None and now - last < self.config.dedupe_window_seconds:
                    log.debug("alert %s: duplicate of one sent %.0f s ago, not sent", alert.dedupe_key, now - last)
                    return False
                self._seen[alert.dedupe_key] = now
                if len(self._seen) > 10_000:  # forget expired keys so a long run does not grow without bound
                    self._seen = {k: t for k, t in self._seen.items() if now - t < self.config.dedupe_window_seconds}
            for w in self._workers:
                if not w.bucket.take():
                    w.suppressed += 1
                    # One warning per burst; the rest at debug level (the next alert sent carries the count).
                    level = logging.WARNING if w.suppressed == 1 else logging.DEBUG
                    log.log(level, "alert sink %s: rate limit, dropped %s alert %r (more are counted, not logged)",
                            w.label, alert.kind, alert.title)
                    continue
                item, w.suppressed = self._with_suppressed(alert, w.suppressed), 0
                try:
                    w.queue.put_nowait(item)
                except queue.Full:
                    self.metrics.alerts_failed.labels(sink=w.label).inc()
                    log.error("alert sink %s: queue full (%d), dropped %s alert %r", w.label, w.queue.maxsize,
                              alert.kind, alert.title)
        return True

    @staticmethod
    def _with_suppressed(alert: Alert, suppressed: int) -> Alert:
        if not suppressed:
            return alert
        fields = {**alert.fields, "suppressed_before": suppressed}
        return Alert(alert.kind, alert.severity, alert.title, f"{alert.text} (+{suppressed} alerts rate-limited)",
                     fields, alert.dedupe_key, alert.created_at)

    def _run(self, w: _Worker) -> None:
        while True:
            item = w.queue.get()
            if item is _CLOSE or self._abort.is_set():  # closed, or close() ran out of time
                return
            self._deliver(w, item)

    def _deliver(self, w: _Worker, alert: Alert) -> None:
        delay = self.config.retry_initial_seconds
        for attempt in range(1, self.config.retry_attempts + 1):
            try:
                w.sink.send(alert)
            except Exception as exc:  # a sink may fail any way; it must never take the worker down
                last_try = attempt == self.config.retry_attempts or self._abort.is_set()
                log.warning("alert sink %s: %s alert %r failed (attempt %d/%d): %s: %s%s", w.label, alert.kind,
                            alert.title, attempt, self.config.retry_attempts, type(exc).__name__, exc,
                            "" if last_try else f"; retrying in {delay:.1f} s")
                if last_try or self._abort.wait(delay):
                    break
                delay = min(delay * 2, self.config.retry_max_seconds)
            else:
                self.metrics.alerts_sent.labels(sink=w.label).inc()
                return
        self.metrics.alerts_failed.labels(sink=w.label).inc()
        log.error("alert sink %s: gave up on %s alert %r", w.label, alert.kind, alert.title)

    def close(self, timeout: float = 10.0, abandon: threading.Event | None = None) -> bool:
        """Stop taking alerts, let the queues drain for up to ``timeout`` s, or until ``abandon`` is set
        (a second signal); True when all drained."""
        self._closed = True
        deadline = time.monotonic() + timeout

        def left() -> float:
            return 0.0 if abandon is not None and abandon.is_set() else max(0.0, deadline - time.monotonic())

        for w in self._workers:
            try:
                w.queue.put(_CLOSE, timeout=left())
            except queue.Full:
                pass
        for w in self._workers:
            assert w.thread is not None
            while w.thread.is_alive() and left():
                w.thread.join(min(left(), 0.1))
        self._abort.set()  # whatever is still retrying stops at its next wait
        stuck = [w.label for w in self._workers if w.thread is not None and w.thread.is_alive()]
        if stuck:
            log.warning("alert sinks %s did not drain within %.1f s; their queued alerts are dropped",
                        ", ".join(stuck), timeout)
        return not stuck


def raise_event(event: ev.Event, catalogue: Catalogue, alerts: AlertDispatcher | None) -> bool:
    """Hand an event's alert to the sinks (which never block the caller), then store the event.

    The alert goes first so that a full state disk, the very thing a ``disk_low`` event may be
    about, cannot silence it. Returns False when the event could not be stored because the disk
    is full (the caller may store it later); any other store error is raised.
    """
    if alerts is not None:
        alerts.publish(ev.alert_for(event))
    try:
        ev.record_event(catalogue, event)
    except Exception as exc:
        if not is_disk_full(exc):
            raise
        log.debug("event %s not stored yet: the state disk is full", event.kind)
        return False
    return True
