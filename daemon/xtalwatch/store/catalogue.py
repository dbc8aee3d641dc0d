"""The SQLite catalogue: the connection, the schema, and ingest's tables (plates, wells, images,
the files they came from, rejected files, preprocessing results).

One writer: a single connection guarded by a lock owns every write, in WAL mode so that
readers (``xtalwatch status``, the web app) never block it. The schema is versioned in
``PRAGMA user_version`` and moved forward by the numbered migrations below, never backward.

An image is its content (sha256). ``files`` maps each path to the image it holds now, so a
copy or a touched file adds no image, and the same path with new content is a new version.
A path is stored as TEXT when it is valid UTF-8 and otherwise as a BLOB of its exact bytes
(``store/paths.py``), so any name a filesystem allows is catalogued losslessly.

Opening refuses a damaged file (empty, not SQLite, truncated, failing ``quick_check``, or with
another schema) with one line and never writes it; a new catalogue is built beside the target
and renamed into place, so an empty file always means damage. Backups: ``store/backup.py``.

Every named query in the store takes ``db``: the service's ``Catalogue`` (a read runs under its
writer lock, a write in its own transaction), or a ``sqlite3.Connection``: a read-only one from
``Catalogue.open_readonly`` for reports, or the one ``Catalogue.transaction()`` yields, so that
several named queries make one atomic unit. ``fetch_rows``, ``fetch_value`` and ``writing`` are
how the store's modules run their SQL on either; no module outside ``store`` writes SQL.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from xtalwatch.files import fsync_dir, fsync_file
from xtalwatch.plate import ImageIdentity
from xtalwatch.preprocess.probe import Probe
from xtalwatch.store.errors import CatalogueDamaged, CatalogueTooNew, CatalogueUnreachable
from xtalwatch.store.paths import from_db, shown, to_db
from xtalwatch.store.postgres import (
    MIGRATION_LOCK,
    PgConnection,
    advisory_lock,
    open_pool,
    pg_schema,
    redacted,
)

if TYPE_CHECKING:
    from xtalwatch.config import Settings

__all__ = ["Catalogue", "CatalogueDamaged", "CATALOGUE_FILE", "catalogue_problems", "SCHEMA_VERSION", "NewImage", "Db", "Connection", "dialect_of", "schema_version", "last_catalogued_at",
           "image_id_by_id", "image_id_by_path", "image_id_by_sha256", "catalogued_images", "usable_images",
           "count_usable_images", "cropped_images"]

CATALOGUE_FILE = "catalogue.sqlite3"

_MIGRATIONS: list[str] = [
    # 1: the catalogue proper, with room for what later stages store.
    """
    CREATE TABLE plates (
        id INTEGER PRIMARY KEY,
        barcode TEXT NOT NULL UNIQUE,
        adapter TEXT,
        first_seen REAL NOT NULL
    );
    CREATE TABLE wells (
        id INTEGER PRIMARY KEY,
        plate_id INTEGER NOT NULL REFERENCES plates(id),
        name TEXT NOT NULL,
        UNIQUE (plate_id, name)
    );
    CREATE TABLE images (
        id INTEGER PRIMARY KEY,
        sha256 TEXT NOT NULL UNIQUE,
        path TEXT NOT NULL,
        version INTEGER NOT NULL DEFAULT 1,
        previous_id INTEGER REFERENCES images(id),
        plate_id INTEGER NOT NULL REFERENCES plates(id),
        well_id INTEGER REFERENCES wells(id),
        drop_no INTEGER,
        inspection INTEGER,
        imaged_at TEXT,
        imaging TEXT NOT NULL,
        adapter TEXT,
        identity_note TEXT,
        format TEXT NOT NULL,
        width INTEGER NOT NULL,
        height INTEGER NOT NULL,
        size_bytes INTEGER NOT NULL,
        completed_at REAL,
        catalogued_at REAL NOT NULL,
        status TEXT NOT NULL DEFAULT 'catalogued'
    );
    CREATE INDEX images_well ON images (well_id, inspection);
    CREATE INDEX images_status ON images (status);
    CREATE TABLE files (
        path TEXT PRIMARY KEY,
        image_id INTEGER NOT NULL REFERENCES images(id),
        size_bytes INTEGER NOT NULL,
        changed_ns INTEGER NOT NULL,
        seen_at REAL NOT NULL
    );
    CREATE TABLE rejected (
        path TEXT PRIMARY KEY,
        reason TEXT NOT NULL,
        detail TEXT NOT NULL,
        size_bytes INTEGER,
        changed_ns INTEGER,
        first_seen REAL NOT NULL,
        last_seen REAL NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 1
    );
    CREATE TABLE predictions (
        id INTEGER PRIMARY KEY,
        image_id INTEGER NOT NULL REFERENCES images(id),
        model_version TEXT NOT NULL,
        label TEXT NOT NULL,
        confidence REAL,
        probabilities TEXT,
        created_at REAL NOT NULL,
        UNIQUE (image_id, model_version)
    );
    CREATE TABLE labels (
        id INTEGER PRIMARY KEY,
        image_id INTEGER NOT NULL REFERENCES images(id),
        label TEXT NOT NULL,
        labeller TEXT NOT NULL DEFAULT '',
        created_at REAL NOT NULL,
        UNIQUE (image_id, labeller)
    );
    CREATE TABLE models (
        version TEXT PRIMARY KEY,
        created_at REAL NOT NULL,
        status TEXT NOT NULL,
        metrics TEXT,
        path TEXT
    );
    CREATE TABLE events (
        id INTEGER PRIMARY KEY,
        kind TEXT NOT NULL,
        created_at REAL NOT NULL,
        plate_id INTEGER REFERENCES plates(id),
        well_id INTEGER REFERENCES wells(id),
        image_id INTEGER REFERENCES images(id),
        payload TEXT
    );
    """,
    # 2: preprocessing results, one row per image.
    """
    CREATE TABLE preprocess (
        image_id INTEGER PRIMARY KEY REFERENCES images(id),
        method TEXT,
        flags TEXT NOT NULL DEFAULT '',
        crop_path TEXT,
        error TEXT,
        result TEXT NOT NULL,
        created_at REAL NOT NULL
    );
    """,
    # 3: each well's current outcome, so that a restart neither forgets a hit nor announces it again.
    """
    CREATE TABLE well_outcomes (
        well_id INTEGER PRIMARY KEY REFERENCES wells(id),
        label TEXT,
        confidence REAL,
        image_id INTEGER REFERENCES images(id),
        model_version TEXT,
        updated_at REAL NOT NULL
    );
    """,
    # 4: the review app. A call below classify.uncertain_below is marked, and indexes serve the pages'
    # queries (a 1,536-well plate map among 100,000 images, the hits feed, labels per image).
    """
    ALTER TABLE predictions ADD COLUMN uncertain INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX images_plate ON images (plate_id, inspection);
    CREATE INDEX images_previous ON images (previous_id);
    CREATE INDEX predictions_image ON predictions (image_id, created_at);
    CREATE INDEX events_kind ON events (kind, id);
    CREATE INDEX labels_image ON labels (image_id);
    """,
    # 5: a site. Several imagers (and hosts) share one catalogue: each plate and image names the imager
    # it came from, and an image being preprocessed and classified is claimed by one live agent (a
    # running ``xtalwatch run``), which renews its lease in ``agents``. ``retrain_slots`` makes one
    # scheduled retraining per slot, whichever host's timer fires first.
    """
    ALTER TABLE plates ADD COLUMN imager TEXT;
    ALTER TABLE images ADD COLUMN imager TEXT;
    ALTER TABLE images ADD COLUMN claimed_by TEXT;
    CREATE INDEX images_work ON images (imager, status, id);
    CREATE TABLE agents (
        name TEXT PRIMARY KEY,
        imager TEXT NOT NULL,
        host TEXT NOT NULL,
        pid INTEGER NOT NULL,
        started_at REAL NOT NULL,
        seen_at REAL NOT NULL
    );
    CREATE TABLE retrain_slots (
        slot TEXT PRIMARY KEY,
        agent TEXT NOT NULL,
        started_at REAL NOT NULL
    );
    """,
]

SCHEMA_VERSION = len(_MIGRATIONS)


@dataclass(frozen=True)
class NewImage:
    """What ingest stored for a file: ``outcome`` is new, version, duplicate or unchanged."""

    outcome: str
    image_id: int
    sha256: str


_REMEDY = "restore a backup with `xtalwatch catalogue restore FILE` (see `xtalwatch catalogue check`), " \
          "or move it away to start empty"
_SQLITE_MAGIC = b"SQLite format 3\x00"


def _header_problem(path: Path) -> str | None:
    """What is wrong with the file itself, judged from its size and its 100-byte header; None when nothing.

    A fresh install has no file at all (a new catalogue is built beside it and renamed into place),
    so an empty file is damage, never a catalogue to start afresh in.
    """
    size = path.stat().st_size
    if size == 0:
        return "0 bytes; a fresh install has no file at all"
    with open(path, "rb") as handle:
        header = handle.read(100)
    if len(header) < 100 or not header.startswith(_SQLITE_MAGIC):
        return f"not an SQLite database ({size} bytes; it does not start with SQLite's header)"
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(header[28:32], "big")
    # The header's page count is trusted only when its change counter matches (the file format's
    # rule), and a non-empty WAL may still hold pages a checkpoint was writing when it stopped.
    wal = path.with_name(path.name + "-wal")
    wal_empty = not wal.exists() or wal.stat().st_size == 0
    if header[24:28] == header[92:96] and pages and wal_empty and size < pages * page_size:
        return f"truncated ({size} bytes of {pages * page_size})"
    return None


def catalogue_problems(path: Path, *, full: bool = True) -> list[str]:
    """Every problem found in the catalogue at ``path``, read-only; [] when it is sound.

    ``full``: ``PRAGMA integrity_check`` (every page and index) instead of ``quick_check``.
    Also checks that the tables and columns are those of the schema version it claims.
    """
    if not path.is_file():
        return [f"{path}: no catalogue here"]
    problem = _header_problem(path)
    if problem is not None:
        return [f"{path}: {problem}"]
    try:
        conn = _connect(path, readonly=True)
    except sqlite3.DatabaseError as exc:
        return [f"{path}: cannot be opened: {exc}"]
    try:
        rows = conn.execute("PRAGMA integrity_check" if full else "PRAGMA quick_check").fetchall()
        # A row may hold several lines ("*** in database main ***\nPage 3: ..."): one problem a line.
        found = [f"{path}: {line}" for r in rows if r[0] != "ok" for line in r[0].splitlines()
                 if not line.startswith("*** in database")]
        return found or [f"{path}: {p}" for p in _schema_problems(conn)]
    except sqlite3.DatabaseError as exc:
        return [f"{path}: {exc}"]
    finally:
        conn.close()


def _schema_of(conn: sqlite3.Connection) -> dict[str, list[str]]:
    names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")]
    return {name: [c[1] for c in conn.execute(f"PRAGMA table_info('{name}')")] for name in names}


def _schema_problems(conn: sqlite3.Connection) -> list[str]:
    """How the tables differ from those the migrations build up to the version the file claims."""
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if version > SCHEMA_VERSION:
        return [f"schema version {version} is newer than this xtalwatch ({SCHEMA_VERSION})"]
    reference = sqlite3.connect(":memory:")
    try:
        for script in _MIGRATIONS[:version]:
            reference.executescript(script)
        expected = _schema_of(reference)
    finally:
        reference.close()
    actual = _schema_of(conn)
    problems = [f"table {t} is missing" for t in expected if t not in actual]
    problems += [f"table {t} has columns {actual[t]}, expected {expected[t]}"
                 for t in expected if t in actual and actual[t] != expected[t]]
    return problems


def _too_new(path: Path, version: int) -> CatalogueTooNew:
    return CatalogueTooNew(f"{path}: schema version {version} is newer than this xtalwatch ({SCHEMA_VERSION}): "
                           "upgrade xtalwatch, or restore a backup this version made")


# Files found sound in this process, by (inode, size, mtime): a quick check reads every page
# (about 0.5 s for 200,000 images), too much for each /api/status. And files this process holds
# open as the writer, checked when it opened them: its own readers (/api/status, the first-training
# check every 30 s) need no check of a file that changes under every write.
_sound: dict[Path, tuple[int, int, int]] = {}
_open_here: dict[Path, int] = {}


def _refuse_if_damaged(path: Path, *, full: bool) -> None:
    if _open_here.get(path):
        return
    st = path.stat()
    if _sound.get(path) == (st.st_ino, st.st_size, st.st_mtime_ns):
        return
    problems = catalogue_problems(path, full=full)
    if len(problems) == 1 and "is newer than this xtalwatch" in problems[0]:
        raise _too_new(path, int(problems[0].split("schema version ")[1].split()[0]))
    if problems:
        raise CatalogueDamaged(f"{path} is not a sound catalogue ({problems[0].removeprefix(f'{path}: ')}"
                               f"{f'; {len(problems) - 1} more problems' if len(problems) > 1 else ''}): {_REMEDY}")
    _sound[path] = (st.st_ino, st.st_size, st.st_mtime_ns)


def _create(path: Path) -> None:
    """Build an empty, current catalogue at ``path``, all or nothing: a crash leaves no file behind."""
    wal = path.with_name(path.name + "-wal")
    if wal.exists() and wal.stat().st_size > 0:  # the lost file's last commits; SQLite would replay them here
        raise CatalogueDamaged(f"{path} is missing but its {wal.name} is there: restore a backup with "
                               "`xtalwatch catalogue restore FILE`, or move the catalogue's files away to start empty")
    tmp = path.with_name(f".{path.name}.new")
    for leftover in (tmp, tmp.with_name(tmp.name + "-journal"), tmp.with_name(tmp.name + "-wal")):
        leftover.unlink(missing_ok=True)  # a start that crashed while building it
    conn = sqlite3.connect(tmp, isolation_level=None)
    try:
        for version, script in enumerate(_MIGRATIONS, start=1):
            conn.executescript("BEGIN;" + script + f"; PRAGMA user_version={version}; COMMIT;")
        conn.execute("PRAGMA journal_mode=WAL")  # recorded in the header; closing leaves one file
    finally:
        conn.close()
    fsync_file(tmp)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def _connect(path: Path, readonly: bool = False) -> sqlite3.Connection:
    if readonly:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30, check_same_thread=False)
    else:
        conn = sqlite3.connect(path, timeout=30, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode: a crash or kill -9 at any instant keeps every commit (the WAL is
        # fsynced at checkpoints); only a power cut may lose the last commits, never corrupt.
        conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.row_factory = sqlite3.Row
    return conn


class Catalogue:
    """The catalogue's single writer in this process: the state folder's SQLite file, or a site's PostgreSQL.

    On SQLite one connection, guarded by a lock, runs every statement. On PostgreSQL a pool of
    connections does (``catalogue.pool_size``): several processes and hosts write at once, and
    exactly-once rests on the tables' unique constraints.
    """

    def __init__(self, state_dir: Path, *, url: str | None = None, pool_size: int = 8, imager: str | None = None):
        """Open (or, when there is no file at all, create) the catalogue in ``state_dir``, or at ``url``.

        ``imager``: the instrument whose files this process catalogues (stored with each plate and image).
        Raises ``CatalogueDamaged`` when the SQLite file is empty, truncated, garbled or of another
        schema (the file is then left exactly as it was), ``CatalogueUnreachable`` when PostgreSQL
        cannot be reached, ``CatalogueTooNew`` when the schema is newer than this xtalwatch.
        """
        self.url = url
        self.imager = imager
        self.agent: str | None = None  # on a site: the agent that claims what this process catalogues (stages/claims.py)
        self._known_wells: dict[tuple[str, str | None], tuple[int, int | None]] = {}  # committed plate and well ids
        self._pending_wells: dict[int, tuple[tuple[str, str | None], tuple[int, int | None]]] = {}
        self.dialect = "postgresql" if url else "sqlite"
        self._lock = threading.RLock()
        self._closed = False
        if url:
            self.path = None
            self._pool = _open_postgres(url, pool_size)
            try:
                self._migrate_postgres()
            except BaseException:
                self._pool.close()
                raise
            return
        state_dir.mkdir(parents=True, exist_ok=True)
        self.path = state_dir / CATALOGUE_FILE
        if not self.path.exists():
            _create(self.path)
        else:
            _refuse_if_damaged(self.path, full=False)
        self._conn = _connect(self.path)
        self._migrate()
        _open_here[self.path] = _open_here.get(self.path, 0) + 1

    @classmethod
    def for_settings(cls, settings: Settings) -> Catalogue:
        """The catalogue ``settings`` name (``catalogue.url``, else ``state.dir``), writing as ``site.imager``."""
        return cls(settings.state.dir, url=settings.catalogue.url, pool_size=settings.catalogue.pool_size,
                   imager=settings.site.imager)

    @classmethod
    def readonly_for(cls, settings: Settings) -> Connection:
        """A read-only connection to the catalogue ``settings`` name; see :meth:`open_readonly`."""
        return cls.open_readonly(settings.state.dir, settings.catalogue.url)

    @property
    def where(self) -> str:
        """Where the catalogue lives, for messages: the file, or the URL without its password."""
        return redacted(self.url) if self.url else str(self.path)

    @classmethod
    def open_readonly(cls, state_dir: Path, url: str | None = None) -> sqlite3.Connection | PgConnection:
        """A read-only connection for reports; it never blocks the writer. Close it when done.

        Raises ``FileNotFoundError`` when there is no SQLite catalogue, ``CatalogueDamaged`` when it is
        not sound, ``CatalogueUnreachable`` when PostgreSQL cannot be reached.
        """
        if url:
            try:
                conn = psycopg.connect(url, autocommit=True, application_name="xtalwatch-read",
                                       options="-c default_transaction_read_only=on", connect_timeout=30)
            except psycopg.OperationalError as exc:
                raise CatalogueUnreachable(f"catalogue {redacted(url)} cannot be reached: "
                                           f"{str(exc).strip().splitlines()[0]}") from None
            return PgConnection(conn, close=True)
        path = state_dir / CATALOGUE_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{state_dir}: no catalogue here ({CATALOGUE_FILE} missing)")
        _refuse_if_damaged(path, full=False)
        return _connect(path, readonly=True)

    def close(self) -> None:
        with self._lock:
            if self.dialect == "postgresql":
                self._pool.close()
                self._closed = True
                return
            self._conn.close()
            if not self._closed:
                self._closed = True
                _open_here[self.path] -= 1

    @contextmanager
    def connection(self) -> Iterator[sqlite3.Connection | PgConnection]:
        """A connection for one statement outside a transaction: SQLite's one (under the lock), or one from the pool."""
        if self.dialect == "postgresql":
            with self._pool.connection() as raw:
                yield PgConnection(raw)
            return
        with self._lock:
            yield self._conn

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection | PgConnection]:
        """Run writes atomically; pass the connection it yields to named queries to make them one unit
        (not ``self``: a write on ``self`` opens its own transaction)."""
        if self.dialect == "postgresql":
            with self._pool.connection() as raw, raw.transaction():
                yield PgConnection(raw)
            return
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        """Run one ad-hoc read. Being retired: new SQL goes into a named query in ``store``."""
        return fetch_rows(self, sql, params)

    # -- schema ------------------------------------------------------------------------
    def _migrate(self) -> None:
        with self._lock:
            current = self._conn.execute("PRAGMA user_version").fetchone()[0]
            if current > SCHEMA_VERSION:
                raise _too_new(self.path, current)
            for version in range(current + 1, SCHEMA_VERSION + 1):
                self._conn.executescript("BEGIN;" + _MIGRATIONS[version - 1] + f"; PRAGMA user_version={version}; COMMIT;")

    def _migrate_postgres(self) -> None:
        """Move the site's schema forward under an advisory lock: hosts starting together migrate once."""
        with self._pool.connection() as raw, advisory_lock(raw, MIGRATION_LOCK, wait=True):
            raw.execute("CREATE TABLE IF NOT EXISTS xtalwatch_schema (version BIGINT NOT NULL)")
            row = raw.execute("SELECT version FROM xtalwatch_schema").fetchone()
            current = int(row[0]) if row else 0
            if row is None:
                raw.execute("INSERT INTO xtalwatch_schema (version) VALUES (0)")
            if current > SCHEMA_VERSION:
                raise CatalogueTooNew(f"catalogue {self.where}: schema version {current} is newer than this "
                                      f"xtalwatch ({SCHEMA_VERSION}): upgrade xtalwatch on this host")
            for version in range(current + 1, SCHEMA_VERSION + 1):
                with raw.transaction():
                    for statement in pg_schema(_MIGRATIONS[version - 1]).split(";"):
                        if statement.strip():
                            raw.execute(statement.encode())
                    raw.execute("UPDATE xtalwatch_schema SET version = %s", (version,))

    @property
    def schema_version(self) -> int:
        return schema_version(self)

    # -- what ingest needs ------------------------------------------------------------
    def is_settled(self, path: str, size: int, changed_ns: int) -> bool:
        """True when this path at this size and mtime was already catalogued or rejected."""
        stored = to_db(path)  # a name that is not UTF-8 is kept as its bytes (store/paths.py)
        rows = fetch_rows(self, "SELECT size_bytes, changed_ns FROM files WHERE path=? UNION ALL "
                                "SELECT size_bytes, changed_ns FROM rejected WHERE path=?", (stored, stored))
        return bool(rows) and rows[0]["size_bytes"] == size and rows[0]["changed_ns"] == changed_ns

    def _plate_and_well(self, conn: Connection, identity: ImageIdentity, now: float) -> tuple[int, int | None]:
        # An adapter reads plate and well from the path, which may carry bytes that are not UTF-8.
        identity = replace(identity, plate=shown(identity.plate), well=None if identity.well is None else shown(identity.well))
        # Plates and wells are never deleted or renumbered, so their ids are remembered: on PostgreSQL
        # that saves four round trips an image. Only committed ids are kept (see record_image).
        key = (identity.plate, identity.well)
        if key in self._known_wells:
            return self._known_wells[key]
        conn.execute("INSERT INTO plates (barcode, adapter, first_seen, imager) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                     (identity.plate, identity.adapter, now, self.imager))
        plate_id = conn.execute("SELECT id FROM plates WHERE barcode=?", (identity.plate,)).fetchone()[0]
        well_id = None
        if identity.well is not None:
            conn.execute("INSERT INTO wells (plate_id, name) VALUES (?, ?) ON CONFLICT DO NOTHING", (plate_id, identity.well))
            well_id = conn.execute("SELECT id FROM wells WHERE plate_id=? AND name=?",
                                   (plate_id, identity.well)).fetchone()[0]
        self._pending_wells[threading.get_ident()] = (key, (int(plate_id), None if well_id is None else int(well_id)))
        return int(plate_id), None if well_id is None else int(well_id)

    def record_image(self, path: str, size: int, changed_ns: int, sha256: str, probe: Probe,
                     identity: ImageIdentity, completed_at: float | None = None) -> NewImage:
        """Store a valid image file exactly once; see the module docstring for the rules.

        A new image is claimed by this process's ``agent`` (on a site), which preprocesses and classifies it.
        """
        now = time.time()
        path = to_db(path)  # type: ignore[assignment]  # str, or the bytes of a name that is not UTF-8
        try:
            with self.transaction() as conn:
                conn.execute("DELETE FROM rejected WHERE path=?", (path,))
                current = conn.execute("SELECT image_id FROM files WHERE path=?", (path,)).fetchone()
                existing = conn.execute("SELECT id FROM images WHERE sha256=?", (sha256,)).fetchone()
                if existing is None:
                    version, previous_id = 1, None
                    if current is not None:
                        previous_id = current[0]
                        version = conn.execute("SELECT version FROM images WHERE id=?", (previous_id,)).fetchone()[0] + 1
                    plate_id, well_id = self._plate_and_well(conn, identity, now)
                    # Another host may store the same content at this instant (a share mounted twice): the
                    # unique sha256 lets one insert win, and the other finds its row below.
                    inserted = conn.execute(
                        """INSERT INTO images (sha256, path, version, previous_id, plate_id, well_id, drop_no, inspection,
                           imaged_at, imaging, adapter, identity_note, format, width, height, size_bytes, completed_at,
                           catalogued_at, imager, claimed_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                           ON CONFLICT (sha256) DO NOTHING RETURNING id""",
                        (sha256, path, version, previous_id, plate_id, well_id, identity.drop, identity.inspection,
                         identity.imaged_at.isoformat() if identity.imaged_at else None, identity.imaging,
                         identity.adapter, None if identity.note is None else shown(identity.note), probe.format, probe.width,
                         probe.height, size, completed_at, now, self.imager, self.agent),
                    ).fetchone()
                    if inserted is not None:
                        image_id, outcome = inserted[0], "new" if previous_id is None else "version"
                    else:
                        existing = conn.execute("SELECT id FROM images WHERE sha256=?", (sha256,)).fetchone()
                if existing is not None:
                    image_id = existing[0]
                    outcome = "unchanged" if current is not None and current[0] == image_id else "duplicate"
                conn.execute(
                    """INSERT INTO files (path, image_id, size_bytes, changed_ns, seen_at) VALUES (?, ?, ?, ?, ?)
                       ON CONFLICT(path) DO UPDATE SET image_id=excluded.image_id, size_bytes=excluded.size_bytes,
                       changed_ns=excluded.changed_ns, seen_at=excluded.seen_at""",
                    (path, image_id, size, changed_ns, now),
                )
        finally:  # a plate or well inserted here is known for good only once its transaction committed
            pending = self._pending_wells.pop(threading.get_ident(), None)
        if pending is not None:
            self._known_wells[pending[0]] = pending[1]
        return NewImage(outcome, int(image_id), sha256)

    def record_rejection(self, path: str, reason: str, detail: str, size: int | None, changed_ns: int | None) -> bool:
        """Store why a file was refused; returns True the first time for this path, size and mtime."""
        now = time.time()
        path, detail = to_db(path), shown(detail)  # type: ignore[assignment]  # see store/paths.py
        with self.transaction() as conn:
            conn.execute("DELETE FROM files WHERE path=?", (path,))
            row = conn.execute("SELECT size_bytes, changed_ns FROM rejected WHERE path=?", (path,)).fetchone()
            fresh = row is None or (row["size_bytes"], row["changed_ns"]) != (size, changed_ns)
            conn.execute(
                """INSERT INTO rejected (path, reason, detail, size_bytes, changed_ns, first_seen, last_seen)
                   VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(path) DO UPDATE SET reason=excluded.reason,
                   detail=excluded.detail, size_bytes=excluded.size_bytes, changed_ns=excluded.changed_ns,
                   last_seen=excluded.last_seen, attempts=rejected.attempts + 1""",
                (path, reason, detail, size, changed_ns, now, now),
            )
        return fresh

    def record_preprocess(self, image_id: int, method: str | None, flags: list[str], crop_path: str | None,
                          error: str | None, result_json: str, status: str) -> None:
        """Store a preprocessing result and move the image to ``status``."""
        with self.transaction() as conn:
            conn.execute(
                """INSERT INTO preprocess (image_id, method, flags, crop_path, error, result, created_at)
                   VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(image_id) DO UPDATE SET method=excluded.method,
                   flags=excluded.flags, crop_path=excluded.crop_path, error=excluded.error, result=excluded.result,
                   created_at=excluded.created_at""",
                (image_id, method, ",".join(flags), crop_path, error, result_json, time.time()),
            )
            conn.execute("UPDATE images SET status=? WHERE id=?", (status, image_id))


# -- running named queries on either kind of db ----------------------------------------------
Connection: TypeAlias = "sqlite3.Connection | PgConnection"
Db: TypeAlias = "Catalogue | sqlite3.Connection | PgConnection"


def dialect_of(db: Db) -> str:
    """``sqlite`` or ``postgresql``: what SQL ``db`` speaks, for the few statements that differ."""
    return getattr(db, "dialect", "sqlite")


def fetch_rows(db: Db, sql: str, params: Sequence[Any] = ()) -> list[Any]:
    """Every row of one read on ``db`` (for the store's modules; elsewhere, call a named query).

    Rows read by index and by column name (``sqlite3.Row``, or ``PgRow`` on PostgreSQL).
    """
    if isinstance(db, Catalogue):
        with db.connection() as conn:
            return conn.execute(sql, tuple(params)).fetchall()
    return db.execute(sql, tuple(params)).fetchall()


def fetch_value(db: Db, sql: str, params: Sequence[Any] = ()) -> Any:
    """The first column of the first row of one read on ``db`` (None when there is no row)."""
    rows = fetch_rows(db, sql, params)
    return rows[0][0] if rows else None


@contextmanager
def writing(db: Db) -> Iterator[Connection]:
    """A connection to write on: a ``Catalogue``'s own transaction, or the caller's open one."""
    if isinstance(db, Catalogue):
        with db.transaction() as conn:
            yield conn
    else:
        yield db


def _open_postgres(url: str, pool_size: int) -> ConnectionPool:
    try:
        psycopg.connect(url, connect_timeout=10, application_name="xtalwatch").close()  # refused at once, not after the pool's 30 s of retries
        return open_pool(url, max_size=pool_size)
    except (psycopg.OperationalError, PoolTimeout) as exc:
        raise CatalogueUnreachable(f"catalogue {redacted(url)} cannot be reached: "
                                   f"{str(exc).strip().splitlines()[0]}: check catalogue.url and that "
                                   "PostgreSQL is running") from None


# -- reads of ingest's tables ----------------------------------------------------------------
def schema_version(db: Db) -> int:
    """The migration the database is at (``PRAGMA user_version``; on PostgreSQL, ``xtalwatch_schema``)."""
    if dialect_of(db) == "postgresql":
        return int(fetch_value(db, "SELECT version FROM xtalwatch_schema"))
    return int(fetch_value(db, "PRAGMA user_version"))


def last_catalogued_at(db: Db) -> float | None:
    """Unix time the newest image was catalogued; None before the first."""
    return fetch_value(db, "SELECT MAX(catalogued_at) FROM images")


def image_id_by_id(db: Db, image_id: int) -> int | None:
    """``image_id`` when such an image is catalogued, else None."""
    return fetch_value(db, "SELECT id FROM images WHERE id=?", (image_id,))


def image_id_by_path(db: Db, path: str) -> int | None:
    """The image a path holds now, or else the image first catalogued at that path; None when neither."""
    stored = to_db(path)
    found = fetch_value(db, "SELECT image_id FROM files WHERE path=?", (stored,))
    if found is None:
        found = fetch_value(db, "SELECT id FROM images WHERE path=?", (stored,))
    return found


def catalogued_images(db: Db, agent: str | None = None) -> list[tuple[int, str, str]]:
    """(id, path, sha256) of images catalogued but not yet preprocessed, oldest first; only ``agent``'s claims when given."""
    return [(int(r[0]), from_db(r[1]), r[2]) for r in fetch_rows(
        db, "SELECT id, path, sha256 FROM images WHERE status='catalogued' AND (CAST(? AS TEXT) IS NULL OR claimed_by = ?) "
            "ORDER BY id", (agent, agent))]


# Usable for training: preprocessed, not flagged or failed, with a model-size crop.
_USABLE = """FROM images i JOIN preprocess p ON p.image_id = i.id
             WHERE i.status NOT IN ('flagged', 'failed', 'catalogued') AND p.crop_path IS NOT NULL"""


def usable_images(db: Db) -> list[tuple[int, str, str]]:
    """(id, sha256, crop path) of every image usable for training, oldest first."""
    return [(int(r[0]), r[1], r[2]) for r in fetch_rows(db, f"SELECT i.id, i.sha256, p.crop_path {_USABLE} ORDER BY i.id")]


def count_usable_images(db: Db) -> int:
    """How many images :func:`usable_images` would return."""
    return int(fetch_value(db, f"SELECT COUNT(*) {_USABLE}"))


def cropped_images(db: Db) -> list[tuple[int, str, str]]:
    """(id, path, crop path) of every image with a drop crop, whatever its quality, oldest first."""
    return [(int(r[0]), from_db(r[1]), r[2]) for r in fetch_rows(
        db, "SELECT i.id, i.path, p.crop_path FROM images i JOIN preprocess p ON p.image_id = i.id "
            "WHERE p.crop_path IS NOT NULL ORDER BY i.id")]


def image_id_by_sha256(db: Db, sha256: str) -> int | None:
    """The image with this content (hex sha256), or None."""
    return fetch_value(db, "SELECT id FROM images WHERE sha256=?", (sha256,))
