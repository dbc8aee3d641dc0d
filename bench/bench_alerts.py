"""What ``AlertDispatcher.publish`` costs the caller, with healthy, stuck and dead sinks.

    .venv/bin/python bench/bench_alerts.py --alerts 2000

The caller is the service loop, so publish must cost the same whether the webhook answers, hangs
or refuses. Three dispatchers, same alerts (distinct dedupe keys, rate limit out of the way):
  baseline  two log sinks (logging switched off, so it measures the dispatcher, not a terminal);
  stuck     a webhook on loopback whose server never answers, plus the log sink;
  refused   a webhook to a closed port (retried with back-off), plus the log sink.
Also the delivery rate to a healthy loopback webhook (alerts/s, one worker thread).
"""

from __future__ import annotations

import argparse
import logging
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from alert_helpers import make_alert, refused_url, webhook_server  # noqa: E402
from xtalwatch.alerts.dispatch import AlertDispatcher  # noqa: E402
from xtalwatch.config import AlertsConfig  # noqa: E402
from xtalwatch.observe.metrics import Metrics  # noqa: E402
from xtalwatch.plugins import PluginRegistry  # noqa: E402

REGISTRY = PluginRegistry.discover()


def make(sinks: list[dict[str, Any]], n: int) -> tuple[AlertDispatcher, Metrics]:
    config = AlertsConfig.model_validate({"sinks": sinks, "burst": n + 10, "queue_size": n + 10,
                                          "retry_attempts": 3, "retry_initial_seconds": 0.5})
    metrics = Metrics(process_collectors=False)
    return AlertDispatcher(config, REGISTRY, metrics), metrics


def time_publish(d: AlertDispatcher, n: int, tag: str) -> list[float]:
    alerts = [make_alert(f"{tag}{i}") for i in range(n)]
    out = []
    for alert in alerts:
        t0 = time.perf_counter()
        d.publish(alert)
        out.append(time.perf_counter() - t0)
    return out


def summary(xs: list[float]) -> tuple[float, float]:
    xs = sorted(xs)
    return statistics.median(xs) * 1e6, xs[int(0.99 * (len(xs) - 1))] * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--alerts", type=int, default=2000)
    n = ap.parse_args().alerts
    logging.getLogger("xtalwatch").setLevel(logging.CRITICAL)  # the log sink and retry warnings stay quiet
    log_sink = {"type": "log"}
    rows = []
    d, _ = make([log_sink, {"type": "log", "name": "log2"}], n)
    base = summary(time_publish(d, n, "b"))
    d.close(30)
    rows.append(("baseline: log + log", *base))
    with webhook_server(hold=True) as server:
        d, _ = make([log_sink, {"type": "webhook", "url": server.url, "timeout_seconds": 60}], n)
        rows.append(("stuck webhook + log", *summary(time_publish(d, n, "s"))))
        server.hold.set()
        d.close(0.1)
    d, _ = make([log_sink, {"type": "webhook", "url": refused_url(), "timeout_seconds": 1}], n)
    rows.append(("refused webhook + log", *summary(time_publish(d, n, "r"))))
    d.close(0.1)
    with webhook_server() as server:
        d, metrics = make([{"type": "webhook", "url": server.url}], n)
        t0 = time.perf_counter()
        time_publish(d, n, "h")
        d.close(120)
        rate = n / (time.perf_counter() - t0)
    print(f"{platform.machine()} Python {platform.python_version()}, {n} alerts per row")
    print("| dispatcher | publish p50 µs | publish p99 µs | p50 ratio to baseline |")
    print("| --- | --- | --- | --- |")
    for name, p50, p99 in rows:
        print(f"| {name} | {p50:.1f} | {p99:.1f} | {p50 / base[0]:.2f} |")
    print(f"healthy loopback webhook: {rate:.0f} alerts/s delivered")


if __name__ == "__main__":
    main()
