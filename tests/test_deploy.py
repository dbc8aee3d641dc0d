"""The deployment files, checked by the tools of their own ecosystems.

promtool checks and unit-tests the alert rules; the dashboard's and rules' metric names are held
to a live scrape of the real web app; systemd-analyze verifies the units; and a real Prometheus
server scrapes the real app on loopback.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from conftest import require_tool
from prometheus_client.parser import text_string_to_metric_families
from xtalwatch.observe.metrics import Metrics
from xtalwatch.observe.web import WebServer, build_app

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "xtalwatch.json"
UNITS = DEPLOY / "systemd"
DEPLOY_DOC = ROOT / "docs" / "deploy.md"
# Series Prometheus makes itself for every target; they carry no imager label.
SYNTHETIC = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}
IMAGER = "bay-2"  # settings.site.imager of the served metrics
IMAGER_FILTER = 'imager=~"$imager"'  # the dashboard's selector, on every series it reads


def run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, **kwargs)  # type: ignore[call-overload]


# -- a live service's metrics ---------------------------------------------------------------
def populate(m: Metrics) -> None:
    """Touch every labelled metric so that its series exist, as after a day of service."""
    m.images_seen.inc(20)
    m.images_ingested.inc(18)
    m.images_duplicate.inc(2)
    m.images_rejected.labels(reason="truncated").inc(3)
    m.last_image_timestamp.set(time.time())
    m.observer_restarts.inc()
    m.rescans.inc()
    m.queue_depth.labels(stage="ingest").set(4)
    m.preprocess_seconds.observe(0.03)
    m.classify_seconds.observe(0.2)
    m.result_latency_seconds.observe(0.4)
    m.images_flagged.labels(flag="blurred").inc()
    m.predictions.labels("crystal").inc(2)
    m.predictions.labels("clear").inc(5)
    m.hits.inc(2)
    m.training_runs.labels(outcome="promoted").inc()
    m.training_last_success.set(time.time())
    m.training_duration_seconds.observe(600)
    m.training_last_loss.set(3.9)
    m.model_info.info({"version": "v1", "encoder": "resnet18"})
    m.model_loaded.set(1)
    m.alerts_sent.labels(sink="log").inc()
    m.alerts_failed.labels(sink="webhook").inc()
    m.observe_disk(ROOT)


@pytest.fixture
def served() -> Iterator[tuple[Metrics, WebServer]]:
    metrics = Metrics(imager=IMAGER)
    populate(metrics)
    server = WebServer(build_app(metrics), "127.0.0.1", 0)
    server.start()
    try:
        yield metrics, server
    finally:
        server.stop()


def scraped_names(server: WebServer) -> set[str]:
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    return {s.name for f in text_string_to_metric_families(text) for s in f.samples}


# -- PromQL: which metric names an expression reads ------------------------------------------
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left",
             "group_right", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers that are not functions, keywords or labels."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)                       # string literals
    expr = re.sub(r"\{[^}]*\}", "", expr)                                  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)                                 # ranges and subqueries
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    expr = re.sub(r"\$\{[^}]*\}|\$\w+", "", expr)                        # Grafana variables
    names = set()
    for match in re.finditer(r"(?<![\w.])[a-zA-Z_:][\w:]*", expr):
        rest = expr[match.end():].lstrip()
        if rest.startswith("(") or match.group().lower() in _KEYWORDS:
            continue
        names.add(match.group())
    return names


def selectors(expr: str) -> list[tuple[str, str]]:
    """(metric name, label matchers or "") of every series selector in a PromQL expression."""
    found = []
    for name in metric_names(expr):
        for match in re.finditer(rf"(?<![\w.:]){re.escape(name)}(?![\w:])(\{{[^}}]*\}})?", expr):
            found.append((name, match.group(1) or ""))
    return found


def test_metric_names_parser() -> None:
    assert metric_names('histogram_quantile(0.95, sum by (le) (rate(a_bucket{job="x"}[$__rate_interval])))') == {
        "a_bucket"}
    assert metric_names("time() - (b > 0) > 4 * 3600 and on (job) c < 10e9") == {"b", "c"}
    assert metric_names('sum without (instance) (increase(d_total[1h])) / ignoring(x) e') == {"d_total", "e"}
    assert sorted(selectors('a{x="1"} + on (i) group_left a_b + a{y="2"}')) == [
        ("a", '{x="1"}'), ("a", '{y="2"}'), ("a_b", "")]


# -- Prometheus rules -----------------------------------------------------------------------
def load_rules() -> list[dict]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_promtool_check_rules() -> None:
    result = run([require_tool("promtool"), "check", "rules", str(ALERTS)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_test_rules() -> None:
    files = [str(DEPLOY / "prometheus" / name) for name in ("tests.yml", "tests_hours.yml")]
    result = run([require_tool("promtool"), "test", "rules", *files])
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == 2


def test_example_prometheus_config_checks(tmp_path: Path) -> None:
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    config["rule_files"] = [str(ALERTS)]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    result = run([require_tool("promtool"), "check", "config", str(tmp_path / "prometheus.yml")])
    assert result.returncode == 0, result.stdout + result.stderr
    assert [job["job_name"] for job in config["scrape_configs"]] == ["xtalwatch"]


def github_anchors(markdown: str) -> set[str]:
    """Anchors GitHub makes from headings: lower case, punctuation dropped, spaces to dashes."""
    anchors = set()
    for line in markdown.splitlines():
        heading = re.match(r"#+\s+(.*)", line)
        if heading:
            text = re.sub(r"[^\w\- ]", "", heading.group(1).strip().lower())
            anchors.add(text.replace(" ", "-"))
    return anchors


def test_every_alert_has_for_severity_summary_and_runbook() -> None:
    rules = load_rules()
    anchors = github_anchors(DEPLOY_DOC.read_text())
    for rule in rules:
        name = rule["alert"]
        assert rule.get("for"), f"{name}: no for:"
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, name
        assert rule["annotations"]["summary"], name
        runbook = rule["annotations"]["runbook_url"]
        path, _, anchor = runbook.partition("#")
        assert path == "docs/deploy.md" and anchor in anchors, f"{name}: runbook {runbook} has no section"
    names = {rule["alert"] for rule in rules}
    assert {"XtalwatchImagerStalled", "XtalwatchIngestErrorsRising", "XtalwatchNoSuccessfulTraining",
            "XtalwatchQueueBackingUp", "XtalwatchDiskLow", "XtalwatchNoModel"} <= names


def test_alert_rules_work_per_imager() -> None:
    """Sums keep the imager, so that each imager fires its own alert, and every summary names it."""
    for rule in load_rules():
        if metric_names(rule["expr"]) <= SYNTHETIC:  # `up` has no imager (XtalwatchDown)
            continue
        for grouping in re.findall(r"\b(?:by|on)\s*\(([^)]*)\)", rule["expr"]):
            assert "imager" in {g.strip() for g in grouping.split(",")}, f"{rule['alert']}: ({grouping})"
        assert not re.search(r"\bwithout\b|\b(?:sum|min|max|avg|count)\s*\(", rule["expr"]), rule["alert"]
        assert "{{ $labels.imager }}" in rule["annotations"]["summary"], rule["alert"]


def test_two_imager_stall_case_is_in_the_rule_tests() -> None:
    """promtool runs it (test_promtool_test_rules); this keeps it from being dropped."""
    tests = yaml.safe_load((DEPLOY / "prometheus" / "tests_hours.yml").read_text())["tests"]
    for case in tests:
        imagers = {re.search(r'imager="([^"]+)"', s["series"]).group(1) for s in case["input_series"]}
        stalled = [a for t in case["alert_rule_test"] if t["alertname"] == "XtalwatchImagerStalled"
                   for a in t["exp_alerts"]]
        if len(imagers) == 2 and len(stalled) == 1:
            imager = stalled[0]["exp_labels"]["imager"]
            assert imager in stalled[0]["exp_annotations"]["summary"]
            return
    pytest.fail("tests_hours.yml has no XtalwatchImagerStalled case where one of two imagers stalls")


def test_alert_rules_read_only_exported_metrics(served: tuple[Metrics, WebServer]) -> None:
    exported = scraped_names(served[1]) | SYNTHETIC
    for rule in load_rules():
        used = metric_names(rule["expr"])
        assert used, rule["alert"]
        assert used <= exported, f"{rule['alert']} reads {sorted(used - exported)}, not in a live scrape"


# -- Grafana ----------------------------------------------------------------------------------
def dashboard_exprs(dashboard: dict) -> list[str]:
    exprs = []

    def walk(panels: list[dict]) -> None:
        for panel in panels:
            exprs.extend(t["expr"] for t in panel.get("targets", []) if t.get("expr"))
            walk(panel.get("panels", []))

    walk(dashboard["panels"])
    exprs.extend(a["expr"] for a in dashboard["annotations"]["list"] if a.get("expr"))
    for var in dashboard["templating"]["list"]:
        query = var.get("query")
        if isinstance(query, dict):
            query = query.get("query")
        if var["type"] == "query" and query:
            exprs.append(re.sub(r"^label_values\((.*),\s*\w+\)$", r"\1", query))
    return exprs


def test_dashboard_uses_only_metrics_from_a_live_scrape(served: tuple[Metrics, WebServer]) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exported = scraped_names(served[1]) | SYNTHETIC
    used: set[str] = set()
    for expr in dashboard_exprs(dashboard):
        names = metric_names(expr)
        assert names <= exported, f"dashboard expression reads {sorted(names - exported)}: {expr}"
        used |= names
    # The panels the issue asks for.
    assert {"xtalwatch_images_ingested_total", "xtalwatch_result_latency_seconds_bucket",
            "xtalwatch_predictions_total", "xtalwatch_hits_total", "xtalwatch_training_runs_total",
            "xtalwatch_images_rejected_total", "xtalwatch_alerts_failed_total"} <= used
    assert any(e.startswith("histogram_quantile(") and "_bucket" in e for e in dashboard_exprs(dashboard))


def panel_exprs(dashboard: dict) -> list[str]:
    """The expressions of the panels and annotations (not of the template variables)."""
    variables = {v["query"]["query"] for v in dashboard["templating"]["list"] if isinstance(v.get("query"), dict)}
    return [e for e in dashboard_exprs(dashboard) if e not in {re.sub(r"^label_values\((.*),\s*\w+\)$", r"\1", q)
                                                                for q in variables}]


def test_dashboard_filters_every_series_on_the_imager_variable() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    imager = next(v for v in dashboard["templating"]["list"] if v["name"] == "imager")
    assert imager["type"] == "query" and imager["multi"] and imager["includeAll"] and imager["allValue"] == ".*"
    assert re.fullmatch(r"label_values\(xtalwatch_\w+\{.*\},\s*imager\)", imager["query"]["query"])
    exprs = panel_exprs(dashboard)
    assert len(exprs) > 30
    for expr in exprs:
        assert IMAGER_FILTER in expr, expr
        for name, matchers in selectors(expr):
            if name not in SYNTHETIC:
                assert IMAGER_FILTER in matchers, f"{name} without the imager filter in {expr}"
        # A sum over several imagers keeps one line (or value) per imager.
        for grouping in re.findall(r"\b(?:sum|min|max)\s+by\s*\(([^)]*)\)", expr):
            assert "imager" in grouping, expr
        assert not re.search(r"\b(?:sum|min|max)\s*\(", expr), f"aggregates the imagers away: {expr}"


def test_dashboard_and_provisioning_agree() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    assert dashboard["uid"] == "xtalwatch"
    datasources = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/xtalwatch.yaml").read_text())
    providers = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/xtalwatch.yaml").read_text())
    assert datasources["apiVersion"] == providers["apiVersion"] == 1
    uid = datasources["datasources"][0]["uid"]
    ds_var = next(v for v in dashboard["templating"]["list"] if v["name"] == "datasource")
    assert ds_var["current"]["value"] == uid
    assert providers["providers"][0]["type"] == "file"


# -- systemd -----------------------------------------------------------------------------------
def installed_units(tmp_path: Path) -> list[Path]:
    """The units copied to tmp_path with ExecStart pointing at this venv's real xtalwatch."""
    xtalwatch = Path(shutil.which("xtalwatch", path=str(ROOT / ".venv" / "bin")) or shutil.which("xtalwatch") or "")
    if not xtalwatch.is_file():
        pytest.skip("xtalwatch is not installed in .venv (pip install -e .)")
    units = []
    for name in ("xtalwatch.service", "xtalwatch-train.service", "xtalwatch-train.timer"):
        text = (UNITS / name).read_text().replace("/opt/xtalwatch/.venv/bin/xtalwatch", str(xtalwatch))
        (tmp_path / name).write_text(text)
        units.append(tmp_path / name)
    return units


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    tool = require_tool("systemd-analyze")
    units = installed_units(tmp_path)
    result = run([tool, "verify", "--man=no", *map(str, units)], env={**os.environ, "SYSTEMD_LOG_COLOR": "0"})
    complaints = [line for line in (result.stdout + result.stderr).splitlines() if str(tmp_path) in line
                  or "xtalwatch" in line]
    assert result.returncode == 0 and not complaints, result.stdout + result.stderr


def test_service_hardening_exposure_is_low(tmp_path: Path) -> None:
    tool = require_tool("systemd-analyze")
    service = installed_units(tmp_path)[0]
    # --threshold=50 means an exposure score of 5.0 out of 10 ("MEDIUM"); ours is about 3.6 ("OK").
    result = run([tool, "security", "--offline=yes", "--threshold=50", "--no-pager", str(service)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_service_unit_has_the_required_settings() -> None:
    text = (UNITS / "xtalwatch.service").read_text()
    settings = {}
    for line in text.splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), value.strip())
    assert settings["Type"] == "notify"
    assert settings["WatchdogSec"] and settings["Restart"] == "on-failure"
    assert settings["ProtectSystem"] == "strict"
    assert settings["ReadWritePaths"] == "/var/lib/xtalwatch"
    assert settings["ReadOnlyPaths"] == "/srv/imager"
    assert settings["NoNewPrivileges"] == "yes" and settings["PrivateTmp"] == "yes"
    assert settings["User"] == "xtalwatch"
    assert settings["ExecStart"].split()[:2] == ["/opt/xtalwatch/.venv/bin/xtalwatch", "run"]
    assert "PrivateDevices" not in settings, "would hide the GPU"
    timer = (UNITS / "xtalwatch-train.timer").read_text()
    assert "OnCalendar=*-*-* 02:00:00" in timer
    assert "train --now" in (UNITS / "xtalwatch-train.service").read_text()


def test_sysusers_snippet_creates_the_user(tmp_path: Path) -> None:
    tool = require_tool("systemd-sysusers")
    result = run([tool, "--dry-run", f"--root={tmp_path}", str(UNITS / "xtalwatch.sysusers.conf")])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Creating user 'xtalwatch'" in result.stdout + result.stderr


# -- a real Prometheus --------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_real_prometheus_scrapes_the_service(served: tuple[Metrics, WebServer], tmp_path: Path) -> None:
    binary = require_tool("prometheus")
    metrics, server = served
    port = free_port()
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(ALERTS)],
        "scrape_configs": [{"job_name": "xtalwatch", "static_configs": [{"targets": [f"127.0.0.1:{server.port}"]}]}],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    log = (tmp_path / "prometheus.log").open("w")
    process = subprocess.Popen(
        [binary, f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
        stdout=log, stderr=subprocess.STDOUT)
    api = f"http://127.0.0.1:{port}/api/v1"

    def query(promql: str) -> list[dict]:
        response = httpx.get(f"{api}/query", params={"query": promql}, timeout=5)
        response.raise_for_status()
        return response.json()["data"]["result"]

    try:
        deadline = time.monotonic() + 30
        result: list[dict] = []
        while time.monotonic() < deadline and process.poll() is None:
            try:
                result = query('xtalwatch_hits_total{job="xtalwatch"}')
            except httpx.HTTPError:
                result = []
            if result:
                break
            time.sleep(0.25)
        assert result, f"no samples within 30 s; prometheus log:\n{(tmp_path / 'prometheus.log').read_text()}"
        assert float(result[0]["value"][1]) == 2
        assert result[0]["metric"]["instance"] == f"127.0.0.1:{server.port}"
        # Labelled series, the info metric and the scrape health arrive too.
        crystal = query('xtalwatch_predictions_total{class="crystal"}')
        assert float(crystal[0]["value"][1]) == 2
        assert query('xtalwatch_model_info{version="v1"}')
        assert float(query('up{job="xtalwatch"}')[0]["value"][1]) == 1
        # The server loaded our rules.
        groups = httpx.get(f"{api}/rules", timeout=5).json()["data"]["groups"]
        assert {r["name"] for g in groups for r in g["rules"]} == {r["alert"] for r in load_rules()}
        # Every series arrives with the imager; the dashboard's variable finds it and every panel
        # expression runs, filtered on it.
        assert result[0]["metric"]["imager"] == IMAGER
        assert query('process_resident_memory_bytes{job="xtalwatch"}')[0]["metric"]["imager"] == IMAGER
        dashboard = json.loads(DASHBOARD.read_text())
        variable = next(v for v in dashboard["templating"]["list"] if v["name"] == "imager")
        selector = re.fullmatch(r"label_values\((.*),\s*imager\)", variable["query"]["query"]).group(1)
        values = httpx.get(f"{api}/label/imager/values", params={"match[]": selector}, timeout=5).json()["data"]
        assert values == [IMAGER]

        def panel_query(expr: str, imager: str) -> list[dict]:
            promql = expr.replace("$__rate_interval", "1m").replace("$instance", ".*").replace("$imager", imager)
            response = httpx.get(f"{api}/query", params={"query": promql}, timeout=5)
            assert response.status_code == 200, f"{expr}: {response.text}"
            return response.json()["data"]["result"]

        for expr in panel_exprs(dashboard):
            panel_query(expr, IMAGER)
        up_panel = next(e for e in panel_exprs(dashboard) if "group_left up" in e)
        assert [(r["metric"], float(r["value"][1])) for r in panel_query(up_panel, IMAGER)] == [({"imager": IMAGER}, 1)]
        assert panel_query(up_panel, "bay-9") == []
        # A later value shows up at the next scrape.
        metrics.hits.inc()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and float(query("xtalwatch_hits_total")[0]["value"][1]) != 3:
            time.sleep(0.25)
        assert float(query("xtalwatch_hits_total")[0]["value"][1]) == 3
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
