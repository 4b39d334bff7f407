"""Modbus RTU codec: CRC, ADUs, bounds, silence framing; pymodbus as the peer."""

import pytest
from conftest import VECTORS
from pymodbus.framer import FramerRTU
from pymodbus.pdu import DecodePDU
from pymodbus.pdu.register_message import (
    ReadHoldingRegistersRequest,
    ReadInputRegistersResponse,
    WriteMultipleRegistersRequest,
    WriteMultipleRegistersResponse,
)

from vbms_core import modbus
from vbms_core.errors import LocalProtocolError, RemoteProtocolError


def test_crc_check_value():
    assert modbus.crc16(b"123456789") == 0x4B37


@pytest.mark.parametrize("vector", VECTORS["modbus"], ids=lambda v: v["id"])
def test_real_frames_have_valid_crc_and_agree_with_pymodbus(vector):
    raw = bytes.fromhex(vector["hex"])
    modbus.check_crc(raw)
    assert modbus.crc16(raw[:-2]) == int.from_bytes(FramerRTU.compute_CRC(raw[:-2]).to_bytes(2, "big"), "little")


def test_decode_request_and_response_events():
    event = modbus.decode_request(bytes.fromhex("01100550000204000181 00F853".replace(" ", "")))
    assert (event.unit, event.address, event.values) == (1, 0x0550, (0x0001, 0x8100))
    event = modbus.decode_response(bytes.fromhex("0103041122334 44BC6".replace(" ", "")))
    assert event.registers == (0x1122, 0x3344)
    event = modbus.decode_response(bytes.fromhex("018402C2C1"))
    assert isinstance(event, modbus.ExceptionResponse) and (event.function, event.code) == (4, 2)


@pytest.mark.parametrize(
    "hex_frame, message",
    [
        ("00041000001934D0", "bad CRC"),
        ("0004", "too short"),
        ("00041000001935" + "00" * 300, "longer than 256"),
        ("0110055000020300018100F853", "CRC"),
    ],
)
def test_bad_frames_raise_remote_protocol_error(hex_frame, message):
    with pytest.raises(RemoteProtocolError, match=message):
        modbus.decode_request(bytes.fromhex(hex_frame))


def test_inconsistent_write_multiple_is_rejected():
    raw = modbus.with_crc(bytes.fromhex("0110055000020300018100"))
    with pytest.raises(RemoteProtocolError, match="do not agree"):
        modbus.decode_request(raw)


def test_encoder_bounds():
    with pytest.raises(LocalProtocolError):
        modbus.encode_read_request(1, modbus.READ_INPUT, 0x1000, 0)
    with pytest.raises(LocalProtocolError):
        modbus.encode_read_request(1, modbus.READ_INPUT, 0x1000, 126)
    with pytest.raises(LocalProtocolError):
        modbus.encode_read_response(1, modbus.READ_INPUT, [0] * 126)
    with pytest.raises(LocalProtocolError):
        modbus.encode_read_response(1, modbus.READ_INPUT, [0x10000])
    with pytest.raises(LocalProtocolError):
        modbus.encode_read_request(256, modbus.READ_INPUT, 0, 1)


def test_our_requests_decode_in_a_pymodbus_server():
    server = FramerRTU(DecodePDU(True))
    _, pdu = server.handleFrame(modbus.encode_read_request(7, modbus.READ_HOLDING, 0x1234, 10), 0, 0)
    assert isinstance(pdu, ReadHoldingRegistersRequest)
    assert (pdu.dev_id, pdu.address, pdu.count) == (7, 0x1234, 10)
    _, pdu = server.handleFrame(modbus.encode_write_multiple_request(3, 0x1620, (0,)), 0, 0)
    assert isinstance(pdu, WriteMultipleRegistersRequest)
    assert (pdu.dev_id, pdu.address, pdu.registers) == (3, 0x1620, [0])


def test_pymodbus_responses_decode_here():
    framer = FramerRTU(DecodePDU(False))
    raw = framer.buildFrame(ReadInputRegistersResponse(registers=[1, 0xFFFF, 300], dev_id=9))
    event = modbus.decode_response(raw)
    assert (event.unit, event.function, event.registers) == (9, 4, (1, 0xFFFF, 300))
    raw = framer.buildFrame(WriteMultipleRegistersResponse(address=0x1620, count=1, dev_id=3))
    assert raw == modbus.encode_write_multiple_response(3, 0x1620, 1)


class TestFramer:
    def test_timing_constants_at_9600_and_above_19200(self):
        assert modbus.RtuFramer(9600).gap_us == 3646
        assert modbus.RtuFramer(115200).gap_us == 1750

    def test_a_frame_closes_after_silence(self):
        framer = modbus.RtuFramer(9600)
        framer.feed(b"\x00\x04\x10\x00\x00\x19\x34\xd1", 10_000)
        assert framer.next_event(10_000 + 3000) is modbus.NEED_DATA
        frame = framer.next_event(10_000 + 3646)
        assert frame.raw == bytes.fromhex("00041000001934D1") and frame.ok

    def test_split_chunks_within_the_gap_stay_one_frame(self):
        framer = modbus.RtuFramer(9600)
        framer.feed(b"\x00\x04\x10", 5_000)
        framer.feed(b"\x00\x00\x19\x34\xd1", 5_000 + 5 * 1042 + 1500)
        assert framer.next_event(100_000).raw == bytes.fromhex("00041000001934D1")

    def test_a_gap_splits_frames_even_without_polling(self):
        framer = modbus.RtuFramer(9600)
        framer.feed(b"\x01\x02", 5_000)
        framer.feed(b"\x03\x04", 5_000 + 4_000 + 2 * 1042)
        assert framer.next_event(0).raw == b"\x01\x02"
        assert framer.next_event(100_000).raw == b"\x03\x04"

    def test_a_whole_request_closes_at_once(self):
        framer = modbus.RtuFramer(9600)
        framer.feed(bytes.fromhex("00041000"), 4_000)
        assert not framer.close_if_complete(modbus.request_frame_length)
        framer.feed(bytes.fromhex("001934D1"), 8_000)
        assert framer.close_if_complete(modbus.request_frame_length)
        assert framer.next_event(8_000).raw == bytes.fromhex("00041000001934D1")

    def test_a_request_with_a_bad_crc_waits_for_the_silence(self):
        framer = modbus.RtuFramer(9600)
        framer.feed(bytes.fromhex("00041000001934D0"), 8_000)
        assert not framer.close_if_complete(modbus.request_frame_length)
        assert framer.next_event(8_000) is modbus.NEED_DATA
        assert framer.next_event(8_000 + 3_646).raw == bytes.fromhex("00041000001934D0")

    def test_an_endless_burst_is_bounded_and_marked(self):
        framer = modbus.RtuFramer(9600)
        for index in range(1000):
            framer.feed(b"\xff", 1042 * (index + 1))
            assert framer.pending() <= modbus.MAX_ADU
        frame = framer.next_event(10_000_000)
        assert not frame.ok and len(frame.raw) == modbus.MAX_ADU


RTU_VECTORS = VECTORS["modbus"] + VECTORS["deye"] + VECTORS["byd_requests"] + VECTORS["byd_responses"]


@pytest.mark.parametrize("vector", RTU_VECTORS, ids=lambda v: v["id"])
def test_every_bus_vector_framed_whole_bytewise_and_with_trailing_bytes(vector):
    raw = bytes.fromhex(vector["hex"])
    char_us = modbus.char_time_us(9600)
    whole = modbus.RtuFramer(9600)
    whole.feed(raw, len(raw) * char_us)
    bytewise = modbus.RtuFramer(9600)
    for index in range(len(raw)):
        bytewise.feed(raw[index : index + 1], (index + 1) * char_us)
    end_us = len(raw) * char_us
    for framer in (whole, bytewise):
        frame = framer.next_event(end_us + framer.gap_us)
        assert frame.raw == raw and frame.ok
    trailing = modbus.RtuFramer(9600)
    trailing.feed(raw, end_us)
    trailing.feed(b"\x00\x11\xc1\xbc", end_us + 5_000 + 4 * char_us)  # another frame after a t3.5 silence
    assert trailing.next_event(end_us + 5_000 + 4 * char_us).raw == raw
    assert trailing.next_event(10**9).raw == b"\x00\x11\xc1\xbc"
