"""``xtalwatch catalogue migrate``: a site's SQLite catalogue copied into PostgreSQL, ids, paths and all."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from xtalwatch.plate import ImageIdentity
from xtalwatch.preprocess.probe import Probe
from xtalwatch.store import migrate
from xtalwatch.store.catalogue import _MIGRATIONS, CATALOGUE_FILE, Catalogue, fetch_rows, image_id_by_path
from xtalwatch.store.errors import CatalogueNotCopied, StateBusy
from xtalwatch.store.events import insert_event
from xtalwatch.store.labels import insert_label, latest_labels
from xtalwatch.store.lock import hold_state_lock
from xtalwatch.store.migrate import copy_catalogue
from xtalwatch.store.models import ModelRow, upsert_models
from xtalwatch.store.outcomes import save_outcome
from xtalwatch.store.paths import from_db
from xtalwatch.store.predictions import StoredCall, insert_predictions, newest_prediction_labels
from xtalwatch.store.report import totals

LATIN1_PATH = os.fsdecode(b"/x/caf\xe9.jpg")  # a Latin-1 share's name: not UTF-8, a BLOB in SQLite
PROBE = Probe("jpeg", 64, 48, 3)


def _record(cat: Catalogue, path: str, sha: str, well: str) -> int:
    return cat.record_image(path, 100, 1, sha, PROBE, ImageIdentity("P1", well, 1, 1), completed_at=1.0).image_id


def fill(state: Path) -> dict[str, int]:
    """A catalogue from before sites had imagers (imager NULL) with a row in every kind of table; ids by name."""
    cat = Catalogue(state)
    try:
        first = _record(cat, "P1/A1.jpg", "a" * 64, "A1")
        latin = _record(cat, LATIN1_PATH, "b" * 64, "A2")
        version = _record(cat, "P1/A1.jpg", "c" * 64, "A1")  # new content at a known path: previous_id = first
        cat.record_rejection("P1/empty.jpg", "empty_file", "0 bytes", 0, 1)
        cat.record_rejection(os.fsdecode(b"/x/vid\xe9o.jpg"), "not_an_image", "avi", 9, 1)
        for image_id in (first, latin, version):
            cat.record_preprocess(image_id, "hough", [], f"/crops/{image_id}.png", None, "{}", "preprocessed")
        insert_predictions(cat, [StoredCall(first, "m1", "clear", 0.9, {"clear": 0.9, "crystal": 0.1}),
                                 StoredCall(latin, "m1", "crystal", 0.6, {"clear": 0.4, "crystal": 0.6}, True)], 10.0)
        insert_predictions(cat, [StoredCall(latin, "m2", "precipitate", 0.8, {"precipitate": 0.8})], 20.0)
        insert_label(cat, first, "clear", "ann", 11.0)
        insert_label(cat, latin, "crystal", "bob", 12.0)
        well = fetch_rows(cat, "SELECT well_id FROM images WHERE id=?", (latin,))[0][0]
        save_outcome(cat, well, "crystal", 0.6, latin, "m1")
        insert_event(cat, "hit", {"well": "A2"}, created_at=13.0, well_id=well, image_id=latin)
        insert_event(cat, "model_promoted", {"version": "m2"}, created_at=14.0)
        upsert_models(cat, [ModelRow("m1", 1.0, "retired", {"acc": 0.5}, None),
                            ModelRow("m2", 2.0, "active", {"acc": 0.7}, "/models/m2")])
        with cat.transaction() as conn:
            # An older image naming a later one as its previous version: copied after that row exists.
            conn.execute("UPDATE images SET previous_id=? WHERE id=?", (version, latin))
    finally:
        cat.close()
    return {"first": first, "latin": latin, "version": version}


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def source_rows(state: Path) -> dict[str, list[tuple[Any, ...]]]:
    conn = Catalogue.open_readonly(state)
    try:
        tables = migrate.copy_order(conn)  # type: ignore[arg-type]
        return {t: [tuple(r) for r in conn.execute(f"SELECT * FROM {t} ORDER BY 1")] for t in tables}
    finally:
        conn.close()


def same(value: Any) -> Any:
    """A stored value as the store reads it back: a path that is not UTF-8 as ``os.fsdecode`` gives it."""
    return from_db(value) if isinstance(value, (str, bytes)) else value


@pytest.fixture
def state(tmp_path: Path) -> Path:
    fill(tmp_path / "state")
    return tmp_path / "state"


def test_every_row_is_copied_with_its_id(state: Path, postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(migrate, "BATCH_ROWS", 2)  # several batches per table
    before = sha256_of(state / CATALOGUE_FILE)
    rows = source_rows(state)
    src = Catalogue.open_readonly(state)
    src_labels, src_calls, src_totals = latest_labels(src), newest_prediction_labels(src), totals(src)
    src.close()

    counts = copy_catalogue(state, postgres_url, imager="rig1")

    assert counts == {t: len(r) for t, r in rows.items()}
    assert counts["images"] == 3 and counts["rejected"] == 2 and counts["predictions"] == 3 and counts["events"] == 2
    assert sha256_of(state / CATALOGUE_FILE) == before
    cat = Catalogue(state, url=postgres_url, imager="rig1")
    try:
        for table, expected in rows.items():
            got = [tuple(r) for r in fetch_rows(cat, f"SELECT * FROM {table} ORDER BY 1")]
            names = list(fetch_rows(cat, f"SELECT * FROM {table} LIMIT 1")[0].keys()) if got else []
            filled = [tuple("rig1" if names[i] == "imager" and v is None else same(v) for i, v in enumerate(row))
                      for row in expected]
            assert [tuple(same(v) for v in row) for row in got] == filled, table
        assert latest_labels(cat) == src_labels
        assert sorted((from_db(p), c) for p, c in newest_prediction_labels(cat)) == \
            sorted((from_db(p), c) for p, c in src_calls)
        assert totals(cat) == src_totals
        latin = image_id_by_path(cat, LATIN1_PATH)
        assert latin is not None and latin == [r[0] for r in rows["images"] if same(r[2]) == LATIN1_PATH][0]
        assert {r[0] for r in fetch_rows(cat, "SELECT imager FROM images UNION SELECT imager FROM plates")} == {"rig1"}

        # The sequences continue after the copied ids.
        fresh = cat.record_image("P1/B1.jpg", 1, 1, "d" * 64, PROBE, ImageIdentity("P1", "B1", 1, 1)).image_id
        assert fresh == max(r[0] for r in rows["images"]) + 1
        assert insert_event(cat, "hit", {}, created_at=15.0) == max(r[0] for r in rows["events"]) + 1
        assert insert_label(cat, fresh, "clear", "ann", 16.0)
    finally:
        cat.close()
    assert sha256_of(state / CATALOGUE_FILE) == before


def test_a_database_that_holds_rows_is_refused(state: Path, postgres_url: str) -> None:
    copy_catalogue(state, postgres_url, imager="rig1")
    with pytest.raises(CatalogueNotCopied, match="already holds .*never merged"):
        copy_catalogue(state, postgres_url, imager="rig1")
    cat = Catalogue(state, url=postgres_url)
    try:
        assert totals(cat)["images"] == 3  # nothing copied twice
    finally:
        cat.close()


def test_a_source_at_an_older_schema_is_refused_untouched(tmp_path: Path, postgres_url: str) -> None:
    state = tmp_path / "state"
    state.mkdir()
    old = sqlite3.connect(state / CATALOGUE_FILE)
    old.executescript("".join(_MIGRATIONS[:4]) + "; PRAGMA user_version=4;")
    old.close()
    before = sha256_of(state / CATALOGUE_FILE)
    with pytest.raises(CatalogueNotCopied, match="schema version 4, this xtalwatch writes 5: start the service"):
        copy_catalogue(state, postgres_url, imager="rig1")
    assert sha256_of(state / CATALOGUE_FILE) == before


def test_refused_while_a_service_holds_the_state_folder(state: Path, postgres_url: str) -> None:
    lock = hold_state_lock(state)
    try:
        with pytest.raises(StateBusy, match="stop it first"):
            copy_catalogue(state, postgres_url, imager="rig1")
    finally:
        lock.release()


def xtalwatch(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("XTALWATCH_")}
    return subprocess.run([str(Path(sys.executable).with_name("xtalwatch")), *args], capture_output=True, text=True,
                          env=env, timeout=120)


def test_command_prints_the_counts_and_never_the_password(state: Path, postgres_url: str) -> None:
    url = postgres_url.replace("://xtalwatch@", "://xtalwatch:s3cret@")  # the test server trusts any password
    assert url != postgres_url
    proc = xtalwatch("catalogue", "migrate", "--to", url, "--state", str(state), "--imager", "rig1")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["table", "rows"]
    assert {line.split()[0]: line.split()[1] for line in lines[1:14]}["images"] == "3"
    assert "url: postgresql://xtalwatch:***@" in proc.stdout
    again = xtalwatch("catalogue", "migrate", "--to", url, "--state", str(state))
    assert again.returncode == 3
    assert again.stderr.count("\n") == 1 and "already holds" in again.stderr
    assert "s3cret" not in proc.stdout + proc.stderr + again.stdout + again.stderr
