"""Edges of the Modbus, DEYE and BYD codecs, dissect and compat: the function codes and sizes
the proxy meets less often, and every refusal.

Expected bytes come from outside the code under test: pymodbus 3.16 (an independent Modbus
implementation) builds the frames and their CRCs; the Modbus facts are the spec's as quoted in
deye-byd-modbus.md 3.1 (ADU at most 256 bytes; FC 0x06 request and its echo are 8 bytes; an
exception is unit | fc|0x80 | code | CRC, 5 bytes); DEYE identity and BYD layouts are
deye-byd-modbus.md 1.3.1 and 2.2/2.3 with the hand-built vectors of tests/golden.
"""

import math
import struct

import pytest
from conftest import VECTORS
from pymodbus.framer import FramerRTU
from pymodbus.pdu import DecodePDU, ExceptionResponse
from pymodbus.pdu.other_message import ReportDeviceIdResponse
from pymodbus.pdu.register_message import (
    ReadHoldingRegistersRequest,
    ReadInputRegistersResponse,
    WriteMultipleRegistersRequest,
    WriteMultipleRegistersResponse,
    WriteSingleRegisterRequest,
    WriteSingleRegisterResponse,
)

from vbms_core import byd, compat, deye, modbus, soc
from vbms_core.dissect import dissect
from vbms_core.errors import LocalProtocolError, RemoteProtocolError

SERVER = FramerRTU(DecodePDU(False))  # builds responses
CLIENT = FramerRTU(DecodePDU(True))  # builds requests
WRITE_SINGLE = CLIENT.buildFrame(WriteSingleRegisterRequest(address=0x1234, registers=[0xABCD], dev_id=5))
IDENTITY_DATA = bytes.fromhex(next(v for v in VECTORS["deye"] if v["id"] == "DEYE-IR")["hex"])[3:-2]
BYD_R1 = bytes.fromhex(next(v for v in VECTORS["byd_responses"] if v["id"] == "BYD-R1")["hex"])
BYD_R3 = bytes.fromhex(next(v for v in VECTORS["byd_responses"] if v["id"] == "BYD-R3")["hex"])


def with_crc(body):
    """CRC-16/MODBUS by pymodbus, low byte first on the wire (deye-byd-modbus.md 3.1)."""
    return bytes(body) + FramerRTU.compute_CRC(bytes(body)).to_bytes(2, "big")


def with_sum8(body):
    """BYD: append sum8 of every byte but the address (deye-byd-modbus.md 2.2)."""
    return bytes(body) + bytes((sum(body[1:]) & 0xFF,))


# --- Modbus: write single, lengths, refusals ------------------------------------------------------


def test_write_single_request_and_its_echo_decode():
    assert WRITE_SINGLE == bytes.fromhex("05061234ABCD725D") and len(WRITE_SINGLE) == 8
    for decode in (modbus.decode_request, modbus.decode_response):
        event = decode(WRITE_SINGLE)
        assert isinstance(event, modbus.WriteSingle)
        assert (event.unit, event.function, event.address, event.value) == (5, 0x06, 0x1234, 0xABCD)


def test_write_single_encodes_as_pymodbus_does():
    assert modbus.encode_write_single(5, 0x1234, 0xABCD) == WRITE_SINGLE
    echo = SERVER.buildFrame(WriteSingleRegisterResponse(address=0x1234, registers=[0xABCD], dev_id=5))
    assert modbus.encode_response(modbus.WriteSingle(5, 0x1234, 0xABCD)) == echo


def test_every_response_event_encodes_as_pymodbus_builds_it():
    cases = (
        (modbus.ReadResponse(9, 4, (1, 0xFFFF, 300)), ReadInputRegistersResponse(registers=[1, 0xFFFF, 300], dev_id=9)),
        (modbus.ExceptionResponse(3, 0x10, 2), ExceptionResponse(0x10, 2, device_id=3)),
        (modbus.WriteMultipleResponse(3, 0x1620, 1), WriteMultipleRegistersResponse(address=0x1620, count=1, dev_id=3)),
        # pymodbus appends the run-indicator byte (0xFF = on) to the identifier (3.1, FC 0x11)
        (modbus.ReportIdResponse(2, b"AB\xff"), ReportDeviceIdResponse(identifier=b"AB", status=True, dev_id=2)),
    )
    for event, pdu in cases:
        assert modbus.encode_response(event) == SERVER.buildFrame(pdu), type(event).__name__
    with pytest.raises(LocalProtocolError, match="not a response event"):
        modbus.encode_response(modbus.ReadRequest(1, 4, 0x1000, 1))


@pytest.mark.parametrize(
    "frame, message",
    [
        (with_crc(bytes.fromhex("05061234ABCD00")), "write-single request must be 8 bytes, got 9"),
        (with_crc(bytes.fromhex("011000010001")), "write-multiple request too short"),
        (with_crc(bytes.fromhex("018302")), "function code 83 is an exception code, not a request"),
    ],
)
def test_malformed_requests_are_refused(frame, message):
    with pytest.raises(RemoteProtocolError, match=message) as caught:
        modbus.decode_request(frame)
    assert caught.value.function_code == frame[1]


@pytest.mark.parametrize(
    "frame, message",
    [
        (with_crc(bytes.fromhex("05061234ABCD")[:5]), "write-single response must be 8 bytes"),
        (with_crc(bytes.fromhex("010403000102")), "byte count 3 does not fit a 8-byte frame"),
        (with_crc(bytes.fromhex("0111054142")), "report-server-id response: byte count 5"),
        (with_crc(bytes.fromhex("012B0E01")), "unsupported function code 2B"),
        (with_crc(bytes.fromhex("01100550")), "write-multiple response must be 8 bytes"),
    ],
)
def test_malformed_responses_are_refused(frame, message):
    with pytest.raises(RemoteProtocolError, match=message):
        modbus.decode_response(frame)


def test_request_lengths_known_from_the_prefix():
    frames = [
        CLIENT.buildFrame(ReadHoldingRegistersRequest(address=0x1000, count=10, dev_id=1)),
        WRITE_SINGLE,
        CLIENT.buildFrame(WriteMultipleRegistersRequest(address=0x1620, registers=[0, 1, 2], dev_id=3)),
        bytes.fromhex("0011C1BC"),  # DEYE 0x11 request (4.4)
    ]
    for frame in frames:
        known_at = 7 if frame[1] == 0x10 else 2  # FC 0x10 says its size in byte 6
        assert modbus.request_frame_length(frame[: known_at - 1]) is None
        assert modbus.request_frame_length(frame[:known_at]) == len(frame), frame.hex()
    assert modbus.request_frame_length(bytes.fromhex("012B0E01")) is None  # a function code it does not size


def test_response_lengths_known_from_the_prefix():
    frames = [
        SERVER.buildFrame(ReadInputRegistersResponse(registers=[7] * 25, dev_id=0)),
        SERVER.buildFrame(ExceptionResponse(0x04, 2, device_id=1)),
        SERVER.buildFrame(ReportDeviceIdResponse(identifier=b"BYD", status=True, dev_id=1)),
        SERVER.buildFrame(WriteSingleRegisterResponse(address=1, registers=[2], dev_id=1)),
        SERVER.buildFrame(WriteMultipleRegistersResponse(address=0x1620, count=1, dev_id=3)),
    ]
    for frame in frames:
        assert modbus.response_length(frame[:2]) is None
        assert modbus.response_length(frame[:3]) == len(frame), frame.hex()
    assert modbus.response_length(bytes.fromhex("012B0E")) is None


@pytest.mark.parametrize(
    "encode, message",
    [
        (lambda: modbus.encode_read_request(1, 0x06, 0, 1), "not a register read"),
        (lambda: modbus.encode_read_request(1, 0x04, 0x10000, 1), "not allowed"),
        (lambda: modbus.encode_write_single(1, 0, 0x10000), "not allowed"),
        (lambda: modbus.encode_write_single(1, 0x10000, 0), "not allowed"),
        (lambda: modbus.encode_write_single(-1, 0, 0), "unit -1 outside 0..255"),
        (lambda: modbus.encode_write_multiple_request(1, 0x1620, ()), "1..123 registers, not 0"),
        (lambda: modbus.encode_write_multiple_request(1, 0x1620, [0] * 124), "1..123 registers, not 124"),
        (lambda: modbus.encode_write_multiple_request(1, 0x1620, (0, 0x10000)), "not a 16-bit word"),
        (lambda: modbus.encode_report_id_response(1, bytes(252)), "252 bytes does not fit an ADU"),
        (lambda: modbus.RtuFramer(0), "baud rate must be positive"),
    ],
)
def test_what_the_protocol_does_not_allow_is_not_encoded(encode, message):
    with pytest.raises(LocalProtocolError, match=message):
        encode()


def test_the_longest_report_id_response_fills_an_adu_exactly():
    frame = modbus.encode_report_id_response(1, bytes(251))
    assert len(frame) == modbus.MAX_ADU == 256
    assert frame == SERVER.buildFrame(ReportDeviceIdResponse(identifier=bytes(250), status=False, dev_id=1))


def test_the_framer_ignores_an_empty_read():
    framer = modbus.RtuFramer(9600)
    framer.feed(b"", 1_000)
    assert framer.next_event(1_000_000) is modbus.NEED_DATA and framer.deadline_us() is None
    framer.feed(WRITE_SINGLE, 2_000)
    framer.feed(b"", 2_500)  # nothing arrived: the silence still counts from the last byte
    assert framer.deadline_us() == 2_000 + framer.gap_us


# --- DEYE ----------------------------------------------------------------------------------------


def test_registers_read_outside_the_map_are_named_by_address():
    named = deye.named_registers(0x0FFF, [0x1234, 5321, 7])
    assert named["register_0fff"] == 0x1234
    assert named["pack_voltage_mv"] == 53_210 and named["pack_current_ma"] == 70


@pytest.mark.parametrize(
    "model, serial, versions, message",
    [
        ("M" * 16, "S", (b"\x10\x11", b"\x20\x21"), "at most 15 characters, no '\\*'"),
        ("BYD*PRO", "S", (b"\x10\x11", b"\x20\x21"), "at most 15 characters, no '\\*'"),
        ("BYD PRO 2.5", "S" * 21, (b"\x10\x11", b"\x20\x21"), "at most 20 characters"),
        ("BYD PRO 2.5", "S", (b"\x10\x11\x12", b"\x20\x21"), "2 bytes each"),
    ],
)
def test_identity_fields_beyond_the_layout_are_refused(model, serial, versions, message):
    # deye-byd-modbus.md 1.3.1: model at most 15 bytes, serial exactly 20 (NUL-padded), SW and HW 2 bytes
    with pytest.raises(LocalProtocolError, match=message):
        deye.encode_identity(model, serial, *versions)


def test_a_broken_identity_is_refused():
    assert deye.decode_identity(IDENTITY_DATA)["model"] == "BYD PRO 2.5"
    for broken, message in (
        (IDENTITY_DATA[:-1], "does not fit model\\*SW\\*HW\\*serial\\*"),
        (IDENTITY_DATA.replace(b"*", b"#", 1), "does not fit"),  # no separator after the model
        (IDENTITY_DATA[:14] + b"#" + IDENTITY_DATA[15:], "separators missing"),  # the one after SW
        (IDENTITY_DATA[:17] + b"#" + IDENTITY_DATA[18:], "separators missing"),  # the one after HW
        (IDENTITY_DATA[:-1] + b"#", "separators missing"),
    ):
        with pytest.raises(RemoteProtocolError, match=message):
            deye.decode_identity(broken)


def test_the_slave_refuses_units_and_register_blocks_it_cannot_hold():
    slave = deye.DeyeSlave(stale_us=10_000_000)
    with pytest.raises(LocalProtocolError, match="outside 0x00..0x0E"):
        slave.set_unit(15, [0] * 25, b"", 0)
    with pytest.raises(LocalProtocolError, match="needs 25 registers"):
        slave.set_unit(0, [0] * 24, b"", 0)


def test_a_unit_is_served_while_its_data_is_fresh():
    slave = deye.DeyeSlave(stale_us=10_000_000)
    slave.set_unit(3, [0] * 25, deye.encode_identity("M", "S"), 5_000_000)
    assert slave.is_served(3, 15_000_000) and not slave.is_served(3, 15_000_001)
    assert not slave.is_served(2, 5_000_000) and not slave.is_served(15, 5_000_000)


def test_requests_of_the_wrong_size_get_silence():
    slave = deye.DeyeSlave(stale_us=10_000_000)
    slave.set_unit(0, [0] * 25, deye.encode_identity("M", "S"), 0)
    for request in (with_crc(bytes.fromhex("0004100000190000")), with_crc(bytes.fromhex("001100"))):
        assert slave.handle(request, 1_000) is None, request.hex()
        assert slave.reason == deye.SILENT_BAD_FRAME


# --- BYD -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("address", [-1, 256])
def test_a_byd_address_is_a_byte(address):
    with pytest.raises(LocalProtocolError, match="is not a byte"):
        byd.encode_request(address)


def test_a_byd_length_needs_three_bytes():
    assert byd.frame_length(BYD_R1[:2]) is None
    assert byd.frame_length(BYD_R1[:3]) == 105


def test_a_byd_reply_is_not_a_request():
    reply_sized_as_a_request = with_sum8(bytes.fromhex("01 00 04 01 83 55 AA"))
    for frame in (BYD_R1, reply_sized_as_a_request):
        with pytest.raises(RemoteProtocolError, match="not a BYD request"):
            byd.decode_request(frame)


def test_a_short_byd_reply_is_taken_only_as_an_error():
    error_reply = with_sum8(bytes.fromhex("010005018355AA01"))  # result 01, no data block
    status = byd.decode_response(error_reply)
    assert (status.address, status.result, status.fields) == (1, 1, None)
    assert dissect("byd-pro", error_reply) == {
        "direction": "response", "address": 1, "result": 1, "protocol": "byd-pro", "frame_length": 9,
    }  # fmt: skip
    with pytest.raises(RemoteProtocolError, match="must carry 96 data bytes, has 0"):
        byd.decode_response(with_sum8(bytes.fromhex("010005018355AA00")))


def test_the_byd_error_vector_decodes_with_its_result():
    assert dissect("byd-pro", BYD_R3)["result"] == 1


def test_byd_field_values_that_do_not_fit_are_refused():
    fields = byd.decode_response(BYD_R1).fields
    with pytest.raises(LocalProtocolError, match="cell_voltages_mv takes at most 16 values"):
        byd.encode_response(1, dict(fields, cell_voltages_mv=[3300] * 17))
    with pytest.raises(LocalProtocolError, match="do not fit"):
        byd.encode_response(1, dict(fields, pack_voltage_mv=2**31))


# --- dissect ---------------------------------------------------------------------------------------


def test_dissect_refuses_what_it_cannot_take():
    with pytest.raises(LocalProtocolError, match="unknown protocol 'pylon'"):
        dissect("pylon", b"\x00")
    with pytest.raises(LocalProtocolError, match="unknown layout 'JK05'"):
        dissect("jk-ble", b"\x00", "JK05")
    with pytest.raises(LocalProtocolError, match="frame must be bytes"):
        dissect("modbus", "05061234ABCD725D")
    with pytest.raises(RemoteProtocolError, match="1025 bytes exceeds the 1024-byte limit"):
        dissect("modbus", bytes(1025))


def test_dissect_names_a_write_single_frame():
    assert dissect("modbus", WRITE_SINGLE) == {
        "direction": "request", "unit": 5, "function": 6, "address": 0x1234, "value": 0xABCD,
        "function_name": "write_single_register", "protocol": "modbus", "frame_length": 8,
    }  # fmt: skip


# --- compat ----------------------------------------------------------------------------------------


def test_const_is_the_identity_off_micropython():
    assert compat.const(0x1000) == 0x1000


@pytest.mark.parametrize(
    "raw, text",
    [
        (b"", ""),
        (b"\x00", ""),
        (b"JK_PB2A16S20P\x00\x00\x00", "JK_PB2A16S20P"),
        (b"ABC\x00junk\xff", "ABC"),  # the field ends at its first NUL, whatever follows
        (b"A\x01B\x7f~ ", "A?B?~ "),  # bytes outside 0x20..0x7E become '?'
        (b"AB\x7f", "AB?"),
        (b"\x1f\x80\xff\x00A", "???"),
        (bytearray(b"V19\x00"), "V19"),
        (memoryview(b"S/N 1\xc3\xa4"), "S/N 1??"),  # not UTF-8: byte by byte
    ],
)
def test_an_ascii_field_ends_at_nul_and_marks_every_other_byte(raw, text):
    assert compat.ascii_field(raw) == text


@pytest.mark.parametrize(
    "text, raw",
    [("55AAEB90", b"\x55\xaa\xeb\x90"), ("0x55 aa:eb-90\n", b"\x55\xaa\xeb\x90"), ("", b"")],
)
def test_unhexlify_tolerates_separators_and_a_prefix(text, raw):
    assert compat.unhexlify(text) == raw


@pytest.mark.parametrize("text, message", [("55A", "odd number of hex digits"), ("55XY", "not a hex string")])
def test_unhexlify_refuses_what_is_not_hex(text, message):
    with pytest.raises(ValueError, match=message):
        compat.unhexlify(text)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_a_float_that_is_no_number_scales_to_none(value):
    bits = struct.unpack("<I", struct.pack("<f", value))[0]
    assert compat.f32_scaled(bits, 1000) is None
    assert compat.f32_sum_scaled([0x40533333, bits], 1000) is None


def test_floats_of_whole_numbers_beyond_the_mantissa_scale_exactly():
    # 2**24 and 3 * 2**25 are singles with exponents above the 23-bit mantissa (IEEE 754)
    big = struct.unpack("<I", struct.pack("<f", 2.0**24))[0]
    bigger = struct.unpack("<I", struct.pack("<f", 3 * 2.0**25))[0]
    assert compat.f32_scaled(big, 1000) == 16_777_216_000
    assert compat.f32_scaled(bigger | 0x80000000, 10) == -1_006_632_960
    assert compat.f32_sum_scaled([big, bigger], 1) == 2**24 + 3 * 2**25
    assert compat.f32_sum_scaled([], 1000) == 0


# --- battery: chemistry from the cells --------------------------------------------------------------


def test_twenty_cells_at_lto_voltages_are_lto():
    # Libre Solar cell limits (battery.py): 2.85 V and below with 20 or more cells is LTO, not LFP
    assert soc.detect_chemistry([2700] * 20) == "lto"
    assert soc.detect_chemistry([2700] * 16) == "lfp"
    assert soc.detect_chemistry([2900] * 20) == "lfp"
