"""Parts of the proxy core not covered elsewhere: the Executor contract and describe (events),
the router's inverter side (app), RPC methods (rpc), the charge-limit policy (slots) and
configuration errors (config).  Driven through Proxy.feed or Wiring wherever the router
reaches the behaviour.

Wire facts from deye-byd-modbus.md: DEYE read request frames of 4.4, an ADU is at most 256
bytes (3.1), 9600 8N1 is ten bits a character (3.1), BYD request 8 / reply 105 bytes (2.2, 2.3),
a B-Plus 2.5 module's charge limit 50 A (1.3.4).  RPC error codes follow JSON-RPC 2.0
(-32602 invalid params) plus 401 as documented in vbms_core.rpc.
"""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wiring import Wiring

from simulators.battery import BatteryModel
from simulators.byd.device import BydModule
from vbms_core import app, config, deye
from vbms_core import events as ev
from vbms_core.config import ConfigError

TOKEN = "s3cret-token"  # rpc.auth_token of these benches

READ_UNIT_0 = bytes.fromhex("00041000001934D1")  # deye-byd-modbus.md 4.4
READ_UNIT_1 = bytes.fromhex("01 04 10 00 00 19 35 00")
CHAR_US = 10 * 1_000_000 / 9600

SAMPLE_ACTIONS = (
    ev.BmsWrite(b"\x01\x02"),
    ev.InvWrite(bytearray(b"\xff")),
    ev.BleConnect(3, "C8:47:8C:10:00:03"),
    ev.BleWrite(3, memoryview(b"\xaa\x55")),
    ev.BleDisconnect(3),
    ev.BleScan(5),
    ev.Publish("vbms/x/status", "online", True),
    ev.SaveConfig({"bms0.name": "A"}),
    ev.Reboot(),
    ev.RpcReply(9, {"ok": True}, None),
    ev.Log("warning", "ble_event_refused", {"slot": 1}),
)


def byd_wiring(battery=None, **settings):
    battery = battery or BatteryModel(seed=1, soc_permille=700)
    config_values = {"bms0.type": 1, "bms0.addr": "1", "rpc.auth_token": TOKEN}
    config_values.update(settings)
    return Wiring(config_values, [BydModule(1, battery)]), battery


# --- events: the Executor contract and describe --------------------------------------------


def test_every_action_type_has_a_sample_here():
    assert sorted(type(action).__name__ for action in SAMPLE_ACTIONS) == sorted(cls.__name__ for cls in ev.ACTIONS)


@pytest.mark.parametrize("action", SAMPLE_ACTIONS, ids=lambda action: action.method)
def test_a_driver_that_forgets_an_action_is_told_which(action):
    class HalfDriver(ev.Executor):
        pass

    with pytest.raises(NotImplementedError, match="^HalfDriver does not carry out %s$" % action.method):
        ev.execute(HalfDriver(), [action])


def test_execute_carries_out_actions_in_order_through_their_methods():
    done = []

    class Driver(ev.Executor):
        def bms_write(self, action):
            done.append(("bms", action.data))

        def log(self, action):
            done.append(("log", action.event))

    ev.execute(Driver(), [ev.Log("info", "first", {}), ev.BmsWrite(b"\x07"), ev.Log("info", "last", {})])
    assert done == [("log", "first"), ("bms", b"\x07"), ("log", "last")]


def test_describe_writes_bytes_as_upper_case_hex_and_keeps_other_values():
    assert ev.describe(ev.BmsWrite(b"\x01\xab")) == ["bms_write", "01AB"]
    assert ev.describe(ev.InvWrite(bytearray(b"\x00\x11"))) == ["inv_write", "0011"]
    assert ev.describe(ev.BleWrite(2, memoryview(b"\xfe"))) == ["ble_write", 2, "FE"]
    assert ev.describe(ev.Publish("t/state", "{}", True)) == ["publish", "t/state", "{}", True]
    assert ev.describe(ev.Reboot()) == ["reboot"]
    assert ev.describe(ev.RpcReply(4, None, {"code": 401})) == ["rpc_reply", 4, None, {"code": 401}]


# --- app: the inverter side -------------------------------------------------------------------


def test_a_burst_longer_than_an_adu_is_dropped_and_the_next_request_answered():
    wiring, _ = byd_wiring()
    wiring.run_until(1_000_000)
    before = wiring.proxy.inverter_requests
    assert wiring.ask_inverter(bytes(300)) is None  # longer than the 256-byte ADU (3.1)
    assert wiring.proxy.inverter_requests == before
    assert wiring.ask_inverter(READ_UNIT_0) is not None
    assert wiring.proxy.inverter_requests == before + 1


def test_the_latest_inverter_decisions_are_kept_and_bounded():
    wiring, _ = byd_wiring()
    wiring.run_until(1_000_000)
    for _ in range(40):
        wiring.ask_inverter(READ_UNIT_1)
    wiring.ask_inverter(READ_UNIT_0)
    decisions = wiring.proxy.last_decisions
    assert len(decisions) == app.DECISIONS_KEPT < 41
    assert decisions[-1] == (0, deye.REPLY_REGISTERS)
    assert decisions[-2] == (1, deye.SILENT_NOT_CONFIGURED)


# --- slots: the charge limit told to the inverter ---------------------------------------------


def test_a_cell_voltage_high_warning_gets_a_trickle_of_the_charge_limit():
    battery = BatteryModel(seed=2, soc_permille=900)
    module = BydModule(1, battery)
    module.force_alarm_bits = 1 << 2  # BYD alarm: cell V high (deye-byd-modbus.md 2.3), a warning only
    wiring = Wiring({"bms0.type": 1, "bms0.addr": "1"}, [module])
    wiring.run_until(1_000_000)
    named = deye.named_registers(0x1000, wiring.read_unit(0))
    assert named["warning_names"] == ["cell_voltage_high"]
    assert named["max_charge_current_ma"] == 50_000 // 10  # a tenth of the module's 50 A
    module.force_alarm_bits = 0
    wiring.run_until(wiring.now_us + 1_000_000)
    assert deye.named_registers(0x1000, wiring.read_unit(0))["max_charge_current_ma"] == 50_000


# --- rpc ----------------------------------------------------------------------------------------


def test_save_with_reboot_saves_the_running_config_then_reboots():
    wiring, _ = byd_wiring(**{"bms0.name": "Rack A"})
    result, error = wiring.rpc("Config.Save", {"reboot": True}, TOKEN)
    assert error is None and result == {"saved": True, "reboot": True}
    assert wiring.saved == [wiring.proxy.config] and wiring.saved[0]["bms0.name"] == "Rack A"
    assert wiring.reboots == 1


def test_reboot_needs_the_token_and_then_reboots():
    wiring, _ = byd_wiring()
    assert wiring.rpc("Sys.Reboot", {}, "wrong")[1]["code"] == 401 and wiring.reboots == 0
    assert wiring.rpc("Sys.Reboot", None, TOKEN) == ({"rebooting": True}, None)
    assert wiring.reboots == 1 and not wiring.saved


def test_a_device_without_a_token_refuses_every_change_and_says_how_to_set_one():
    wiring = Wiring({"bms0.type": 1, "bms0.addr": "1"})
    for method in ("Config.Set", "Config.Save", "Sys.Reboot", "Sys.FactoryReset"):
        result, error = wiring.rpc(method, {"config": {"bms0.name": "x"}}, "")
        assert result is None and error["code"] == 401 and "set one on its console" in error["message"], method
    shown, error = wiring.rpc("Config.Get")
    assert error is None and shown["rpc"]["auth_token"] == ""  # nothing to mask
    assert not wiring.saved and not wiring.reboots


def test_sys_info_counts_inverter_traffic_and_bus_cycles():
    wiring, _ = byd_wiring()
    wiring.run_until(2_000_000)
    for request in (READ_UNIT_0, READ_UNIT_1, READ_UNIT_0):
        wiring.ask_inverter(request)
    info, error = wiring.rpc("Sys.GetInfo")
    assert error is None
    assert info["app"] == "vbms" and info["id"] == "vbms" and info["slots"] == 1
    assert info["uptime_s"] == 2
    assert (info["inverter_requests"], info["inverter_replies"]) == (3, 2)  # unit 1 is not configured: silent
    # one module: request out, 105-byte reply back, its 20 ms turnaround and the 5 ms bus gap
    cycle_ms = ((8 + 105) * CHAR_US + 20_000 + 5_000) / 1000
    assert info["bms_cycles"] >= 10
    assert cycle_ms - 1 <= info["last_bms_cycle_ms"] <= cycle_ms + 2


def test_sys_info_before_the_first_bus_cycle_has_no_cycle_time():
    info, _ = Wiring({}).rpc("Sys.GetInfo")
    assert (info["bms_cycles"], info["last_bms_cycle_ms"], info["slots"]) == (0, None, 0)


def test_a_scan_result_keeps_only_well_formed_rows():
    found = [["C8:47:8C:10:00:06", "JK-BLE", -61, False], ["too", "short"], "C8:47:8C:10:00:07", None]
    wiring = Wiring({}, scan_devices=found)
    result, error = wiring.rpc("VBMS.ScanBLE", {"seconds": 1}, wait_us=1_100_000)
    assert error is None
    assert result == {"devices": [{"address": "C8:47:8C:10:00:06", "name": "JK-BLE", "rssi": -61, "connected": False}]}


def test_a_scan_result_that_is_no_list_answers_with_no_devices():
    wiring = Wiring({})
    wiring.rpc("VBMS.ScanBLE", {})
    wiring.feed(ev.BleScanResult({"not": "a list"}, 0))
    assert wiring.replies == {1: ({"devices": []}, None)}


# --- config: errors name the key and what is wrong ----------------------------------------------


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"bms0.voltage": "55.2"}, "bms0.voltage: must be a number, not '55.2'"),
        ({"bms0.name": 5}, "bms0.name: must be text, not 5"),
        ({"bms0.chemistry": ["lfp"]}, "bms0.chemistry: must be one of auto, lfp, nmc, lto, not a list"),
        ({"bms2.type": 1, "bms2.addr": ""}, "bms2.addr: an RS485 slot needs a Modbus address 1..247, not ''"),
        ({"bms2.type": 3, "bms2.addr": "248"}, "bms2.addr: an RS485 slot needs a Modbus address 1..247, not '248'"),
        ({"bms2.type": 2, "bms2.addr": "C8:47:8C:10:00:1"}, "bms2.addr: a JK BLE slot needs a MAC address"),
        ({"bms2.type": 2, "bms2.addr": "C8:47:8C:10:00:0G"}, "bms2.addr: a JK BLE slot needs a MAC address"),
        ({"bms2.type": 2, "bms2.addr": "C8:47:8C:10:00"}, "bms2.addr: a JK BLE slot needs a MAC address"),
    ],
)
def test_config_set_with_a_bad_value_names_the_key_and_the_value(changes, message):
    wiring, _ = byd_wiring()
    before = dict(wiring.proxy.config)
    result, error = wiring.rpc("Config.Set", {"config": changes}, TOKEN)
    assert result is None and error["code"] == -32602 and error["message"].startswith(message), error
    assert wiring.proxy.config == before


def test_config_that_is_not_an_object_is_refused():
    with pytest.raises(ConfigError, match="^config: must be an object$"):
        config.validate(["bms0.type", 1])
    with pytest.raises(ConfigError, match="^config: changes must be an object$"):
        config.merge(config.defaults(), [("bms0.type", 1)])
    with pytest.raises(ConfigError, match="^1: setting names are text$"):
        config.validate({1: "x"})


def test_values_in_messages_are_short_whatever_they_hold():
    deep = {"x": 1}
    for _ in range(5000):
        deep = {"level": deep}
    assert config.shown(deep) == "an object"
    assert config.shown([deep]) == "a list"
    assert config.shown("a" * 100) == "'" + "a" * 36 + "..."
    assert config.shown(12) == "12"


def test_a_mac_address_is_six_pairs_of_hex_digits():
    assert config.is_mac("c8:47:8c:10:00:0a")
    for text in (
        "C8:47:8C:10:00",
        "C8:47:8C:10:00:0A:01",
        "C8:47:8C:10:00:A",
        "C8:47:8C:10:00:0G",
        "C8-47-8C-10-00-0A",
    ):
        assert not config.is_mac(text), text


@settings(max_examples=400, deadline=None)
@given(
    kind=st.sampled_from(sorted(config.TEXT_KINDS)),
    value=st.one_of(st.text(alphabet=st.characters(min_codepoint=0x1F, max_codepoint=0x80)), st.text(max_size=8)),
)
def test_a_text_setting_seen_at_once_is_one_whose_every_character_is_allowed(kind, value):
    """config._plain_text takes a value without looking at each character (min and max); it may only take
    what the character-by-character rule of its kind allows."""
    allowed = config.TEXT_KINDS[kind][0]
    if config._plain_text(value, kind):
        assert all(allowed(char) for char in value)
    every = bool(value) and all(allowed(char) for char in value)
    if kind != "identifier" and every and max(value) <= "~":
        assert config._plain_text(value, kind)  # and it takes every plain ASCII value the rule allows
