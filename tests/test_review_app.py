"""The review app's pages and handlers over real HTTP, on a catalogue filled by the service's own store functions."""

from __future__ import annotations

import re
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from refit_helpers import served_state
from review_helpers import Filler, client_for, csrf_of, review_settings
from xtalwatch.alerts import events as ev
from xtalwatch.alerts.dispatch import raise_event
from xtalwatch.learn.feature_cache import FeatureCache
from xtalwatch.learn.refit import HeadRefitter
from xtalwatch.learn.registry import ModelRegistry
from xtalwatch.observe.metrics import Metrics
from xtalwatch.review.pages import plate_grid
from xtalwatch.store.catalogue import Catalogue
from xtalwatch.store.labels import labels_of_image, set_label
from xtalwatch.store.models import model_statuses
from xtalwatch.store.outcomes import save_outcome, wells_of_images
from xtalwatch.store.predictions import StoredCall, insert_predictions
from xtalwatch.store.review import plate_by_barcode, well_info


@pytest.fixture
def filled(tmp_path: Path):  # type: ignore[no-untyped-def]
    """Plate P1: A1 clear then crystals (a hit), B3 precipitate, C2 preprocessed but not classified; plate P2."""
    settings = review_settings(tmp_path)
    cat = Catalogue(settings.state.dir)
    fill = Filler(settings, cat)
    ids = {"a1_1": fill.image("P1", "A1", 1, label="clear", confidence=0.8),
           "a1_2": fill.image("P1", "A1", 2, label="crystals", confidence=0.95),
           "b3": fill.image("P1", "B3", 1, label="precipitate", confidence=0.7),
           "c2": fill.image("P1", "C2", 1),
           "p2": fill.image("P2", "H12", 1, label="other", confidence=0.9)}
    try:
        yield settings, cat, ids
    finally:
        cat.close()


def _paths_in(text: str, settings) -> list[str]:  # type: ignore[no-untyped-def]
    """Any filesystem path of the test's folders that leaked into ``text``."""
    roots = {str(settings.state.dir), str(settings.watch.dir), str(Path(settings.state.dir).parent)}
    return [root for root in roots if root in text]


# -- the pages and their DOM contract ---------------------------------------------------------
def test_root_redirects_to_plates_and_metrics_stay_open(filled) -> None:  # type: ignore[no-untyped-def]
    settings, cat, _ = filled
    with client_for(settings, cat) as client:
        response = client.get("/", follow_redirects=False)
        assert response.status_code in (302, 303, 307) and response.headers["location"] == "/plates"
        assert client.get("/metrics").status_code == 200
        assert client.get("/healthz").json() == {"ok": True}


def test_plates_list_shows_each_plate_with_counts_and_hits(filled) -> None:  # type: ignore[no-untyped-def]
    settings, cat, ids = filled
    well_a1 = wells_of_images(cat, [ids["a1_2"]])[0]
    assert well_info(cat, well_a1)["name"] == "A1"
    save_outcome(cat, well_a1, "crystals", 0.95, ids["a1_2"], "v1")  # what the HitTracker saves
    with client_for(settings, cat) as client:
        page = client.get("/plates").text
    rows = re.findall(r'<tr class="plate-row[^"]*" data-barcode="([^"]+)">(.*?)</tr>', page, re.S)
    assert sorted(b for b, _ in rows) == ["P1", "P2"]
    p1 = dict(rows)["P1"]
    assert 'class="plate-link" href="/plates/P1"' in p1 and "folders" in p1  # the adapter as imager
    cells = re.findall(r'<td class="num">(.*?)</td>', p1)
    assert cells[0] == "2" and cells[1] == "4" and "1" in cells[2]  # newest inspection, images, hits
    assert '<table id="plates"' in page


def test_plate_map_has_a_cell_per_well_coloured_by_outcome(filled) -> None:  # type: ignore[no-untyped-def]
    settings, cat, _ = filled
    with client_for(settings, cat) as client:
        page = client.get("/plates/P1").text
        earlier = client.get("/plates/P1?inspection=1").text
        assert client.get("/plates/P1?inspection=x").status_code == 400
        assert client.get("/plates/NOPE").status_code == 404
    wells = re.findall(r'class="(well[^"]*)"[^>]*data-well="([A-Z]+\d+)" data-outcome="([a-z]+)"', page)
    assert len(wells) == 96  # adapters.plate_wells: the lab's usual 96-well plate
    by_name = {name: (cls, outcome) for cls, name, outcome in wells}
    assert by_name["A1"] == ("well hit", "crystals")  # the strongest reliable call; a hit stands out
    assert by_name["B3"][1] == "precipitate" and by_name["C2"] == ("well no-call", "none")
    assert by_name["D4"] == ("well empty", "none")
    assert re.search(r'<a class="well hit" href="/wells/\d+" data-well="A1"', page)
    assert 'id="plate-map"' in page and '<select id="inspection"' in page
    assert 'id="export-csv" href="/plates/P1/export.csv"' in page
    assert 'id="export-json" href="/plates/P1/export.json"' in page
    assert 'data-well="A1" data-outcome="clear"' in earlier  # inspection 1 only: no crystals yet
    assert 'href="/plates/P1/export.csv?inspection=1"' in earlier
    assert '<option value="1" selected>' in earlier


@pytest.mark.parametrize(("names", "usual", "grid"), [
    (["A1", "B3"], 96, (8, 12)), (["A1", "D6"], 24, (4, 6)), (["A1", "P24"], 96, (16, 24)),
    (["AF48"], 96, (32, 48)), ([], 384, (16, 24)), (["unassigned"], 96, (8, 12)), (["H13"], 96, (16, 24)),
])
def test_plate_grid_fits_every_well(names: list[str], usual: int, grid: tuple[int, int]) -> None:
    assert plate_grid(names, usual) == grid


def test_1536_well_plate_map(tmp_path: Path) -> None:
    settings = review_settings(tmp_path)
    cat = Catalogue(settings.state.dir)
    try:
        fill = Filler(settings, cat)
        fill.image("BIG", "AF48", 1, label="crystals")
        fill.image("BIG", "A1", 1, label="clear")
        with client_for(settings, cat) as client:
            page = client.get("/plates/BIG").text
        assert page.count('data-well="') == 1536 and 'class="plate-map dense"' in page
        assert 'data-well="AF48" data-outcome="crystals"' in page
    finally:
        cat.close()


def test_well_page_shows_each_inspection_with_pictures_call_and_labels(filled) -> None:  # type: ignore[no-untyped-def]
    settings, cat, ids = filled
    set_label(cat, ids["a1_1"], "precipitate", "ann", time.time())
    well_id = wells_of_images(cat, [ids["a1_1"]])[0]
    with client_for(settings, cat) as client:
        page = client.get(f"/wells/{well_id}").text
        assert client.get("/wells/99999").status_code == 404
    blocks = re.findall(r'<article class="inspection" data-image-id="(\d+)">(.*?)</article>', page, re.S)
    assert [int(i) for i, _ in blocks] == [ids["a1_1"], ids["a1_2"]]  # inspection order
    first, second = blocks[0][1], blocks[1][1]
    assert f'class="crop" src="/images/{ids["a1_1"]}/crop.png"' in first
    assert f'class="frame" src="/images/{ids["a1_1"]}/frame.jpg"' in first
    assert re.search(r'class="call"><span class="class">clear</span> <span class="confidence">80.0%', first)
    assert '<table class="probs">' in first and "precipitate" in first
    assert 'class="model-version">model <code>v1</code>' in first
    assert 'class="flags"' in first and "ann" in first and "badge ok\">precipitate" in first
    assert "crystals" in second
    assert "Inspection 1" in page and "Inspection 2" in page


def test_uncertain_call_is_marked_on_the_well_page(tmp_path: Path) -> None:
    settings = review_settings(tmp_path)
    cat = Catalogue(settings.state.dir)
    try:
        image = Filler(settings, cat).image("P", "A1", 1, label="crystals", confidence=0.4, uncertain=True)
        well_id = wells_of_images(cat, [image])[0]
        with client_for(settings, cat) as client:
            page = client.get(f"/wells/{well_id}").text
        assert "badge warn uncertain" in page
    finally:
        cat.close()


def test_hits_feed_newest_first_and_polling_after_an_id(filled) -> None:  # type: ignore[no-untyped-def]
    settings, cat, ids = filled
    well_a1 = wells_of_images(cat, [ids["a1_2"]])[0]
    plate_p1 = plate_by_barcode(cat, "P1")["id"]
    first = ev.crystal_hit("P1", "A1", 1, "crystals", 0.95, "/secret/imager/P1/A1.jpg", inspection=2,
                           model_version="v1", plate_id=plate_p1, well_id=well_a1, image_id=ids["a1_2"])
    raise_event(first, cat, None)
    with client_for(settings, cat) as client:
        page = client.get("/hits").text
        assert '<ul id="hits"' in page and page.count('<li class="hit"') == 1
        assert f'/wells/{well_a1}' in page and f'/images/{ids["a1_2"]}/thumb.jpg' in page
        assert "/secret/imager" not in page
        last = int(re.search(r'data-last-id="(\d+)"', page).group(1))
        assert client.get(f"/api/hits?after={last}").json() == {"hits": [], "last_id": last}
        second = ev.crystal_hit("P2", "H12", 1, "crystals", 0.9, "/secret/imager/P2/H12.jpg", plate_id=None)
        raise_event(second, cat, None)
        newer = client.get(f"/api/hits?after={last}").json()
        assert [h["plate"] for h in newer["hits"]] == ["P2"] and newer["last_id"] > last
        assert "/secret" not in str(newer)
        page = client.get("/hits").text
        assert page.index("P2") < page.index("P1")  # newest first
        assert client.get("/api/hits?after=x").status_code == 400


def test_health_page_shows_queues_last_image_training_disk_and_reasons(filled) -> None:  # type: ignore[no-untyped-def]
    settings, cat, _ = filled
    metrics = Metrics(process_collectors=False)
    metrics.queue_depth.labels(stage="preprocess").set(7)
    raise_event(ev.model_promoted("v9"), cat, None)
    with client_for(settings, cat, metrics=metrics, health=lambda: ["disk: the state disk is full"]) as client:
        page = client.get("/health").text
    dl = page[page.index('<dl id="health">'):page.index("</dl>")]
    assert "preprocess <strong>7</strong>" in dl and "classify <strong>0</strong>" in dl
    assert "the state disk is full" in dl
    assert "model promoted" in dl and "v9" in dl
    assert " free of " in dl and "ago" in dl
    assert not _paths_in(page, settings)


# -- pictures ---------------------------------------------------------------------------------
def test_pictures_are_rendered_once_then_served_from_the_cache(filled) -> None:  # type: ignore[no-untyped-def]
    settings, cat, ids = filled
    image = ids["b3"]
    with client_for(settings, cat) as client:
        thumb = client.get(f"/images/{image}/thumb.jpg")
        assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
        assert thumb.headers["cache-control"] == "public, max-age=31536000, immutable"
        etag = thumb.headers["etag"]
        decoded = cv2.imdecode(np.frombuffer(thumb.content, np.uint8), cv2.IMREAD_COLOR)
        assert max(decoded.shape[:2]) <= settings.web.thumbnail_px
        cached = list((Path(settings.state.dir) / "thumbs").rglob("*-thumb48.jpg"))
        assert len(cached) == 1
        before = cached[0].stat()
        again = client.get(f"/images/{image}/thumb.jpg")
        assert again.content == thumb.content
        after = cached[0].stat()
        assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)  # not rendered again
        assert client.get(f"/images/{image}/thumb.jpg", headers={"If-None-Match": etag}).status_code == 304

        frame = client.get(f"/images/{image}/frame.jpg")
        assert frame.status_code == 200 and frame.headers["etag"] != etag
        picture = cv2.imdecode(np.frombuffer(frame.content, np.uint8), cv2.IMREAD_COLOR)
        assert max(picture.shape[:2]) == settings.web.frame_px  # 128 px frame scaled to 80

        crop = client.get(f"/images/{image}/crop.png")
        assert crop.status_code == 200 and crop.headers["content-type"] == "image/png"
        assert crop.headers["cache-control"].endswith("immutable")


def test_unknown_image_and_a_vanished_frame_are_clear_404s(filled) -> None:  # type: ignore[no-untyped-def]
    settings, cat, ids = filled
    frame_file = next((Path(settings.watch.dir) / "P1").glob("C2_*.jpg"))
    frame_file.unlink()
    with client_for(settings, cat) as client:
        unknown = client.get("/images/4242/thumb.jpg")
        assert unknown.status_code == 404 and "no image 4242" in unknown.text
        gone = client.get(f"/images/{ids['c2']}/frame.jpg")
        assert gone.status_code == 404 and "no longer where it was catalogued" in gone.text
        assert not _paths_in(gone.text, settings)
        # The thumbnail falls back to the stored crop.
        assert client.get(f"/images/{ids['c2']}/thumb.jpg").status_code == 200
        assert client.get("/images/x/thumb.jpg").status_code == 404


def test_no_filesystem_path_on_any_page(filled) -> None:  # type: ignore[no-untyped-def]
    settings, cat, ids = filled
    well_id = wells_of_images(cat, [ids["a1_1"]])[0]
    raise_event(ev.crystal_hit("P1", "A1", 1, "crystals", 0.9, str(settings.watch.dir / "P1" / "A1.jpg"),
                               image_id=ids["a1_2"]), cat, None)
    with client_for(settings, cat) as client:
        for url in ["/plates", "/plates/P1", f"/wells/{well_id}", "/hits", "/api/hits", "/health", "/models",
                    "/review", "/api/review/state", "/login", "/plates/P1/export.csv", "/plates/P1/export.json"]:
            response = client.get(url)
            assert response.status_code == 200, url
            assert _paths_in(response.text, settings) == [], url


# -- labels --------------------------------------------------------------------------------------
def test_label_undo_and_state_with_the_refitter_asked(filled) -> None:  # type: ignore[no-untyped-def]
    settings, cat, ids = filled
    refitter = HeadRefitter(settings, cat, FeatureCache(None))  # not started: a request stays pending
    with client_for(settings, cat, refitter=refitter, serving_version=lambda: "v1") as client:
        token = csrf_of(client.get("/review").text)
        headers = {"X-CSRF-Token": token}
        client.cookies.set("xtalwatch_labeller", "ann")
        answer = client.post("/api/labels", json={"image_id": ids["b3"], "label": "crystals"}, headers=headers)
        assert answer.status_code == 200 and answer.json() == {"label_count": 1, "previous": None}
        assert refitter.status()["pending"] is True
        again = client.post("/api/labels", json={"image_id": ids["b3"], "label": "clear"}, headers=headers).json()
        assert again == {"label_count": 1, "previous": "crystals"}
        assert [(lab["label"], lab["labeller"]) for lab in labels_of_image(cat, ids["b3"])] == [("clear", "ann")]
        undo = client.post("/api/labels/undo", json={"image_id": ids["b3"], "previous": "crystals"}, headers=headers)
        assert undo.json()["label_count"] == 1 and labels_of_image(cat, ids["b3"])[0]["label"] == "crystals"
        client.post("/api/labels/undo", json={"image_id": ids["b3"], "previous": None}, headers=headers)
        assert labels_of_image(cat, ids["b3"]) == []
        state = client.get("/api/review/state").json()
        assert state["label_count"] == 0 and state["serving_version"] == "v1" and state["refit"]["pending"]
        assert "waiting for more labels" in client.get("/health").text

        bad = client.post("/api/labels", json={"image_id": ids["b3"], "label": "sparkles"}, headers=headers)
        assert bad.status_code == 400 and "unknown class 'sparkles'" in bad.json()["error"]
        missing = client.post("/api/labels", json={"image_id": 99999, "label": "clear"}, headers=headers)
        assert missing.status_code == 404
        assert client.post("/api/labels", content=b"nope", headers=headers).status_code == 400
        # Without a name, the label carries web.labeller_default.
        client.cookies.clear()
        client.post("/api/labels", json={"image_id": ids["p2"], "label": "other"}, headers=headers)
        assert labels_of_image(cat, ids["p2"])[0]["labeller"] == "reviewer"


def test_login_form_sets_the_labeller_name(filled) -> None:  # type: ignore[no-untyped-def]
    settings, cat, ids = filled
    with client_for(settings, cat) as client:
        token = csrf_of(client.get("/login").text)
        response = client.post("/login", data={"csrf_token": token, "name": "bob", "next": "/plates"},
                               follow_redirects=False)
        assert response.status_code == 303 and response.headers["location"] == "/plates"
        assert "bob" in client.get("/plates").text
        client.post("/api/labels", json={"image_id": ids["b3"], "label": "clear"}, headers={"X-CSRF-Token": token})
        assert labels_of_image(cat, ids["b3"])[0]["labeller"] == "bob"
        elsewhere = client.post("/login", data={"csrf_token": token, "next": "//evil.example/"},
                                follow_redirects=False)
        assert elsewhere.headers["location"] == "/review"  # no open redirect


def test_review_page_shows_the_queue_with_one_key_per_class(tmp_path: Path) -> None:
    settings, ids = served_state(tmp_path, n_images=8)
    cat = Catalogue(settings.state.dir)
    try:
        usable = ids["usable"]
        calls = [StoredCall(i, "v1", "clear", 0.95 - 0.05 * k, {"clear": 0.95 - 0.05 * k, "crystals": 0.05 + 0.05 * k})
                 for k, i in enumerate(usable)]
        insert_predictions(cat, calls, time.time())
        with client_for(settings, cat, serving_version=lambda: "v1") as client:
            page = client.get("/review").text
            more = client.get(f"/api/review/next?n=3&exclude={usable[-1]}").json()["items"]
            assert client.get("/api/review/next?exclude=a").status_code == 400
        shown = int(re.search(r'id="review-meta" data-image-id="(\d+)"', page).group(1))
        assert shown == usable[-1]  # the lowest margin first
        assert f'id="review-image" src="/images/{shown}/thumb.jpg"' in page
        assert 'id="label-count">0<' in page and 'id="serving-version">v1<' in page and 'id="refit-status"' in page
        for key, name in enumerate(settings.classify.classes, start=1):
            assert f"<kbd>{key}</kbd> {name}" in page
        assert "<kbd>u</kbd>" in page
        assert [item["image_id"] for item in more] == [usable[-2], usable[-3], usable[-4]]
    finally:
        cat.close()


# -- models ----------------------------------------------------------------------------------------
def test_models_page_lists_versions_and_promote_and_rollback_switch_current(tmp_path: Path) -> None:
    settings, _ = served_state(tmp_path, n_images=8)
    cat = Catalogue(settings.state.dir)
    try:
        registry = ModelRegistry(settings.state.dir, cat)
        v1 = registry.get("v1")
        from xtalwatch.learn.bundle import ModelBundle

        bundle = ModelBundle.load(v1.path)
        registry.add(bundle, version="v2", metrics={"gate": {"accuracy": 0.875, "head": "linear", "n_holdout": 16,
                                                             "feature_std": 0.02}, "n_images": 8, "n_labels": 4})
        registry.add(bundle, version="v3", status="rejected", reason="accuracy 0.4 < serving 0.875")
        with client_for(settings, cat, serving_version=registry.current_version) as client:
            page = client.get("/models").text
            rows = re.findall(r'<tr class="model[^"]*" data-version="([^"]+)" data-status="([^"]+)">', page)
            assert rows == [("v3", "rejected"), ("v2", "candidate"), ("v1", "promoted")]
            assert 'id="serving-version">v1<' in page and "0.875" in page and ">16<" in page
            token = csrf_of(page)
            assert page.count('class="promote inline"') == 2  # not for the serving one
            assert 'id="rollback"' in page

            done = client.post("/api/models/v2/promote", data={"csrf_token": token}, follow_redirects=False)
            assert done.status_code == 303 and done.headers["location"].startswith("/models?done=")
            assert registry.current_version() == "v2"
            assert dict(model_statuses(cat))["v2"] == "promoted"  # mirrored into the catalogue
            refused = client.post("/api/models/v3/promote", json={}, headers={"X-CSRF-Token": token})
            assert refused.status_code == 409 and "rejected" in refused.json()["error"]
            forced = client.post("/api/models/v3/promote?force=1", json={}, headers={"X-CSRF-Token": token})
            assert forced.json()["serving"] == "v3"
            back = client.post("/api/models/rollback", data={"csrf_token": token}, follow_redirects=False)
            assert back.status_code == 303 and registry.current_version() == "v2"
            unknown = client.post("/api/models/nope/promote", json={}, headers={"X-CSRF-Token": token})
            assert unknown.status_code == 404 and not _paths_in(unknown.text, settings)
            assert client.post("/api/models/v1/promote", data={"csrf_token": "forged"}).status_code == 403
            assert registry.current_version() == "v2"
    finally:
        cat.close()


def test_scripts_and_styles_are_served_without_a_build_step(filled) -> None:  # type: ignore[no-untyped-def]
    settings, cat, _ = filled
    with client_for(settings, cat) as client:
        for name, kind in (("app.js", "javascript"), ("review.js", "javascript"), ("hits.js", "javascript"),
                           ("app.css", "text/css")):
            response = client.get(f"/static/{name}")
            assert response.status_code == 200 and kind in response.headers["content-type"], name
        page = client.get("/plates").text
        assert '<script src="/static/app.js"></script>' in page and 'href="/static/app.css"' in page
