"""The web dashboard in a real browser (Debian's chromium, driven by Playwright).

Against vbms run on the default simulated bench: the page shows what VBMS.GetSummary returned to it, at
desktop and phone widths, in both themes, and the settings still work.  With summaries the test serves
itself (a Playwright route in front of the same static files): the charts are drawn from the data,
unknown values are shown as unknown, and the page keeps one hour of history.
"""

import json
import re
from pathlib import Path

import pytest
from chromium import DESKTOP, PHONE, launched, screenshot
from conftest import wait_for

from hil.benchfile import load_default
from hil.sim import Simulation

pytestmark = pytest.mark.ble

ROOT = Path(__file__).resolve().parents[1]
WEB = ROOT / "hil" / "web"


@pytest.fixture(scope="module")
def bench():
    with Simulation(load_default()) as simulation:  # the default bench's compressed solar day: values move
        assert wait_for(lambda: simulation.rpc("VBMS.GetSummary")[1]["totals"]["online"] == 8, 40)
        yield simulation


@pytest.fixture(scope="module")
def browser():
    with launched() as browser:
        yield browser


# --- what a cell should say, from the summary (the formats the issue asks for) -----------------------


def shown(value, scale, digits):
    return "unknown" if value is None else "%.*f" % (digits, value / scale)


def shown_percent(permille, estimated=False):
    if permille is None:
        return "unknown"
    text = "%.1f" % (permille / 10)
    return ("~" if estimated else "") + (text[:-2] if text.endswith(".0") else text) + "%"


def shown_switch(enabled, what):
    return what + (" enabled" if enabled is True else " disabled" if enabled is False else ": unknown")


def cells_of(page, slot):
    row = page.locator('#batteries tr.battery[data-slot="%d"]' % slot)
    labels = row.locator("td").evaluate_all("cells => cells.map(c => [c.dataset.label, c.innerText])")
    return dict(labels), row


def check_row(page, battery):
    text, row = cells_of(page, battery["slot"])
    assert text["#"] == str(battery["slot"])
    for part in (battery["name"], str(battery["addr"]), battery["model"]):
        assert part in text["Name"]
    words = text["Status"].split("\n")
    assert words[0] == battery["status"]
    if battery["error"]:
        assert battery["error"] in words[1]
    elif battery["status"] == "online":
        assert words[1] == "data %d s old" % battery["age_s"]
    if battery.get("remain_capacity") is None:
        assert text["Cap, Ah"] == "unknown"
    else:
        assert text["Cap, Ah"] == "%.2f / %.2f" % (
            battery["remain_capacity"] / 100,
            battery["full_charge_capacity"] / 100,
        )
    assert text["SOC"] == shown_percent(battery.get("SOC"), battery.get("SOC_estimated") is True)
    assert text["SOH"] == shown_percent(battery.get("SOH"))
    assert text["Volt"] == shown(battery.get("pack_voltage"), 100, 2)
    assert text["Cur"] == shown(battery.get("pack_current"), 100, 2)
    assert text["Temp"] == shown(battery.get("cell_temp_avg"), 10, 1)
    assert row.locator('td[data-label="ChE"] .pill').get_attribute("title") == shown_switch(
        battery.get("charge_enabled"), "charge"
    )
    assert row.locator('td[data-label="DcE"] .pill').get_attribute("title") == shown_switch(
        battery.get("discharge_enabled"), "discharge"
    )


def polylines(page, slot, series):
    chart = page.locator('tr.detail[data-slot="%d"] svg[data-series="%s"]' % (slot, series))
    lines = chart.locator("polyline").evaluate_all("lines => lines.map(l => l.getAttribute('points'))")
    return [[tuple(map(float, pair.split(","))) for pair in line.split()] for line in lines], chart


# --- the live bench -------------------------------------------------------------------------------


def test_home_shows_what_get_summary_returns(bench, browser):
    page = browser.new_page(viewport=DESKTOP, color_scheme="dark")
    answers = []
    page.on("response", lambda r: answers.append(r) if r.url.endswith("/rpc/VBMS.GetSummary") and r.ok else None)
    page.goto(bench.http_url + "/")
    page.wait_for_selector("#batteries tr.battery >> nth=7")
    page.check('input[name="refresh"][value="1"]')
    page.click('tr.battery[data-slot="0"] .name')
    page.click('tr.battery[data-slot="7"] .name')
    for _ in range(120):  # Playwright delivers its events while the page is waited on, not in time.sleep
        if len(answers) >= 6:
            break
        page.wait_for_timeout(250)
    page.check('input[name="refresh"][value="0"]')
    with page.expect_response("**/rpc/VBMS.GetSummary") as response:
        page.evaluate("refresh()")
    summary = response.value.json()
    assert [battery["slot"] for battery in summary["bms"]] == list(range(8))
    assert page.locator("#batteries tr.battery").count() == 8
    for battery in summary["bms"]:
        check_row(page, battery)
    unknown = [
        (b["slot"], k) for b in summary["bms"] for k in ("SOC", "pack_current", "cell_temp_avg") if b.get(k) is None
    ]
    jk04 = next(b for b in summary["bms"] if b["model"] == "JK-B2A16S")
    assert unknown or jk04.get("SOC_estimated"), "the JK04 battery reports no SOC: shown unknown or estimated"
    assert "%d / %d online" % (summary["totals"]["online"], 8) in page.locator("#totals").inner_text()
    assert page.locator("#updated").inner_text().startswith("Last updated: ")

    # the history: one point per summary the page read, in each of the slot's charts
    samples = len(answers)
    for series in ("soc", "v", "a", "age"):
        lines, _ = polylines(page, 0, series)
        assert sum(len(line) for line in lines) == samples, series
    cells = summary["bms"][7]["cells"]
    assert page.locator('tr.detail[data-slot="7"] rect.cell').count() == len(cells) == 16
    assert page.locator('tr.detail[data-slot="7"] .cell-summary').inner_text() == (
        "16 cells: min %d mV (cell %d), max %d mV (cell %d), delta %d mV"
        % (min(cells), cells.index(min(cells)) + 1, max(cells), cells.index(max(cells)) + 1, max(cells) - min(cells))
    )
    assert page.evaluate("document.documentElement.scrollWidth") <= DESKTOP["width"]
    screenshot(page, "dashboard-desktop-dark.png")
    page.click("#theme")
    assert page.evaluate("document.documentElement.dataset.theme") == "light"
    screenshot(page, "dashboard-desktop-light.png")
    page.close()


@pytest.mark.parametrize("theme", ["dark", "light"])
def test_a_phone_width_needs_no_horizontal_scroll(bench, browser, theme):
    page = browser.new_page(viewport=PHONE, color_scheme=theme)
    page.goto(bench.http_url + "/")
    page.wait_for_selector("#batteries tr.battery >> nth=7")
    assert page.evaluate("document.documentElement.dataset.theme") == theme  # follows the system's choice
    page.click('tr.battery[data-slot="4"] .name')
    page.wait_for_selector('tr.detail[data-slot="4"] svg.cells')
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    assert page.locator('tr.battery[data-slot="4"]').bounding_box()["width"] <= PHONE["width"]
    screenshot(page, "dashboard-phone-%s.png" % theme)
    page.goto(bench.http_url + "/#settings")
    page.wait_for_selector('input[name="bms14.voltage"]')
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    if theme == "dark":
        screenshot(page, "dashboard-settings-phone.png")
    page.close()


def test_settings_validate_and_save(bench, browser):
    page = browser.new_page(viewport=DESKTOP, color_scheme="dark")
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
    screenshot(page, "dashboard-settings.png")
    page.close()


# --- summaries served by the test --------------------------------------------------------------------

STATIC = {"/": "index.html", "/static/app.js": "app.js", "/static/style.css": "style.css"}
KINDS = {"html": "text/html", "js": "text/javascript", "css": "text/css"}
START_MS = 1_800_000_000_000
CELLS = [3301, 3312, 3305, 3298, 3310, 3307, 3303, 3309, 3300, 3311, 3304, 3306, 3302, 3308, 3299, 3305]


def battery(slot, **fields):
    row = {
        "slot": slot, "unit": slot, "type": "byd_pro", "addr": slot + 1, "name": "Battery %d" % slot,
        "serial_no": "", "model": "BYD PRO 2.5", "status": "online", "error": None, "last_update": None, "age_s": 1,
        "pack_voltage": 5300, "pack_current": -250, "remain_capacity": 4000, "cell_temp_avg": 251, "env_temp": 240,
        "warning": 0, "protection": 0, "fault_status": 0, "SOC": 810, "SOH": 990, "full_charge_capacity": 4950,
        "cycle_count": 12, "max_charge_current": 5000, "max_cell_voltage": 3312, "min_cell_voltage": 3298,
        "max_cell_temp": 260, "min_cell_temp": 240, "mosfet_temp": None, "nominal_float_voltage": 5520,
        "design_capacity": 4950, "cells": CELLS, "charge_enabled": True, "discharge_enabled": True,
    }  # fmt: skip
    row.update(fields)
    return row


def summary_of(rows):
    return {"timestamp": None, "bms": rows, "totals": {"batteries": len(rows), "online": 1}}


@pytest.fixture
def served(browser):
    """A page on the real static files whose GetSummary answers come from the list `summaries`."""
    page = browser.new_page(viewport=DESKTOP, color_scheme="dark")
    summaries = []

    def handle(route):
        path = route.request.url.split("vbms.test", 1)[1]
        if path in STATIC:
            name = STATIC[path]
            return route.fulfill(body=(WEB / name).read_bytes(), content_type=KINDS[name.rsplit(".", 1)[1]])
        if path == "/rpc/VBMS.GetSummary":
            return route.fulfill(body=json.dumps(summaries.pop(0)), content_type="application/json")
        return route.fulfill(status=404, body="{}")

    page.clock.install(time=START_MS)
    page.clock.pause_at(START_MS + 1000)  # time moves only when the test says
    page.route("http://vbms.test/**", handle)
    yield page, summaries
    page.close()


def test_charts_are_drawn_from_the_summaries(served):
    page, summaries = served
    # sample 2 is stale (its last registers are not the present: not plotted), sample 5 has no SOC
    socs = [500, 520, 540, 560, 580, None, 575]
    currents = [-1000, -500, 0, 500, 1500, 1200, 900]
    ages = [1, 2, 42, 3, 0, 1, 1]
    for index, (soc, current, age) in enumerate(zip(socs, currents, ages, strict=True)):
        status = "stale" if index == 2 else "online"
        summaries.append(summary_of([battery(0, SOC=soc, pack_current=current, age_s=age, status=status)]))
    page.goto("http://vbms.test/")
    page.wait_for_selector("#batteries tr.battery")
    page.check('input[name="refresh"][value="0"]')
    for _ in socs[1:]:
        page.clock.run_for(10000)
        page.evaluate("refresh()")
    page.click('tr.battery[data-slot="0"] .name')

    lines, chart = polylines(page, 0, "soc")
    assert [len(line) for line in lines] == [2, 2, 1]  # gaps where the data was stale, and unknown
    points = [point for line in lines for point in line]
    values = [50.0, 52.0, 56.0, 58.0, 57.5]
    xs = [x for x, _ in points]
    assert xs[2] - xs[1] == pytest.approx(2 * (xs[1] - xs[0]), abs=0.35)  # 20 s (over the gap) against 10 s
    # y falls linearly as the value rises: the highest SOC at the top of the plot, the lowest at the bottom
    slope = (points[-1][1] - points[0][1]) / (values[-1] - values[0])
    assert slope < 0
    for (_, y), value in zip(points, values, strict=True):
        assert y == pytest.approx(points[0][1] + slope * (value - values[0]), abs=0.15)
    assert "SOC: 57.5 %" in chart.inner_html()

    lines, chart = polylines(page, 0, "a")
    assert [len(line) for line in lines] == [2, 4]
    ys = [y for line in lines for _, y in line]  # -10, -5 | 5, 15, 12, 9 A
    assert ys.index(max(ys)) == 0 and ys.index(min(ys)) == 3  # -10 A lowest, 15 A highest
    assert "Current: 9.00 A" in chart.inner_html()
    lines, _ = polylines(page, 0, "age")
    ys = [y for _, y in lines[0]]
    assert len(ys) == 7 and ys.index(min(ys)) == 2  # the data age is plotted stale or not: 42 s at the top

    bars = page.locator('tr.detail[data-slot="0"] rect.cell')
    heights = bars.evaluate_all("bars => bars.map(b => Number(b.getAttribute('height')))")
    assert len(heights) == len(CELLS)
    per_mv = (heights[1] - heights[3]) / (CELLS[1] - CELLS[3])
    for height, mv in zip(heights, CELLS, strict=True):
        assert height == pytest.approx(heights[3] + per_mv * (mv - CELLS[3]), abs=0.02)
    assert per_mv > 0
    assert bars.nth(CELLS.index(max(CELLS))).get_attribute("class") == "cell max"
    assert bars.nth(CELLS.index(min(CELLS))).get_attribute("class") == "cell min"
    assert (
        page.locator(".cell-summary").inner_text()
        == "16 cells: min 3298 mV (cell 4), max 3312 mV (cell 2), delta 14 mV"
    )

    # the page keeps one hour: just over an hour later only the new sample is left
    summaries.append(summary_of([battery(0, SOC=600)]))
    page.clock.run_for(3601 * 1000)
    page.evaluate("refresh()")
    lines, _ = polylines(page, 0, "soc")
    assert [len(line) for line in lines] == [1]


def test_unknown_values_and_states_are_said_in_words(served):
    page, summaries = served
    rows = [
        battery(0, SOC=523, SOC_estimated=True),
        battery(1, SOC=None, SOH=None, pack_current=None, cell_temp_avg=None, remain_capacity=None,
                charge_enabled=None, discharge_enabled=False, cells=[]),
        battery(2, status="stale", age_s=42),
        battery(3, status="error", error="BLE connect failed: not found", age_s=None, last_update=None),
        {"slot": 4, "unit": 4, "type": "jk_ble", "addr": "C8:47:8C:10:00:09", "name": "new", "serial_no": "",
         "model": "JK-BMS", "status": "waiting", "error": None, "last_update": None, "age_s": None},
    ]  # fmt: skip
    summaries.append(summary_of(rows))
    page.goto("http://vbms.test/")
    page.wait_for_selector('#batteries tr.battery[data-slot="4"]')
    for row in rows:
        check_row(page, row)
    text, _ = cells_of(page, 0)
    assert text["SOC"] == "~52.3%"
    text, _ = cells_of(page, 1)
    assert [text[label] for label in ("Cap, Ah", "SOC", "SOH", "Cur", "Temp")] == ["unknown"] * 5
    assert text["Volt"] == "53.00"  # a known value next to the unknown ones
    text, _ = cells_of(page, 2)
    assert text["Status"] == "stale\nno fresh data for 42 s"
    text, _ = cells_of(page, 3)
    assert text["Status"] == "error\nBLE connect failed: not found"
    text, _ = cells_of(page, 4)
    assert text["Status"] == "waiting\nno data yet" and text["SOC"] == "unknown" and text["Volt"] == "unknown"
    page.click('tr.battery[data-slot="1"] .name')
    detail = page.locator('tr.detail[data-slot="1"]')
    assert detail.locator('svg[data-series="soc"] polyline').count() == 0
    assert "SOC: unknown" in detail.locator('svg[data-series="soc"]').inner_html()
    assert detail.locator(".cell-summary").inner_text() == "cell voltages unknown"
    assert not re.search(r"\b0\.0+%", page.locator("#batteries").inner_text())  # nothing unknown became 0 %
    screenshot(page, "dashboard-states.png")
