"""sd_notify over a real AF_UNIX datagram socket, as systemd would listen."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from xtalwatch.observe import sdnotify


class Listener:
    """A datagram socket standing in for systemd's notify socket."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        sock.settimeout(5)

    def receive(self) -> str:
        return self.sock.recv(4096).decode()

    def nothing_waiting(self) -> bool:
        self.sock.settimeout(0.05)
        try:
            self.sock.recv(4096)
        except TimeoutError:
            return True
        finally:
            self.sock.settimeout(5)
        return False


@pytest.fixture
def listener(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Listener]:
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    try:
        yield Listener(sock)
    finally:
        sock.close()


def test_ready_with_status(listener: Listener) -> None:
    assert sdnotify.ready("watching /srv/imager\n(12 files)")
    assert listener.receive() == "READY=1\nSTATUS=watching /srv/imager (12 files)"


@pytest.mark.parametrize(("call", "expected"), [
    (sdnotify.stopping, "STOPPING=1"),
    (sdnotify.watchdog, "WATCHDOG=1"),
    (lambda: sdnotify.status("ingesting 3 files"), "STATUS=ingesting 3 files"),
    (lambda: sdnotify.extend_timeout(90), "EXTEND_TIMEOUT_USEC=90000000"),
    (lambda: sdnotify.notify("READY=1"), "READY=1"),
])
def test_each_message(listener: Listener, call, expected: str) -> None:
    assert call() is True
    assert listener.receive() == expected


def test_abstract_socket_name(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"xtalwatch-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(b"\0" + name.encode())
        sock.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", f"@{name}")
        assert sdnotify.notify("READY=1")
        assert sock.recv(4096) == b"READY=1"


def test_not_under_systemd_is_a_quiet_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sdnotify.ready() is False
    assert sdnotify.watchdog() is False


def test_dead_socket_returns_false_without_raising(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "nobody-listens.sock"))
    assert sdnotify.notify("WATCHDOG=1") is False


def test_malformed_message_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="KEY=VALUE"):
        sdnotify.notify("READY")
    with pytest.raises(ValueError, match="> 0"):
        sdnotify.extend_timeout(0)


def test_watchdog_interval_from_environment() -> None:
    assert sdnotify.watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 30.0
    assert sdnotify.watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}) == 30.0
    assert sdnotify.watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None  # someone else's
    assert sdnotify.watchdog_interval({}) is None
    assert sdnotify.watchdog_interval({"WATCHDOG_USEC": "0"}) is None
    assert sdnotify.watchdog_interval({"WATCHDOG_USEC": "soon"}) is None


def test_keepalive_pings_at_half_the_period(listener: Listener) -> None:
    now = [100.0]
    keepalive = sdnotify.KeepAlive(interval=10.0, clock=lambda: now[0])
    assert keepalive.enabled
    assert keepalive.tick()
    assert listener.receive() == "WATCHDOG=1"
    now[0] += 4.9
    assert not keepalive.tick()
    assert listener.nothing_waiting()
    now[0] += 0.2
    assert keepalive.tick()
    assert listener.receive() == "WATCHDOG=1"


def test_keepalive_reads_watchdog_usec(listener: Listener, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "2000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    keepalive = sdnotify.KeepAlive()
    assert keepalive.interval == 2.0
    assert keepalive.tick()
    assert listener.receive() == "WATCHDOG=1"


def test_keepalive_without_watchdog_does_nothing(listener: Listener, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    keepalive = sdnotify.KeepAlive()
    assert not keepalive.enabled
    assert not keepalive.tick()
    assert listener.nothing_waiting()
