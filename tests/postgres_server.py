"""A throwaway PostgreSQL server for the catalogue tests: Debian's binaries, a temp folder, an unprivileged user.

PostgreSQL refuses to run as root, and CI runs as root: then the server runs as the system user
``xtalwatch-pg`` (made by .ci/install-system-deps.sh) through ``runuser``. A guard process outlives a
``kill -9`` of the test process and stops the server and removes its folder when that process is gone.
"""

from __future__ import annotations

import atexit
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

__all__ = ["SERVER_USER", "SUPERUSER", "PostgresServer", "find_bin_dir", "missing_reason", "start_server"]

SERVER_USER = "xtalwatch-pg"  # the OS user the server runs as when the tests run as root
SUPERUSER = "xtalwatch"  # the database superuser role (initdb -U), the same whoever runs the server
BINARIES = ("initdb", "pg_ctl", "postgres")
START_TIMEOUT_SECONDS = 60


def find_bin_dir() -> Path | None:
    """The folder holding initdb, pg_ctl and postgres: Debian's newest version, else the one on PATH."""

    def version(path: Path) -> tuple[int, ...]:
        return tuple(int(part) for part in re.findall(r"\d+", path.parent.name))

    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=version, reverse=True)
    on_path = shutil.which("initdb")
    if on_path is not None:
        candidates.append(Path(on_path).resolve().parent)
    for folder in candidates:
        if all(os.access(folder / name, os.X_OK) for name in BINARIES):
            return folder
    return None


def missing_reason() -> str | None:
    """Why no test server can start here (None when one can): what is missing and how to get it."""
    if find_bin_dir() is None:
        return "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found: run .ci/install-system-deps.sh"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(SERVER_USER)
        except KeyError:
            return f"running as root but the user {SERVER_USER} is missing: run .ci/install-system-deps.sh"
    return None


def _run_as_prefix() -> list[str]:
    """The command prefix that drops root for the server's binaries; empty when not root."""
    return ["runuser", "-u", SERVER_USER, "--"] if os.geteuid() == 0 else []


def _clean_env() -> dict[str, str]:
    """The environment without PG* variables, which would point the binaries elsewhere."""
    return {key: value for key, value in os.environ.items() if not key.startswith("PG")}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class PostgresServer:
    """One running server in ``root`` (data, log and unix socket), listening on 127.0.0.1:``port``."""

    bin_dir: Path
    root: Path
    port: int
    guard: subprocess.Popen[bytes] = field(repr=False)

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root

    @property
    def log_file(self) -> Path:
        return self.root / "server.log"

    @property
    def postmaster_pid(self) -> int:
        """The postmaster's process id, first line of postmaster.pid."""
        return int((self.data_dir / "postmaster.pid").read_text().splitlines()[0])

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """A fresh, empty database with a unique name; returns its URL."""
        name = f"test_{secrets.token_hex(6)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, url: str) -> None:
        """Drop the database of ``url``, closing any connection the code under test left open."""
        name = url.rsplit("/", 1)[1]
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop(self) -> None:
        """Stop the server and remove its folder (the guard does both); safe to call twice."""
        if self.guard.stdin is not None and not self.guard.stdin.closed:
            self.guard.stdin.close()
        self.guard.wait(timeout=START_TIMEOUT_SECONDS)


def _start_guard(bin_dir: Path, root: Path) -> subprocess.Popen[bytes]:
    """The process that tears the server down once our end of its stdin closes, however we exit."""
    return subprocess.Popen(
        [sys.executable, __file__, "--guard", str(bin_dir), str(root)],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        start_new_session=True,  # a Ctrl-C to the test run must not kill it before it cleans up
    )


def _run(command: list[str], cwd: Path) -> None:
    result = subprocess.run(_run_as_prefix() + command, cwd=cwd, env=_clean_env(),
                            capture_output=True, text=True, timeout=START_TIMEOUT_SECONDS)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout}{result.stderr}")


def start_server(bin_dir: Path | None = None, base_dir: Path | None = None) -> PostgresServer:
    """initdb into a new temp folder and start a server there; it is stopped at exit at the latest."""
    reason = missing_reason()
    if reason is not None:
        raise RuntimeError(reason)
    bin_dir = bin_dir or find_bin_dir()
    assert bin_dir is not None  # missing_reason() said so
    root = Path(tempfile.mkdtemp(prefix="xtalwatch-pg-", dir=base_dir))
    guard = _start_guard(bin_dir, root)
    server = PostgresServer(bin_dir, root, 0, guard)
    atexit.register(server.stop)
    try:
        if os.geteuid() == 0:
            shutil.chown(root, user=SERVER_USER, group=pwd.getpwnam(SERVER_USER).pw_gid)
        _run([str(bin_dir / "initdb"), "-D", str(server.data_dir), "-U", SUPERUSER, "-A", "trust",
              "-E", "UTF8", "--no-locale", "--no-sync"], cwd=root)
        last_error = RuntimeError("pg_ctl start was not tried")
        for _attempt in range(3):  # the free port may be taken between looking and listening
            server.port = _free_port()
            _write_settings(server)
            try:
                _run([str(bin_dir / "pg_ctl"), "start", "-w", "-t", str(START_TIMEOUT_SECONDS),
                      "-D", str(server.data_dir), "-l", str(server.log_file)], cwd=root)
                return server
            except RuntimeError as error:
                last_error = error
        log = server.log_file.read_text(errors="replace")[-4000:] if server.log_file.exists() else ""
        raise RuntimeError(f"{last_error}\nserver log:\n{log}")
    except BaseException:
        server.stop()
        raise


def _write_settings(server: PostgresServer) -> None:
    """Listen on our socket folder and loopback only; durability off, memory small: a test server."""
    settings = {
        "listen_addresses": "'127.0.0.1'",
        "port": str(server.port),
        "unix_socket_directories": f"'{server.socket_dir}'",
        "fsync": "off",
        "synchronous_commit": "off",
        "full_page_writes": "off",
        "shared_buffers": "'16MB'",
    }
    text = "".join(f"{key} = {value}\n" for key, value in settings.items())
    # postgresql.auto.conf is read last, so rewriting it on a port retry replaces the earlier values.
    (server.data_dir / "postgresql.auto.conf").write_text(text)


def _guard(bin_dir: Path, root: Path) -> None:
    """Wait for EOF on stdin (the test process closed it or died), then stop the server and remove root."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.stdin.buffer.read()
    data_dir = root / "data"
    pid_file = data_dir / "postmaster.pid"
    if pid_file.exists():
        stopped = subprocess.run(_run_as_prefix() + [str(bin_dir / "pg_ctl"), "stop", "-m", "immediate",
                                                     "-w", "-D", str(data_dir)],
                                 cwd=root, env=_clean_env(), capture_output=True, timeout=START_TIMEOUT_SECONDS)
        if stopped.returncode != 0 and pid_file.exists():
            try:
                os.kill(int(pid_file.read_text().splitlines()[0]), signal.SIGKILL)
            except (OSError, ValueError, IndexError):
                pass
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__" and sys.argv[1:2] == ["--guard"]:
    _guard(Path(sys.argv[2]), Path(sys.argv[3]))
