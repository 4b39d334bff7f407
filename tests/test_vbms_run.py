"""`vbms sim` with `vbms run` in the middle: the product end to end on the simulated wires."""

import time

import pytest
from conftest import wait_for
from peers import websocket_call

from hil.benchfile import load_default
from hil.sim import Simulation

pytestmark = pytest.mark.ble


@pytest.fixture(scope="module")
def bench():
    default = load_default()
    default.profile = {"kind": "constant", "watts": 0.0}  # steady values to compare with the models
    default.inverter["poll_period_s"] = 0.5
    with Simulation(default) as simulation:
        inverter = simulation.inverter
        assert wait_for(lambda: all(inverter.units[u].values and inverter.units[u].identity for u in range(8)), 40), (
            simulation.status()
        )
        yield simulation


def test_the_inverter_reads_all_eight_batteries_with_correct_values(bench):
    for slot in range(8):
        values = bench.inverter.units[slot].values
        model = bench.batteries[slot]
        spec = bench.bench.battery(slot)
        assert abs(values["pack_voltage_mv"] - model.pack_voltage_mv) <= 20, slot
        if spec.layout != "JK04" or spec.type == "byd_pro":  # JK04 frames carry no SOC (jk-protocols.md 9.1)
            assert values["soc_permille"] == model.soc_permille // 10 * 10, slot
        assert values["nominal_float_voltage_mv"] == 55_200
        assert not bench.inverter.units[slot].comm_warning
    assert bench.inverter.units[0].identity["model"] == "BYD PRO 2.5"
    assert bench.inverter.units[4].identity["model"] == "JK_PB2A16S20P"
    assert all(bench.inverter.units[u].values is None for u in range(8, 15))


def test_summary_over_http_and_websocket(bench):
    status, summary = bench.rpc("VBMS.GetSummary")
    assert status == 200
    assert [row["slot"] for row in summary["bms"]] == list(range(8))
    assert all(row["status"] == "online" for row in summary["bms"])
    assert summary["bms"][0]["model"] == "BYD PRO 2.5" and len(summary["bms"][0]["cells"]) == 16
    # A WebSocket client, as `mos call --port ws://HOST/rpc` does, written by hand (no extra dependency).
    (reply,) = websocket_call(bench.http_port, [{"id": 7, "method": "Sys.GetInfo", "params": {}}])
    assert reply["id"] == 7 and reply["result"]["slots"] == 8


def test_bad_rpc_input_gets_a_clear_error_and_changes_nothing(bench):
    status, before = bench.rpc("Config.Get")
    cases = [
        (
            "Config.Set",
            {"config": {"bms0.voltage": 12}},
            bench.dut_token,
            400,
            "bms0.voltage: must be within 40.0..64.0",
        ),
        ("Config.Set", {"config": {"bms0.voltage": 56.0}}, None, 401, "token"),
        ("Config.Set", {"config": {"bms9.addr": "1", "bms9.type": 1}}, bench.dut_token, 400, "already used by bms0"),
        ("No.Such", None, None, 404, "unknown method"),
    ]
    for method, params, token, want_status, message in cases:
        status, body = bench.rpc(method, params, token=token)
        assert status == want_status and message in body["error"]["message"], (method, body)
    assert bench.rpc("Config.Get")[1] == before


def test_config_change_takes_effect_at_once_and_survives_a_restart(bench):
    status, body = bench.rpc(
        "Config.Set", {"config": {"bms1": {"voltage": 56.4, "name": "Rack B"}}}, token=bench.dut_token
    )
    assert status == 200, body
    assert wait_for(lambda: bench.inverter.units[1].values["nominal_float_voltage_mv"] == 56_400, 10)
    status, body = bench.rpc("Config.Save", {"reboot": True}, token=bench.dut_token)
    assert status == 200 and body == {"saved": True, "reboot": True}
    time.sleep(1.0)
    assert wait_for(lambda: bench.rpc("Sys.GetInfo")[1]["uptime_s"] < 5, 10)
    status, config = bench.rpc("Config.Get")
    assert config["bms1"]["voltage"] == 56.4 and config["bms1"]["name"] == "Rack B"
    assert wait_for(
        lambda: (
            bench.inverter.units[1].values["nominal_float_voltage_mv"] == 56_400
            and not bench.inverter.units[1].comm_warning
        ),
        20,
    )


def test_scan_ble_finds_the_simulated_jk_modules(bench):
    status, body = bench.rpc("VBMS.ScanBLE", {"seconds": 2})
    assert status == 200
    found = {device["address"]: device["name"] for device in body["devices"]}
    for device in bench.endpoints()["ble"]["devices"]:
        assert found.get(device["address"]) == device["name"]


def test_a_battery_that_stops_answering_disappears_then_returns(bench):
    bench.devices[3].set_failure("silent")
    assert wait_for(lambda: bench.inverter.units[3].comm_warning, 30)
    assert not bench.inverter.units[2].comm_warning
    bench.devices[3].set_failure(None)
    assert wait_for(lambda: not bench.inverter.units[3].comm_warning, 30)
