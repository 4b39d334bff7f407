"""The web dashboard in a real browser (Debian's chromium, driven by Playwright),
against vbms run on the default simulated bench."""

import shutil
from pathlib import Path

import pytest
from conftest import wait_for

from hil.benchfile import load_default
from hil.sim import Simulation

pytestmark = pytest.mark.ble

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]  # fmt: skip
REPORTS = Path(__file__).resolve().parents[1] / "reports"


@pytest.fixture(scope="module")
def bench():
    default = load_default()
    default.profile = {"kind": "constant", "watts": 0.0}
    with Simulation(default) as simulation:
        assert wait_for(lambda: simulation.rpc("VBMS.GetSummary")[1]["totals"]["online"] == 8, 40)
        yield simulation


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is not installed (Debian package chromium; ./dev test installs it)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        yield browser
        browser.close()


def test_home_shows_what_get_summary_returns(bench, browser):
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.goto(bench.http_url + "/")
    page.wait_for_selector("#batteries tbody tr:nth-child(8)")
    summary = bench.rpc("VBMS.GetSummary")[1]
    rows = page.locator("#batteries tbody tr")
    assert rows.count() == 8
    for index, battery in enumerate(summary["bms"]):
        cells = rows.nth(index).locator("td").all_inner_texts()
        assert cells[0] == str(battery["slot"] + 1)
        assert cells[3] == "online"
        shown_volts = float(cells[7].split()[0])
        assert abs(shown_volts - battery["pack_voltage"] / 100) <= 0.02
        if battery["SOC"] is None:  # JK04 sends no SOC: shown blank, not as 0 %
            assert cells[5] == "" and battery["model"] == "JK-B2A16S"
        else:
            assert cells[5] == "%.1f%%" % (battery["SOC"] / 10)
    assert "8 / 8 online" in page.locator("#totals").inner_text()
    assert "updated" in page.locator("#updated").inner_text()
    rows.nth(0).click()
    assert page.locator("#cells .cell").count() == 16
    assert "16 cells" in page.locator("#detail-summary").inner_text()
    REPORTS.mkdir(exist_ok=True)
    page.screenshot(path=str(REPORTS / "dashboard-home.png"), full_page=True)
    page.close()


def test_settings_validate_and_save(bench, browser):
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.goto(bench.http_url + "/#settings")
    page.wait_for_selector('input[name="bms0.voltage"]')
    page.fill("#token", bench.dut_token)
    page.fill('input[name="bms0.voltage"]', "99")
    page.click("#save")
    page.wait_for_function("document.querySelector('#settings-status').textContent.length > 0")
    assert (
        "bms0.voltage: must be within 40.0..64.0" in page.locator('#slots tr[data-slot="0"] .field-error').inner_text()
    )
    assert bench.rpc("Config.Get")[1]["bms0"]["voltage"] == 55.2
    page.fill('input[name="bms0.voltage"]', "56")
    page.click("#save")
    page.wait_for_function("document.querySelector('#settings-status').textContent === 'saved'")
    assert bench.rpc("Config.Get")[1]["bms0"]["voltage"] == 56.0
    page.click("#scan")
    page.wait_for_selector("#scan-results li", timeout=20000)
    assert "C8:47:8C:10:00:0" in page.locator("#scan-results").inner_text()
    REPORTS.mkdir(exist_ok=True)
    page.screenshot(path=str(REPORTS / "dashboard-settings.png"), full_page=True)
    page.close()
