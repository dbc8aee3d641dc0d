"""Hits found in a backlog go out as one summary per plate; a hit on an image that just arrived, at once."""

from __future__ import annotations

import time
from pathlib import Path

from classify_helpers import ALL_CRYSTAL, make_state, serve, usable_crops
from conftest import jpeg_bytes, wait_for
from prometheus_client import CollectorRegistry
from xtalwatch.alerts import events as ev
from xtalwatch.alerts.dispatch import AlertDispatcher
from xtalwatch.config import AlertsConfig, ClassifyConfig
from xtalwatch.observe.metrics import Metrics
from xtalwatch.plate import ImageIdentity
from xtalwatch.plugins import PluginRegistry
from xtalwatch.preprocess.probe import probe_bytes
from xtalwatch.stages.classify import ClassifyStage, Prediction
from xtalwatch.stages.outcomes import HitTracker
from xtalwatch.stages.well_outcome import OutcomeRule
from xtalwatch.store.catalogue import Catalogue
from xtalwatch.store.predictions import StoredCall, insert_predictions

REGISTRY = PluginRegistry.discover()
LIST = {"type": "alert_helpers:ListSink", "name": "list"}
# A lab's own class names: the hits must come from the configuration, not from built-in names.
LAB = ClassifyConfig(classes=["empty", "salt", "hit_big", "hit_small"], subclasses=[],
                     outcome_order=["empty", "salt", "hit_small", "hit_big"], crystal_classes=["hit_big", "hit_small"])


def _dispatcher() -> tuple[AlertDispatcher, Metrics]:
    metrics = Metrics(CollectorRegistry(), process_collectors=False)
    return AlertDispatcher(AlertsConfig.model_validate({"sinks": [LIST]}), REGISTRY, metrics), metrics


def _events(catalogue: Catalogue, kind: str) -> list[ev.Event]:
    return ev.recent_events(catalogue, limit=1000, kind=kind)


class Calls:
    """Images recorded through the real catalogue, with calls stored as the classify stage stores them."""

    def __init__(self, catalogue: Catalogue):
        self.catalogue, self.n = catalogue, 0

    def __call__(self, plate: str, well: str, label: str, *, backlog: bool) -> Prediction:
        self.n += 1
        data = jpeg_bytes(seed=self.n)
        identity = ImageIdentity(plate=plate, well=well, drop=1, inspection=1, adapter="t")  # type: ignore[arg-type]
        image_id = self.catalogue.record_image(f"/i/{plate}/{well}.jpg", len(data), self.n, f"sha{self.n}",
                                               probe_bytes(data, "jpg", 10**8), identity).image_id
        prediction = Prediction(image_id, "m1", label, 0.9, {label: 0.9}, False, backlog=backlog)
        insert_predictions(self.catalogue, [StoredCall(image_id, "m1", label, 0.9, {label: 0.9})], time.time())
        return prediction


def test_backlog_hits_wait_for_one_summary_per_plate(tmp_path: Path) -> None:
    catalogue = Catalogue(tmp_path)
    alerts, metrics = _dispatcher()
    hits = HitTracker(catalogue, metrics, alerts, OutcomeRule.from_config(LAB), 0.6,
                      link_base="http://127.0.0.1:8080")
    call = Calls(catalogue)
    try:
        backlog = [call("B1234", w, lab, backlog=True) for w, lab in
                   [("B3", "hit_small"), ("A10", "hit_big"), ("A1", "hit_big"), ("C2", "salt")]]
        backlog += [call("OTHER", "H12", "hit_small", backlog=True)]
        found = hits.on_predictions(backlog)
        assert sorted(e.payload["well"] for e in found) == ["A1", "A10", "B3", "H12"]
        assert all(e.payload["backlog"] is True for e in found) and hits.pending() == 4
        assert len(_events(catalogue, ev.CRYSTAL_HIT)) == 4  # stored at once, alerted only in the summary

        live = hits.on_predictions([call("LIVE", "D4", "hit_small", backlog=False)])
        assert [e.payload["backlog"] for e in live] == [False]

        summaries = hits.flush()
        assert hits.pending() == 0 and hits.flush() == []
        by_plate = {e.payload["plate"]: e for e in summaries}
        assert set(by_plate) == {"B1234", "OTHER"}
        b1234 = by_plate["B1234"]
        assert b1234.kind == ev.PLATE_HITS and b1234.plate_id is not None
        assert b1234.payload["wells"] == ["A1", "A10", "B3"] and b1234.payload["count"] == 3
        assert b1234.payload["classes"] == {"hit_big": 2, "hit_small": 1}
        assert _events(catalogue, ev.PLATE_HITS) != []
        assert metrics.registry.get_sample_value("xtalwatch_hits_total") == 5
    finally:
        assert alerts.close(timeout=10)
        catalogue.close()
    sent = alerts.sinks["list"].sent  # type: ignore[attr-defined]
    # Per sink, alerts go out in the order published: the live hit, then the two summaries; no backlog hit alone.
    assert [a.kind for a in sent] == [ev.CRYSTAL_HIT, ev.PLATE_HITS, ev.PLATE_HITS]
    assert sent[0].fields["well"] == "D4"
    texts = {a.fields["plate"]: a.text for a in sent[1:]}
    assert texts["B1234"] == "plate B1234: 3 wells with crystals (A1, A10, B3) — http://127.0.0.1:8080/plates/B1234"
    assert texts["OTHER"] == "plate OTHER: 1 well with crystals (H12) — http://127.0.0.1:8080/plates/OTHER"


def test_a_summary_without_the_web_app_has_no_link(tmp_path: Path) -> None:
    catalogue = Catalogue(tmp_path)
    alerts, metrics = _dispatcher()
    hits = HitTracker(catalogue, metrics, alerts, OutcomeRule.from_config(LAB), 0.6)
    try:
        call = Calls(catalogue)
        hits.on_predictions([call("P 1/x", f"A{i}", "hit_big", backlog=True) for i in range(1, 11)])
        [summary] = hits.flush()
        text = ev.alert_for(summary).text
        assert text == "plate P 1/x: 10 wells with crystals (A1, A2, A3, A4, A5, A6, A7, A8, …)"
        hits.link_base = "http://lab:9100/"
        hits.on_predictions([call("P 1/x", "B1", "hit_big", backlog=True)])
        [linked] = hits.flush()
        assert linked.payload["link"] == "http://lab:9100/plates/P%201%2Fx"
    finally:
        alerts.close(timeout=10)
        catalogue.close()


def test_the_service_chain_summarises_a_first_models_backlog_and_alerts_a_live_hit(tmp_path: Path) -> None:
    """The classify stage marks backfilled images as backlog and calls on_idle when its queue runs dry."""
    make_state(tmp_path, 9, flagged=0, failed=0)
    serve(tmp_path, "v1")
    catalogue = Catalogue(tmp_path)
    alerts, metrics = _dispatcher()
    hits = HitTracker(catalogue, metrics, alerts, OutcomeRule.from_config(ALL_CRYSTAL), 0.0,
                      link_base="http://127.0.0.1:8080")
    stage = ClassifyStage(tmp_path, catalogue, metrics, uncertain_below=0.0)
    stage.on_predictions.append(hits.on_predictions)
    stage.on_idle.append(hits.flush)
    stage.start()  # the first model: nine images waiting
    try:
        wait_for(lambda: stage.idle() and _events(catalogue, ev.PLATE_HITS), 60)
        [summary] = _events(catalogue, ev.PLATE_HITS)
        assert summary.payload["count"] == 9 and summary.payload["link"] == "http://127.0.0.1:8080/plates/plate1"
        backlog_hits = _events(catalogue, ev.CRYSTAL_HIT)
        assert len(backlog_hits) == 9 and all(e.payload["backlog"] for e in backlog_hits)

        [new] = make_state(tmp_path, 1, flagged=0, failed=0, start=50)["usable"]  # arrives while serving
        stage.submit(new, usable_crops(tmp_path)[new], time.time())
        wait_for(lambda: stage.idle() and len(_events(catalogue, ev.CRYSTAL_HIT)) == 10, 60)
        live = _events(catalogue, ev.CRYSTAL_HIT)[0]
        assert live.image_id == new and live.payload["backlog"] is False
        assert len(_events(catalogue, ev.PLATE_HITS)) == 1
    finally:
        stage.stop()
        assert alerts.close(timeout=10)
        catalogue.close()
    sent = alerts.sinks["list"].sent  # type: ignore[attr-defined]
    assert [a.kind for a in sent] == [ev.PLATE_HITS, ev.CRYSTAL_HIT]
