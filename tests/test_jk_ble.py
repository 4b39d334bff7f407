"""JK BLE commands and notification reassembly on a real captured session."""

import re
from pathlib import Path

import pytest
from conftest import JK_FRAMES

from vbms_core import jk_ble
from vbms_core.errors import LocalProtocolError, RemoteProtocolError
from vbms_core.modbus import NEED_DATA

REFERENCE = Path(__file__).parent.parent / "hil" / "data" / "demo_captures.json"


def session_notifications():
    import json

    events = json.loads(REFERENCE.read_text())["ble_session"]["events"]
    return [bytes.fromhex(e["hex"]) for e in events if e["dir"] == "rx"]


def drain(reassembler):
    events = []
    while (event := reassembler.next_event()) is not NEED_DATA:
        events.append(event)
    return events


def test_zero_padded_requests_match_the_reference():
    by_id = {f["id"]: f["hex"] for f in JK_FRAMES}
    assert jk_ble.encode_command(jk_ble.GET_DEVICE_INFO).hex().upper() == by_id["C01"]
    assert jk_ble.encode_command(jk_ble.GET_SETTINGS).hex().upper() == by_id["C02"]


def test_app_commands_with_random_padding_round_trip():
    for frame in (f for f in JK_FRAMES if f["kind"] == "c"):
        raw = bytes.fromhex(frame["hex"])
        command = jk_ble.decode_command(raw)
        rebuilt = jk_ble.encode_command(command.command, command.value_field, command.length, command.padding)
        assert rebuilt == raw


def test_register_write_values():
    by_id = {f["id"]: bytes.fromhex(f["hex"]) for f in JK_FRAMES}
    assert jk_ble.decode_command(by_id["C04"]).value == 4  # precharge time 4 s
    assert jk_ble.decode_command(by_id["C05"]).value == 3  # heating start 3 degC, one byte
    assert jk_ble.decode_command(by_id["C06"]).value == 0x0B1F2C3F


@pytest.mark.parametrize("value, length", [(-(2**31) - 1, 4), (256, 1), (1, 3), (b"x" * 14, None)])
def test_commands_that_cannot_be_encoded(value, length):
    with pytest.raises(LocalProtocolError):
        jk_ble.encode_command(0x1D, value, length)


def test_bad_commands_are_rejected():
    good = jk_ble.encode_command(0x97)
    with pytest.raises(RemoteProtocolError, match="checksum"):
        jk_ble.decode_command(good[:-1] + b"\x00")
    with pytest.raises(RemoteProtocolError, match="20 bytes"):
        jk_ble.decode_command(good[:-1])


def test_real_session_reassembles_five_frames_and_drops_the_junk():
    reassembler = jk_ble.JkReassembler()
    events = []
    for notification in session_notifications():
        reassembler.feed(notification)
        events += drain(reassembler)
    frames = [e.raw for e in events if isinstance(e, jk_ble.JkFrame)]
    junk = [e for e in events if isinstance(e, jk_ble.Junk)]
    assert [(f[4], f[5]) for f in frames] == [(3, 0x00), (1, 0x00), (3, 0xA5), (2, 0x00), (2, 0x01)]
    assert {kind for j in junk for kind in j.kinds} == {"keepalive", "c8_trailer"}
    assert all("garbage" not in j.kinds for j in junk)
    assert reassembler.pending() <= 3


def test_header_behind_a_keepalive_in_the_same_notification():
    frame = bytes.fromhex(next(f for f in JK_FRAMES if f["id"] == "B19")["hex"])
    reassembler = jk_ble.JkReassembler()
    reassembler.feed(b"AT\r\n" + frame[:124])
    reassembler.feed(frame[124:])
    events = drain(reassembler)
    assert isinstance(events[0], jk_ble.Junk) and events[0].kinds == ["keepalive"]
    assert events[1].raw == frame


def test_resynchronises_after_a_corrupt_frame():
    frame = bytes.fromhex(next(f for f in JK_FRAMES if f["id"] == "B12")["hex"])
    corrupt = bytearray(frame)
    corrupt[100] ^= 0xFF
    reassembler = jk_ble.JkReassembler()
    reassembler.feed(bytes(corrupt) + b"\x12\x34" + frame)
    events = drain(reassembler)
    assert [type(e).__name__ for e in events] == ["Junk", "JkFrame"]
    assert events[0].length == 302 and events[0].kinds == ["garbage"]
    assert events[1].raw == frame


@pytest.mark.parametrize("chunk_size", [1, 7, 20, 128, 150, 1000])
def test_buffer_stays_bounded_on_endless_garbage(chunk_size):
    reassembler = jk_ble.JkReassembler()
    fake_header = b"\x55\xaa\xeb\x90\x02" + bytes(400)
    stream = (fake_header + b"\x55\xaa\xeb") * 20
    for start in range(0, len(stream), chunk_size):
        reassembler.feed(stream[start : start + chunk_size])
        drain(reassembler)
        assert reassembler.pending() < 300
    assert reassembler.frames == 0


def test_flush_reports_what_was_left():
    reassembler = jk_ble.JkReassembler()
    reassembler.feed(b"\x55\xaa\xeb\x90\x02\x00")
    assert drain(reassembler) == []
    reassembler.flush()
    (junk,) = drain(reassembler)
    assert junk.length == 6 and re.match("55AAEB90", junk.raw.hex().upper())
