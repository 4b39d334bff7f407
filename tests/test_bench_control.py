"""Bench control (hil/bench_control.py): a running bench changed over HTTP and from its page, recorded in the
trace, and replayed.

Each operation is checked where it counts: in what the simulated DEYE inverter reads through the device under
test (`vbms run`), within a time bound.  The expected values come from the bench file (the batteries' SOC),
the protocols (BYD PRO reports whole percent and whole degrees), docs/alarms.md (BYD protect bit 8 -> DEYE P6)
and the inverter's documented rules (W31 after warn_after missed polls; the power split equally over the
answering batteries at their mean voltage: simulators/deye/master.py).
"""

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from chromium import DESKTOP, PHONE, launched, screenshot
from conftest import bench_toml, wait_for

from hil import bench_control
from hil.benchfile import parse
from hil.sim import Simulation

ROOT = Path(__file__).resolve().parents[1]
POLL_S = 0.5
WARN_AFTER = 3
BENCH = {
    "name": "control",
    "description": "two BYD PRO 2.5 modules and a JK-PB on one RS485 bus",
    "seed": 1,
    "buses": {"inverter": {"protocol": "deye"}, "bms": {"protocol": "byd-pro"}},
    "inverter": {"bus": "inverter", "units": [0, 1, 2], "poll_period_s": POLL_S, "timeout_s": 0.2,
                 "warn_after": WARN_AFTER, "profile": {"kind": "constant", "watts": 0}},
    "batteries": [
        {"slot": 0, "type": "byd_pro", "bus": "bms", "address": 1, "soc_permille": 800},
        {"slot": 1, "type": "byd_pro", "bus": "bms", "address": 2, "soc_permille": 700},
        {"slot": 2, "type": "jk_rs485", "bus": "bms", "address": 3, "soc_permille": 600},
    ],
}  # fmt: skip
STALE_S = 2  # the device under test's app.stale_s for these tests: a silent battery is dropped after 2 s
SEEN_WITHIN_S = 8  # a new value reaches the inverter: the BMS poll, the DUT, the next poll of the inverter


def call(url, path, body=None, method=None, raw=None):
    """(status, decoded JSON) of a request to the bench control."""
    data = raw if raw is not None else None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url + path, data=data, method=method or ("POST" if data is not None else "GET"))
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.fixture(scope="module")
def bench():
    with Simulation(parse(BENCH), ble=False, control_port=0) as simulation:
        status, _ = simulation.rpc("Config.Set", {"config": {"app.stale_s": STALE_S}}, token=simulation.dut_token)
        assert status == 200
        inverter = simulation.inverter
        assert wait_for(lambda: all(inverter.units[u].values for u in range(3)), 30), simulation.status()
        yield simulation


def op(bench, name, **params):
    status, body = call(bench.control.url, "/api/" + name, params)
    assert status == 200, body
    return body


def seen(bench, slot):
    """What the inverter last read for the slot's unit."""
    return bench.inverter.units[slot].values or {}


def test_the_endpoints_line_names_the_bench_control(bench):
    endpoints = bench.endpoints()
    assert endpoints["control"]["http"] == bench.control.url
    assert bench.control.url.startswith("http://127.0.0.1:")
    status, state = call(bench.control.url, "/api/state")
    assert status == 200 and state["bench"] == "control"
    assert [b["slot"] for b in state["batteries"]] == [0, 1, 2]
    assert state["dashboard"] == bench.http_url  # the device under test's page, another server


def test_soc_temperature_and_cell_spread_reach_the_inverter(bench):
    op(bench, "set_soc", slot=0, soc_pct=37)
    op(bench, "set_temperature", slot=1, temperature_c=45)
    op(bench, "set_cell_spread", slot=1, cell_spread_mv=120)  # slot 1's charge is left as it is
    # BYD PRO reports whole percent (deye-byd-modbus.md 2.3): 37 % is 370 permille at the inverter
    assert wait_for(lambda: seen(bench, 0).get("soc_permille") == 370, SEEN_WITHIN_S), seen(bench, 0)
    # four sensors around 45 degC, reported in whole degrees: the average within a degree
    assert wait_for(lambda: abs(seen(bench, 1).get("cell_temp_avg_ddegc", 0) - 450) <= 10, SEEN_WITHIN_S)
    # no current flows (the profile is 0 W) and every cell is at the same SOC: the spread is the offsets'
    spread = lambda: seen(bench, 1).get("max_cell_voltage_mv", 0) - seen(bench, 1).get("min_cell_voltage_mv", 0)  # noqa: E731
    assert wait_for(lambda: abs(spread() - 120) <= 2, SEEN_WITHIN_S), seen(bench, 1)
    # the other slots are left alone
    assert seen(bench, 2)["soc_permille"] == 600 and seen(bench, 1)["soc_permille"] == 700


def test_a_device_failure_switches_the_inverters_warning_on_and_off(bench):
    op(bench, "device_failure", slot=2, failure="silent")
    # the DUT drops the slot after app.stale_s, the inverter warns after warn_after missed polls
    within_s = STALE_S + WARN_AFTER * POLL_S + 4
    assert wait_for(lambda: bench.inverter.units[2].comm_warning, within_s), bench.inverter.units[2]
    assert bench.inverter.warnings() == ["W31 Battery_comm_warn: battery 3"]
    op(bench, "device_failure", slot=2, failure=None)
    assert wait_for(lambda: not bench.inverter.units[2].comm_warning, SEEN_WITHIN_S)
    assert bench.inverter.warnings() == []


def test_a_bus_fault_switches_on_and_off(bench):
    body = op(bench, "bus_fault", bus="inverter", kind="drop", source="dut")
    fault_id = body["result"]["id"]
    _, state = call(bench.control.url, "/api/state")
    listed = next(b for b in state["buses"] if b["name"] == "inverter")["faults"]
    assert [(f["id"], f["kind"], f["source"]) for f in listed] == [(fault_id, "drop", "dut")]
    # every reply of the DUT is lost on the way: each unit misses warn_after polls in a row
    units = bench.inverter.units
    assert wait_for(lambda: all(units[u].comm_warning for u in range(3)), WARN_AFTER * POLL_S * 3 + 3)
    op(bench, "clear_bus_fault", bus="inverter", id=fault_id)
    assert wait_for(lambda: not any(units[u].comm_warning for u in range(3)), SEEN_WITHIN_S)
    status, body = call(bench.control.url, "/api/clear_bus_fault", {"bus": "inverter", "id": fault_id})
    assert status == 400 and "no active fault %d" % fault_id in body["error"]


def test_an_alarm_bit_reaches_the_inverters_protection_word(bench):
    op(bench, "raise_alarm", slot=1, word="protect", bit=8)  # BYD charge T high -> DEYE P6 (docs/alarms.md)
    assert wait_for(lambda: seen(bench, 1).get("protection") == 1 << 6, SEEN_WITHIN_S), seen(bench, 1)
    op(bench, "clear_alarms", slot=1)
    assert wait_for(lambda: seen(bench, 1).get("protection") == 0, SEEN_WITHIN_S), seen(bench, 1)


def test_the_power_profile_sends_current_into_the_batteries(bench):
    op(bench, "set_profile", kind="constant", watts=2400)
    try:
        # split equally over the three answering units at their mean voltage; positive charges
        def charging_as_split():
            values = [seen(bench, u) for u in range(3)]
            volts = sum(v["pack_voltage_mv"] for v in values) / 3 / 1000
            share_ma = 2400 / volts * 1000 / 3
            return all(abs(v["pack_current_ma"] - share_ma) <= 0.05 * share_ma for v in values)

        assert wait_for(charging_as_split, SEEN_WITHIN_S + 2), [seen(bench, u) for u in range(3)]
        op(bench, "set_profile", kind="day", peak_solar_w=5000, base_load_w=500, day_length_s=600)
        assert bench.inverter.profile.kind == "day" and bench.inverter.profile.day_length_s == 600
        _, state = call(bench.control.url, "/api/state")
        assert state["inverter"]["profile"] == {"kind": "day", "peak_solar_w": 5000, "base_load_w": 500,
                                                "day_length_s": 600}  # fmt: skip
    finally:
        op(bench, "set_profile", kind="constant", watts=0)
    assert wait_for(lambda: all(seen(bench, u)["pack_current_ma"] == 0 for u in range(3)), SEEN_WITHIN_S)


@pytest.mark.parametrize(
    "path, body, status, message",
    [
        ("/api/set_soc", {"slot": 0}, 400, "set_soc needs soc_pct"),
        ("/api/set_soc", {"slot": 0, "soc_pct": "half"}, 400, 'set_soc: soc_pct must be a number, not "half"'),
        ("/api/set_soc", {"slot": 0, "soc_pct": 101}, 400, "set_soc: soc_pct must be within 0..100, not 101"),
        ("/api/set_soc", {"slot": 0, "soc_pct": True}, 400, "soc_pct must be a number, not true"),
        ("/api/set_soc", {"slot": 9, "soc_pct": 50}, 400, "no battery in slot 9; this bench has slots 0, 1, 2"),
        ("/api/set_soc", {"slot": 0, "soc_pct": 5, "cells": 3}, 400, "unknown parameter cells; it takes slot, soc_pct"),
        ("/api/set_soc", [0, 50], 400, "set_soc takes a JSON object of parameters, not list"),
        ("/api/set_temperature", {"slot": 1, "temperature_c": -41}, 400, "temperature_c must be within -40..100"),
        ("/api/set_cell_spread", {"slot": 1, "cell_spread_mv": 2.5}, 400, "cell_spread_mv must be a whole number"),
        # a failure of the BLE link, for a JK on RS485
        (
            "/api/device_failure",
            {"slot": 2, "failure": "disconnect"},
            400,
            "one of silent, garbage, bad_checksum, slow, stuck or null",
        ),
        ("/api/device_failure", {"slot": 0, "failure": "on fire"}, 400, "failure must be one of"),
        ("/api/raise_alarm", {"slot": 2, "word": "protect", "bit": 1}, 400, "word must be one of error"),
        ("/api/raise_alarm", {"slot": 0, "word": "alarm", "bit": 32}, 400, "bit must be within 0..31"),
        ("/api/force_condition", {"slot": 0, "condition": "hot"}, 400, "condition must be one of cell_overvoltage"),
        ("/api/set_profile", {"kind": "night"}, 400, "kind must be one of constant, day, csv"),
        ("/api/set_profile", {"kind": "constant"}, 400, "set_profile needs watts"),
        ("/api/set_profile", {"kind": "csv", "path": "/nonexistent.csv"}, 400, "set_profile: No such file"),
        ("/api/bus_fault", {"bus": "can", "kind": "drop"}, 400, "bus must be one of inverter, bms"),
        ("/api/bus_fault", {"bus": "bms", "kind": "drop", "source": "BYD-9"}, 400, "source must be one of dut, BYD-1"),
        # what hil/wires/faults.py refuses
        (
            "/api/bus_fault",
            {"bus": "bms", "kind": "delay", "target": "dut"},
            400,
            "bus_fault: a delay fault acts on the",
        ),
        ("/api/bus_fault", {"bus": "bms", "kind": "drop", "probability": 2}, 400, "probability must be within 0..1"),
        ("/api/clear_bus_fault", {"bus": "bms", "id": 99}, 400, "bus bms has no active fault 99"),
        ("/api/launch", {}, 404, "no operation 'launch'; the operations are set_soc"),
        ("/api/traffic?limit=0", None, 400, "limit must be within 1..500"),
        ("/api/traffic?after=x", None, 400, "after and limit are whole numbers"),
        ("/api/traffic?bus=can", None, 400, "no bus 'can'"),
        ("/api/set_soc", None, 405, "set_soc is done with POST"),
        ("/nowhere", None, 404, "no page /nowhere"),
    ],
)
def test_bad_input_is_refused_saying_what_is_wrong(bench, path, body, status, message):
    log = list(bench.control.log)
    answered, reply = call(bench.control.url, path, body)
    assert answered == status and message in reply["error"], reply
    assert bench.control.log == log  # nothing done, nothing recorded


def test_a_port_in_use_is_said(bench):
    port = int(bench.control.url.rsplit(":", 1)[1])
    with pytest.raises(bench_control.BenchControlError) as raised:
        bench_control.BenchControl(Simulation(parse(BENCH)), port=port).start()
    assert str(raised.value) == (
        "the bench control cannot listen on 127.0.0.1:%d: Address already in use; choose another --control-port, "
        "or 0 for a free one" % port
    )


def test_a_body_that_is_not_json_is_a_400(bench):
    status, reply = call(bench.control.url, "/api/set_soc", raw=b"{slot: 0")
    assert status == 400 and reply["error"].startswith("the body is not JSON")


def test_the_traffic_is_the_decoded_trace_bounded_and_resumable(bench):
    status, first = call(bench.control.url, "/api/traffic?limit=20")
    assert status == 200 and len(first["records"]) == 20
    assert any(r["decoded"] and r["decoded"].get("function_name") == "read_input_registers" for r in first["records"])
    time.sleep(1.5)  # three inverter polls: requests and replies
    _, more = call(bench.control.url, "/api/traffic?after=%d&bus=inverter&limit=500" % first["next"])
    assert more["next"] > first["next"] and more["records"]
    assert {r["bus"] for r in more["records"]} == {"inverter"}
    assert all(r["t"] >= first["records"][-1]["t"] - 1 for r in more["records"])
    op(bench, "set_soc", slot=1, soc_pct=70)
    _, operator = call(bench.control.url, "/api/traffic?after=%d&bus=operator" % more["next"])
    assert [r["operator"]["op"] for r in operator["records"]] == ["set_soc"]
    assert operator["records"][0]["operator"]["params"] == {"slot": 1, "soc_pct": 70}
    _, few = call(bench.control.url, "/api/traffic?after=0&limit=5")
    assert len(few["records"]) == 5 and few["skipped"] == few["next"] - 5  # the newest kept, the rest counted


def test_the_battery_operations_take_effect_at_once():
    """On the model itself, before any time passes: what a device reads next is the new state."""
    from types import SimpleNamespace

    from hil import operations
    from hil.builder import build_devices

    batteries, devices = build_devices(parse(BENCH))
    world = SimpleNamespace(batteries=batteries, devices=devices)
    battery = batteries[1]
    assert battery.cell_voltages_mv() and battery.soc_permille == 700  # read once: whatever is cached is cached
    operations.set_cell_spread(world, 1, 120)
    cells = battery.cell_voltages_mv()
    assert abs(max(cells) - min(cells) - 120) <= 1 and operations.cell_spread_mv(battery) == 120
    operations.set_soc(world, 1, 250)
    assert battery.soc_permille == 250
    operations.set_temperature(world, 1, 600)  # above the model's 55 degC charge limit: its BMS stops charging
    assert battery.temperatures_ddegc(1) == [600] and battery.charge_enabled is False
    operations.set_temperature(world, 1, 250)
    assert battery.charge_enabled is True
    operations.force_condition(world, 1, "cell_undervoltage", True)
    assert battery.discharge_enabled is False and "cell_undervoltage" in battery.flags()[1]


# --- the trace and replay ---------------------------------------------------------------------------------

OPEN = dict(BENCH, faults=[{"bus": "bms", "kind": "corrupt", "source": "BYD-2", "probability": 0.5}])
ACTIONS = [  # (trace time, operation, parameters)
    (1.0, "set_soc", {"slot": 0, "soc_pct": 42.5}),
    (1.4, "bus_fault", {"bus": "bms", "kind": "drop", "source": "BYD-1", "count": 1000}),
    (1.8, "device_failure", {"slot": 2, "failure": "slow"}),
    (2.2, "clear_bus_fault", {"bus": "bms", "id": 1}),  # the bench file's fault: id 1 on every run
]


def test_operator_actions_are_recorded_and_a_replay_repeats_them_at_the_same_times(tmp_path):
    first_trace, second_trace = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    with Simulation(parse(OPEN), trace_path=str(first_trace), ble=False, dut="open", control_port=0) as first:
        for t_s, name, params in ACTIONS:
            time.sleep(max(0.0, t_s - first.control.now_s()))
            status, _ = call(first.control.url, "/api/" + name, params)
            assert status == 200
    lines = [json.loads(line) for line in first_trace.read_text().splitlines()]
    recorded = [line for line in lines if line["bus"] == "operator"]
    assert [json.loads(bytes.fromhex(line["hex"]))["op"] for line in recorded] == [a[1] for a in ACTIONS]
    actions = bench_control.read_actions(str(first_trace))
    for action, (t_s, name, params) in zip(actions, ACTIONS, strict=True):
        assert action["op"] == name and action["t"] == pytest.approx(t_s, abs=0.15)
        assert {key: action["params"][key] for key in params} == params
    assert actions[1]["result"] == {"id": 2}

    with Simulation(parse(OPEN), trace_path=str(second_trace), ble=False, dut="open") as second:
        from hil.bench_control import BenchControl

        control = BenchControl(second)  # no server needed to replay
        done = bench_control.replay(actions, control)
        assert [result["op"] for _, result in done] == [a[1] for a in ACTIONS]
        assert second.batteries[0].soc_permille == 425
        assert second.devices[2].failure == "slow"
        assert [(f.kind, f.source) for f in second.buses["bms"].faults] == [("drop", "BYD-1")]
    replayed = bench_control.read_actions(str(second_trace))
    what = lambda action: (action["op"], action["params"], action["result"])  # noqa: E731
    assert [what(a) for a in replayed] == [what(a) for a in actions]
    for again, action in zip(replayed, actions, strict=True):
        assert again["t"] == pytest.approx(action["t"], abs=0.1) and again["replayed"] is True


def test_vbms_sim_replays_a_trace(tmp_path):
    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    operator = {"op": "set_soc", "params": {"slot": 1, "soc_pct": 12}, "result": {}}
    record = {"t": 1.5, "bus": "operator", "from": "operator", "hex": json.dumps(operator).encode().hex().upper()}
    first.write_text('{"t": 0.1, "bus": "bms", "from": "dut", "hex": "0103"}\n' + json.dumps(record) + "\n")
    toml = tmp_path / "bench.toml"
    toml.write_text(bench_toml("replay", [{"type": "byd_pro", "address": 1}, {"type": "byd_pro", "address": 2}]))
    completed = subprocess.run(
        [sys.executable, "-m", "hil.cli", "sim", "--bench", str(toml), "--dut", "open", "--headless", "--duration",
         "3", "--trace", str(second), "--replay", str(first)],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    replayed = bench_control.read_actions(str(second))
    assert [(a["op"], a["params"]) for a in replayed] == [("set_soc", {"slot": 1, "soc_pct": 12})]
    assert replayed[0]["t"] == pytest.approx(1.5, abs=0.1)
    nothing = subprocess.run(
        [sys.executable, "-m", "hil.cli", "sim", "--replay", str(second.with_name("none.jsonl"))],
        cwd=ROOT, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert nothing.returncode == 2 and "cannot replay" in nothing.stderr


# --- the page in a browser -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser():
    with launched() as browser:
        yield browser


def wait_in_page(page, condition, timeout_s):
    """condition() checked while Playwright keeps the page running (time.sleep would stall its events)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        page.wait_for_timeout(250)
    return condition()


def test_the_page_changes_what_the_inverter_sees(bench, browser):
    page = browser.new_page(viewport=DESKTOP, color_scheme="dark")
    page.goto(bench.control.url + "/")
    page.wait_for_selector('#batteries tr.battery[data-slot="2"]')
    assert page.locator("#bench").inner_text() == "bench control: " + BENCH["description"]

    page.fill('input[name="set_soc.1"]', "25")
    page.press('input[name="set_soc.1"]', "Enter")
    assert wait_in_page(page, lambda: seen(bench, 1).get("soc_permille") == 250, SEEN_WITHIN_S)
    row = page.locator('#batteries tr.battery[data-slot="1"] td[data-label="Inverter sees"]')
    assert wait_in_page(page, lambda: row.locator(".badge").inner_text() == "25.0 %", 5), row.inner_text()

    page.fill('input[name="set_soc.1"]', "150")  # refused: the message is shown, nothing changes
    page.press('input[name="set_soc.1"]', "Enter")
    page.wait_for_function("document.querySelector('#status').className === 'error'")
    assert page.locator("#status").inner_text() == "set_soc: soc_pct must be within 0..100, not 150"
    page.fill('input[name="set_soc.1"]', "")

    page.select_option('select[name="failure.2"]', "silent")
    assert wait_in_page(page, lambda: bench.inverter.units[2].comm_warning, STALE_S + WARN_AFTER * POLL_S + 5)
    assert wait_in_page(page, lambda: page.locator("#warnings").inner_text() == "W31 Battery_comm_warn: battery 3", 5)

    form = page.locator("#profile")
    form.locator('select[name="kind"]').select_option("constant")
    form.locator('input[name="watts"]').fill("-1500")
    form.locator('button[type="submit"]').click()
    assert wait_in_page(page, lambda: bench.inverter.profile.watts == -1500, 5)
    assert wait_in_page(page, lambda: seen(bench, 0).get("pack_current_ma", 0) < 0, SEEN_WITHIN_S)  # discharging

    fault = page.locator("#fault")
    fault.locator('select[name="bus"]').select_option("bms")
    fault.locator('select[name="kind"]').select_option("corrupt")
    fault.locator('select[name="source"]').select_option("BYD-2")
    fault.locator('input[name="probability"]').fill("0.3")
    fault.locator('button[type="submit"]').click()
    rules = page.locator('#faults tr[data-bus="bms"] .rules li')
    assert wait_in_page(page, lambda: rules.count() == 1, 5)
    assert [(f.kind, f.source, f.probability) for f in bench.buses["bms"].faults] == [("corrupt", "BYD-2", 0.3)]

    alarm = page.locator("#alarm")
    alarm.locator('select[name="slot"]').select_option("0")
    alarm.locator('select[name="word"]').select_option("protect")
    alarm.locator('input[name="bit"]').fill("8")
    alarm.locator('button[type="submit"]').click()
    assert wait_in_page(page, lambda: seen(bench, 0).get("protection") == 1 << 6, SEEN_WITHIN_S)
    page.wait_for_timeout(1200)  # the page's next state read
    assert page.evaluate("document.documentElement.scrollWidth") <= DESKTOP["width"]
    screenshot(page, "bench-control-desktop.png")
    page.click("#theme")
    screenshot(page, "bench-control-desktop-light.png")

    phone = browser.new_page(viewport=PHONE, color_scheme="dark")
    phone.goto(bench.control.url + "/")
    phone.wait_for_selector('#batteries tr.battery[data-slot="2"]')
    phone.wait_for_selector("#traffic tbody tr >> nth=5")
    assert phone.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    screenshot(phone, "bench-control-phone.png")
    phone.close()

    page.select_option('select[name="failure.2"]', "")  # recovered: back to a healthy bench
    page.locator('#faults tr[data-bus="bms"] button:has-text("clear all")').click()
    page.click("#clear-alarms")
    form.locator('input[name="watts"]').fill("0")
    form.locator('button[type="submit"]').click()
    assert wait_in_page(page, lambda: not bench.inverter.warnings() and not bench.buses["bms"].faults, 15)
    assert wait_in_page(page, lambda: seen(bench, 0).get("protection") == 0, SEEN_WITHIN_S)
    page.close()


def test_the_traffic_view_shows_the_frames_live(bench, browser):
    page = browser.new_page(viewport=DESKTOP, color_scheme="dark")
    page.goto(bench.control.url + "/")
    rows = page.locator("#traffic tbody tr")
    page.wait_for_selector("#traffic tbody tr >> nth=10")
    first = rows.first.locator('td[data-label="t, s"]').inner_text()
    assert wait_in_page(page, lambda: rows.first.locator('td[data-label="t, s"]').inner_text() != first, 5)
    assert float(rows.first.locator('td[data-label="t, s"]').inner_text()) > float(first)  # newest on top
    text = page.locator("#traffic").inner_text()
    assert "function_name=read_input_registers" in text and "battery=" in text  # decoded DEYE polls
    page.select_option("#traffic-bus", "bms")
    assert wait_in_page(page, lambda: rows.count() > 3, 5)
    buses = rows.locator('td[data-label="Bus"]').all_inner_texts()
    assert set(buses) == {"bms"}
    page.fill('input[name="set_temperature.0"]', "30")
    page.press('input[name="set_temperature.0"]', "Enter")
    page.select_option("#traffic-bus", "operator")
    assert wait_in_page(page, lambda: "operator: set_temperature slot=0 temperature_c=30" in page.locator(
        "#traffic").inner_text(), 5)  # fmt: skip
    op(bench, "set_temperature", slot=0, temperature_c=25)
    page.check("#pause")
    paused = rows.count()
    page.wait_for_timeout(2000)
    assert rows.count() == paused  # paused: nothing new shown
    page.close()
