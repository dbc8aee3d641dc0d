"""A URL in any message shows its scheme, host and port, and nothing that may be a secret."""

from __future__ import annotations

import pytest
from xtalwatch.redact import redact_url, redact_urls


@pytest.mark.parametrize(("url", "shown"), [
    ("https://hooks.slack.com/services/T000/B000/XXXXXXXX", "https://hooks.slack.com/…"),
    ("http://robot:pw@relay.lab:8080/hook?token=abc#frag", "http://relay.lab:8080/…"),
    ("https://relay.lab/?token=abc", "https://relay.lab/…"),
    ("https://relay.lab/#abc", "https://relay.lab/…"),
    ("http://user@relay.lab", "http://relay.lab/…"),
    ("https://relay.lab", "https://relay.lab"),
    ("https://relay.lab/", "https://relay.lab"),
    ("http://[::1]:9108/x", "http://[::1]:9108/…"),
    ("http://127.0.0.1:9108/metrics", "http://127.0.0.1:9108/metrics"),
    ("http://127.0.0.1:9108/metrics?token=x", "http://127.0.0.1:9108/…"),
    ("http://relay.lab:99999/secret", "http://…"),  # not a valid port: nothing but the scheme
])
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_redact_urls_in_text_keeps_the_punctuation_around_them() -> None:
    text = "POST https://h.example/a/b?t=1: HTTP 500 (see http://u:p@h2.example/x), and 'https://h3.example/y'."
    assert redact_urls(text) == "POST https://h.example/…: HTTP 500 (see http://h2.example/…), and 'https://h3.example/…'."
    assert redact_urls("no url here: 127.0.0.1:9108") == "no url here: 127.0.0.1:9108"


def test_the_review_apps_page_links_stay_readable_in_logs() -> None:
    """A plate summary's link names a plate page; a webhook's secret path is still hidden."""
    assert redact_urls("plate B1234: 3 wells — http://imager:9108/plates/B1234") == \
        "plate B1234: 3 wells — http://imager:9108/plates/B1234"
    assert redact_urls("see http://imager:9108/wells/17 and http://imager:9108/review") == \
        "see http://imager:9108/wells/17 and http://imager:9108/review"
    assert redact_urls("https://hooks.example/plates/B1/T0K3N") == "https://hooks.example/…"
    assert redact_urls("http://imager:9108/plates/B1?token=x") == "http://imager:9108/…"
