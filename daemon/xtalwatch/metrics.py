"""Every Prometheus metric the service exports, in one place.

Names follow Prometheus conventions: the ``xtalwatch_`` prefix, base units, ``_total`` on
counters, ``_seconds`` on durations, ``_info`` for metadata. No plate, well or file name is
ever a label: those would make a series per image. The registry is injectable so that each
test (and each service in one process) gets its own.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

__all__ = ["Metrics", "LATENCY_BUCKETS_SECONDS"]

# From 5 ms to 2 min: preprocessing is tens of ms, file-complete → result should be under 1 s,
# a backed-up queue shows in the top buckets.
LATENCY_BUCKETS_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class Metrics:
    """The service's metrics, registered on ``registry`` (a fresh one when omitted)."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        # -- watch and ingest -------------------------------------------------------------
        self.images_seen = Counter("xtalwatch_images_seen_total",
                                   "Candidate image files that became complete and were handed to ingest.", registry=r)
        self.images_ingested = Counter("xtalwatch_images_ingested_total",
                                       "Images newly catalogued (new content; duplicates not counted).", registry=r)
        self.images_duplicate = Counter("xtalwatch_images_duplicate_total",
                                        "Files whose content was already catalogued (copies, touches, rescans).", registry=r)
        self.images_rejected = Counter("xtalwatch_images_rejected_total",
                                       "Files refused by ingest or preprocessing, by reason.", ["reason"], registry=r)
        self.last_image_timestamp = Gauge("xtalwatch_last_image_timestamp_seconds",
                                          "Unix time at which the newest image was catalogued.", registry=r)
        self.observer_restarts = Counter("xtalwatch_observer_restarts_total",
                                         "Times the folder observer died and was restarted.", registry=r)
        self.rescans = Counter("xtalwatch_rescans_total", "Full reconciliation scans of the watch folder.", registry=r)
        self.queue_depth = Gauge("xtalwatch_queue_depth", "Items waiting in each pipeline stage.", ["stage"], registry=r)
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
                                           "Unix time of the last training run that finished without error.", registry=r)
        self.training_duration_seconds = Histogram("xtalwatch_training_duration_seconds", "Wall time of training runs.",
                                                   buckets=(60, 300, 900, 1800, 3600, 7200, 14400, 28800), registry=r)
        self.training_last_loss = Gauge("xtalwatch_training_last_loss", "Final NT-Xent loss of the last training run.",
                                        registry=r)
        self.model_info = Info("xtalwatch_model", "The serving model's version.", registry=r)
        self.model_loaded = Gauge("xtalwatch_model_loaded", "1 when a model is serving, 0 before the first one.",
                                  registry=r)
        # -- alerts and host ----------------------------------------------------------------
        self.alerts_sent = Counter("xtalwatch_alerts_sent_total", "Alerts delivered, by sink.", ["sink"], registry=r)
        self.alerts_failed = Counter("xtalwatch_alerts_failed_total", "Alert deliveries that failed, by sink.", ["sink"],
                                     registry=r)
        self.state_disk_free_bytes = Gauge("xtalwatch_state_disk_free_bytes",
                                           "Free bytes on the file system of the state folder.", registry=r)
        self.build_info = Info("xtalwatch_build", "Version of the xtalwatch service.", registry=r)

        for stage in ("settle", "ingest", "preprocess", "classify"):
            self.queue_depth.labels(stage=stage).set(0)
        self.model_loaded.set(0)
