"""The proxy state machine, in simulated time against the device models."""

import pytest
from wiring import Wiring

from simulators.battery import BatteryModel
from simulators.byd.device import BydModule
from simulators.jk.device import JkBms
from vbms_core import app, config, deye, jk_4e57, modbus
from vbms_core.config import ConfigError

TOKEN = "s3cret-token"


class Jk4e57Port:
    def __init__(self, device):
        self.handle = device.handle_4e57


class JkPbPort:
    def __init__(self, device):
        self.handle = device.handle_modbus


def mixed_bench():
    batteries = {slot: BatteryModel(seed=slot, soc_permille=500 + 50 * slot) for slot in range(7)}
    rs485 = [BydModule(slot + 1, batteries[slot]) for slot in range(4)]
    jk_pb = JkBms(batteries[4], address=10)
    rs485.append(JkPbPort(jk_pb))
    jk_legacy = JkBms(batteries[5], address=11)
    ble = {6: JkBms(batteries[6], layout="JK02_24S", name="JK-BLE")}
    settings = {"rpc.auth_token": TOKEN, "app.stale_s": 5}
    for slot in range(4):
        settings.update({"bms%d.type" % slot: 1, "bms%d.addr" % slot: str(slot + 1)})
    settings.update({"bms4.type": 3, "bms4.addr": "10", "bms6.type": 2, "bms6.addr": "C8:47:8C:10:00:06"})
    return batteries, rs485, ble, settings, jk_legacy


def test_every_battery_reaches_the_inverter_with_correct_values():
    batteries, rs485, ble, settings, _ = mixed_bench()
    wiring = Wiring(settings, rs485, ble)
    wiring.run_until(3_000_000)
    for unit in (0, 1, 2, 3, 4, 6):
        registers = wiring.read_unit(unit)
        assert registers is not None, "unit %d silent" % unit
        named = deye.named_registers(0x1000, registers)
        model = batteries[unit]
        assert abs(named["pack_voltage_mv"] - model.pack_voltage_mv) <= 10
        assert named["soc_permille"] == model.soc_permille // 10 * 10
        assert named["nominal_float_voltage_mv"] == 55_200
    assert wiring.read_unit(5) is None  # not configured: silent
    identity = wiring.ask_inverter(modbus.encode_report_id_request(6))
    assert deye.decode_identity(modbus.decode_response(identity).data)["model"] == "JK-B2A24S20P"
    assert wiring.proxy.slots[6].layout == "JK02_24S"


def test_the_bus_is_polled_back_to_back_at_wire_speed():
    batteries, rs485, ble, settings, _ = mixed_bench()
    wiring = Wiring(settings, rs485)
    wiring.run_until(5_000_000)
    # The wire-time bound of one round at 9600 8N1: every request out and reply back, plus the
    # devices' turnaround (BYD 20 ms; JK-PB 40 ms, 11 B out, 300 + 8 B back).
    byte_us = 10 * 1_000_000 / 9600
    bound_us = 4 * ((8 + 105) * byte_us + 20_000) + (11 + 308) * byte_us + 40_000
    assert wiring.proxy.bms_cycles >= 4
    assert wiring.proxy.last_cycle_us <= 1.1 * bound_us


def test_a_silent_battery_goes_stale_then_silent_to_the_inverter_and_recovers():
    batteries, rs485, ble, settings, _ = mixed_bench()
    wiring = Wiring(settings, rs485)
    wiring.run_until(2_000_000)
    assert wiring.read_unit(2) is not None
    rs485[2].set_failure("silent")
    wiring.run_until(wiring.now_us + 4_000_000)
    assert wiring.read_unit(2) is not None  # still within app.stale_s = 5 s
    wiring.run_until(wiring.now_us + 2_000_000)
    assert wiring.read_unit(2) is None
    assert wiring.proxy.deye.reason == deye.SILENT_STALE
    summary, _ = wiring.proxy.rpc("VBMS.GetSummary", {}, wiring.now_us)
    row = next(r for r in summary["bms"] if r["slot"] == 2)
    assert row["status"] == "stale" and "no reply" in row["error"]
    rs485[2].set_failure(None)
    wiring.run_until(wiring.now_us + 2_000_000)
    assert wiring.read_unit(2) is not None
    assert wiring.read_unit(0) is not None  # the others never stopped


def test_bad_checksums_are_retried_and_counted():
    batteries, rs485, ble, settings, _ = mixed_bench()
    wiring = Wiring(settings, rs485)
    rs485[1].set_failure("bad_checksum")
    wiring.run_until(3_000_000)
    slot = wiring.proxy.slots[1]
    assert slot.answers == 0 and slot.failures > 0 and "checksum" in slot.error
    assert wiring.read_unit(1) is None and wiring.read_unit(0) is not None


def test_legacy_4e57_slot():
    battery = BatteryModel(seed=3, soc_permille=420)
    device = JkBms(battery)
    wiring = Wiring({"bms0.type": 4, "bms0.addr": "1"}, [Jk4e57Port(device)])
    wiring.run_until(1_000_000)
    named = deye.named_registers(0x1000, wiring.read_unit(0))
    assert named["soc_permille"] == 420 and abs(named["pack_voltage_mv"] - battery.pack_voltage_mv) <= 10
    assert jk_4e57  # the 4E57 decoder is what the proxy used


def test_ble_link_loss_reconnects_with_backoff():
    batteries, rs485, ble, settings, _ = mixed_bench()
    wiring = Wiring(settings, [], ble)
    wiring.run_until(2_000_000)
    assert wiring.read_unit(6) is not None
    wiring.refused.add(6)
    wiring.disconnect(6)
    wiring.run_until(wiring.now_us + 8_000_000)
    assert wiring.read_unit(6) is None  # stale after 5 s without frames
    session = wiring.proxy.ble[6]
    assert session.state == app.BLE_IDLE or session.state == app.BLE_CONNECTING
    wiring.refused.discard(6)
    wiring.run_until(wiring.now_us + 20_000_000)
    assert wiring.read_unit(6) is not None
    assert wiring.proxy.ble[6].connects == 2


def test_ble_connections_are_capped():
    batteries = {slot: BatteryModel(seed=slot) for slot in range(3)}
    ble = {slot: JkBms(batteries[slot], name="JK-%d" % slot) for slot in range(3)}
    settings = {"app.ble_max_connections": 2}
    for slot in range(3):
        settings.update({"bms%d.type" % slot: 2, "bms%d.addr" % slot: "C8:47:8C:10:00:0%d" % slot})
    wiring = Wiring(settings, [], ble)
    wiring.run_until(3_000_000)
    assert sorted(wiring.sessions) == [0, 1]


def test_rpc_summary_shape_matches_the_original_interface():
    batteries, rs485, ble, settings, _ = mixed_bench()
    wiring = Wiring(settings, rs485, ble)
    wiring.run_until(3_000_000)
    summary, error = wiring.proxy.rpc("VBMS.GetSummary", {}, wiring.now_us, wall_s=1_700_000_000)
    assert error is None and summary["timestamp"] == 1_700_000_000
    row = summary["bms"][0]
    original_fields = (
        "addr", "serial_no", "model", "last_update", "pack_voltage", "pack_current", "remain_capacity",
        "cell_temp_avg", "env_temp", "warning", "protection", "fault_status", "SOC", "SOH",
        "full_charge_capacity", "cycle_count", "max_charge_current", "nominal_float_voltage", "design_capacity",
    )  # fmt: skip
    for key in original_fields:
        assert key in row, key
    assert row["model"] == "BYD PRO 2.5" and row["addr"] == 1 and row["status"] == "online"
    assert len(row["cells"]) == 16
    assert summary["totals"]["online"] == 6


@pytest.mark.parametrize(
    "method, params, token, code, message",
    [
        ("Nope.Nothing", {}, None, -32601, "unknown method"),
        ("Config.Set", {"config": {"bms0.type": 1}}, None, 401, "token"),
        ("Config.Set", {"config": {"bms0.type": 1}}, "wrong", 401, "token"),
        ("Config.Set", {"config": {"bms0.type": 9}}, TOKEN, -32602, "bms0.type: must be within 0..4"),
        ("Config.Set", {"config": {"bms1.addr": "1"}}, TOKEN, -32602, "bms1.addr: already used by bms0"),
        ("Config.Set", {"config": {"app.stale_s": "10"}}, TOKEN, -32602, "app.stale_s: must be a whole number"),
        ("Config.Set", {"config": {"nonsense.key": 1}}, TOKEN, -32602, "nonsense.key: unknown setting"),
        ("Config.Set", {}, TOKEN, -32602, "params.config"),
        ("Config.Save", {"reboot": "yes"}, TOKEN, -32602, "reboot must be true or false"),
        ("VBMS.ScanBLE", {"seconds": 99}, None, -32602, "within 1..30"),
        ("Sys.Reboot", {}, None, 401, "token"),
    ],
)
def test_bad_rpc_input_is_rejected_and_changes_nothing(method, params, token, code, message):
    batteries, rs485, ble, settings, _ = mixed_bench()
    wiring = Wiring(settings, rs485, ble)
    before = dict(wiring.proxy.config)
    result, error = wiring.proxy.rpc(method, params, 0, token=token)
    assert result is None and error["code"] == code and message in error["message"]
    assert wiring.proxy.config == before
    assert not [a for a in wiring.proxy.take_actions() if a[0] in ("save_config", "reboot")]


def test_config_change_takes_effect_without_restart():
    batteries, rs485, ble, settings, _ = mixed_bench()
    wiring = Wiring(settings, rs485, ble)
    wiring.run_until(2_000_000)
    result, error = wiring.proxy.rpc(
        "Config.Set",
        {"config": {"bms0": {"voltage": 56.4, "name": "Rack A"}, "bms3.type": 0}},
        wiring.now_us,
        token=TOKEN,
    )
    assert error is None and result["saved"] is False
    assert deye.named_registers(0x1000, wiring.read_unit(0))["nominal_float_voltage_mv"] == 56_400
    assert wiring.read_unit(3) is None
    result, error = wiring.proxy.rpc("Config.Save", {}, wiring.now_us, token=TOKEN)
    saved = [a for a in wiring.proxy.take_actions() if a[0] == "save_config"]
    assert saved and saved[0][1]["bms0.name"] == "Rack A"
    shown, _ = wiring.proxy.rpc("Config.Get", {}, wiring.now_us)
    assert shown["bms0"]["voltage"] == 56.4 and shown["rpc"]["auth_token"] == "***"


def test_charge_limit_is_conservative():
    battery = BatteryModel(seed=1)
    wiring = Wiring({"bms0.type": 1, "bms0.addr": "1", "bms0.max_charge_a": 30}, [BydModule(1, battery)])
    wiring.run_until(1_000_000)
    assert deye.named_registers(0x1000, wiring.read_unit(0))["max_charge_current_ma"] == 30_000
    battery.forced = {"cell_overvoltage"}
    battery.advance(0.1, 0)
    wiring.run_until(wiring.now_us + 1_000_000)
    assert deye.named_registers(0x1000, wiring.read_unit(0))["max_charge_current_ma"] == 0


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"bms0.type": 2, "bms0.addr": "12"}, "MAC address"),
        ({"bms0.type": 1, "bms0.addr": "64"}, "1..63"),
        ({"bms15.type": 1}, "unknown setting"),
        ({"bms0.voltage": 80.0}, "40.0..64.0"),
        ({"mqtt.enable": "yes"}, "true or false"),
        ({"bms0.name": "x" * 40}, "0..31 characters"),
    ],
)
def test_config_validation_names_the_key(settings, message):
    with pytest.raises(ConfigError, match=message):
        config.validate(settings)


def test_factory_reset_needs_the_token_then_saves_the_defaults():
    batteries, rs485, ble, settings, _ = mixed_bench()
    wiring = Wiring(settings, rs485, ble)
    result, error = wiring.proxy.rpc("Sys.FactoryReset", {}, 0)
    assert error["code"] == 401 and not wiring.proxy.take_actions()
    result, error = wiring.proxy.rpc("Sys.FactoryReset", {}, 0, token=TOKEN)
    actions = wiring.proxy.take_actions()
    assert result == {"reset": True, "rebooting": True}
    assert actions[0][0] == "save_config" and actions[0][1] == config.defaults() and actions[1] == ("reboot",)
