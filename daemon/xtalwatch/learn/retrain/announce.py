"""Every run records its own outcome: the event into the catalogue, its alert to the sinks.

The scheduler's child, ``xtalwatch train --now`` and the systemd timer all end here, so an
outcome reaches the lab the same way whoever started the run; the service derives its training
metrics from these events (``learn/training_metrics.py``). The sinks get their own short-lived
dispatcher, drained for at most :data:`ALERT_DRAIN_SECONDS` before the run returns.
"""

from __future__ import annotations

import logging

from xtalwatch.alerts.dispatch import AlertDispatcher, raise_event
from xtalwatch.config import Settings
from xtalwatch.learn.retrain.outcome import RetrainOutcome, outcome_event
from xtalwatch.observe.metrics import Metrics
from xtalwatch.plugins import PluginRegistry
from xtalwatch.store.catalogue import Catalogue

__all__ = ["ALERT_DRAIN_SECONDS", "record_outcome"]

log = logging.getLogger("xtalwatch.learn.retrain")

ALERT_DRAIN_SECONDS = 20.0  # a dead webhook may delay the end of a run by this much, no more


def record_outcome(settings: Settings, outcome: RetrainOutcome) -> bool:
    """Store ``outcome``'s event and send its alert; False when there was nothing to record or it failed.

    Never raises: the run is over and its outcome is in ``result.json`` whatever happens here.
    """
    event = outcome_event(outcome)
    if event is None:
        return False
    try:
        catalogue = Catalogue.for_settings(settings)
    except Exception:
        log.exception("retrain: cannot open the catalogue to record the %s event", event.kind)
        return False
    alerts = None
    try:
        try:
            # Metrics of this short-lived dispatcher only; the service's own registry is not ours to touch.
            alerts = AlertDispatcher(settings.alerts, PluginRegistry.discover(settings.plugins.dirs),
                                     Metrics(imager=settings.site.imager, process_collectors=False))
        except Exception:  # a broken sink plugin must not lose the event
            log.exception("retrain: cannot start the alert sinks; the %s event is stored without an alert", event.kind)
        raise_event(event, catalogue, alerts)
        return True
    except Exception:
        log.exception("retrain: cannot record the %s event", event.kind)
        return False
    finally:
        if alerts is not None:
            alerts.close(ALERT_DRAIN_SECONDS)
        catalogue.close()
