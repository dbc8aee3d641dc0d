"""Real servers for the alert sink tests: an HTTP endpoint and a tiny SMTP server, both on loopback."""

from __future__ import annotations

import base64
import json
import socket
import socketserver
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from xtalwatch.alerts.alert import Alert
from xtalwatch.config import PluginSinkConfig


def make_alert(key: str = "k1", kind: str = "crystal_hit", **fields: Any) -> Alert:
    base = {"plate": "PL1", "well": "B3", "drop": 2, "class": "needles", "confidence": 0.93,
            "image_path": "PL1/B3_2.jpg"}
    return Alert(kind, "info", f"Crystal hit: PL1 B3 ({key})", "needles in plate PL1 well B3 drop 2 (confidence 93%)",
                 {**base, **fields}, key)


# -- HTTP ---------------------------------------------------------------------------------------
@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    at: float  # time.monotonic() when the request arrived


@dataclass
class WebhookServer:
    """Answers POSTs with ``status``; while ``hold`` is clear, requests wait before being answered."""

    url: str = ""
    status: int = 200
    received: list[Received] = field(default_factory=list)
    hold: threading.Event = field(default_factory=threading.Event)
    answered: threading.Event = field(default_factory=threading.Event)
    arrived: threading.Event = field(default_factory=threading.Event)


@contextmanager
def webhook_server(status: int = 200, hold: bool = False) -> Iterator[WebhookServer]:
    state = WebhookServer(status=status)
    if not hold:
        state.hold.set()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            length = int(self.headers.get("Content-Length", 0))
            body = json.loads(self.rfile.read(length))
            state.received.append(Received(self.path, dict(self.headers), body, time.monotonic()))
            state.arrived.set()
            state.hold.wait(30)
            payload = b'{"ok": true}' if state.status < 300 else b"internal trouble"
            try:
                self.send_response(state.status)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up waiting (a timeout test)
                pass
            state.answered.set()

        def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    try:
        yield state
    finally:
        state.hold.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


def refused_url() -> str:
    """A loopback URL where nothing listens (the port was just free)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/hook"


# -- SMTP ---------------------------------------------------------------------------------------
@dataclass
class Mail:
    sender: str
    recipients: list[str]
    data: str
    login: tuple[str, str] | None


@dataclass
class SmtpServer:
    host: str = "127.0.0.1"
    port: int = 0
    mails: list[Mail] = field(default_factory=list)
    credentials: tuple[str, str] | None = None  # required login, when set


@contextmanager
def smtp_server(credentials: tuple[str, str] | None = None) -> Iterator[SmtpServer]:
    """Just enough RFC 5321 for smtplib: EHLO, AUTH PLAIN, MAIL, RCPT, DATA, RSET, NOOP, QUIT."""
    state = SmtpServer(credentials=credentials)

    class Handler(socketserver.StreamRequestHandler):
        def reply(self, line: str) -> None:
            self.wfile.write(line.encode() + b"\r\n")

        def handle(self) -> None:
            sender, recipients, login = "", [], None
            self.reply("220 test ESMTP")
            while True:
                raw = self.rfile.readline()
                if not raw:
                    return
                line = raw.decode().rstrip("\r\n")
                verb = line.split(" ", 1)[0].upper()
                if verb in ("EHLO", "HELO"):
                    self.wfile.write(b"250-test\r\n250-AUTH PLAIN\r\n250 8BITMIME\r\n")
                elif verb == "AUTH":
                    _, mech, blob = (line.split(" ") + [""])[:3]
                    parts = base64.b64decode(blob).decode().split("\0")
                    if mech.upper() == "PLAIN" and len(parts) == 3 and tuple(parts[1:]) == state.credentials:
                        login = (parts[1], parts[2])
                        self.reply("235 ok")
                    else:
                        self.reply("535 bad credentials")
                elif verb == "MAIL":
                    if state.credentials is not None and login is None:
                        self.reply("530 authentication required")
                        continue
                    sender = line.split(":", 1)[1].split()[0].strip("<>")
                    self.reply("250 ok")
                elif verb == "RCPT":
                    recipients.append(line.split(":", 1)[1].strip().strip("<>"))
                    self.reply("250 ok")
                elif verb == "DATA":
                    self.reply("354 go ahead")
                    lines = []
                    while (chunk := self.rfile.readline()) not in (b".\r\n", b""):
                        lines.append(chunk.decode())
                    state.mails.append(Mail(sender, recipients, "".join(lines), login))
                    sender, recipients = "", []
                    self.reply("250 queued")
                elif verb in ("RSET", "NOOP"):
                    self.reply("250 ok")
                elif verb == "QUIT":
                    self.reply("221 bye")
                    return
                else:
                    self.reply("502 not implemented")

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    state.port = server.server_address[1]
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


# -- an in-memory sink plugin, loaded by ``module:attr`` like a lab's own would be -------------
class ListSink:
    """Keeps what it is sent; ``options.fail_first`` makes its first N sends raise."""

    name = "list"
    kind = "sink"

    def __init__(self, config: PluginSinkConfig):
        self.sent: list[Alert] = []
        self.attempts = 0
        self.fail_first = int(config.options.get("fail_first", 0))
        self.delay = float(config.options.get("delay_seconds", 0))

    def send(self, alert: Alert) -> None:
        self.attempts += 1
        if self.delay:
            time.sleep(self.delay)
        if self.attempts <= self.fail_first:
            raise ConnectionError(f"attempt {self.attempts} fails on purpose")
        self.sent.append(alert)


class NotASink:
    """Loads and constructs fine, but has no ``send``: the dispatcher must refuse it by name."""

    name = "not-a-sink"
    kind = "sink"

    def __init__(self, config: PluginSinkConfig):
        self.config = config
