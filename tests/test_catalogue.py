"""The SQLite catalogue: WAL, forward migrations, one record per content, named queries on either db."""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

import pytest
from conftest import jpeg_bytes
from xtalwatch.config import CatalogueConfig
from xtalwatch.plate import ImageIdentity
from xtalwatch.preprocess.probe import probe_bytes
from xtalwatch.store import events, report
from xtalwatch.store.backup import BackupSchedule, backup_catalogue, list_backups, restore_catalogue
from xtalwatch.store.catalogue import (
    _MIGRATIONS,
    CATALOGUE_FILE,
    SCHEMA_VERSION,
    Catalogue,
    CatalogueDamaged,
    catalogue_problems,
    catalogued_images,
    image_id_by_path,
    last_catalogued_at,
)
from xtalwatch.store.errors import BackupUnsound, StateBusy
from xtalwatch.store.lock import hold_state_lock


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


def test_names_that_are_not_utf8_are_stored_losslessly_and_shown_escaped(tmp_path: Path) -> None:
    """A Latin-1 share's ``café`` (byte 0xE9) and a stray 0xFF: kept as their exact bytes, never confused
    with the UTF-8 name that looks alike, and shown as ``\\xe9`` in reports."""
    latin1, stray, utf8 = (os.fsdecode(b"/x/caf\xe9_01A_1.jpg"), os.fsdecode(b"/x/\xff\xfe.jpg"), "/x/café_01A_1.jpg")
    identity = ImageIdentity(plate=os.fsdecode(b"pl\xe9te"), well="A1", note=os.fsdecode(b"from \xff"), adapter="t")
    probe = probe_bytes(jpeg_bytes(seed=1), "jpg", 10**8)
    catalogue = Catalogue(tmp_path)
    try:
        assert not catalogue.is_settled(latin1, 10, 1)
        assert catalogue.record_image(latin1, 10, 1, "sha-a", probe, identity).outcome == "new"
        assert catalogue.record_image(utf8, 10, 1, "sha-b", probe, identity).outcome == "new"
        assert catalogue.record_rejection(stray, "truncated", os.fsdecode(b"link to \xff"), 5, 1) is True
        assert catalogue.is_settled(latin1, 10, 1) and catalogue.is_settled(stray, 5, 1)
        assert catalogue.record_image(latin1, 10, 1, "sha-a", probe, identity).outcome == "unchanged"
        assert image_id_by_path(catalogue, latin1) != image_id_by_path(catalogue, utf8)
        stored = {r[0] for r in catalogue.query("SELECT path FROM files")}
        assert stored == {b"/x/caf\xe9_01A_1.jpg", utf8}  # the bytes themselves, and the UTF-8 name as TEXT
        assert catalogued_images(catalogue)[0][1] == latin1  # read back as the name os.listdir gives
        assert catalogue.query("SELECT barcode FROM plates")[0][0] == "pl\\xe9te"
        conn = Catalogue.open_readonly(tmp_path)
        try:
            shown = [i["path"] for i in report.newest_images(conn)] + [r["path"] for r in report.recent_rejections(conn)]
            details = [r["detail"] for r in report.recent_rejections(conn)]
        finally:
            conn.close()
        assert shown == [utf8, "/x/caf\\xe9_01A_1.jpg", "/x/\\xff\\xfe.jpg"] and details == ["link to \\xff"]
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


# -- a damaged catalogue, backups and restore (issue 12) ------------------------------------------
def _filled(state: Path, images: int = 3) -> Path:
    """A closed catalogue in ``state`` with ``images`` images and one event; returns its path."""
    catalogue = Catalogue(state)
    try:
        for i in range(images):
            data = jpeg_bytes(seed=i)
            catalogue.record_image(f"/x/{i}.jpg", len(data), i, f"{i:064x}", probe_bytes(data, "jpg", 10**8),
                                   ImageIdentity(plate="P1", well=f"A{i + 1}"))
        events.insert_event(catalogue, "drift", {}, created_at=1.0)
    finally:
        catalogue.close()
    return state / CATALOGUE_FILE


@pytest.mark.parametrize("damage", ["empty", "truncated", "garbled-header", "garbled-page", "table-dropped"])
def test_a_damaged_catalogue_is_refused_and_left_untouched(tmp_path: Path, damage: str) -> None:
    db = _filled(tmp_path)
    data = db.read_bytes()
    page = int.from_bytes(data[16:18], "big")
    if damage == "table-dropped":
        conn = sqlite3.connect(db)
        conn.execute("DROP TABLE well_outcomes")
        conn.commit()
        conn.close()
    else:
        db.write_bytes({"empty": b"", "truncated": data[: len(data) // 2], "garbled-header": os.urandom(100) + data[100:],
                        "garbled-page": data[: 2 * page] + b"\xff" * page + data[3 * page:]}[damage])
    damaged = db.read_bytes()
    with pytest.raises(CatalogueDamaged, match=r"is not a sound catalogue \(.*\): restore a backup") as raised:
        Catalogue(tmp_path)
    assert "\n" not in str(raised.value)
    with pytest.raises(CatalogueDamaged):
        Catalogue.open_readonly(tmp_path)
    problems = catalogue_problems(db)
    assert problems and all(p.startswith(f"{db}: ") for p in problems)
    assert db.read_bytes() == damaged


def test_a_sound_catalogue_has_no_problems_and_syncs_normal_in_wal(tmp_path: Path) -> None:
    db = _filled(tmp_path)
    assert catalogue_problems(db) == []
    catalogue = Catalogue(tmp_path)
    try:
        assert catalogue.query("PRAGMA journal_mode")[0][0] == "wal"
        assert catalogue.query("PRAGMA synchronous")[0][0] == 1  # NORMAL: no commit lost to a crash in WAL
    finally:
        catalogue.close()
    assert catalogue_problems(tmp_path / "none.sqlite3") == [f"{tmp_path / 'none.sqlite3'}: no catalogue here"]


def test_backup_while_the_writer_writes_then_restore_keeps_the_old_file_aside(tmp_path: Path) -> None:
    state = tmp_path / "state"
    _filled(state)
    catalogue = Catalogue(state)
    try:
        with catalogue.transaction() as conn:  # uncommitted: not in the backup, and no wait for it
            events.insert_event(conn, "disk_low", {}, created_at=2.0)
            out = backup_catalogue(state, tmp_path / "b" / "backup.sqlite3")
        events.insert_event(catalogue, "disk_low", {}, created_at=3.0)  # after the backup
    finally:
        catalogue.close()
    assert catalogue_problems(out) == [] and not (tmp_path / "b" / "backup.sqlite3-wal").exists()
    current = (state / CATALOGUE_FILE).read_bytes()
    aside = restore_catalogue(state, out)
    assert aside is not None and aside.name.startswith(f"{CATALOGUE_FILE}.damaged-") and aside.read_bytes() == current
    restored = Catalogue(state)
    try:
        assert report.totals(restored)["images"] == 3 and events.count_events(restored) == 1
    finally:
        restored.close()


def test_restore_refuses_a_busy_state_and_an_unsound_backup(tmp_path: Path) -> None:
    state = tmp_path / "state"
    db = _filled(state)
    backup = backup_catalogue(state, tmp_path / "backup.sqlite3")
    lock = hold_state_lock(state)
    try:
        with pytest.raises(StateBusy, match="in use by a running xtalwatch service"):
            restore_catalogue(state, backup)
        with pytest.raises(StateBusy):
            hold_state_lock(state)
    finally:
        lock.release()
    (tmp_path / "bad.sqlite3").write_bytes(backup.read_bytes()[:4096])
    before = db.read_bytes()
    with pytest.raises(BackupUnsound, match="is not a sound backup"):
        restore_catalogue(state, tmp_path / "bad.sqlite3")
    assert db.read_bytes() == before and [p.name for p in state.iterdir() if ".damaged-" in p.name] == []


def test_the_backup_schedule_keeps_the_last_n(tmp_path: Path) -> None:
    _filled(tmp_path)
    schedule = BackupSchedule(tmp_path, CatalogueConfig(backup_interval_hours=1, backup_keep=2))
    assert schedule.due(1000.0)
    made = [schedule.maybe_run(t) for t in (1000.0, 2000.0, 1000.0 + 3600, 1000.0 + 7200)]
    assert made[1] is None  # not due: the last backup is younger than the interval
    assert list_backups(tmp_path) == made[2:] and catalogue_problems(made[3]) == []
    assert not BackupSchedule(tmp_path, schedule.cfg).due(time.time())  # a restart remembers the last one
    assert schedule.due(0.0)  # the clock was set back
    assert not BackupSchedule(tmp_path, CatalogueConfig(backup_interval_hours=0)).due(1e12)


def test_a_lost_catalogue_whose_wal_is_left_is_not_replaced(tmp_path: Path) -> None:
    (tmp_path / f"{CATALOGUE_FILE}-wal").write_bytes(b"\x37\x7f\x06\x82" + bytes(28))
    with pytest.raises(CatalogueDamaged, match="is missing but its catalogue.sqlite3-wal is there"):
        Catalogue(tmp_path)
    assert not (tmp_path / CATALOGUE_FILE).exists()

