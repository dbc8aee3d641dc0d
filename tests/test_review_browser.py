"""The review app in a real headless Chromium, against the real service on a synthetic plate.

A lab's day in one test: open the plate list and the plate map, open a well, label three images
with the keyboard, watch the label count rise and a re-fitted head start serving, undo a label,
download the CSV export; then, with the app bound to a non-loopback address, a write without the
token is refused. Every page is saved as a screenshot: set XTALWATCH_SCREENSHOTS=docs/img to
regenerate the README's images (``docs/img/make_screenshots.py`` does exactly that).
"""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
import torch
import yaml
from browser_helpers import chromium, save_screenshot, screenshot_dir, wait_on
from chaos.chaos_helpers import REPO, ServiceProcess, wait_until
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select
from xtalwatch.config import Settings, load_settings
from xtalwatch.learn.bundle import build_bundle
from xtalwatch.learn.features import read_crops
from xtalwatch.learn.registry import ModelRegistry, new_version
from xtalwatch.learn.simclr.encoder import build_encoder
from xtalwatch.plate import well_position
from xtalwatch.stages.well_outcome import OutcomeRule, plate_outcomes
from xtalwatch.store.catalogue import Catalogue
from xtalwatch.store.labels import crop_paths_of, import_labels, latest_labels
from xtalwatch.tools.synth import generate_plates

pytestmark = pytest.mark.slow

# A 24-well plate: every page has something on it and the run stays small; the README's screenshots
# (XTALWATCH_SCREENSHOTS set) show the 96-well plate most labs use.
WELLS = 96 if os.environ.get("XTALWATCH_SCREENSHOTS") else 24
FRAME = (240, 180)  # px; the smallest frame the well and drop finders handle reliably
FIRST_MODEL_LABELS = 4  # per class
ENCODER_PX = 16  # the tiny random-init encoder's input side: only its head is trained here
CONFIG: dict[str, Any] = {
    "watch": {"settle_seconds": 0.3, "poll_interval_seconds": 0.2},
    "preprocess": {"image_size": 32},
    "adapters": {"plate_wells": WELLS},  # the lab's usual plate: the map draws that grid
    # No training child: the only new models come from the review app's head refits.
    "retrain": {"enabled": False, "auto_first_training": False, "gate_margin": 1.0},
    # Below 0.3 a call is uncertain (4 classes: the top probability is at least 0.25): a few wells
    # show it, most get a class on the map.
    "classify": {"knn_k": 3, "uncertain_below": 0.3},
    "alerts": {"hit_min_confidence": 0.0, "disk_low_bytes": 0, "disk_low_fraction": 0.0},
    "web": {"refit_debounce_seconds": 0.2},
    "logging": {"level": "INFO"},
}
TOKEN = "browser-test-token-0123456789"
VERSION = re.compile(r"\d{8}-\d{6}-[0-9a-f]{6}")  # registry.new_version's names


# -- the plate, its labels and the serving model, made before the service starts ----------------
@dataclass
class Lab:
    """A watched folder with one synthetic plate, a state folder whose registry serves a tiny model."""

    watch: Path
    state: Path
    config: Path
    barcode: str
    version: str  # the serving model the service starts with
    settings: Settings


def _write_config(path: Path, watch: Path, state: Path, **sections: dict[str, Any]) -> Path:
    config = {**CONFIG, "watch": {**CONFIG["watch"], "dir": str(watch)}, "state": {"dir": str(state)}}
    for name, values in sections.items():
        config[name] = {**config.get(name, {}), **values}
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def _promote_tiny_model(settings: Settings) -> str:
    """Fit a head on a few labelled crops over a random-init encoder, and promote it as the serving model.

    A few labels only (``FIRST_MODEL_LABELS`` per class), as a lab's first model has: the gate then
    compares the re-fitted head with a serving head that has not seen the held-out labels.
    """
    torch.manual_seed(0)  # the same random encoder every run: the same calls
    catalogue = Catalogue(settings.state.dir)
    try:
        labels = latest_labels(catalogue)
        by_label: dict[str, list[int]] = {}
        for image_id in sorted(labels):
            by_label.setdefault(labels[image_id], []).append(image_id)
        ids = sorted(i for group in by_label.values() for i in group[:FIRST_MODEL_LABELS])
        paths = crop_paths_of(catalogue, ids)
        crops = read_crops([paths[i] for i in ids], settings.preprocess.channels)
        version = new_version()
        bundle = build_bundle(build_encoder(ENCODER_PX, small_stem=False), crops, [labels[i] for i in ids],
                              settings.classify, version, image_size=ENCODER_PX)
        registry = ModelRegistry(settings.state.dir, catalogue)
        registry.add(bundle, version=version, metrics=bundle.metrics)
        registry.promote(version, "the browser test's first model")
    finally:
        catalogue.close()
    return version


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Lab:
    """One plate of two inspections, catalogued and preprocessed; inspection 1 labelled; a model serving.

    The second inspection stays unlabelled: it is what the review queue offers.
    """
    root = tmp_path_factory.mktemp("review-lab")
    watch, state = root / "imager", root / "state"
    truth = root / "truth.csv"
    rows = generate_plates(watch, plates=1, layout="export", wells=WELLS, drops=1, inspections=2, size=FRAME, seed=5,
                           balance="clear=1,precipitate=1,needles=1,plates=0.5,prisms=0,microcrystals=0,dark=0",
                           labels=truth, workers=1)
    config = _write_config(root / "xtalwatch.yaml", watch, state)
    ingest = subprocess.run([sys.executable, "-m", "xtalwatch", "ingest", str(watch), "--config", str(config)],
                            capture_output=True, text=True, timeout=300, cwd=REPO,
                            env={k: v for k, v in os.environ.items() if not k.startswith("XTALWATCH_")})
    assert ingest.returncode == 0, ingest.stderr[-3000:]
    settings = load_settings(config)
    first = root / "labels.csv"
    first.write_text("path,class,labeller\n" + "".join(
        f"{watch / r.path},{r.label},truth\n" for r in rows if r.inspection == 1), encoding="utf-8")
    catalogue = Catalogue(state)
    try:
        result = import_labels(catalogue, first, settings.classify, labeller="truth")
        assert not result.errors, result.errors[:3]
    finally:
        catalogue.close()
    return Lab(watch, state, config, rows[0].plate, _promote_tiny_model(settings), settings)


# -- the real service --------------------------------------------------------------------------
def _status(url: str) -> int:
    """The HTTP status of a GET (0 while nothing answers)."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


@contextmanager
def running_service(lab: Lab, log: Path, config: Path) -> Iterator[ServiceProcess]:
    """``xtalwatch run --config`` as a lab runs it, until /healthz answers and every image is classified."""
    service = ServiceProcess(lab.watch, lab.state, log)
    try:
        service.start("--config", str(config))
        service.wait_ready(timeout=120)
        healthz = f"http://127.0.0.1:{service.port}/healthz"
        wait_until(lambda: _status(healthz) == 200 or not service.alive(), 60, "/healthz to answer 200")
        assert service.alive(), service.output()[-3000:]
        wait_until(lambda: service.count("images", "status = 'preprocessed' AND id NOT IN "
                                                    "(SELECT image_id FROM predictions)") == 0,
                   90, "every image to be classified")
        yield service
        assert service.stop() == 0, service.output()[-3000:]
    except BaseException:
        print(f"--- service log ({log}) ---\n{service.output()[-6000:]}")
        raise
    finally:
        service.cleanup()


# -- what the pages show -----------------------------------------------------------------------
def _path(driver: WebDriver) -> str:
    return urlparse(driver.current_url).path


def _plate_map(driver: WebDriver) -> dict[str, str]:
    """Well name → ``data-outcome`` of every well drawn on the plate map."""
    wells = wait_on(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#plate-map .well[data-well]"),
                    "the plate map's wells")
    return {w.get_attribute("data-well"): w.get_attribute("data-outcome") for w in wells}


def _count(driver: WebDriver, selector: str) -> int | None:
    """The first integer in the element's text (``#label-count``), or None while it has none."""
    found = driver.find_elements(By.CSS_SELECTOR, selector)
    match = re.search(r"\d+", found[0].text) if found else None
    return int(match[0]) if match else None


def _text(driver: WebDriver, selector: str) -> str:
    found = driver.find_elements(By.CSS_SELECTOR, selector)
    return found[0].text.strip() if found else ""


def _serving(driver: WebDriver) -> str:
    """The version ``#serving-version`` names (the page may say more around it)."""
    text = _text(driver, "#serving-version")
    match = VERSION.search(text)
    return match[0] if match else text


def _images_loaded(driver: WebDriver, selector: str) -> bool:
    """Every ``img`` matching ``selector`` has loaded and decoded (a broken image has naturalWidth 0)."""
    return bool(driver.execute_script(
        "const imgs = [...document.querySelectorAll(arguments[0])];"
        "return imgs.length > 0 && imgs.every(i => i.complete && i.naturalWidth > 0);", selector))


def _expected_map(lab: Lab, inspection: int | None = None) -> dict[str, str]:
    """Well name → outcome, by the per-well rule the service uses, from the catalogue (up to ``inspection``)."""
    db = Catalogue.open_readonly(lab.state)
    try:
        plate_id = db.execute("SELECT id FROM plates WHERE barcode = ?", (lab.barcode,)).fetchone()[0]
        states = plate_outcomes(db, plate_id, OutcomeRule.from_config(lab.settings.classify),
                                lab.settings.alerts.hit_min_confidence, inspection=inspection)
    finally:
        db.close()
    return {s.well: s.outcome.label or "none" for s in states.values()}


def _labels_by(lab: Lab, labeller: str | None = None) -> dict[int, str]:
    """image id → label given by ``labeller`` (every label when None), read as the service wrote it."""
    db = Catalogue.open_readonly(lab.state)
    try:
        rows = db.execute("SELECT image_id, label, labeller FROM labels").fetchall()
    finally:
        db.close()
    return {r[0]: r[1] for r in rows if labeller in (None, r[2])}


# -- the tests ---------------------------------------------------------------------------------
def test_a_reviewer_browses_labels_with_the_keyboard_and_a_refitted_head_serves(lab: Lab, tmp_path: Path) -> None:
    shots = screenshot_dir(tmp_path / "screenshots")
    classes = lab.settings.classify.classes
    downloads = tmp_path / "downloads"
    with running_service(lab, tmp_path / "service.log", lab.config) as service, chromium(downloads) as browser:
        base = f"http://127.0.0.1:{service.port}"

        # Plates: / leads to the list, the plate's row links to its map.
        browser.get(base + "/")
        wait_on(browser, lambda d: _path(d) == "/plates", "/ to redirect to /plates")
        row = wait_on(browser, lambda d: d.find_elements(
            By.CSS_SELECTOR, f'table#plates tr.plate-row[data-barcode="{lab.barcode}"]'), "the plate's row")[0]
        save_screenshot(browser, shots, "review_plates")
        row.find_element(By.CSS_SELECTOR, "a.plate-link").click()

        # Plate map: one cell per well, coloured by the outcome the per-well rule gives.
        wait_on(browser, lambda d: _path(d) == f"/plates/{lab.barcode}", "the plate link to open the plate map")
        shown, expected = _plate_map(browser), _expected_map(lab)
        assert len(shown) == WELLS and shown == expected
        assert set(shown.values()) - {"none"}, "no well has an outcome: the service classified nothing"
        save_screenshot(browser, shots, "review_plate_map")

        # The CSV export downloads from the plate page: one row per well, as the LIMS reads it.
        browser.find_element(By.CSS_SELECTOR, "a#export-csv").click()
        exported = wait_on(browser, lambda d: [p for p in downloads.glob("*.csv")], "the CSV export to download")[0]
        with open(exported, newline="", encoding="utf-8") as f:
            table = list(csv.DictReader(f))
        assert [r["well"] for r in table] == sorted(expected, key=well_position)
        assert {r["plate"] for r in table} == {lab.barcode}
        for r in table:
            assert (r["class"] or "none") == expected[r["well"]], r
            assert r["model_version"] in ("", lab.version), r
            assert r["image_ids"], f"well {r['well']}: no image ids in the export"

        # The inspection selector shows the plate as it was after inspection 1.
        Select(browser.find_element(By.CSS_SELECTOR, "select#inspection")).select_by_value("1")
        wait_on(browser, lambda d: parse_qs(urlparse(d.current_url).query).get("inspection") == ["1"],
                "the selector to show inspection 1")
        assert _plate_map(browser) == _expected_map(lab, inspection=1)

        # Well: its two inspections side by side, crop and frame, call, model version.
        rule = OutcomeRule.from_config(lab.settings.classify)
        strongest = max(sorted(shown), key=lambda w: rule.strength(None if shown[w] == "none" else shown[w]))
        browser.find_element(By.CSS_SELECTOR, f'#plate-map .well[data-well="{strongest}"]').click()
        wait_on(browser, lambda d: _path(d).startswith("/wells/"), "the well link to open the well page")
        inspections = wait_on(browser, lambda d: d.find_elements(By.CSS_SELECTOR, ".inspection"), "the inspections")
        assert len(inspections) == 2
        wait_on(browser, lambda d: _images_loaded(d, ".inspection img.crop") and _images_loaded(d, ".inspection img.frame"),
                "the well's crops and frames to load")
        for item in inspections:
            assert any(c in item.find_element(By.CSS_SELECTOR, ".call").text for c in classes)
            assert lab.version in item.find_element(By.CSS_SELECTOR, ".model-version").text
        save_screenshot(browser, shots, "review_well")

        # Hits, models, health.
        browser.get(base + "/hits")
        wait_on(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "ul#hits"), "the hits feed")
        save_screenshot(browser, shots, "review_hits")
        browser.get(base + "/models")
        wait_on(browser, lambda d: d.find_elements(
            By.CSS_SELECTOR, f'table#models tr.model[data-version="{lab.version}"][data-status="promoted"]'),
            "the serving model in the registry table")
        assert _serving(browser) == lab.version
        browser.get(base + "/health")
        wait_on(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "dl#health"), "the health list")

        # Review: three labels with keys 1, 2, 3; the label count follows; a re-fitted head serves.
        browser.get(base + "/review")
        wait_on(browser, lambda d: _images_loaded(d, "img#review-image"), "the first image to review")
        assert _serving(browser) == lab.version
        count = wait_on(browser, lambda d: _count(d, "#label-count"), "the label count")
        assert count == len(_labels_by(lab))
        labelled: list[tuple[int, str]] = []
        for key in "123":
            shown_id = int(browser.find_element(By.CSS_SELECTOR, "#review-meta").get_attribute("data-image-id"))
            assert shown_id not in {i for i, _ in labelled}, "the page offered an image labelled already"
            ActionChains(browser).send_keys(key).perform()
            count += 1
            wait_on(browser, lambda d, n=count: _count(d, "#label-count") == n, f"#label-count to reach {count}")
            wait_on(browser, lambda d, old=shown_id: d.find_element(By.CSS_SELECTOR, "#review-meta")
                    .get_attribute("data-image-id") not in (None, "", str(old)), "the next image to review")
            labelled.append((shown_id, classes[int(key) - 1]))
        reviewer = lab.settings.web.labeller_default
        assert _labels_by(lab, reviewer) == dict(labelled)
        refitted = wait_on(browser, lambda d: _serving(d) not in ("", lab.version) and _serving(d),
                           "a re-fitted head to serve", timeout=60)
        registry = ModelRegistry(lab.state)  # a later label may have been re-fitted again since: newer still
        assert registry.get(refitted).promoted_at is not None and registry.current_version() != lab.version
        save_screenshot(browser, shots, "review_queue")

        # Undo: 'u' takes the last label back, in the page and in the catalogue.
        ActionChains(browser).send_keys("u").perform()
        count -= 1
        wait_on(browser, lambda d: _count(d, "#label-count") == count, f"#label-count to fall back to {count}")
        assert _labels_by(lab, reviewer) == dict(labelled[:-1])

        # The registry now holds the re-fitted head, serving, and the first model retired.
        browser.get(base + "/models")
        wait_on(browser, lambda d: d.find_elements(By.CSS_SELECTOR, f'tr.model[data-version="{refitted}"]')
                and d.find_elements(By.CSS_SELECTOR, f'tr.model[data-version="{lab.version}"][data-status="retired"]'),
                "the re-fitted head and the retired first model in the registry table")
        save_screenshot(browser, shots, "review_models")
        browser.get(base + "/health")
        wait_on(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "dl#health"), "the health list")
        save_screenshot(browser, shots, "review_health")


def test_off_loopback_a_write_needs_the_token(lab: Lab, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n", encoding="utf-8")
    token_file.chmod(0o600)
    config = _write_config(tmp_path / "public.yaml", lab.watch, lab.state, metrics={"host": "0.0.0.0"},
                           web={"token_file": str(token_file)})
    with running_service(lab, tmp_path / "service.log", config) as service, chromium() as browser:
        base = f"http://127.0.0.1:{service.port}"  # bound to 0.0.0.0: the bind, not the client, decides
        assert _status(base + "/metrics") == 200 and _status(base + "/plates") == 200  # reads stay open
        browser.get(base + "/review")
        wait_on(browser, lambda d: _images_loaded(d, "img#review-image"), "the image to review")
        image_id = int(browser.find_element(By.CSS_SELECTOR, "#review-meta").get_attribute("data-image-id"))
        before, total = _labels_by(lab, lab.settings.web.labeller_default), len(_labels_by(lab))
        post = """
            const [body, token, done] = arguments;
            const headers = {"Content-Type": "application/json",
                             "X-CSRF-Token": document.querySelector('meta[name="csrf-token"]').content};
            if (token) headers["Authorization"] = "Bearer " + token;
            fetch("/api/labels", {method: "POST", headers, body: JSON.stringify(body)})
                .then(async r => done({status: r.status, body: await r.text()}))
                .catch(e => done({status: 0, body: String(e)}));
        """
        body = {"image_id": image_id, "label": lab.settings.classify.classes[0]}
        refused = browser.execute_async_script(post, body, None)
        assert refused["status"] == 403, refused
        assert json.loads(refused["body"])["error"]
        assert _labels_by(lab, lab.settings.web.labeller_default) == before
        wrong = browser.execute_async_script(post, body, "not-the-token")
        assert wrong["status"] == 403, wrong
        accepted = browser.execute_async_script(post, body, TOKEN)
        assert accepted["status"] == 200, accepted
        assert json.loads(accepted["body"])["label_count"] == total + 1
        assert _labels_by(lab, lab.settings.web.labeller_default) == {**before, image_id: body["label"]}
