"""Each built-in alert sink against the real thing: HTTP and SMTP servers on loopback, a real shell."""

from __future__ import annotations

import email
import email.policy
import json
import logging
import urllib.error
from pathlib import Path

import pytest
from alert_helpers import make_alert, refused_url, smtp_server, webhook_server
from xtalwatch.alerts.alert import AlertSink
from xtalwatch.config import CommandSinkConfig, EmailSinkConfig, LogSinkConfig, WebhookSinkConfig
from xtalwatch.plugins import PluginRegistry
from xtalwatch_plugins.sinks.command import CommandSink
from xtalwatch_plugins.sinks.email import EmailSink
from xtalwatch_plugins.sinks.log import LogSink
from xtalwatch_plugins.sinks.webhook import WebhookSink


def test_builtin_sinks_are_registered_through_entry_points() -> None:
    registry = PluginRegistry.discover()
    assert {"log", "webhook", "email", "command"} <= set(registry.names("sink"))
    assert registry.get("sink", "webhook") is WebhookSink
    for cls, cfg in [(LogSink, LogSinkConfig()), (CommandSink, CommandSinkConfig(argv=["true"])),
                     (WebhookSink, WebhookSinkConfig(url="http://127.0.0.1:9/")),
                     (EmailSink, EmailSinkConfig(host="localhost", from_address="a@b", to=["c@d"]))]:
        assert isinstance(cls(cfg), AlertSink)


# -- log ----------------------------------------------------------------------------------------
def test_log_sink_writes_one_tagged_line(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="xtalwatch.alert"):
        LogSink().send(make_alert())
    [record] = caplog.records
    assert record.levelno == logging.INFO
    line = record.getMessage()
    assert "kind=crystal_hit" in line and "plate=PL1" in line and "well=B3" in line and "needles in plate" in line
    assert "\n" not in line


# -- webhook -------------------------------------------------------------------------------------
def test_webhook_posts_slack_compatible_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XTW_TEST_TOKEN", "s3cret")
    with webhook_server() as server:
        sink = WebhookSink(WebhookSinkConfig(url=server.url, headers={"X-Lab": "b12"},
                                             headers_env={"Authorization": "XTW_TEST_TOKEN"}))
        sink.send(make_alert())
        [got] = server.received
    assert got.path == "/hook"
    assert got.headers["Content-Type"] == "application/json"
    assert got.headers["X-Lab"] == "b12" and got.headers["Authorization"] == "s3cret"
    body = got.body
    assert isinstance(body["text"], str) and "needles in plate PL1 well B3" in body["text"]
    assert body["fields"] == {"plate": "PL1", "well": "B3", "drop": 2, "class": "needles", "confidence": 0.93,
                              "image_path": "PL1/B3_2.jpg"}
    assert body["kind"] == "crystal_hit" and body["severity"] == "info" and body["dedupe_key"] == "k1"
    assert body["created"].endswith("+00:00")


def test_webhook_http_error_raises_with_status() -> None:
    with webhook_server(status=500) as server:
        with pytest.raises(RuntimeError, match="HTTP 500.*internal trouble"):
            WebhookSink(WebhookSinkConfig(url=server.url)).send(make_alert())


def test_webhook_connection_refused_raises() -> None:
    with pytest.raises(urllib.error.URLError):
        WebhookSink(WebhookSinkConfig(url=refused_url(), timeout_seconds=2)).send(make_alert())


def test_webhook_timeout_raises() -> None:
    with webhook_server(hold=True) as server:
        with pytest.raises(TimeoutError):
            WebhookSink(WebhookSinkConfig(url=server.url, timeout_seconds=0.3)).send(make_alert())


def test_webhook_missing_header_env_is_refused_at_start() -> None:
    with pytest.raises(ValueError, match="XTW_NOT_SET"):
        WebhookSink(WebhookSinkConfig(url="http://x/", headers_env={"Authorization": "XTW_NOT_SET"}))


# -- email ---------------------------------------------------------------------------------------
def test_email_sink_sends_over_smtp_with_login_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XTW_SMTP_USER", "robot")
    monkeypatch.setenv("XTW_SMTP_PASS", "pw")
    with smtp_server(credentials=("robot", "pw")) as server:
        sink = EmailSink(EmailSinkConfig(host=server.host, port=server.port, from_address="xtalwatch@lab.test",
                                         to=["ann@lab.test", "bob@lab.test"], username_env="XTW_SMTP_USER",
                                         password_env="XTW_SMTP_PASS", timeout_seconds=5))
        sink.send(make_alert())
        [mail] = server.mails
    assert mail.login == ("robot", "pw")
    assert mail.sender == "xtalwatch@lab.test" and mail.recipients == ["ann@lab.test", "bob@lab.test"]
    msg = email.message_from_string(mail.data, policy=email.policy.default)
    assert msg["Subject"] == "[xtalwatch] Crystal hit: PL1 B3 (k1)"
    body = msg.get_content()
    assert "needles in plate PL1 well B3" in body and "image_path: PL1/B3_2.jpg" in body and "confidence: 0.93" in body


def test_email_sink_without_credentials_and_refused_login(monkeypatch: pytest.MonkeyPatch) -> None:
    with smtp_server() as server:
        EmailSink(EmailSinkConfig(host=server.host, port=server.port, from_address="a@lab.test",
                                  to=["b@lab.test"])).send(make_alert())
        assert len(server.mails) == 1 and server.mails[0].login is None
    monkeypatch.setenv("XTW_SMTP_USER", "robot")
    monkeypatch.setenv("XTW_SMTP_PASS", "wrong")
    with smtp_server(credentials=("robot", "pw")) as server:
        sink = EmailSink(EmailSinkConfig(host=server.host, port=server.port, from_address="a@lab.test",
                                         to=["b@lab.test"], username_env="XTW_SMTP_USER", password_env="XTW_SMTP_PASS"))
        with pytest.raises(Exception, match="535"):
            sink.send(make_alert())
        assert server.mails == []


def test_email_credentials_must_be_in_the_environment() -> None:
    with pytest.raises(ValueError, match="XTW_UNSET_PASS is not set"):
        EmailSink(EmailSinkConfig(host="h", from_address="a@b", to=["c@d"], username_env="HOME",
                                  password_env="XTW_UNSET_PASS"))


# -- command -------------------------------------------------------------------------------------
def test_command_sink_gets_json_on_stdin_and_env(tmp_path: Path) -> None:
    out, env_out = tmp_path / "alert.json", tmp_path / "env.txt"
    script = 'cat > "$1"; printf "%s|%s|%s|%s" "$XTALWATCH_ALERT_KIND" "$XTALWATCH_ALERT_PLATE" ' \
             '"$XTALWATCH_ALERT_WELL" "$XTALWATCH_ALERT_CLASS" > "$2"'
    CommandSink(CommandSinkConfig(argv=["sh", "-c", script, "sh", str(out), str(env_out)])).send(make_alert())
    data = json.loads(out.read_text())
    assert data["text"].startswith("needles in plate PL1") and data["fields"]["well"] == "B3"
    assert env_out.read_text() == "crystal_hit|PL1|B3|needles"


def test_command_sink_failure_and_timeout_raise() -> None:
    with pytest.raises(RuntimeError, match="exit status 3: no pager today"):
        CommandSink(CommandSinkConfig(argv=["sh", "-c", "echo no pager today >&2; exit 3"])).send(make_alert())
    with pytest.raises(RuntimeError, match="still running after 0.3 s"):
        CommandSink(CommandSinkConfig(argv=["sleep", "5"], timeout_seconds=0.3)).send(make_alert())


# -- secrets: the URL is never shown, user:password@ is basic auth ------------------------------
SECRET_PATH, SECRET_TOKEN = "T0001/B0002/SECRETPATH", "SECRETTOKEN"


def test_webhook_errors_never_show_the_url_path_or_token() -> None:
    with webhook_server(status=500) as server:
        url = server.url.replace("/hook", f"/services/{SECRET_PATH}?token={SECRET_TOKEN}")
        with pytest.raises(RuntimeError) as err:
            WebhookSink(WebhookSinkConfig(url=url)).send(make_alert())
    port = url.split(":")[2].split("/")[0]
    assert f"POST http://127.0.0.1:{port}/…: HTTP 500" in str(err.value)
    assert "SECRET" not in str(err.value)
    with pytest.raises(urllib.error.URLError) as refused:
        WebhookSink(WebhookSinkConfig(url=f"{refused_url()}/{SECRET_PATH}", timeout_seconds=2)).send(make_alert())
    assert "SECRET" not in str(refused.value) and "/…" in str(refused.value)


def test_dispatcher_log_lines_never_show_the_url(caplog: pytest.LogCaptureFixture) -> None:
    from xtalwatch.alerts.dispatch import AlertDispatcher
    from xtalwatch.config import AlertsConfig
    from xtalwatch.observe.metrics import Metrics

    with webhook_server(status=500) as server:
        url = server.url.replace("/hook", f"/{SECRET_PATH}?token={SECRET_TOKEN}")
        config = AlertsConfig(sinks=[WebhookSinkConfig(url=url)], retry_attempts=2, retry_initial_seconds=0.05)
        with caplog.at_level(logging.DEBUG, logger="xtalwatch"):
            dispatcher = AlertDispatcher(config, PluginRegistry.discover(), Metrics())
            dispatcher.publish(make_alert())
            deadline_wait = server.answered.wait(20)
            assert deadline_wait
            dispatcher.close(timeout=20)
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "gave up on crystal_hit" in text and "HTTP 500" in text
    assert "SECRET" not in text


def test_webhook_user_and_password_in_the_url_are_sent_as_basic_auth() -> None:
    import base64

    with webhook_server() as server:
        url = server.url.replace("http://", "http://robot:p%40ss%3Aword@")
        sink = WebhookSink(WebhookSinkConfig(url=url))
        sink.send(make_alert())
        [got] = server.received
    assert got.path == "/hook"
    assert got.headers["Authorization"] == "Basic " + base64.b64encode(b"robot:p@ss:word").decode()
    assert "robot" not in repr(sink) and "p%40ss" not in repr(sink)
    with webhook_server(status=403) as server:
        url = server.url.replace("http://", "http://robot:hunter2@")
        with pytest.raises(RuntimeError) as err:
            WebhookSink(WebhookSinkConfig(url=url)).send(make_alert())
    assert "HTTP 403" in str(err.value) and "hunter2" not in str(err.value) and "robot" not in str(err.value)


def test_every_log_line_has_its_urls_redacted(capsys: pytest.CaptureFixture[str]) -> None:
    from xtalwatch.logs import setup_logging

    setup_logging("INFO")
    log = logging.getLogger("xtalwatch.test_redaction")
    log.warning("posting to %s failed", f"https://hooks.example.test/services/{SECRET_PATH}")
    try:
        raise OSError(f"cannot reach https://u:{SECRET_TOKEN}@hooks.example.test/x")
    except OSError:
        log.exception("a future careless line: https://hooks.example.test/?token=%s", SECRET_TOKEN)
    log.info("serving /metrics on %s/metrics", "http://127.0.0.1:9108")
    err = capsys.readouterr().err
    assert "posting to https://hooks.example.test/… failed" in err
    assert "a future careless line: https://hooks.example.test/…" in err and "OSError: cannot reach" in err
    assert "serving /metrics on http://127.0.0.1:9108/metrics" in err  # the service's own endpoints are not secret
    assert "SECRET" not in err


def test_command_sink_failure_never_shows_a_url_the_program_printed() -> None:
    script = f"echo 'curl: (22) https://hooks.example.test/{SECRET_PATH}: 404' >&2; exit 22"
    with pytest.raises(RuntimeError) as err:
        CommandSink(CommandSinkConfig(argv=["sh", "-c", script])).send(make_alert())
    assert "exit status 22: curl: (22) https://hooks.example.test/…: 404" in str(err.value)
    assert "SECRET" not in str(err.value)
