"""The SQLite catalogue: WAL, forward migrations, one record per content, named queries on either db."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from conftest import jpeg_bytes
from xtalwatch.plate import ImageIdentity
from xtalwatch.preprocess.probe import probe_bytes
from xtalwatch.store import events, report
from xtalwatch.store.catalogue import (
    _MIGRATIONS,
    CATALOGUE_FILE,
    SCHEMA_VERSION,
    Catalogue,
    image_id_by_path,
    last_catalogued_at,
)


def test_new_catalogue_is_wal_and_current(tmp_path: Path) -> None:
    catalogue = Catalogue(tmp_path)
    try:
        assert catalogue.schema_version == SCHEMA_VERSION
        assert catalogue.query("PRAGMA journal_mode")[0][0] == "wal"
        tables = {r[0] for r in catalogue.query("SELECT name FROM sqlite_master WHERE type='table'")}
        assert {"plates", "wells", "images", "files", "rejected", "predictions", "labels", "models", "events",
                "preprocess"} <= tables
    finally:
        catalogue.close()
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(CATALOGUE_FILE)) == []


def test_old_schema_is_migrated_forward_keeping_data(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / CATALOGUE_FILE)
    conn.executescript(_MIGRATIONS[0] + "; PRAGMA user_version=1;")
    conn.execute("INSERT INTO plates (barcode, first_seen) VALUES ('P1', 0)")
    conn.commit()
    conn.close()
    catalogue = Catalogue(tmp_path)
    try:
        assert catalogue.schema_version == SCHEMA_VERSION
        assert catalogue.query("SELECT barcode FROM plates")[0][0] == "P1"
    finally:
        catalogue.close()


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / CATALOGUE_FILE)
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(RuntimeError, match="newer than this xtalwatch"):
        Catalogue(tmp_path)


def test_record_image_outcomes(tmp_path: Path) -> None:
    catalogue = Catalogue(tmp_path)
    identity = ImageIdentity(plate="P", well="A1", drop=1, inspection=1, adapter="t")
    data = jpeg_bytes(seed=1)
    probe = probe_bytes(data, "jpg", 10**8)
    try:
        first = catalogue.record_image("/x/a.jpg", 10, 1, "sha-a", probe, identity)
        again = catalogue.record_image("/x/a.jpg", 10, 2, "sha-a", probe, identity)
        copy = catalogue.record_image("/x/copy.jpg", 10, 3, "sha-a", probe, identity)
        newer = catalogue.record_image("/x/a.jpg", 11, 4, "sha-b", probe, identity)
        assert [first.outcome, again.outcome, copy.outcome, newer.outcome] == ["new", "unchanged", "duplicate", "version"]
        assert catalogue.query("SELECT COUNT(*) FROM images")[0][0] == 2
        assert catalogue.query("SELECT version FROM images WHERE sha256='sha-b'")[0][0] == 2
        assert catalogue.is_settled("/x/a.jpg", 11, 4) and not catalogue.is_settled("/x/a.jpg", 11, 5)
        assert catalogue.record_rejection("/x/bad.jpg", "truncated", "cut", 5, 1) is True
        assert catalogue.record_rejection("/x/bad.jpg", "truncated", "cut", 5, 1) is False
        assert catalogue.query("SELECT attempts FROM rejected")[0][0] == 2
    finally:
        catalogue.close()


def test_named_queries_run_on_the_writer_and_on_a_read_only_connection(tmp_path: Path) -> None:
    catalogue = Catalogue(tmp_path)
    data = jpeg_bytes(seed=1)
    probe = probe_bytes(data, "jpg", 10**8)
    try:
        assert last_catalogued_at(catalogue) is None and report.totals(catalogue)["images"] == 0
        image_id = catalogue.record_image("/x/a.jpg", 10, 1, "sha-a", probe, ImageIdentity("P", "A1", 1, 1)).image_id
        first = events.insert_event(catalogue, "drift", {"distance": 0.3}, created_at=1.0)
        events.insert_event(catalogue, "disk_low", {"path": "/s"}, created_at=2.0, image_id=image_id)
        readonly = Catalogue.open_readonly(tmp_path)
        try:
            for db in (catalogue, readonly):
                assert image_id_by_path(db, "/x/a.jpg") == image_id and image_id_by_path(db, "/x/b.jpg") is None
                assert report.totals(db) == {"images": 1, "files": 1, "rejected": 0, "predictions": 0, "wells": 1,
                                             "unassigned": 0}
                assert [e["kind"] for e in events.event_rows(db)] == ["disk_low", "drift"]
                assert [e["payload"] for e in events.events_after(db, first)] == [{"path": "/s"}]
                assert events.count_events(db, "drift") == 1 and events.count_events(db) == 2
            with pytest.raises(sqlite3.OperationalError, match="readonly"):
                events.insert_event(readonly, "drift", {}, created_at=3.0)
        finally:
            readonly.close()
        with pytest.raises(ValueError, match="limit must be >= 0, got -1"):
            events.event_rows(catalogue, limit=-1)
    finally:
        catalogue.close()


def test_named_writes_in_one_transaction_are_one_unit(tmp_path: Path) -> None:
    catalogue = Catalogue(tmp_path)
    try:
        with pytest.raises(RuntimeError, match="boom"), catalogue.transaction() as conn:
            events.insert_event(conn, "drift", {}, created_at=1.0)
            raise RuntimeError("boom")
        assert events.count_events(catalogue) == 0
    finally:
        catalogue.close()
