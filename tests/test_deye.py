"""DEYE Li-BMS slave: register map, identity, every decision; pymodbus as the inverter."""

import pytest
from conftest import VECTORS
from pymodbus.framer import FramerRTU
from pymodbus.pdu import DecodePDU, ExceptionResponse
from pymodbus.pdu.other_message import ReportDeviceIdRequest, ReportDeviceIdResponse
from pymodbus.pdu.register_message import ReadInputRegistersRequest, ReadInputRegistersResponse

from vbms_core import battery, byd, deye, modbus

IDENTITY = deye.encode_identity("BYD PRO 2.5", "BYD12345678901234567")
REGISTERS = list(range(0x0100, 0x0100 + 25))


@pytest.fixture
def slave():
    slave = deye.DeyeSlave(stale_us=10_000_000)
    slave.set_unit(0, REGISTERS, IDENTITY, updated_us=1_000_000)
    slave.set_unit(0x0E, [7] * 25, IDENTITY, updated_us=1_000_000)
    return slave


def inverter_request(pdu):
    return FramerRTU(DecodePDU(False)).buildFrame(pdu)


def inverter_decode(raw):
    _, pdu = FramerRTU(DecodePDU(False)).handleFrame(bytes(raw), 0, 0)
    return pdu


def test_identity_matches_the_reference_frame():
    reference = next(v for v in VECTORS["deye"] if v["id"] == "DEYE-IR")["hex"]
    assert modbus.encode_report_id_response(0, IDENTITY).hex().upper() == reference


def test_reference_requests_are_what_pymodbus_sends():
    for vector_id, unit in (("DEYE-Q0", 0), ("DEYE-Q1", 1), ("DEYE-QE", 14)):
        expected = next(v for v in VECTORS["deye"] if v["id"] == vector_id)["hex"]
        sent = inverter_request(ReadInputRegistersRequest(address=0x1000, count=25, dev_id=unit))
        assert sent.hex().upper() == expected
    expected = next(v for v in VECTORS["deye"] if v["id"] == "DEYE-I0")["hex"]
    assert inverter_request(ReportDeviceIdRequest(dev_id=0)).hex().upper() == expected


def test_unit_zero_is_answered_with_registers(slave):
    reply = slave.handle(inverter_request(ReadInputRegistersRequest(address=0x1000, count=25, dev_id=0)), 2_000_000)
    pdu = inverter_decode(reply)
    assert isinstance(pdu, ReadInputRegistersResponse)
    assert pdu.dev_id == 0 and pdu.registers == REGISTERS
    assert slave.reason == deye.REPLY_REGISTERS


def test_partial_reads_inside_the_map(slave):
    reply = slave.handle(inverter_request(ReadInputRegistersRequest(address=0x1014, count=5, dev_id=0)), 2_000_000)
    assert inverter_decode(reply).registers == REGISTERS[0x14:0x19]


def test_identity_reply_through_pymodbus(slave):
    pdu = inverter_decode(slave.handle(inverter_request(ReportDeviceIdRequest(dev_id=0)), 2_000_000))
    assert isinstance(pdu, ReportDeviceIdResponse)
    # pymodbus 3.16 takes DEYE's trailing '*' for the run-indicator byte (reference 3.3)
    assert pdu.identifier == IDENTITY[:-1] and pdu.status is False
    assert deye.decode_identity(IDENTITY) == {
        "model": "BYD PRO 2.5",
        "sw_version_hex": "1011",
        "hw_version_hex": "2021",
        "serial": "BYD12345678901234567",
    }


@pytest.mark.parametrize(
    "address, count, code",
    [(0x1000, 0, 3), (0x1000, 126, 3), (0x0FFF, 2, 2), (0x1018, 2, 2), (0x2000, 1, 2), (0x1000, 125, 2)],
)
def test_bad_reads_get_exceptions(slave, address, count, code):
    request = modbus.with_crc(bytes((0, 4, address >> 8, address & 0xFF, count >> 8, count & 0xFF)))
    pdu = inverter_decode(slave.handle(request, 2_000_000))
    assert isinstance(pdu, ExceptionResponse)
    assert pdu.exception_code == code and slave.exception_code == code


@pytest.mark.parametrize(
    "request_adu",
    [
        modbus.encode_read_request(0, modbus.READ_HOLDING, 0x1000, 25),
        modbus.encode_write_single(0, 0x1000, 1),
        modbus.encode_write_multiple_request(0, 0x1000, [1]),
        modbus.with_crc(b"\x00\x2b\x0e\x01\x00"),
    ],
)
def test_other_functions_get_illegal_function(slave, request_adu):
    pdu = inverter_decode(slave.handle(request_adu, 2_000_000))
    assert isinstance(pdu, ExceptionResponse) and pdu.exception_code == 1


@pytest.mark.parametrize(
    "request_adu, now_us, reason",
    [
        (bytes.fromhex("00041000001934D0"), 2_000_000, deye.SILENT_BAD_FRAME),
        (bytes.fromhex("0004"), 2_000_000, deye.SILENT_BAD_FRAME),
        (modbus.encode_read_request(1, 4, 0x1000, 25), 2_000_000, deye.SILENT_NOT_CONFIGURED),
        (modbus.encode_read_request(0x0F, 4, 0x1000, 25), 2_000_000, deye.SILENT_OTHER_UNIT),
        (modbus.encode_read_request(0, 4, 0x1000, 25), 11_000_001, deye.SILENT_STALE),
        (modbus.encode_report_id_request(0), 11_000_001, deye.SILENT_STALE),
        (modbus.with_crc(b"\x00\x84\x02"), 2_000_000, deye.SILENT_BAD_FRAME),
    ],
)
def test_silence(slave, request_adu, now_us, reason):
    assert slave.handle(request_adu, now_us) is None
    assert slave.reason == reason


def test_stale_limit_is_inclusive(slave):
    request = modbus.encode_read_request(0, 4, 0x1000, 25)
    assert slave.handle(request, 11_000_000) is not None
    assert slave.handle(request, 11_000_001) is None


def test_registers_from_a_byd_reading_match_the_li_bms_photo():
    # Reference 1.3.4: BYD PRO 2.5 rows show 54.58 V, 0.90 A, 100.0 % ... 49.5 Ah at SOC 99 %.
    raw = bytes.fromhex(next(v for v in VECTORS["byd_responses"] if v["id"] == "BYD-R1")["hex"])
    reading = battery.from_byd(byd.decode_response(raw).fields)
    registers = deye.registers_from_reading(reading, float_voltage_mv=55_800, max_charge_current_ma=50_000)
    named = deye.named_registers(0x1000, registers)
    assert named["pack_voltage_mv"] == 54_580
    assert named["pack_current_ma"] == 900
    assert named["remain_capacity_mah"] == 49_500
    assert named["soc_permille"] == 990 and named["soh_permille"] == 1000
    assert named["nominal_float_voltage_mv"] == 55_800
    assert named["max_charge_current_ma"] == 50_000
    assert named["max_cell_voltage_mv"] == 3420 and named["min_cell_voltage_mv"] == 3411
    assert named["cell_temp_avg_ddegc"] == 283  # mean of 28, 28, 28, 29 degC
    assert named["env_temp_ddegc"] == 250
    assert named["cycle_count"] == 127
    assert named["reserved_1017"] == 0 and named["reserved_1018"] == 0


def test_negative_current_and_temperatures_are_twos_complement():
    raw = bytes.fromhex(next(v for v in VECTORS["byd_responses"] if v["id"] == "BYD-R2")["hex"])
    reading = battery.from_byd(byd.decode_response(raw).fields)
    registers = deye.registers_from_reading(reading, 55_200, 0)
    assert registers[1] == (-1500) & 0xFFFF
    assert registers[3] == (-45) & 0xFFFF  # mean of -5, -5, -4, -4 degC = -4.5 degC
    named = deye.named_registers(0x1000, registers)
    assert named["pack_current_ma"] == -15_000 and named["min_cell_temp_ddegc"] == -50


def test_values_beyond_a_register_are_clamped_not_wrapped():
    reading = battery.Reading("test")
    reading.pack_voltage_mv = 700_000
    reading.current_ma = -400_000
    reading.remaining_mah = 900_000
    registers = deye.registers_from_reading(reading, 55_200, 1_000_000)
    assert registers[0] == 0xFFFF and registers[1] == 0x8000 and registers[2] == 0xFFFF and registers[12] == 0xFFFF


def test_a_read_after_new_registers_carries_them_with_a_correct_crc(slave):
    """The slave keeps the CRC of each unit's last read (the inverter asks the same block poll after
    poll): new registers, another block or another unit must each get their own."""
    request = inverter_request(ReadInputRegistersRequest(address=0x1000, count=25, dev_id=0))
    first = bytes(slave.handle(request, 2_000_000))
    assert bytes(slave.handle(request, 2_100_000)) == first
    changed = [register ^ 0x5A5A for register in REGISTERS]
    slave.set_unit(0, changed, IDENTITY, updated_us=2_200_000)
    assert inverter_decode(slave.handle(request, 2_300_000)).registers == changed
    part = inverter_request(ReadInputRegistersRequest(address=0x1002, count=3, dev_id=0))
    assert inverter_decode(slave.handle(part, 2_400_000)).registers == changed[2:5]
    short = inverter_request(ReadInputRegistersRequest(address=0x1002, count=2, dev_id=0))
    assert inverter_decode(slave.handle(short, 2_450_000)).registers == changed[2:4]
    other = inverter_request(ReadInputRegistersRequest(address=0x1002, count=3, dev_id=0x0E))
    assert inverter_decode(slave.handle(other, 2_500_000)).registers == [7] * 3
    assert inverter_decode(slave.handle(request, 2_600_000)).registers == changed
