"""Moving a site's catalogue from its SQLite file to PostgreSQL (``xtalwatch catalogue migrate``).

The SQLite file is only read: through a read-only connection, in one read transaction (one
consistent moment), while this process holds the state folder's lock so that no service writes
what the copy would miss. The target must be empty: a copy is never merged into another site's
rows. Every table is copied in foreign-key order with its ids, in batches (a 100,000-image
catalogue never sits in memory whole), in one PostgreSQL transaction that commits only when each
table holds as many rows as the source; the identity sequences then continue after the copied ids.
"""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path
from typing import Any

import psycopg
from tqdm import tqdm

from xtalwatch.store.catalogue import CATALOGUE_FILE, SCHEMA_VERSION, Catalogue, schema_version
from xtalwatch.store.errors import CatalogueNotCopied
from xtalwatch.store.lock import hold_state_lock
from xtalwatch.store.postgres import PgConnection, redacted

__all__ = ["copy_catalogue", "copy_order"]

BATCH_ROWS = 5000  # rows read and written at a time: a few MB, and few round trips


def copy_catalogue(state_dir: Path, url: str, *, imager: str, progress: bool = False) -> dict[str, int]:
    """Copy the SQLite catalogue of ``state_dir`` into the empty PostgreSQL database at ``url``; rows per table.

    ``imager`` is written where a plate or image names none (catalogued before sites had imagers).
    Raises ``StateBusy`` while a service holds the state folder, ``CatalogueNotCopied`` when the
    source is not at this xtalwatch's schema version, the target holds rows, or the copy fails,
    ``CatalogueUnreachable`` when PostgreSQL cannot be reached, ``FileNotFoundError`` when there is no catalogue.
    """
    if not (state_dir / CATALOGUE_FILE).is_file():  # before the lock, which would make the folder
        raise FileNotFoundError(f"{state_dir}: no catalogue here ({CATALOGUE_FILE} missing)")
    lock = hold_state_lock(state_dir, "xtalwatch catalogue migrate")
    try:
        src = Catalogue.open_readonly(state_dir)
        try:
            src.execute("BEGIN")  # one snapshot for every read below
            _refuse_other_schema(src, state_dir)
            Catalogue.open_readonly(state_dir, url).close()  # unreachable: one line at once, not the pool's 30 s of retries
            target = Catalogue(state_dir, url=url, pool_size=2, imager=imager)
            try:
                with target.transaction() as conn:
                    return _copy(src, conn, url, imager, progress)  # type: ignore[arg-type]
            finally:
                target.close()
        finally:
            src.close()
    finally:
        lock.release()


def _refuse_other_schema(src: sqlite3.Connection, state_dir: Path) -> None:
    version = schema_version(src)
    if version < SCHEMA_VERSION:
        raise CatalogueNotCopied(
            f"{state_dir}: the catalogue is at schema version {version}, this xtalwatch writes {SCHEMA_VERSION}: "
            "start the service on it once (it moves the schema forward), stop it, then migrate")
    if version > SCHEMA_VERSION:
        raise CatalogueNotCopied(f"{state_dir}: the catalogue is at schema version {version}, newer than this "
                                 f"xtalwatch ({SCHEMA_VERSION}): upgrade xtalwatch, then migrate")


def _copy(src: sqlite3.Connection, dst: PgConnection, url: str, imager: str, progress: bool) -> dict[str, int]:
    tables = copy_order(src)
    # A second migrate started at the same time waits here, then finds the rows this one copied.
    dst.execute(f"LOCK TABLE {', '.join(tables)} IN EXCLUSIVE MODE")
    for table in tables:
        held = dst.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]  # type: ignore[index]
        if held:
            raise CatalogueNotCopied(f"{redacted(url)} already holds {held} rows in {table}: the catalogue is copied "
                                     "into an empty database only, never merged")
    counts = {t: int(src.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]) for t in tables}
    with tqdm(total=sum(counts.values()), unit="row", desc="copying", file=sys.stderr, disable=not progress) as bar:
        for table in tables:
            try:
                _copy_table(src, dst, table, imager, bar)
            except psycopg.Error as exc:
                raise CatalogueNotCopied(f"copying {table} into {redacted(url)} failed, nothing was copied: "
                                         f"{str(exc).strip().splitlines()[0]}") from None
    _continue_identities(dst)
    copied = {t: int(dst.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]) for t in tables}  # type: ignore[index]
    wrong = [f"{t} {counts[t]} → {copied[t]}" for t in tables if copied[t] != counts[t]]
    if wrong:
        raise CatalogueNotCopied(f"row counts differ after the copy ({', '.join(wrong)}): nothing was copied")
    return copied


def copy_order(src: sqlite3.Connection) -> list[str]:
    """Every table of the catalogue, each after the tables its foreign keys reference."""
    names = [r[0] for r in src.execute("SELECT name FROM sqlite_master WHERE type='table' "
                                       "AND name NOT LIKE 'sqlite_%' ORDER BY name")]
    parents = {t: {r[2] for r in src.execute(f"PRAGMA foreign_key_list('{t}')")} - {t} for t in names}
    order: list[str] = []
    while len(order) < len(names):
        ready = [t for t in names if t not in order and parents[t] <= set(order)]
        if not ready:
            raise CatalogueNotCopied(f"the tables' foreign keys form a cycle: {sorted(set(names) - set(order))}")
        order += ready
    return order


def _copy_table(src: sqlite3.Connection, dst: PgConnection, table: str, imager: str, bar: tqdm) -> None:
    """Copy ``table`` in rowid order, ``BATCH_ROWS`` at a time, ids and all."""
    columns = [r[1] for r in src.execute(f"PRAGMA table_info('{table}')")]
    picked = ", ".join("COALESCE(imager, ?)" if c == "imager" else c for c in columns)
    params: tuple[Any, ...] = (imager,) if "imager" in columns else ()
    insert = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
    # A reference to a later row of the same table (an image's previous version, normally older)
    # would fail its foreign key: it is written once that row is there.
    self_refs = [columns.index(r[3]) for r in src.execute(f"PRAGMA foreign_key_list('{table}')")
                 if r[2] == table and r[4] == "id"]
    later: list[tuple[int, int, Any]] = []
    after = -(2**63)
    while True:
        rows = src.execute(f"SELECT rowid, {picked} FROM {table} WHERE rowid > ? ORDER BY rowid LIMIT ?",
                           (*params, after, BATCH_ROWS)).fetchall()
        if not rows:
            break
        batch = []
        for rowid, *values in rows:
            for i in self_refs:
                if values[i] is not None and values[i] > rowid:
                    later.append((rowid, i, values[i]))
                    values[i] = None
            batch.append(values)
        dst.executemany(insert, batch)
        after = rows[-1][0]
        bar.update(len(rows))
    for rowid, i, value in later:
        dst.execute(f"UPDATE {table} SET {columns[i]} = ? WHERE id = ?", (value, rowid))


def _continue_identities(dst: PgConnection) -> None:
    """Set each identity column's sequence past the copied ids, so the next row gets a fresh one."""
    identities = dst.execute("SELECT table_name, column_name FROM information_schema.columns "
                             "WHERE table_schema = current_schema() AND is_identity = 'YES'").fetchall()
    for table, column in identities:
        dst.execute(f"SELECT setval(pg_get_serial_sequence(?, ?), COALESCE(MAX({column}), 0) + 1, false) FROM {table}",
                    (table, column))
