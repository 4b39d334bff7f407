"""Simulated devices, sans-I/O: answers to the real requests, every failure mode, the battery model."""

import pytest
from conftest import JK_FRAMES
from pymodbus.client.mixin import ModbusClientMixin
from pymodbus.framer import FramerRTU
from pymodbus.pdu import DecodePDU
from pymodbus.pdu.register_message import ReadHoldingRegistersRequest, ReadHoldingRegistersResponse

from simulators.battery import BatteryModel, ocv_mv
from simulators.byd.device import BydModule
from simulators.deye.profile import PowerProfile
from simulators.jk.device import JkBleSession, JkBms
from vbms_core import byd, jk_4e57, jk_ble, jk_frames, jk_pb, modbus
from vbms_core.dissect import dissect
from vbms_core.errors import RemoteProtocolError

REAL = {f["id"]: bytes.fromhex(f["hex"]) for f in JK_FRAMES}


@pytest.fixture
def battery():
    return BatteryModel(seed=7, soc_permille=500)


# --- answers to real requests --------------------------------------------------------


def test_byd_module_answers_its_address_only(battery):
    module = BydModule(2, battery)
    assert module.handle(byd.encode_request(1)) is None
    reply, delay = module.handle(bytes.fromhex("020004010355AA07"))
    status = dissect("byd-pro", reply)
    assert status["address"] == 2 and status["pack_voltage_mv"] == battery.pack_voltage_mv and delay == 0.02


def test_jk_pb_answers_the_captured_trigger_and_acks(battery):
    device = JkBms(battery, address=3)
    reply, _ = device.handle_modbus(REAL["R01"])  # captured: JKBMS Monitor asks unit 3 for status
    result = dissect("jk-pb", reply)
    assert result["frame_type"] == "cell_info" and result["ack"]["unit"] == 3
    assert result["pack_voltage_mv"] == battery.pack_voltage_mv


def pymodbus_read(device, address, count):
    request = FramerRTU(DecodePDU(False)).buildFrame(
        ReadHoldingRegistersRequest(address=address, count=count, dev_id=1)
    )
    reply, _ = device.handle_modbus(request)
    _, pdu = FramerRTU(DecodePDU(False)).handleFrame(reply, 0, 0)
    assert isinstance(pdu, ReadHoldingRegistersResponse) and len(pdu.registers) == count
    return pdu.registers


def test_jk_pb_register_reads_decode_in_pymodbus(battery):
    # pymodbus as the master: registers are big-endian words, 32-bit values high word first
    # (jk-protocols.md 11.2; the esphome JK-PB Modbus example reads U_WORD / U_DWORD / S_DWORD).
    battery.advance(1.0, -12_345)
    device = JkBms(battery, address=1)
    assert pymodbus_read(device, 0x1200, 8) == battery.cell_voltages_mv()[:8]
    datatype = ModbusClientMixin.DATATYPE
    pack_mv = ModbusClientMixin.convert_from_registers(pymodbus_read(device, 0x1290, 2), datatype.UINT32)
    assert pack_mv == battery.pack_voltage_mv
    current_ma = ModbusClientMixin.convert_from_registers(pymodbus_read(device, 0x1298, 2), datatype.INT32)
    assert current_ma == battery.current_ma < 0
    assert pymodbus_read(device, 0x12A6, 1)[0] & 0xFF == battery.soc_permille // 10  # SOC: low byte
    reply, _ = device.handle_modbus(jk_pb.encode_read(1, 0x1F00, 2))
    assert dissect("modbus", reply)["exception"] == "illegal_data_address"


def test_jk_4e57_answers_the_documented_request(battery):
    device = JkBms(battery)
    reply, _ = device.handle_4e57(REAL["U01"])
    result = dissect("jk-4e57", reply)
    assert result["cell_voltages_mv"] == battery.cell_voltages_mv()
    assert result["soc_pct"] == battery.soc_permille // 10


@pytest.mark.parametrize("command", ["C01", "C02", "C03"])
def test_jk_ble_answers_real_commands_with_random_padding(battery, command):
    session = JkBleSession(JkBms(battery), "mtu247")
    notifications = session.on_write(REAL[command], 0.0)
    reassembler = jk_ble.JkReassembler()
    for notification in notifications:
        reassembler.feed(notification)
    frame = reassembler.next_event()
    expected = "device_info" if jk_ble.decode_command(REAL[command]).command == 0x97 else "settings"
    assert dissect("jk-ble", frame.raw)["frame_type"] == expected


# Notification sizes seen on the air (jk-protocols.md 1.3): JK04 at MTU 23 sends 20-byte chunks
# (the C8 trailer in its own 20 bytes); JK-PB 14.20 at MTU 131 sends 128 + 22 + 128 + 22, the
# C8 trailer with AT\r\n (24 bytes) and lone AT\r\n (4 bytes); JK-B1A20S15P at MTU 247 sends
# 150 + 150 and a separate 20-byte C8 trailer.
@pytest.mark.parametrize("chunking, sizes", [("mtu23", {20}), ("mtu131", {128, 22, 4, 24}), ("mtu247", {150, 20})])
def test_notifications_are_chunked_like_real_modules(battery, chunking, sizes):
    session = JkBleSession(JkBms(battery), chunking)
    notifications = session.on_write(jk_ble.encode_command(0x96), 0.0) + session.poll(0.6)
    assert {len(n) for n in notifications} == sizes
    reassembler = jk_ble.JkReassembler()
    for notification in notifications:
        reassembler.feed(notification)
    frames = []
    while (event := reassembler.next_event()) is not modbus.NEED_DATA:
        if isinstance(event, jk_ble.JkFrame):
            frames.append(dissect("jk-ble", event.raw)["frame_type"])
    assert frames == ["settings", "cell_info"]


# --- failure modes, each switched on and off -------------------------------------------


def byd_reply(module):
    answer = module.handle(byd.encode_request(module.address))
    return answer


def test_byd_failures(battery):
    module = BydModule(1, battery, seed=1)
    module.set_failure("silent")
    assert byd_reply(module) is None
    module.set_failure("garbage")
    with pytest.raises(RemoteProtocolError):
        byd.decode_response(byd_reply(module)[0])
    module.set_failure("bad_checksum")
    with pytest.raises(RemoteProtocolError, match="checksum"):
        byd.decode_response(byd_reply(module)[0])
    module.set_failure("slow")
    assert byd_reply(module)[1] == module.slow_delay_s
    module.set_failure("stuck")
    stuck = byd.decode_response(byd_reply(module)[0]).fields
    battery.advance(600, 40_000)
    assert byd.decode_response(byd_reply(module)[0]).fields == stuck
    module.set_failure(None)
    fresh = byd.decode_response(byd_reply(module)[0]).fields
    assert fresh != stuck and fresh["current_ma"] == 40_000
    with pytest.raises(ValueError, match="unknown BYD failure"):
        module.set_failure("explode")


def test_byd_forced_alarms(battery):
    module = BydModule(1, battery)
    battery.forced = {"cell_overvoltage"}
    battery.advance(1, 0)
    fields = byd.decode_response(byd_reply(module)[0]).fields
    assert fields["alarm_state"] & (1 << 2) and fields["protect_state"] & (1 << 2)
    battery.forced = set()
    battery.advance(1, 0)
    assert byd.decode_response(byd_reply(module)[0]).fields["protect_state"] == 0


def test_byd_status_follows_every_change_between_two_polls(battery):
    """The module keeps its last frame while nothing changes (BydModule.fields): a forced alarm word,
    a generic flag and a step of the battery model must each show at the very next poll."""
    module = BydModule(1, battery)
    first = byd_reply(module)[0]
    assert byd_reply(module)[0] == first
    for word, name in (("force_alarm_bits", "alarm_state"), ("force_protect_bits", "protect_state"),
                       ("force_fail_bits", "fail_state")):  # fmt: skip
        setattr(module, word, 1 << 3)
        assert byd.decode_response(byd_reply(module)[0]).fields[name] & (1 << 3), word
        setattr(module, word, 0)
    assert byd_reply(module)[0] == first
    battery.forced.add("soc_low")
    assert byd.decode_response(byd_reply(module)[0]).fields["alarm_state"] & (1 << 12)
    battery.forced.clear()
    assert byd_reply(module)[0] == first
    battery.advance(60, 20_000)
    assert byd.decode_response(byd_reply(module)[0]).fields["current_ma"] == 20_000


def test_jk_rs485_failures(battery):
    device = JkBms(battery, address=3)
    device.set_failure("silent")
    assert device.handle_modbus(REAL["R01"]) is None
    device.set_failure("bad_checksum")
    with pytest.raises(RemoteProtocolError, match="checksum"):
        dissect("jk-pb", device.handle_modbus(REAL["R01"])[0])
    device.set_failure("garbage")
    with pytest.raises(RemoteProtocolError):
        dissect("jk-pb", device.handle_modbus(REAL["R01"])[0])
    device.set_failure("slow")
    assert device.handle_modbus(REAL["R01"])[1] == device.slow_delay_s
    device.set_failure("stuck")
    stuck = dissect("jk-pb", device.handle_modbus(REAL["R01"])[0])["cell_voltages_mv"]
    battery.advance(3600, 40_000)
    assert dissect("jk-pb", device.handle_modbus(REAL["R01"])[0])["cell_voltages_mv"] == stuck
    device.set_failure(None)
    assert dissect("jk-pb", device.handle_modbus(REAL["R01"])[0])["current_ma"] == 40_000


def test_jk_alarms_reach_the_error_word(battery):
    device = JkBms(battery)
    device.force_error_bits = 1 << 22
    battery.forced = {"cell_undervoltage"}
    battery.advance(1, 0)
    frame = jk_frames.decode_frame(device.cell_info_frame())
    assert frame["error_names"] == ["cell_undervoltage", "temperature_sensor_anomaly"]


def test_jk_ble_silent_and_stop_streaming(battery):
    device = JkBms(battery)
    session = JkBleSession(device, "mtu247")
    device.set_failure("silent")
    assert session.on_write(jk_ble.encode_command(0x96), 0.0) == []
    device.set_failure(None)
    assert session.on_write(jk_ble.encode_command(0x96), 0.0)
    assert session.poll(0.6)
    device.set_failure("stop_streaming")
    assert session.poll(1.2) == []


# --- the battery model ------------------------------------------------------------------


def test_ocv_rises_with_soc():
    values = [ocv_mv("LFP", soc) for soc in range(0, 1001, 50)]
    assert values == sorted(values) and 2500 <= values[0] and values[-1] <= 3650


def test_coulomb_counting_and_cycles():
    battery = BatteryModel(capacity_mah=10_000, soc_permille=1000, internal_resistance_mohm=0.5, seed=1)
    for _ in range(3600):
        battery.advance(1.0, -5_000)  # 5 A for an hour: half the capacity
    assert 480 <= battery.soc_permille <= 520
    for _ in range(2):
        for _ in range(3600):
            battery.advance(1.0, 5_000)
        for _ in range(3600):
            battery.advance(1.0, -5_000)
    assert battery.cycles >= 1


def test_protections_open_the_path_and_recover():
    battery = BatteryModel(capacity_mah=10_000, soc_permille=990, seed=1)
    for _ in range(7200):
        battery.advance(1.0, 10_000)
        if not battery.charge_enabled:
            break
    assert "cell_overvoltage" in battery.flags()[1]
    assert battery.allowed_current_ma(10_000) == 0 and battery.allowed_current_ma(-10_000) == -10_000
    for _ in range(600):
        battery.advance(1.0, -10_000)
    assert battery.charge_enabled


def test_current_is_limited_to_the_bms_maximum():
    battery = BatteryModel(max_charge_current_ma=50_000, max_discharge_current_ma=100_000)
    assert battery.advance(1.0, 80_000) == 50_000
    assert battery.advance(1.0, -150_000) == -100_000


def test_temperature_follows_current_and_relaxes():
    battery = BatteryModel(ambient_ddegc=250, thermal_time_constant_s=600, seed=2)
    for _ in range(1800):
        battery.advance(1.0, -100_000)
    hot = battery.temperature_c
    assert hot > 25.5
    for _ in range(3600):
        battery.advance(1.0, 0)
    assert battery.temperature_c < hot


# --- the inverter's power profile ---------------------------------------------------------


def test_day_profile_charges_at_noon_and_discharges_in_the_evening():
    profile = PowerProfile("day", peak_solar_w=6000, base_load_w=1000, day_length_s=24)
    assert profile.watts_at(12) > 4000
    assert profile.watts_at(20) == -2000
    assert profile.watts_at(3) == -1000


def test_csv_profile(tmp_path):
    path = tmp_path / "profile.csv"
    path.write_text("# time_s,watts\n0,1000\n10,-500\n20,0\n")
    profile = PowerProfile("csv", path=str(path))
    assert (profile.watts_at(5), profile.watts_at(15), profile.watts_at(25)) == (1000, -500, 1000)
    path.write_text("0,lots\n")
    with pytest.raises(ValueError, match="bad row"):
        PowerProfile("csv", path=str(path))


def test_charge_current_respects_the_advertised_limit():
    from simulators.deye.master import DeyeMaster

    master = DeyeMaster(units=[0, 1], profile=PowerProfile("constant", watts=20_000))
    for unit, limit in ((0, 50_000), (1, 10_000)):
        master.units[unit].values = {"pack_voltage_mv": 52_000, "max_charge_current_ma": limit}
    assert master.battery_currents(0.0) == {0: 50_000, 1: 10_000}
    master.profile = PowerProfile("constant", watts=-5_200)
    assert master.battery_currents(0.0) == {0: -50_000, 1: -50_000}


def test_modbus_exception_for_unknown_jk_function(battery):
    device = JkBms(battery, address=1)
    reply, _ = device.handle_modbus(modbus.encode_read_request(1, modbus.READ_INPUT, 0x1200, 2))
    assert dissect("modbus", reply)["exception"] == "illegal_function"
    assert jk_4e57.decode(reply := device.handle_4e57(jk_4e57.encode_read_all_request())[0])["frame_type"] == "response"
    assert reply


def test_a_failure_set_directly_sticks_at_the_next_reply_and_comes_unstuck(battery):
    """The docstrings say "set .failure": "stuck" set that way sticks at the values of the next
    reply, and a later "stuck" at the values of its own time, not of the first."""
    module, device = BydModule(1, battery), JkBms(battery, address=3)

    def values():
        return (byd.decode_response(byd_reply(module)[0]).fields["current_ma"],
                jk_frames.decode_frame(device.cell_info_frame())["current_ma"])  # fmt: skip

    battery.advance(60, 10_000)
    module.failure = device.failure = "stuck"
    assert values() == (10_000, 10_000)
    battery.advance(60, 20_000)
    assert values() == (10_000, 10_000)
    module.failure = device.failure = None
    assert values() == (20_000, 20_000)
    battery.advance(60, 30_000)
    module.failure = device.failure = "stuck"
    assert values() == (30_000, 30_000)
    module.failure = device.failure = None  # unstuck and stuck again, no reply between
    battery.advance(60, 40_000)
    module.failure = device.failure = "stuck"
    assert values() == (40_000, 40_000)


def test_a_stuck_jk_4e57_module_keeps_answering_the_values_it_stuck_at(battery):
    device = JkBms(battery, address=3)
    request = jk_4e57.encode_read_all_request()
    battery.advance(60, 10_000)
    device.set_failure("stuck")
    stuck = device.handle_4e57(request)[0]
    battery.advance(600, 40_000)
    assert device.handle_4e57(request)[0] == stuck
    device.set_failure(None)
    assert device.handle_4e57(request)[0] != stuck
    device.failure = "stuck"  # set directly: stuck at the next reply
    again = device.handle_4e57(request)[0]
    battery.advance(600, -20_000)
    assert device.handle_4e57(request)[0] == again != stuck


def test_a_peripheral_host_stops_its_peripherals_once_and_a_second_stop_returns_at_once():
    from simulators.jk.ble import PeripheralHost

    class Peripheral:  # what the host uses of a JkBlePeripheral
        def __init__(self):
            self.calls = []

        async def start(self):
            self.calls.append("start")

        def stop(self):  # counted when asked, whether or not the coroutine ever runs
            self.calls.append("stop")
            return self.start_nothing()

        async def start_nothing(self):
            pass

    host = PeripheralHost()
    peripheral = host.add(3, Peripheral())
    assert host.peripherals == {3: peripheral} and peripheral.calls == ["start"]
    host.stop()
    host.stop()  # (vbms sim stops its bench on exit and from its signal handler)
    assert peripheral.calls == ["start", "stop"]
