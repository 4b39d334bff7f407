"""Test support: Debian's chromium under Playwright, for the pages' browser tests.

Screenshots go to reports/ (CI keeps that folder), so a failing page can be looked at.
"""

import contextlib
import shutil
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]  # fmt: skip
REPORTS = Path(__file__).resolve().parents[1] / "reports"
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 375, "height": 812}


@contextlib.contextmanager
def launched():
    """A headless chromium, closed on the way out; the test fails (not skips) where chromium is missing."""
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is not installed (Debian package chromium; ./dev test installs it)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        try:
            yield browser
        finally:
            browser.close()


def screenshot(page, name):
    REPORTS.mkdir(exist_ok=True)
    page.screenshot(path=str(REPORTS / name), full_page=True)
