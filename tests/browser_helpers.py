"""A real headless Chromium for tests, driven by Selenium through Debian's ``chromium-driver``.

Both the browser and the driver are given by path, so Selenium Manager never runs and nothing is
downloaded: a test machine without ``chromium`` and ``chromium-driver`` (installed by
``.ci/install-system-deps.sh``) skips, or fails under CI where they must exist.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest
from conftest import require_tool
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

__all__ = ["WINDOW", "chromium", "browser_paths", "screenshot_dir", "save_screenshot", "wait_on", "browser"]

WINDOW = (1280, 900)  # px; fixed, so that screenshots and layouts do not depend on the host's display
T = TypeVar("T")


def browser_paths() -> tuple[str, str]:
    """(chromium, chromedriver) from Debian's packages; skip (fail under CI) when either is missing."""
    return require_tool("chromium"), require_tool("chromedriver")


@contextmanager
def chromium(download_dir: Path | None = None, window: tuple[int, int] = WINDOW) -> Iterator[WebDriver]:
    """A headless Chromium; downloads land in ``download_dir`` without a prompt. Quit on exit.

    ``--no-sandbox``: tests run as root in containers, where Chromium's sandbox cannot start;
    ``--disable-dev-shm-usage``: container /dev/shm is often 64 MB, too small for the renderer.
    """
    binary, driver_path = browser_paths()
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--no-first-run", "--disable-extensions", "--disable-background-networking",
                f"--window-size={window[0]},{window[1]}"):
        options.add_argument(arg)
    if download_dir is not None:
        download_dir.mkdir(parents=True, exist_ok=True)
        options.add_experimental_option("prefs", {
            "download.default_directory": str(download_dir), "download.prompt_for_download": False,
            "download.directory_upgrade": True, "safebrowsing.enabled": False})
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    try:
        if download_dir is not None:  # headless Chromium only saves downloads when told where, over CDP
            driver.execute_cdp_cmd("Browser.setDownloadBehavior",
                                   {"behavior": "allow", "downloadPath": str(download_dir)})
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    """A headless Chromium per test; its downloads go to ``tmp_path / "downloads"``."""
    with chromium(tmp_path / "downloads") as driver:
        yield driver


def wait_on(driver: WebDriver, condition: Callable[[WebDriver], T], what: str, timeout: float = 20.0) -> T:
    """Wait until ``condition(driver)`` is truthy and return its value; fail naming ``what`` and the page."""
    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.1).until(condition)
    except TimeoutException:
        raise AssertionError(f"not within {timeout} s: {what} (at {driver.current_url})") from None


def screenshot_dir(default: Path) -> Path:
    """Where page screenshots go: $XTALWATCH_SCREENSHOTS (e.g. docs/img) when set, else ``default``."""
    folder = Path(os.environ.get("XTALWATCH_SCREENSHOTS") or default)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def save_screenshot(driver: WebDriver, folder: Path, name: str, *, full_page: bool = True,
                    max_height: int = 1800) -> Path:
    """Save the page as ``folder/name.png`` once its images have loaded.

    ``full_page`` grows the window to the page's height (up to ``max_height`` px, so that a long
    feed stays a readable picture) and back afterwards. The PNG is written under a temporary name
    and renamed, so a regenerated docs image is never half written.
    """
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    tmp = folder / f".{name}.{os.getpid()}.png"
    size = driver.get_window_size()
    if full_page:
        page: Any = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(size["width"], max(size["height"], min(int(page) + 120, max_height)))
    try:
        # Lazy images load once the taller window shows them (those below it never do); a broken one
        # counts as complete.
        wait_on(driver, lambda d: d.execute_script(
            "return [...document.images].every(i => i.complete || i.getBoundingClientRect().top >= innerHeight)"),
            f"the images of {driver.current_url} to load before the screenshot")
        if not driver.save_screenshot(str(tmp)):
            raise AssertionError(f"Chromium could not save a screenshot of {driver.current_url}")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
        if full_page:
            driver.set_window_size(size["width"], size["height"])
    return path
