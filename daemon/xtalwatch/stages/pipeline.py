"""Build the chain of stages from the settings: one builder for the service and for ``xtalwatch ingest``.

catalogue → adapters → ingest → preprocess → classify → hits (and the drift monitor, and the
feature cache the classify stage fills): each stage is handed the next one when it is built, so
data flows down the chain and never back up through the service. ``through`` says how far the
chain goes: the service builds all of it; ``xtalwatch ingest`` builds it up to preprocessing (or
only the catalogue), so a one-shot ingest catalogues exactly as the service does. Building starts
no work: the caller starts the stages (``classify.start()``, ``preprocess.resume()``) and stops
them in order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from xtalwatch.alerts.checks import DriftMonitor
from xtalwatch.alerts.dispatch import AlertDispatcher
from xtalwatch.config import Settings
from xtalwatch.learn.feature_cache import FeatureCache
from xtalwatch.observe.metrics import Metrics
from xtalwatch.plugins import PluginRegistry
from xtalwatch.stages.adapters import AdapterChain
from xtalwatch.stages.classify import ClassifyStage
from xtalwatch.stages.ingest import Ingestor
from xtalwatch.stages.outcomes import HitTracker
from xtalwatch.stages.preprocess import PreprocessPool
from xtalwatch.stages.well_outcome import OutcomeRule
from xtalwatch.store.catalogue import Catalogue

__all__ = ["Pipeline", "Through", "build_pipeline"]

# The last stage built: "catalogue" (ingest only), "preprocess", or "classify" (the whole chain).
Through = Literal["catalogue", "preprocess", "classify"]


@dataclass
class Pipeline:
    """The built stages; those past ``through`` are None."""

    settings: Settings
    metrics: Metrics
    catalogue: Catalogue
    plugins: PluginRegistry
    chain: AdapterChain
    ingestor: Ingestor
    features: FeatureCache
    preprocess: PreprocessPool | None = None
    classify: ClassifyStage | None = None
    alerts: AlertDispatcher | None = None
    hits: HitTracker | None = None
    drift: DriftMonitor | None = None

    def ingestor_for(self, root: Path) -> Ingestor:
        """An ingestor of this chain whose adapters see paths relative to ``root`` instead of ``watch.dir``."""
        return Ingestor(self.settings, self.catalogue, self.chain, self.metrics, root=root,
                        downstream=self.preprocess)


def build_pipeline(settings: Settings, metrics: Metrics, *, through: Through = "classify",
                   on_disk_full: Callable[[str, BaseException], None] | None = None) -> Pipeline:
    """Open the catalogue, load the plugins and build the stages up to ``through``, each wired to the next.

    ``on_disk_full(where, exc)`` is told by the preprocess and classify stages when a result cannot
    be stored for lack of space (the service pauses ingest and resumes when there is room).

    Raises ``PluginError`` for an adapter or alert sink that cannot be loaded (the catalogue is
    closed again first).
    """
    if through not in ("catalogue", "preprocess", "classify"):
        raise ValueError(f"through must be 'catalogue', 'preprocess' or 'classify', got {through!r}")
    catalogue = Catalogue.for_settings(settings)
    features = FeatureCache(settings.state.dir)
    try:
        plugins = PluginRegistry.discover(settings.plugins.dirs)
        chain = AdapterChain.from_config(settings.adapters, plugins)
        alerts = classify = hits = drift = None
        if through == "classify":
            alerts = AlertDispatcher(settings.alerts, plugins, metrics)
            classify = ClassifyStage(settings.state.dir, catalogue, metrics,
                                     uncertain_below=settings.classify.uncertain_below,
                                     reclassify=settings.retrain.reclassify, recent_days=settings.retrain.recent_days,
                                     on_disk_full=on_disk_full, features=features,
                                     lease_seconds=settings.site.lease_seconds)
            hits = HitTracker(catalogue, metrics, alerts, OutcomeRule.from_config(settings.classify),
                              settings.alerts.hit_min_confidence)
            classify.on_predictions.append(hits.on_predictions)
            classify.on_idle.append(hits.flush)
            drift = DriftMonitor(catalogue, alerts, settings.alerts)
            classify.on_features.append(drift.on_features)
        preprocess = PreprocessPool(settings, catalogue, metrics, downstream=classify, on_disk_full=on_disk_full) \
            if through != "catalogue" else None
    except BaseException:
        catalogue.close()
        raise
    ingestor = Ingestor(settings, catalogue, chain, metrics, downstream=preprocess)
    return Pipeline(settings, metrics, catalogue, plugins, chain, ingestor, features, preprocess, classify, alerts, hits,
                    drift)
