"""The web app over real HTTP: /metrics at the exact path, health and status, binding."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from xtalwatch.config import load_settings
from xtalwatch.observe.metrics import Metrics
from xtalwatch.observe.web import WebServer, build_app, is_loopback


@pytest.fixture
def server() -> Iterator[tuple[WebServer, Metrics, list[int]]]:
    metrics = Metrics()
    calls: list[int] = []

    def status() -> dict[str, Any]:
        calls.append(1)
        return {"images_total": 7, "model": None}

    web = WebServer(build_app(metrics, status), "127.0.0.1", 0)
    web.start()
    try:
        yield web, metrics, calls
    finally:
        web.stop()


def test_metrics_served_at_exact_path_without_redirect(server: tuple[WebServer, Metrics, list[int]]) -> None:
    web, metrics, _ = server
    metrics.hits.inc(3)
    response = httpx.get(f"{web.url}/metrics", follow_redirects=False, timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert 'xtalwatch_hits_total{imager="imager"} 3.0' in response.text


def test_metrics_openmetrics_negotiation(server: tuple[WebServer, Metrics, list[int]]) -> None:
    web, _, _ = server
    response = httpx.get(f"{web.url}/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"},
                         timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.rstrip().endswith("# EOF")


def test_healthz_and_status(server: tuple[WebServer, Metrics, list[int]]) -> None:
    web, _, calls = server
    assert httpx.get(f"{web.url}/healthz", timeout=10).json() == {"ok": True}
    assert httpx.get(f"{web.url}/api/status", timeout=10).json() == {"images_total": 7, "model": None}
    assert httpx.get(f"{web.url}/api/status", timeout=10).status_code == 200
    assert len(calls) == 2
    assert httpx.get(f"{web.url}/nope", timeout=10).status_code == 404


def test_status_without_callback_is_empty_object() -> None:
    web = WebServer(build_app(Metrics(process_collectors=False)), "127.0.0.1", 0)
    web.start()
    try:
        assert httpx.get(f"{web.url}/api/status", timeout=10).json() == {}
    finally:
        web.stop()


def test_port_zero_binds_a_free_port_and_stop_releases_it() -> None:
    web = WebServer(build_app(Metrics(process_collectors=False)), "127.0.0.1", 0)
    web.start()
    port = web.port
    assert port > 0
    web.stop()
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))


def test_taken_port_is_an_oserror_naming_the_address() -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        web = WebServer(build_app(Metrics(process_collectors=False)), "127.0.0.1", port)
        with pytest.raises(OSError, match=f"127.0.0.1:{port}"):
            web.start()


def test_bad_port_is_refused_at_once() -> None:
    with pytest.raises(ValueError, match="port"):
        WebServer(build_app(Metrics(process_collectors=False)), "127.0.0.1", 70000)


def test_default_bind_is_loopback() -> None:
    settings = load_settings(None, {})
    assert settings.metrics.host == "127.0.0.1"
    assert settings.metrics.port == 9108


# -- /healthz reasons and the /api/status access rule ------------------------------------------
def test_healthz_is_503_with_the_reasons_while_something_is_wrong() -> None:
    problems: list[str] = []
    web = WebServer(build_app(Metrics(process_collectors=False), health=lambda: list(problems)), "127.0.0.1", 0)
    web.start()
    try:
        assert httpx.get(f"{web.url}/healthz", timeout=10).json() == {"ok": True}
        problems.extend(["loop: the main loop last ticked 90 s ago (stuck)", "disk: the state disk is full"])
        response = httpx.get(f"{web.url}/healthz", timeout=10)
        assert response.status_code == 503
        assert response.json() == {"ok": False, "reasons": problems}
        problems.clear()
        assert httpx.get(f"{web.url}/healthz", timeout=10).status_code == 200
    finally:
        web.stop()


def _own_address() -> str | None:
    """This machine's address on its default route (no packet is sent), or None when it has only loopback."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.1", 9))  # TEST-NET-1: connect() on UDP only picks the route
            address = s.getsockname()[0]
    except OSError:
        return None
    return None if address.startswith("127.") else address


@pytest.mark.parametrize(("token", "sent", "expected"), [
    (None, None, 403),  # no token configured: loopback clients only
    ("s3cret", None, 403),
    ("s3cret", "Bearer wrong", 403),
    ("s3cret", "Bearer s3cret", 200),
])
def test_api_status_from_another_host_needs_the_token(token: str | None, sent: str | None, expected: int) -> None:
    address = _own_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address to reach the server from")
    web = WebServer(build_app(Metrics(process_collectors=False), lambda: {"state_dir": "/srv/state"},
                              health=lambda: [], api_token=token), "0.0.0.0", 0)
    web.start()
    try:
        base = f"http://{address}:{web.port}"
        headers = {"Authorization": sent} if sent else {}
        response = httpx.get(f"{base}/api/status", headers=headers, timeout=10)
        assert response.status_code == expected
        if expected == 403:
            assert "/srv/state" not in response.text
            assert "metrics.api_token" in response.json()["error"]
        else:
            assert response.json() == {"state_dir": "/srv/state"}
        # /metrics and /healthz stay open to anyone.
        assert httpx.get(f"{base}/healthz", timeout=10).status_code == 200
        assert httpx.get(f"{base}/metrics", timeout=10).status_code == 200
        # Loopback needs no token.
        assert httpx.get(f"http://127.0.0.1:{web.port}/api/status", timeout=10).status_code == 200
    finally:
        web.stop()


@pytest.mark.parametrize(("host", "loopback"), [("127.0.0.1", True), ("127.8.9.10", True), ("::1", True),
                                                 ("::ffff:127.0.0.1", True), ("192.0.2.7", False),
                                                 ("::ffff:192.0.2.7", False), ("testclient", False), ("", False),
                                                 (None, False)])
def test_is_loopback(host: str | None, loopback: bool) -> None:
    assert is_loopback(host) is loopback
