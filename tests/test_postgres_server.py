"""The PostgreSQL fixtures: a real server, run unprivileged, a fresh empty database for each test."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
from postgres_server import SUPERUSER, PostgresServer

seen_databases: list[str] = []


def user_tables(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall()
    return [name for (name,) in rows]


def test_server_is_up_on_loopback_as_the_fixed_superuser(postgres_server: PostgresServer, postgres_url: str) -> None:
    assert postgres_url.startswith(f"postgresql://{SUPERUSER}@127.0.0.1:{postgres_server.port}/")
    with psycopg.connect(postgres_url) as conn:
        user, database = conn.execute("SELECT current_user, current_database()").fetchone()
        assert conn.execute("SHOW server_encoding").fetchone() == ("UTF8",)
    assert user == SUPERUSER
    assert postgres_url.endswith(f"/{database}")


def test_server_process_does_not_run_as_root(postgres_server: PostgresServer) -> None:
    status = Path(f"/proc/{postgres_server.postmaster_pid}/status").read_text()
    uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
    real, effective = (int(value) for value in uid_line.split()[1:3])
    assert real != 0 and effective != 0


@pytest.mark.parametrize("turn", [1, 2])
def test_each_test_gets_its_own_empty_database(postgres_url: str, turn: int) -> None:
    assert user_tables(postgres_url) == []
    with psycopg.connect(postgres_url) as conn:
        conn.execute("CREATE TABLE left_behind (id int)")
    assert postgres_url not in seen_databases
    seen_databases.append(postgres_url)


def test_advisory_lock(postgres_url: str) -> None:
    with psycopg.connect(postgres_url) as holder, psycopg.connect(postgres_url) as other:
        assert holder.execute("SELECT pg_try_advisory_lock(1)").fetchone() == (True,)
        assert other.execute("SELECT pg_try_advisory_lock(1)").fetchone() == (False,)
        assert holder.execute("SELECT pg_advisory_unlock(1)").fetchone() == (True,)
        assert other.execute("SELECT pg_try_advisory_lock(1)").fetchone() == (True,)


def test_skip_locked_passes_over_a_row_another_connection_holds(postgres_url: str) -> None:
    with psycopg.connect(postgres_url, autocommit=True) as setup:
        setup.execute("CREATE TABLE jobs (id int PRIMARY KEY)")
        setup.execute("INSERT INTO jobs VALUES (1), (2)")
    with psycopg.connect(postgres_url) as holder, psycopg.connect(postgres_url) as other:
        held = holder.execute("SELECT id FROM jobs ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED").fetchall()
        taken = other.execute("SELECT id FROM jobs ORDER BY id FOR UPDATE SKIP LOCKED").fetchall()
        assert held == [(1,)]
        assert taken == [(2,)]
        holder.rollback()
        assert other.execute("SELECT id FROM jobs ORDER BY id FOR UPDATE SKIP LOCKED").fetchall() == [(1,), (2,)]
