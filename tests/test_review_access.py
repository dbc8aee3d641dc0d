"""Who may write: loopback binds write freely, other binds need the token; CSRF always; reads always open."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from review_helpers import Filler, client_for, csrf_of, review_settings
from xtalwatch.config import Settings
from xtalwatch.observe.metrics import Metrics
from xtalwatch.observe.web import WebServer, build_app
from xtalwatch.review.access import Access, is_loopback
from xtalwatch.review.app import ReviewContext
from xtalwatch.store.catalogue import Catalogue
from xtalwatch.store.labels import label_count

TOKEN = "s3cret-token-for-the-lab"


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[tuple[Settings, Catalogue, int]]:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    settings = review_settings(tmp_path, **{"web.token_file": token_file})
    cat = Catalogue(settings.state.dir)
    image = Filler(settings, cat).image("P1", "A1", 1, label="clear")
    try:
        yield settings, cat, image
    finally:
        cat.close()


def _label(client: httpx.Client, image: int, csrf: str | None, **headers: str) -> httpx.Response:
    if csrf is not None:
        headers["X-CSRF-Token"] = csrf
    return client.post("/api/labels", json={"image_id": image, "label": "crystals"}, headers=headers)


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost"])
def test_loopback_bind_writes_without_a_token_but_with_csrf(lab, host: str) -> None:  # type: ignore[no-untyped-def]
    settings, cat, image = lab
    with client_for(settings, cat, bound_host=host) as client:
        csrf = csrf_of(client.get("/review").text)
        assert _label(client, image, csrf).status_code == 200
        for forged in (None, "", "0" * 64, csrf[:-1]):
            refused = _label(client, image, forged)
            assert refused.status_code == 403
            assert "CSRF" in refused.json()["error"]


def test_other_bind_reads_open_writes_need_the_token(lab) -> None:  # type: ignore[no-untyped-def]
    settings, cat, image = lab
    with client_for(settings, cat, bound_host="192.0.2.7") as client:
        page = client.get("/review")
        assert page.status_code == 200 and "read-only until signed in" in page.text
        for url in ("/plates", "/plates/P1", "/hits", "/models", "/health", "/metrics", "/healthz"):
            assert client.get(url).status_code == 200, url
        csrf = csrf_of(page.text)
        missing = _label(client, image, csrf)
        assert missing.status_code == 403 and "web.token_file" in missing.json()["error"]
        wrong = _label(client, image, csrf, Authorization="Bearer not-the-token")
        assert wrong.status_code == 403
        assert _label(client, image, None, Authorization=f"Bearer {TOKEN}").status_code == 403  # CSRF still
        assert _label(client, image, csrf, Authorization=f"Bearer {TOKEN}").status_code == 200
        rollback = client.post("/api/models/rollback", data={"csrf_token": csrf})
        assert rollback.status_code == 403 and "web.token_file" in rollback.text  # a small page for a form
        assert TOKEN not in rollback.text
        assert label_count(cat) == 1


def test_login_with_the_token_sets_a_session_cookie_for_later_writes(lab) -> None:  # type: ignore[no-untyped-def]
    settings, cat, image = lab
    with client_for(settings, cat, bound_host="192.0.2.7") as client:
        login_page = client.get("/login").text
        assert 'name="token" type="password"' in login_page
        csrf = csrf_of(login_page)
        bad = client.post("/login", data={"csrf_token": csrf, "token": "guess"}, follow_redirects=False)
        assert bad.status_code == 403 and "wrong token" in bad.text
        assert "xtalwatch_session" not in client.cookies
        no_csrf = client.post("/login", data={"token": TOKEN}, follow_redirects=False)
        assert no_csrf.status_code == 403
        ok = client.post("/login", data={"csrf_token": csrf, "token": TOKEN, "name": "carol"}, follow_redirects=False)
        assert ok.status_code == 303
        cookie = ok.headers["set-cookie"]
        assert "HttpOnly" in cookie and "samesite=strict" in cookie.lower() and TOKEN not in cookie
        assert _label(client, image, csrf).status_code == 200
        assert "signed in" in client.get("/review").text
        client.cookies.set("xtalwatch_session", "f" * 64)
        assert _label(client, image, csrf).status_code == 403  # a forged session


def test_a_new_token_in_the_file_applies_at_once_and_ends_old_sessions(lab) -> None:  # type: ignore[no-untyped-def]
    settings, cat, image = lab
    with client_for(settings, cat, bound_host="10.0.0.5") as client:
        csrf = csrf_of(client.get("/login").text)
        client.post("/login", data={"csrf_token": csrf, "token": TOKEN})
        assert _label(client, image, csrf).status_code == 200
        Path(settings.web.token_file).write_text("rotated\n")
        assert _label(client, image, csrf).status_code == 403
        assert _label(client, image, csrf, Authorization="Bearer rotated").status_code == 200


def test_other_bind_without_a_token_file_is_read_only_and_says_how_to_fix_it(tmp_path: Path) -> None:
    settings = review_settings(tmp_path)
    cat = Catalogue(settings.state.dir)
    try:
        image = Filler(settings, cat).image("P1", "A1", 1, label="clear")
        with client_for(settings, cat, bound_host="0.0.0.0") as client:
            csrf = csrf_of(client.get("/review").text)
            refused = _label(client, image, csrf, Authorization="Bearer anything")
            assert refused.status_code == 403
            assert "web.token_file is not set" in refused.json()["error"]
            assert "read-only" in refused.json()["error"]
            promote = client.post("/api/models/v1/promote", json={}, headers={"X-CSRF-Token": csrf})
            assert promote.status_code == 403
    finally:
        cat.close()


def test_a_real_wildcard_bind_refuses_writes_without_the_token(lab) -> None:  # type: ignore[no-untyped-def]
    """The service bound to 0.0.0.0 for real: even a client on this machine needs the token to write."""
    settings, cat, image = lab
    metrics = Metrics(process_collectors=False)
    review = ReviewContext(settings=settings, state_dir=Path(settings.state.dir), catalogue=cat, metrics=metrics,
                           bound_host="0.0.0.0")
    web = WebServer(build_app(metrics, review=review), "0.0.0.0", 0)
    web.start()
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{web.port}", timeout=30) as client:
            csrf = csrf_of(client.get("/review").text)
            assert _label(client, image, csrf).status_code == 403
            assert _label(client, image, csrf, Authorization=f"Bearer {TOKEN}").status_code == 200
            assert client.get("/metrics").status_code == 200
    finally:
        web.stop()


def test_csrf_tokens_differ_between_processes_and_compare_exactly(tmp_path: Path) -> None:
    one, two = Access("127.0.0.1", None), Access("127.0.0.1", None)
    assert one.csrf_token != two.csrf_token and len(one.csrf_token) == 64
    assert one.csrf_ok(one.csrf_token) and not one.csrf_ok(two.csrf_token) and not one.csrf_ok(None)
    empty = tmp_path / "empty"
    empty.write_text("  \n")
    assert "empty" in (Access("192.0.2.1", empty).tokens_unavailable() or "")
    gone = Access("192.0.2.1", tmp_path / "missing")
    assert "cannot be read" in (gone.tokens_unavailable() or "") and str(tmp_path) not in gone.tokens_unavailable()


@pytest.mark.parametrize(("host", "loopback"), [("127.0.0.1", True), ("127.1.2.3", True), ("::1", True),
                                                 ("[::1]", True), ("localhost", True), ("0.0.0.0", False),
                                                 ("::", False), ("192.168.1.4", False), ("lab-host", False),
                                                 ("", False)])
def test_which_binds_count_as_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback
