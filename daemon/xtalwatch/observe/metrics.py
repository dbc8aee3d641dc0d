"""Every Prometheus metric the service exports, in one place.

Names follow Prometheus conventions: the ``xtalwatch_`` prefix, base units, ``_total`` on
counters, ``_seconds`` on durations, ``_bytes`` on sizes, ``_info`` for metadata. They pass
``promtool check metrics`` (a test scrapes the real web app and pipes the text to promtool).

No plate, well or file name is ever a label: those would make a series per image. Every
label name the service may use is listed in ``LABEL_NAMES``, and a test holds the scrape to
it. The registry is injectable so that each test (and each service in one process) gets its
own; the process and platform collectors are added to it so that a custom registry still
shows memory, CPU and the Python version.

Every series served on ``/metrics`` carries ``imager="<settings.site.imager>"``, added here in
one place (``Metrics.exposition``) rather than on each metric, so that the stages and the tests
keep reading ``registry`` with the labels they set. On a site where several hosts each watch one
imager and share one catalogue, it is what tells their series apart in alerts and on the
dashboard; one value per process, so it adds no series. Like a target label (``job``,
``instance``), it identifies the process, so it goes on ``process_*`` and ``python_*`` too: a
dashboard can then show memory and CPU per imager without joining on ``instance``.
"""

from __future__ import annotations

import copy
import os
import platform
import shutil
from collections.abc import Iterator
from importlib import metadata

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    Metric,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.registry import Collector

__all__ = ["Metrics", "LATENCY_BUCKETS_SECONDS", "TRAINING_BUCKETS_SECONDS", "LABEL_NAMES", "IMAGER_LABEL",
           "QUEUE_STAGES"]

# The ``*_created`` series (one extra gauge per counter and histogram) mean nothing on a
# dashboard and double the series count; the switch is process-wide in prometheus-client.
disable_created_metrics()

# From 5 ms to 2 min: preprocessing is tens of ms, file-complete → result should be under 1 s,
# a backed-up queue shows in the top buckets.
LATENCY_BUCKETS_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
# From 1 min to 8 h: a CPU fine-tune takes minutes, a from-scratch GPU run hours.
TRAINING_BUCKETS_SECONDS = (60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0)
# Pipeline stages reported by ``xtalwatch_queue_depth``; pre-set to 0 so that alerts see them.
QUEUE_STAGES = ("settle", "ingest", "preprocess", "classify")

# The label ``Metrics.exposition`` adds to every series; its value is ``settings.site.imager``.
IMAGER_LABEL = "imager"
# Every label name that may appear on an xtalwatch_* series; all have a small, fixed set of
# values. The middle group belongs to the info metrics (model and build versions), one series
# each; ``imager`` has one value per process.
LABEL_NAMES = frozenset({
    "reason", "stage", "flag", "class", "outcome", "sink",
    "version", "encoder", "created", "python", "torch",
    IMAGER_LABEL,
})


def _package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "none"


class _Labelled(Collector):
    """Another collector's families, re-emitted with one more label on every sample."""

    def __init__(self, inner: CollectorRegistry, name: str, value: str):
        self._inner, self._name, self._value = inner, name, value

    def collect(self) -> Iterator[Metric]:
        for family in self._inner.collect():
            labelled = copy.copy(family)
            labelled.samples = [s._replace(labels={**s.labels, self._name: self._value}) for s in family.samples]
            yield labelled


class Metrics:
    """The service's metrics, registered on ``registry`` (a fresh one when omitted).

    Attributes are prometheus-client objects used directly by the stages, e.g.
    ``metrics.images_rejected.labels(reason="truncated").inc()`` or
    ``metrics.predictions.labels("crystal").inc()`` (``class`` is a Python keyword).

    ``registry`` holds the series as the stages set them; ``exposition`` is what ``/metrics``
    serves: the same series, each with ``imager=<imager>`` (``settings.site.imager``).
    """

    def __init__(self, registry: CollectorRegistry | None = None, *, imager: str = "imager",
                 process_collectors: bool = True):
        if not imager:
            raise ValueError("imager must be a non-empty name (settings.site.imager)")
        self.registry = registry if registry is not None else CollectorRegistry()
        # Without names of its own the wrapper still answers /metrics?name[]=... (the registry
        # then asks it every time and filters the samples).
        self.exposition = CollectorRegistry(support_collectors_without_names=True)
        self.exposition.register(_Labelled(self.registry, IMAGER_LABEL, imager))
        r = self.registry
        # -- watch and ingest -------------------------------------------------------------
        self.images_seen = Counter("xtalwatch_images_seen_total",
                                   "Complete, readable files hashed by ingest "
                                   "(rejected files count in xtalwatch_images_rejected_total).", registry=r)
        self.images_ingested = Counter("xtalwatch_images_ingested_total",
                                       "Images newly catalogued (new content; duplicates not counted).", registry=r)
        self.images_duplicate = Counter("xtalwatch_images_duplicate_total",
                                        "Files whose content was already catalogued (copies, touches, rescans).", registry=r)
        self.images_rejected = Counter("xtalwatch_images_rejected_total",
                                       "Files refused by ingest or preprocessing, by reason.", ["reason"], registry=r)
        self.last_image_timestamp = Gauge("xtalwatch_last_image_timestamp_seconds",
                                          "Unix time at which the newest image was catalogued (0: none yet).",
                                          registry=r)
        self.observer_restarts = Counter("xtalwatch_observer_restarts_total",
                                         "Times the folder observer died and was restarted.", registry=r)
        self.work_taken_over = Counter("xtalwatch_work_taken_over_total",
                                       "Unfinished images this agent took over from a site agent whose lease ran out.",
                                       registry=r)
        self.rescans = Counter("xtalwatch_rescans_total", "Full reconciliation scans of the watch folder.", registry=r)
        self.queue_depth = Gauge("xtalwatch_queue_depth", "Items waiting in each pipeline stage.", ["stage"], registry=r)
        self.preprocess_pool_restarts = Counter("xtalwatch_preprocess_pool_restarts_total",
                                                "Times a preprocessing worker process died and the pool was rebuilt.",
                                                registry=r)
        # -- preprocess and classify ------------------------------------------------------
        self.preprocess_seconds = Histogram("xtalwatch_preprocess_duration_seconds",
                                            "Time to decode, locate, crop and normalise one image.",
                                            buckets=LATENCY_BUCKETS_SECONDS, registry=r)
        self.classify_seconds = Histogram("xtalwatch_classify_duration_seconds",
                                          "Time to classify one batch of images.",
                                          buckets=LATENCY_BUCKETS_SECONDS, registry=r)
        self.result_latency_seconds = Histogram("xtalwatch_result_latency_seconds",
                                                "From a file being complete to its result being stored.",
                                                buckets=LATENCY_BUCKETS_SECONDS, registry=r)
        self.images_flagged = Counter("xtalwatch_images_flagged_total",
                                      "Images with a quality flag (kept out of training and hit alerts).", ["flag"],
                                      registry=r)
        self.predictions = Counter("xtalwatch_predictions_total", "Stored predictions, by predicted class.", ["class"],
                                   registry=r)
        self.hits = Counter("xtalwatch_hits_total", "Wells whose outcome turned into a crystal class.", registry=r)
        # -- training and models ----------------------------------------------------------
        self.training_runs = Counter("xtalwatch_training_runs_total",
                                     "Training runs, by outcome (promoted, rejected, failed).", ["outcome"], registry=r)
        self.training_last_success = Gauge("xtalwatch_training_last_success_timestamp_seconds",
                                           "Unix time of the last training run that finished without error (0: none).",
                                           registry=r)
        self.training_duration_seconds = Histogram("xtalwatch_training_duration_seconds", "Wall time of training runs.",
                                                   buckets=TRAINING_BUCKETS_SECONDS, registry=r)
        self.training_last_loss = Gauge("xtalwatch_training_last_loss",
                                        "Final NT-Xent loss of the last training run (dimensionless; NaN: none yet).", registry=r)
        self.model_info = Info("xtalwatch_model", "The serving model's version.", registry=r)
        self.model_loaded = Gauge("xtalwatch_model_loaded", "1 when a model is serving, 0 before the first one.",
                                  registry=r)
        # -- alerts and host ----------------------------------------------------------------
        self.alerts_sent = Counter("xtalwatch_alerts_sent_total", "Alerts delivered, by sink.", ["sink"], registry=r)
        self.alerts_failed = Counter("xtalwatch_alerts_failed_total", "Alert deliveries that failed, by sink.", ["sink"],
                                     registry=r)
        self.state_disk_free_bytes = Gauge("xtalwatch_state_disk_free_bytes",
                                           "Free bytes on the file system of the state folder.", registry=r)
        self.state_disk_size_bytes = Gauge("xtalwatch_state_disk_size_bytes",
                                           "Total bytes of the file system of the state folder.", registry=r)
        self.ingest_paused = Gauge("xtalwatch_ingest_paused", "1 while ingest waits for space on a full state disk.",
                                   registry=r)
        self.build_info = Info("xtalwatch_build", "Versions of the xtalwatch service and what it runs on.", registry=r)

        for stage in QUEUE_STAGES:
            self.queue_depth.labels(stage=stage).set(0)
        self.model_loaded.set(0)
        self.training_last_loss.set(float("nan"))  # no training yet; 0 would read as a perfect loss
        from xtalwatch import __version__

        self.build_info.info({"version": __version__, "python": platform.python_version(),
                              "torch": _package_version("torch")})
        if process_collectors:
            # process_* (CPU, memory, open files) and python_info; a custom registry has neither.
            ProcessCollector(registry=r)
            PlatformCollector(registry=r)

    def observe_disk(self, path: str | os.PathLike[str]) -> None:
        """Set the state-disk gauges from ``shutil.disk_usage(path)``; a vanished path leaves them as they were."""
        try:
            usage = shutil.disk_usage(path)
        except OSError:
            return
        self.state_disk_free_bytes.set(usage.free)
        self.state_disk_size_bytes.set(usage.total)
