"""A site's views: ``xtalwatch status`` and the review app show every imager, and narrow to one on request.

The catalogue holds plates of two imagers (bay-1, bay-2) and one from before the site (no imager),
stored through the service's own ``record_image``; on SQLite and on a real PostgreSQL server.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from review_helpers import Filler, client_for, review_settings
from xtalwatch.alerts import events as ev
from xtalwatch.alerts.dispatch import raise_event
from xtalwatch.observe.status import NO_IMAGER, collect_status
from xtalwatch.store.catalogue import Catalogue
from xtalwatch.store.outcomes import wells_of_images
from xtalwatch.store.review import imager_names, plate_by_barcode
from xtalwatch.store.work import register_agent


@pytest.fixture(params=["sqlite", "postgresql"])
def site(request: pytest.FixtureRequest, tmp_path: Path):  # type: ignore[no-untyped-def]
    """bay-1: plates A1 (2 images, one hit) and A2; bay-2: plate B1 (1 image, one hit); OLD: no imager.
    Agents: bay-1's is alive, bay-2's lease ran out an hour ago."""
    overrides: dict[str, Any] = {}
    if request.param == "postgresql":
        overrides["catalogue.url"] = request.getfixturevalue("postgres_url")
    settings = review_settings(tmp_path, **overrides)
    cat = Catalogue.for_settings(settings)
    fill = Filler(settings, cat)
    cat.imager = None  # a plate catalogued before the site had names
    fill.image("OLD", "A1", 1, label="clear")
    cat.imager = "bay-1"
    a1 = fill.image("A1", "A1", 1, label="crystals", confidence=0.95)
    fill.image("A1", "B2", 1, label="clear")
    fill.image("A2", "C3", 1)
    cat.imager = "bay-2"
    b1 = fill.image("B1", "D4", 1, label="crystals", confidence=0.9)
    for barcode, image_id in (("A1", a1), ("B1", b1)):
        raise_event(ev.crystal_hit(barcode, "X", 1, "crystals", 0.9, f"/secret/{barcode}.jpg", inspection=1,
                                   plate_id=plate_by_barcode(cat, barcode)["id"],
                                   well_id=wells_of_images(cat, [image_id])[0], image_id=image_id), cat, None)
    register_agent(cat, "host-a-bay-1", imager="bay-1", host="host-a", pid=11)
    register_agent(cat, "host-b-bay-2", imager="bay-2", host="host-b", pid=22, now=time.time() - 3600)
    try:
        yield settings, cat
    finally:
        cat.close()


def _plate_rows(page: str) -> dict[str, str]:
    """barcode -> the Imager cell of each row of /plates."""
    return dict(re.findall(r'<tr class="plate-row[^"]*" data-barcode="([^"]+)">.*?<td class="imager">(.*?)</td>',
                           page, re.S))


def test_status_narrows_to_one_imager_and_lists_the_whole_site(site) -> None:  # type: ignore[no-untyped-def]
    settings, _ = site
    everything = collect_status(settings)
    bay1 = collect_status(settings, imager="bay-1")
    assert (everything["images_total"], everything["plates"], everything["wells_total"]) == (5, ["A1", "A2", "B1", "OLD"], 5)
    assert bay1["imager"] == "bay-1"
    assert (bay1["images_total"], bay1["files_total"], bay1["plates"], bay1["wells_total"]) == (3, 3, ["A1", "A2"], 3)
    assert bay1["predictions_total"] == 2 and sum(bay1["images_by_status"].values()) == 3
    assert {i["plate"] for i in bay1["newest_images"]} == {"A1", "A2"}
    assert {i["imager"] for i in bay1["newest_images"]} == {"bay-1"}
    assert collect_status(settings, imager="nowhere")["images_total"] == 0
    # the site section is never narrowed: both imagers, the pre-site images under "-", each imager's agents
    for status in (everything, bay1):
        imagers = status["imagers"]
        assert list(imagers) == ["bay-1", "bay-2", NO_IMAGER]
        assert [imagers[name]["images"] for name in imagers] == [3, 1, 1]
        assert imagers["bay-1"]["last_image_at"] >= imagers[NO_IMAGER]["last_image_at"]
        assert [(a["name"], a["host"], a["alive"]) for a in imagers["bay-1"]["agents"]] == [("host-a-bay-1", "host-a", True)]
        assert [(a["name"], a["alive"]) for a in imagers["bay-2"]["agents"]] == [("host-b-bay-2", False)]
        assert imagers[NO_IMAGER]["agents"] == []


def test_status_command_takes_an_imager(site) -> None:  # type: ignore[no-untyped-def]
    settings, _ = site
    base = [sys.executable, "-m", "xtalwatch", "status", "--state", str(settings.state.dir), "--imager", "bay-1"]
    env_args = [] if settings.catalogue.url is None else ["--config", str(_config_with_url(settings))]
    text = subprocess.run(base + env_args, capture_output=True, text=True, timeout=120)
    assert text.returncode == 0, text.stderr
    assert "imager: bay-1" in text.stdout and "images: 3 in 2 plates, 3 wells" in text.stdout
    site_lines = text.stdout.split("site:\n", 1)[1].splitlines()
    assert site_lines[0].startswith("  bay-1: 3 images, last ") and site_lines[0].endswith("agents 1/1 alive")
    assert site_lines[1].startswith("  bay-2: 1 images, last ") and site_lines[1].endswith("agents 0/1 alive")
    assert site_lines[2].startswith(f"  {NO_IMAGER}: 1 images")
    as_json = json.loads(subprocess.run(base + env_args + ["--json"], capture_output=True, text=True,
                                        timeout=120).stdout)
    assert as_json["plates"] == ["A1", "A2"] and set(as_json["imagers"]) == {"bay-1", "bay-2", NO_IMAGER}


def _config_with_url(settings) -> Path:  # type: ignore[no-untyped-def]
    """A config file naming the site's PostgreSQL catalogue, as a host of the site has."""
    path = Path(settings.state.dir).parent / "site.yaml"
    path.write_text(f"catalogue:\n  url: {json.dumps(settings.catalogue.url)}\n")
    return path


def test_plates_page_filters_by_imager_and_offers_each_one(site) -> None:  # type: ignore[no-untyped-def]
    settings, cat = site
    assert imager_names(cat) == ["bay-1", "bay-2"]
    with client_for(settings, cat) as client:
        everything = client.get("/plates").text
        bay2 = client.get("/plates?imager=bay-2").text
        nowhere = client.get("/plates?imager=nowhere").text
    assert _plate_rows(everything) == {"A1": "bay-1", "A2": "bay-1", "B1": "bay-2", "OLD": "-"}
    assert _plate_rows(bay2) == {"B1": "bay-2"}
    assert _plate_rows(nowhere) == {} and "No plates of imager nowhere" in nowhere
    for page in (everything, bay2):
        links = dict(re.findall(r'<a href="([^"]+)"[^>]*>([^<]+)</a>', page.split('id="imager-filter"', 1)[1]
                                .split("</nav>", 1)[0]))
        assert links == {"/plates": "All", "/plates?imager=bay-1": "bay-1", "/plates?imager=bay-2": "bay-2"}
    assert re.search(r'<a href="/plates\?imager=bay-2" data-imager="bay-2" class="here">', bay2)


def test_hits_feed_filters_by_imager(site) -> None:  # type: ignore[no-untyped-def]
    settings, cat = site
    with client_for(settings, cat) as client:
        everything = client.get("/hits").text
        bay1 = client.get("/hits?imager=bay-1").text
        polled = client.get("/api/hits?after=0&imager=bay-2").json()
    assert everything.count('<li class="hit"') == 2
    assert bay1.count('<li class="hit"') == 1 and 'href="/plates/A1"' in bay1 and 'href="/plates/B1"' not in bay1
    assert 'data-imager="bay-1"' in bay1  # what hits.js polls /api/hits with
    assert [(h["plate"], h["imager"]) for h in polled["hits"]] == [("B1", "bay-2")]
