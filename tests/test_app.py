"""The proxy state machine, in simulated time against the device models."""

import pytest
from wiring import Wiring

from simulators.battery import BatteryModel
from simulators.byd.device import BydModule
from simulators.jk.device import JkBms
from vbms_core import app, ble_central, config, deye, jk_pb, modbus
from vbms_core import events as ev
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
    assert wiring.proxy.rs485.cycles >= 4
    assert wiring.proxy.rs485.last_cycle_us <= 1.1 * bound_us


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
    summary, _ = wiring.rpc("VBMS.GetSummary")
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
    # what went over the bus: 4E57 read-all requests ("NW", command 0x06: jk-protocols.md 10.1)
    request = wiring.bms_log[0][2]
    assert request[:2] == b"\x4e\x57" and request[8] == 0x06
    assert wiring.proxy.slots[0].reading.source == "jk_4e57"


class PaddedJkPbPort:
    """A JK-PB that pads its trigger replies: frame, 00, ACK, 00 (jk-protocols.md 11.6)."""

    def __init__(self, device):
        self.device = device

    def handle(self, request):
        answer = self.device.handle_modbus(request)
        if answer is None:
            return None
        reply, delay_s = answer
        frame, ack = reply[:300], reply[300:]
        assert len(ack) == 8
        return frame + b"\x00" + ack + b"\x00", delay_s


def test_a_padded_jk_pb_reply_arriving_byte_by_byte_is_read_whole():
    battery = BatteryModel(seed=4, soc_permille=640)
    wiring = Wiring({"bms0.type": 3, "bms0.addr": "7"}, [PaddedJkPbPort(JkBms(battery, address=7))])
    wiring.bytewise = True
    wiring.run_until(3_000_000)
    slot = wiring.proxy.slots[0]
    assert slot.failures == 0, slot.error
    assert slot.answers >= 3  # settings, then cell info, again and again
    named = deye.named_registers(0x1000, wiring.read_unit(0))
    assert named["soc_permille"] == 640
    assert abs(named["pack_voltage_mv"] - battery.pack_voltage_mv) <= 10


def test_jk_pb_reply_lengths_follow_the_padding():
    frame = bytes.fromhex("55AAEB90") + bytes(296)
    assert jk_pb.trigger_reply_length(frame[:3]) is None
    assert jk_pb.trigger_reply_length(frame[:100]) == 308
    assert jk_pb.trigger_reply_length(frame + b"\x00") == 309  # a 00 after the frame: padding, then the ACK
    assert jk_pb.trigger_reply_length(frame + b"\x07") == 308  # the ACK's first byte is the slave address
    assert jk_pb.trigger_reply_length(bytes.fromhex("0790")) == 5  # an exception reply


def test_ble_link_loss_reconnects_with_backoff():
    batteries, rs485, ble, settings, _ = mixed_bench()
    wiring = Wiring(settings, [], ble)
    wiring.run_until(2_000_000)
    assert wiring.read_unit(6) is not None
    wiring.refused.add(6)
    lost_us = wiring.now_us
    wiring.disconnect(6)
    wiring.run_until(wiring.now_us + 80_000_000)
    assert wiring.read_unit(6) is None  # stale after 5 s without frames
    attempts = [t for t, slot in wiring.connect_attempts if slot == 6 and t > lost_us]
    # the first attempt 1 s after the loss; each refused attempt fails after 3 s (Wiring), and the
    # wait before the next one doubles: 2, 4, 8, 16 s, then stays at 30 s
    waits_s = [round((attempts[0] - lost_us) / 1e6, 2)]
    waits_s += [
        round((later - earlier - 3_000_000) / 1e6, 2) for earlier, later in zip(attempts, attempts[1:], strict=False)
    ]
    assert waits_s[:6] == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0], waits_s
    wiring.refused.discard(6)
    wiring.run_until(wiring.now_us + 40_000_000)
    assert wiring.read_unit(6) is not None
    assert wiring.proxy.ble.sessions[6].connects == 2
    # frames flowed again: the next loss waits 1 s again
    lost_us = wiring.now_us
    wiring.disconnect(6)
    wiring.run_until(wiring.now_us + 2_000_000)
    again = [t for t, slot in wiring.connect_attempts if slot == 6 and t > lost_us]
    assert again and round((again[0] - lost_us) / 1e6, 2) == 1.0


def test_ble_connections_are_capped_and_rotate():
    batteries = {slot: BatteryModel(seed=slot, soc_permille=300 + 100 * slot) for slot in range(3)}
    ble = {slot: JkBms(batteries[slot], name="JK-%d" % slot) for slot in range(3)}
    settings = {"app.ble_max_connections": 2}
    for slot in range(3):
        settings.update({"bms%d.type" % slot: 2, "bms%d.addr" % slot: "C8:47:8C:10:00:0%d" % slot})
    wiring = Wiring(settings, [], ble)
    wiring.run_until(40_000)
    assert sorted(wiring.sessions) == [0, 1]  # the first two connect, the third waits
    wiring.run_until(30_000_000)
    assert wiring.most_connected == 2  # never more than the cap
    connects = [wiring.proxy.ble.sessions[slot].connects for slot in range(3)]
    assert min(connects) >= 3, connects  # every module had its turn, again and again
    for slot in range(3):
        named = deye.named_registers(0x1000, wiring.read_unit(slot))
        assert named["soc_permille"] == batteries[slot].soc_permille // 10 * 10
    assert not [log for log in wiring.logs if log[1] == "ble_event_refused"]
    assert all(wiring.proxy.slots[slot].failures == 0 for slot in range(3))  # yielding is not a failure


def test_rpc_summary_shape_matches_the_original_interface():
    batteries, rs485, ble, settings, _ = mixed_bench()
    wiring = Wiring(settings, rs485, ble)
    wiring.run_until(3_000_000)
    summary, error = wiring.rpc("VBMS.GetSummary", wall_s=1_700_000_000)
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
        ("Config.Get", [], None, -32602, "params must be an object"),
        # text that reaches the DEYE identity must be what the wire can carry (ASCII, no '*')
        (
            "Config.Set",
            {"config": {"bms0.serial": "\u00c4\u00d6\u00dc\u00e4\u00f6\u00fc\u00df\u00c4\u00d6\u00dc"}},
            TOKEN,
            -32602,
            "bms0.serial: may hold only printable ASCII",
        ),  # fmt: skip
        ("Config.Set", {"config": {"bms0.serial": "SN*1"}}, TOKEN, -32602, "bms0.serial"),
        ("Config.Set", {"config": {"bms0.name": "\ud800"}}, TOKEN, -32602, "bms0.name: may hold only printable"),
        ("Config.Set", {"config": {"bms8.type": 1, "bms8.addr": "\u00b2"}}, TOKEN, -32602, "bms8.addr"),
        ("Config.Set", {"config": {"bms\u00b2.name": "x"}}, TOKEN, -32602, "unknown setting"),
        ("Config.Set", {"config": {"device.id": "a/b"}}, TOKEN, -32602, "device.id: may hold only letters"),
        ("Config.Set", {"config": {"mqtt.server": "broker"}}, TOKEN, -32602, "host:port"),
        ("Config.Set", {"config": {"bms0": {"name": {"deeper": {"still": 1}}}}}, TOKEN, -32602, "nested deeper"),
        ("Config.Set", {"config": {"bms0.chemistry": "lead"}}, TOKEN, -32602, "bms0.chemistry: must be one of"),
    ],
)
def test_bad_rpc_input_is_rejected_and_changes_nothing(method, params, token, code, message):
    batteries, rs485, ble, settings, _ = mixed_bench()
    wiring = Wiring(settings, rs485, ble)
    before = dict(wiring.proxy.config)
    result, error = wiring.rpc(method, params, token)
    assert result is None and error["code"] == code and message in error["message"], error
    assert wiring.proxy.config == before
    assert not wiring.saved and not wiring.reboots


def test_config_change_takes_effect_without_restart():
    batteries, rs485, ble, settings, _ = mixed_bench()
    wiring = Wiring(settings, rs485, ble)
    wiring.run_until(2_000_000)
    result, error = wiring.rpc(
        "Config.Set", {"config": {"bms0": {"voltage": 56.4, "name": "Rack A"}, "bms3.type": 0}}, TOKEN
    )
    assert error is None and result["saved"] is False
    assert deye.named_registers(0x1000, wiring.read_unit(0))["nominal_float_voltage_mv"] == 56_400
    assert wiring.read_unit(3) is None
    result, error = wiring.rpc("Config.Save", {}, TOKEN)
    assert wiring.saved and wiring.saved[0]["bms0.name"] == "Rack A"
    shown, _ = wiring.rpc("Config.Get")
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
        ({"bms01.type": 1}, "unknown setting"),
        ({"app": 5}, "unknown setting"),
        # equal to the default but of another type: checked like any value, not passed as the default
        ({"mqtt.enable": 0}, "true or false"),
        ({"app.bms_retries": True}, "whole number"),
        ({"app.stale_s": 10.0}, "whole number"),
    ],
)
def test_config_validation_names_the_key(settings, message):
    with pytest.raises(ConfigError, match=message):
        config.validate(settings)


def test_config_defaults_are_valid_and_each_call_gives_a_new_copy():
    first = config.defaults()
    assert config.validate(first) == first
    first["bms0.name"] = "changed"
    assert config.defaults()["bms0.name"] == ""


def test_factory_reset_needs_the_token_then_saves_the_defaults():
    batteries, rs485, ble, settings, _ = mixed_bench()
    wiring = Wiring(settings, rs485, ble)
    result, error = wiring.rpc("Sys.FactoryReset", {})
    assert error["code"] == 401 and not wiring.saved and not wiring.reboots
    result, error = wiring.rpc("Sys.FactoryReset", {}, TOKEN)
    assert result == {"reset": True, "rebooting": True}
    assert wiring.saved == [config.defaults()] and wiring.reboots == 1


def test_bad_input_leaves_the_device_serving_the_inverter():
    batteries, rs485, ble, settings, _ = mixed_bench()
    wiring = Wiring(settings, rs485, ble)
    wiring.run_until(2_000_000)
    deep = {"x": 1}
    for _ in range(1000):
        deep = {"level": deep}
    for changes in (
        {"bms0.serial": "\u00c4\u00d6\u00dc\u00e4\u00f6\u00fc\u00df\u00c4\u00d6\u00dc\u00e4\u00f6"},
        {"bms0.serial": "\ud800"},
        {"bms0": deep},
        deep,
        {"bms0.serial": "OK-SERIAL", "bms1.addr": "\u00b2"},  # one bad value: nothing of the change applies
    ):
        result, error = wiring.rpc("Config.Set", {"config": changes}, TOKEN)
        assert result is None and error["code"] == -32602, error
    assert wiring.proxy.config["bms0.serial"] == ""
    wiring.run_until(wiring.now_us + 15_000_000)
    assert wiring.read_unit(0) is not None
    identity = wiring.ask_inverter(modbus.encode_report_id_request(0))
    assert deye.decode_identity(modbus.decode_response(identity).data)["serial"] == "VBMS-SLOT-00"


def test_a_serial_set_over_rpc_is_the_identity_the_inverter_reads_next():
    """The identity is encoded once per model and serial (slots.identity): a new serial, and the
    battery's own again when it is cleared, reach the next 0x11 reply."""
    batteries, rs485, ble, settings, _ = mixed_bench()
    wiring = Wiring(settings, rs485, ble)
    wiring.run_until(2_000_000)

    def serial():
        identity = wiring.ask_inverter(modbus.encode_report_id_request(0))
        return deye.decode_identity(modbus.decode_response(identity).data)["serial"]

    assert serial() == "VBMS-SLOT-00"
    for value, expected in (("BENCH-0001", "BENCH-0001"), ("", "VBMS-SLOT-00")):
        result, error = wiring.rpc("Config.Set", {"config": {"bms0.serial": value}}, TOKEN)
        assert error is None, error
        wiring.run_until(wiring.now_us + 1_000_000)
        assert serial() == expected


def test_scan_ble_is_answered_through_the_core_when_the_scan_result_arrives():
    found = [["C8:47:8C:10:00:06", "JK-BLE", -61, False], ["C8:47:8C:10:00:07", "JK-2", None, True]]
    wiring = Wiring({}, scan_devices=found)
    first = wiring.rpc("VBMS.ScanBLE", {"seconds": 2})
    assert first == (None, None)  # not answered yet: the scan takes 2 s
    second = wiring.rpc("VBMS.ScanBLE", {"seconds": 2})
    assert second == (None, None)
    wiring.run_until(wiring.now_us + 2_100_000)
    expected = {
        "devices": [
            {"address": "C8:47:8C:10:00:06", "name": "JK-BLE", "rssi": -61, "connected": False},
            {"address": "C8:47:8C:10:00:07", "name": "JK-2", "rssi": None, "connected": True},
        ]
    }
    assert wiring.replies == {1: (expected, None), 2: (expected, None)}  # one scan answered both callers


def test_a_scan_that_never_answers_is_an_error_not_a_hang():
    wiring = Wiring({})
    wiring.ble_scan = lambda action: None  # a driver whose scan result is lost
    wiring.rpc("VBMS.ScanBLE", {"seconds": 1})
    assert wiring.proxy.next_deadline_us() == 16_000_000  # 1 s + 15 s of grace
    wiring.run_until(16_000_000)
    result, error = wiring.replies[1]
    assert result is None and error["code"] == -32000 and "scan" in error["message"]


def test_ble_events_that_do_not_fit_the_state_are_refused_and_logged():
    batteries, rs485, ble, settings, _ = mixed_bench()
    wiring = Wiring(settings, [], ble)
    wiring.feed(ev.BleNotify(6, b"\x55\xaa\xeb\x90", 0))  # idle: nothing asked for it
    wiring.feed(ev.BleConnected(6, 0))  # not connecting: a connection nobody waits for is let go
    wiring.feed(ev.BleConnected(3, 0))  # slot 3 is BYD: no BLE session at all
    assert [(level, event, fields["ble_event"]) for level, event, fields in wiring.logs] == [
        ("warning", "ble_event_refused", "notify"),
        ("warning", "ble_event_refused", "connected"),
        ("warning", "ble_event_refused", "connected"),
    ]
    assert wiring.proxy.ble.sessions[6].state == ble_central.IDLE
    assert wiring.proxy.ble.sessions[6].refused == 2


def test_every_ble_transition_is_in_the_table():
    """The states the table leads to are the states it starts from; every step exists."""
    states = {state for state, _ in ble_central.TRANSITIONS}
    for target, step in ble_central.TRANSITIONS.values():
        assert target in states
        assert callable(getattr(ble_central.BleCentral, "_" + step)), step


def test_next_deadline_covers_every_part():
    settings = {
        "bms0.type": 2, "bms0.addr": "C8:47:8C:10:00:06", "mqtt.enable": True, "mqtt.server": "localhost:1883",
        "app.refresh_ms": 5000,
    }  # fmt: skip
    proxy = app.Proxy(settings, 0)
    assert proxy.next_deadline_us() == 0  # the BLE session and the telemetry are due at once
    actions = proxy.feed(ev.Tick(0))
    assert [type(a) for a in actions if not isinstance(a, ev.Publish)] == [ev.BleConnect]
    # connecting: the connect timeout (3 x 5 s); the next telemetry at 5 s comes first
    assert proxy.next_deadline_us() == 5_000_000
    proxy.feed(ev.BleConnectFailed(0, "not found", 1_000_000))
    assert proxy.next_deadline_us() == 2_000_000  # the retry after 1 s of backoff
    proxy.feed(ev.InvBytes(b"\x00\x04\x10", 1_500_000))  # the start of a request: t3.5 closes it
    assert proxy.next_deadline_us() == 1_500_000 + modbus.silence_us(9600)


def test_feed_takes_only_inputs():
    proxy = app.Proxy({}, 0)
    with pytest.raises(TypeError, match="not a proxy input"):
        proxy.feed(("bms_bytes", b"\x00"))
    assert proxy.next_deadline_us() is None  # nothing configured: only inputs can wake it
