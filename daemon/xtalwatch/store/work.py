"""Who works on what, on a site where several agents share one catalogue: the ``agents`` leases and image claims.

An agent is one running ``xtalwatch run``, named afresh at each start. It registers in
``agents`` and renews ``seen_at`` every third of ``site.lease_seconds``. The agent that
catalogues a new image claims it (``images.claimed_by``) and preprocesses and classifies it.
An image is unfinished while it is ``catalogued``, or ``preprocessed`` with no prediction yet.
Unfinished work that nobody claims, or whose agent has not renewed its lease for
``lease_seconds`` (killed, host down), is taken over by a live agent of the same imager, which
is the one that can read the file. The claim is one transaction: on PostgreSQL with
``FOR UPDATE SKIP LOCKED``, so agents claiming together never take the same image. On SQLite
there is one writer and the state lock allows one service, so the claim needs no row locks.

``claimed_by`` stays on a finished image: it records which agent did the work.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg

from xtalwatch.store.catalogue import Db, dialect_of, fetch_rows, writing
from xtalwatch.store.events import insert_event
from xtalwatch.store.paths import from_db
from xtalwatch.store.postgres import RETRAIN_LOCK, advisory_lock

__all__ = ["ClaimedImage", "WORK_TAKEN_OVER", "register_agent", "renew_lease", "retire_agent", "claim_unfinished",
           "live_agents", "AGENTS_KEPT_SECONDS", "claim_retrain_slot", "site_training_lock"]

WORK_TAKEN_OVER = "work_taken_over"  # the event kind: an agent took over another's unfinished images
AGENTS_KEPT_SECONDS = 7 * 86400.0  # agents not seen for this long are forgotten at the next registration

_UNFINISHED = """i.status IN ('catalogued', 'preprocessed')
    AND NOT EXISTS (SELECT 1 FROM predictions p WHERE p.image_id = i.id)"""


@dataclass(frozen=True)
class ClaimedImage:
    """An unfinished image an agent has just claimed; ``crop_path`` is set when it was already preprocessed."""

    image_id: int
    path: str
    sha256: str
    status: str
    completed_at: float | None
    crop_path: str | None
    previous_agent: str | None


def register_agent(db: Db, name: str, *, imager: str, host: str, pid: int, now: float | None = None) -> None:
    """Record agent ``name`` as live (its lease starts now), and forget agents gone for a week."""
    now = time.time() if now is None else now
    with writing(db) as conn:
        conn.execute("DELETE FROM agents WHERE seen_at < ?", (now - AGENTS_KEPT_SECONDS,))
        conn.execute("""INSERT INTO agents (name, imager, host, pid, started_at, seen_at) VALUES (?, ?, ?, ?, ?, ?)
                        ON CONFLICT (name) DO UPDATE SET seen_at = excluded.seen_at""",
                     (name, imager, host, pid, now, now))


def renew_lease(db: Db, name: str, now: float | None = None) -> None:
    """Say agent ``name`` is still alive: its claims stay its own for another lease."""
    with writing(db) as conn:
        conn.execute("UPDATE agents SET seen_at = ? WHERE name = ?", (time.time() if now is None else now, name))


def retire_agent(db: Db, name: str) -> int:
    """A clean stop: hand back the agent's unfinished claims at once (no lease to wait out); returns how many."""
    with writing(db) as conn:
        cursor = conn.execute(f"UPDATE images SET claimed_by = NULL WHERE claimed_by = ? AND id IN "
                              f"(SELECT i.id FROM images i WHERE i.claimed_by = ? AND {_UNFINISHED})", (name, name))
        conn.execute("UPDATE agents SET seen_at = ? WHERE name = ?", (0.0, name))
        return max(cursor.rowcount, 0)


def claim_unfinished(db: Db, agent: str, imager: str, *, lease_seconds: float, limit: int = 500,
                     now: float | None = None) -> list[ClaimedImage]:
    """Claim up to ``limit`` unfinished images of ``imager`` that no live agent holds, oldest first.

    An image held by an agent whose lease ran out is taken over; each such takeover is stored as
    one ``work_taken_over`` event per previous agent, with the number of images.
    """
    now = time.time() if now is None else now
    lock = " FOR UPDATE OF i SKIP LOCKED" if dialect_of(db) == "postgresql" else ""
    with writing(db) as conn:
        # No join in the locking query: when a row this query waited for was claimed meanwhile, PostgreSQL
        # re-checks the WHERE on the new row, and only subqueries (not a join's other side) are re-read then.
        rows = conn.execute(
            f"""SELECT i.id, i.path, i.sha256, i.status, i.completed_at,
                       (SELECT pp.crop_path FROM preprocess pp WHERE pp.image_id = i.id), i.claimed_by
                FROM images i
                WHERE i.imager = ? AND {_UNFINISHED}
                  AND (i.claimed_by IS NULL OR NOT EXISTS (
                       SELECT 1 FROM agents a WHERE a.name = i.claimed_by AND a.seen_at >= ?))
                ORDER BY i.id LIMIT ?{lock}""", (imager, now - lease_seconds, limit)).fetchall()
        if not rows:
            return []
        ids = [int(r[0]) for r in rows]
        conn.execute(f"UPDATE images SET claimed_by = ? WHERE id IN ({','.join('?' * len(ids))})", (agent, *ids))
        taken: dict[str, int] = {}
        for r in rows:
            if r[6] is not None:
                taken[r[6]] = taken.get(r[6], 0) + 1
        for previous, n in sorted(taken.items()):
            insert_event(conn, WORK_TAKEN_OVER, {"from": previous, "by": agent, "imager": imager, "images": n},
                         created_at=now)
    return [ClaimedImage(int(r[0]), from_db(r[1]), r[2], r[3], r[4], r[5], r[6]) for r in rows]


def live_agents(db: Db, *, lease_seconds: float, now: float | None = None) -> list[dict[str, object]]:
    """Every agent of the site, newest first, with ``alive`` (its lease is current) and its unfinished claims."""
    now = time.time() if now is None else now
    rows = fetch_rows(db, f"""
        SELECT a.name, a.imager, a.host, a.pid, a.started_at, a.seen_at,
               (SELECT COUNT(*) FROM images i WHERE i.claimed_by = a.name AND {_UNFINISHED}) AS holding
        FROM agents a ORDER BY a.imager, a.started_at DESC""")
    return [{"name": r[0], "imager": r[1], "host": r[2], "pid": int(r[3]), "started_at": r[4], "seen_at": r[5],
             "alive": r[5] >= now - lease_seconds, "holding": int(r[6])} for r in rows]


def claim_retrain_slot(db: Db, slot: str, agent: str, now: float | None = None) -> str | None:
    """Take scheduled retraining slot ``slot`` for ``agent``: None when taken now, else the agent that had it.

    Every host of a site runs the same schedule; the first to claim a slot trains, the others do not.
    """
    now = time.time() if now is None else now
    with writing(db) as conn:
        won = conn.execute("INSERT INTO retrain_slots (slot, agent, started_at) VALUES (?, ?, ?) "
                           "ON CONFLICT DO NOTHING RETURNING slot", (slot, agent, now)).fetchone()
        if won is not None:
            return None
        return str(conn.execute("SELECT agent FROM retrain_slots WHERE slot = ?", (slot,)).fetchone()[0])


@contextmanager
def site_training_lock(url: str) -> Iterator[bool]:
    """Hold the site's training advisory lock on a connection of its own; yields False when another host holds it."""
    with psycopg.connect(url, autocommit=True, application_name="xtalwatch-retrain", connect_timeout=30) as conn, \
            advisory_lock(conn, RETRAIN_LOCK, wait=False) as got:
        yield got
