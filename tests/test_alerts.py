"""The alert dispatcher: never blocks the caller, dedupes, rate-limits, retries with back-off, counts."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from alert_helpers import ListSink, make_alert, refused_url, webhook_server
from conftest import wait_for
from xtalwatch.alerts import events as ev
from xtalwatch.alerts.dispatch import AlertDispatcher, TokenBucket
from xtalwatch.config import AlertsConfig
from xtalwatch.observe.metrics import Metrics
from xtalwatch.plugins import PluginError, PluginRegistry

REGISTRY = PluginRegistry.discover()
LIST = {"type": "alert_helpers:ListSink", "name": "list"}


def dispatcher(sinks: list[dict[str, Any]], **cfg: Any) -> tuple[AlertDispatcher, Metrics]:
    config = AlertsConfig.model_validate({"sinks": sinks, "retry_initial_seconds": 0.05, **cfg})
    metrics = Metrics(process_collectors=False)
    return AlertDispatcher(config, REGISTRY, metrics), metrics


def count(metrics: Metrics, name: str, sink: str) -> float:
    return metrics.registry.get_sample_value(f"xtalwatch_alerts_{name}_total", {"sink": sink}) or 0.0


# -- delivery -----------------------------------------------------------------------------------
def test_webhook_delivers_through_the_dispatcher() -> None:
    with webhook_server() as server:
        d, metrics = dispatcher([{"type": "webhook", "url": server.url, "timeout_seconds": 5}])
        alert = ev.alert_for(ev.crystal_hit("PL7", "C4", 1, "prisms", 0.88, "PL7/C4_1.jpg"))
        assert d.publish(alert)
        assert d.close(timeout=10)
    [got] = server.received
    assert got.body["text"].endswith("prisms in plate PL7 well C4 drop 1 (confidence 88%)")
    assert got.body["fields"]["image_path"] == "PL7/C4_1.jpg" and got.body["fields"]["class"] == "prisms"
    assert count(metrics, "sent", "webhook") == 1 and count(metrics, "failed", "webhook") == 0


def test_default_is_one_log_sink(caplog: pytest.LogCaptureFixture) -> None:
    d, metrics = dispatcher([])
    assert list(d.sinks) == ["log"]
    with caplog.at_level("INFO", logger="xtalwatch.alert"):
        d.publish(make_alert())
        assert d.close(timeout=10)
    assert any("kind=crystal_hit" in r.getMessage() for r in caplog.records)
    assert count(metrics, "sent", "log") == 1


# -- failures: retried with back-off, counted, never blocking ------------------------------------
def test_http_500_is_retried_with_backoff_then_counted_failed() -> None:
    with webhook_server(status=500) as server:
        d, metrics = dispatcher([{"type": "webhook", "url": server.url}], retry_attempts=3,
                                retry_initial_seconds=0.1)
        d.publish(make_alert())
        wait_for(lambda: count(metrics, "failed", "webhook") == 1, timeout=20)
        d.close(timeout=5)
    times = [r.at for r in server.received]
    assert len(times) == 3
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert gaps[0] >= 0.1 and gaps[1] >= 0.2  # the wait doubles (lower bounds only: never flaky)
    assert count(metrics, "sent", "webhook") == 0


def test_connection_refused_is_retried_and_counted() -> None:
    d, metrics = dispatcher([{"type": "webhook", "url": refused_url(), "timeout_seconds": 2}], retry_attempts=2)
    d.publish(make_alert("a"))
    d.publish(make_alert("b"))
    wait_for(lambda: count(metrics, "failed", "webhook") == 2, timeout=20)
    assert d.close(timeout=5)


def test_a_sink_that_recovers_is_counted_sent() -> None:
    d, metrics = dispatcher([{**LIST, "options": {"fail_first": 2}}], retry_attempts=3)
    d.publish(make_alert())
    assert d.close(timeout=10)
    sink = d.sinks["list"]
    assert isinstance(sink, ListSink) and sink.attempts == 3 and len(sink.sent) == 1
    assert count(metrics, "sent", "list") == 1 and count(metrics, "failed", "list") == 0


def test_publish_returns_while_the_webhook_is_still_waiting_and_other_sinks_go_on(tmp_path: Path) -> None:
    out = tmp_path / "command.out"
    with webhook_server(hold=True) as server:
        d, metrics = dispatcher([{"type": "webhook", "url": server.url, "timeout_seconds": 20},
                                 {"type": "command", "argv": ["sh", "-c", f"cat >> {out}"]}])
        for i in range(5):  # the caller (the service loop) is never held up by the stuck webhook
            assert d.publish(make_alert(f"k{i}"))
        assert not server.answered.is_set()  # publish came back before the server answered anything
        wait_for(server.arrived.is_set)
        # The command sink delivers all five while the webhook's first request is still unanswered.
        wait_for(lambda: count(metrics, "sent", "command") == 5)
        assert not server.answered.is_set() and count(metrics, "sent", "webhook") == 0
        assert out.read_text().count('"kind": "crystal_hit"') == 5
        server.hold.set()
        assert d.close(timeout=20)
    assert count(metrics, "sent", "webhook") == 5 and len(server.received) == 5


def test_close_gives_up_on_a_sink_stuck_in_backoff() -> None:
    d, metrics = dispatcher([LIST | {"options": {"fail_first": 100}}], retry_attempts=10,
                            retry_initial_seconds=60)
    d.publish(make_alert())
    wait_for(lambda: d.sinks["list"].attempts == 1)  # type: ignore[attr-defined]
    started = time.monotonic()
    assert d.close(timeout=0.3) is False or count(metrics, "failed", "list") == 1
    assert time.monotonic() - started < 10  # not the 60 s back-off
    wait_for(lambda: count(metrics, "failed", "list") == 1)
    assert not d.publish(make_alert("after close"))


def test_full_queue_drops_and_counts_instead_of_blocking() -> None:
    d, metrics = dispatcher([LIST | {"options": {"delay_seconds": 0.5}}], queue_size=1, burst=100)
    for i in range(4):
        d.publish(make_alert(f"k{i}"))
    # one in the worker, one waiting, the rest dropped at once
    assert count(metrics, "failed", "list") >= 2
    d.close(timeout=10)


# -- dedupe and rate limit ------------------------------------------------------------------------
def test_same_dedupe_key_is_sent_once_within_the_window() -> None:
    d, metrics = dispatcher([LIST], dedupe_window_seconds=0.5)
    assert d.publish(make_alert("hit:PL1:B3"))
    assert not d.publish(make_alert("hit:PL1:B3"))
    assert d.publish(make_alert("hit:PL1:B4"))
    assert d.publish(make_alert(""))  # no key: never deduplicated
    assert d.publish(make_alert(""))
    time.sleep(0.6)
    assert d.publish(make_alert("hit:PL1:B3"))  # the window has passed
    assert d.close(timeout=10)
    keys = [a.dedupe_key for a in d.sinks["list"].sent]  # type: ignore[attr-defined]
    assert keys == ["hit:PL1:B3", "hit:PL1:B4", "", "", "hit:PL1:B3"]
    assert count(metrics, "sent", "list") == 5


def test_rate_limit_drops_the_excess_and_says_so_on_the_next_alert() -> None:
    d, metrics = dispatcher([LIST], burst=2, rate_per_minute=60)  # 2 at once, then one a second
    for i in range(5):
        d.publish(make_alert(f"k{i}"))
    time.sleep(1.1)
    d.publish(make_alert("later"))
    assert d.close(timeout=10)
    sent = d.sinks["list"].sent  # type: ignore[attr-defined]
    assert [a.dedupe_key for a in sent] == ["k0", "k1", "later"]
    assert sent[2].fields["suppressed_before"] == 3 and "(+3 alerts rate-limited)" in sent[2].text
    assert count(metrics, "failed", "list") == 0  # rate-limited is not a failed delivery


def test_token_bucket() -> None:
    now = [0.0]
    bucket = TokenBucket(rate_per_second=2, burst=3, clock=lambda: now[0])
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]
    now[0] = 0.5  # one token back
    assert [bucket.take(), bucket.take()] == [True, False]
    now[0] = 100.0  # never more than the burst
    assert sum(bucket.take() for _ in range(10)) == 3
    with pytest.raises(ValueError, match="burst"):
        TokenBucket(1, 0)


def test_disabled_alerts_send_nothing() -> None:
    d, metrics = dispatcher([LIST], enabled=False)
    assert not d.publish(make_alert())
    assert d.close(timeout=5) and d.sinks["list"].sent == []  # type: ignore[attr-defined]


# -- building sinks from the config ---------------------------------------------------------------
def test_unknown_sink_names_the_known_ones() -> None:
    with pytest.raises(PluginError, match=r"no sink plugin named 'pager'; known: command, email, log, webhook"):
        dispatcher([{"type": "pager"}])


def test_sink_that_cannot_start_is_named() -> None:
    bad = {"type": "email", "name": "lab-mail", "host": "h", "from_address": "a@b", "to": ["c@d"],
           "username_env": "XTW_UNSET_USER", "password_env": "XTW_UNSET_PASS"}
    with pytest.raises(PluginError, match=r"alert sink 'lab-mail' \(email\): ValueError: .*XTW_UNSET_USER"):
        dispatcher([bad])


def test_not_a_sink_is_refused() -> None:
    with pytest.raises(PluginError, match="not a sink"):
        dispatcher([{"type": "alert_helpers:NotASink"}])


# -- events to alerts -----------------------------------------------------------------------------
ONE_OF_EACH_KIND = [
    (ev.crystal_hit("P", "A1", 2, "needles", 0.9, "x.jpg"), "info", "crystal_hit:P:A1", "needles in plate P well A1 drop 2"),
    (ev.imager_stalled(0.0, 9000.0, 7200.0), "warning", "imager_stalled", "2.0 h"),
    (ev.training_failed("CUDA out of memory", run="r7"), "warning", "training_failed:r7", "CUDA out of memory"),
    (ev.model_promoted("v3", {"knn": 0.8}, previous="v2"), "info", "model_promoted:v3", "v3 now serves (was v2)"),
    (ev.model_rejected("v4", "collapse: feature std 0.001"), "warning", "model_rejected:v4", "collapse"),
    (ev.disk_low("/var/lib/xtalwatch", 2_000_000_000, 100_000_000_000), "critical", "disk_low", "2.0 GB free of 100.0 GB"),
    (ev.drift(0.31, 0.2, 500), "warning", "drift", "moved 0.31"),
    (ev.plate_hits("B1234", ["A1", "B3"], {"crystals": 2}, link="http://h:9100/plates/B1234", batch="17"), "info",
     "plate_hits:B1234:17", "plate B1234: 2 wells with crystals (A1, B3) — http://h:9100/plates/B1234"),
    (ev.plate_hits("B1234", ["C5"], {"crystals": 1}, batch="18"), "info", "plate_hits:B1234:18",
     "plate B1234: 1 well with crystals (C5)"),
]


def test_the_table_below_has_every_event_kind() -> None:
    assert sorted({event.kind for event, *_ in ONE_OF_EACH_KIND}) == sorted(ev.EVENT_KINDS)


@pytest.mark.parametrize("event, severity, key, words", ONE_OF_EACH_KIND)
def test_alert_for_every_event_kind(event: ev.Event, severity: str, key: str, words: str) -> None:
    alert = ev.alert_for(event)
    assert alert.kind == event.kind and alert.severity == severity and alert.dedupe_key == key
    assert words in alert.text and "\n" not in alert.text
    assert None not in alert.fields.values()
