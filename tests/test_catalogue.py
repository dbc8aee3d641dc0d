"""The SQLite catalogue: WAL, forward migrations, one record per content."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from conftest import jpeg_bytes
from xtalwatch.plate import ImageIdentity
from xtalwatch.preprocess.probe import probe_bytes
from xtalwatch.store.catalogue import _MIGRATIONS, CATALOGUE_FILE, SCHEMA_VERSION, Catalogue


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
