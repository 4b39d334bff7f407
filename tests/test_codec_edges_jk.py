"""Edges of the JK codecs: 55AA frames (jk_frames), the legacy 4E57 protocol (jk_4e57), BLE
commands and junk (jk_ble) and the JK-PB trigger protocol (jk_pb).

Expected values come from jk-protocols.md (section numbers below) and the golden frames of
tests/golden/jk_frames.json; frames a test needs that no capture holds are written byte by byte
from the reference's layout, their checksums by the reference's rule (sum8 of bytes 0..298 for
55AA frames, section 3; sum16 big-endian for 4E57, 10.1; sum8 of bytes 0..18 for commands, 2).
"""

import struct

import pytest
from conftest import JK_FRAMES
from pymodbus.framer import FramerRTU
from pymodbus.pdu import DecodePDU
from pymodbus.pdu.register_message import WriteSingleRegisterResponse

from vbms_core import battery, jk_4e57, jk_ble, jk_frames, jk_pb
from vbms_core.dissect import dissect
from vbms_core.errors import LocalProtocolError, RemoteProtocolError

GOLDEN = {frame["id"]: bytes.fromhex(frame["hex"]) for frame in JK_FRAMES}
C8_TRAILER = bytes.fromhex("AA5590EBC8010100000000000000000000000044")  # section 1.4


def frame_55aa(frame_type, payload, counter=7):
    """A 300-byte frame: header, type, counter, payload from byte 6, sum8 at 299 (section 3)."""
    frame = bytearray(300)
    frame[0:6] = bytes.fromhex("55AAEB90") + bytes((frame_type, counter))
    frame[6 : 6 + len(payload)] = payload
    frame[299] = sum(frame[:299]) & 0xFF
    return bytes(frame)


def frame_4e57(data, frame_type=1, marker=0x68):
    """A 4E57 frame (section 10.1): STX, length, terminal, command 06, source 0, type, data,
    record, end marker, 00 00, sum16 of everything before it (big-endian)."""
    total = 11 + len(data) + 9
    body = b"NW" + struct.pack(">H", total - 2) + bytes(4) + bytes((0x06, 0, frame_type)) + data
    body += bytes(4) + bytes((marker, 0, 0))
    return body + struct.pack(">H", sum(body) & 0xFFFF)


def command(*head, padding=bytes(9)):
    """A 20-byte BLE command with the checksum of section 2."""
    frame = bytes(head).ljust(10, b"\x00") + padding
    return frame + bytes((sum(frame) & 0xFF,))


# --- 55AA frames -----------------------------------------------------------------------------------


def test_a_logbook_frame_lists_its_entries():
    # section 8: u32 entry count at 6, a check byte at 10, then 5-byte entries (u32 seconds, u8 code)
    entries = (0).to_bytes(4, "little") + b"\x01" + (238).to_bytes(4, "little") + b"\x02"
    frame = frame_55aa(0x05, (2).to_bytes(4, "little") + b"\x03" + entries)
    decoded = jk_frames.decode_frame(frame, jk_frames.JK02_32S)
    assert decoded == {
        "frame_type": "logbook", "entry_count": 2, "entries": [[0, 1], [238, 2]], "layout": "JK02_32S", "counter": 7,
    }  # fmt: skip
    assert dissect("jk-ble", frame, "JK02_32S")["entries"] == [[0, 1], [238, 2]]


def test_a_logbook_frame_holds_at_most_fifty_entries():
    full = frame_55aa(0x05, (60).to_bytes(4, "little") + b"\x03" + bytes(range(250)))
    decoded = jk_frames.decode_frame(full)
    assert decoded["entry_count"] == 60 and len(decoded["entries"]) == 50
    assert decoded["entries"][49] == [int.from_bytes(bytes(range(245, 249)), "little"), 249]


def test_a_frame_of_a_type_not_known_is_decoded_as_unknown():
    decoded = jk_frames.decode_frame(frame_55aa(0x06, b"", counter=9))  # "detail log", never seen (section 3)
    assert (decoded["frame_type"], decoded["type"], decoded["counter"]) == ("unknown", 6, 9)


def test_a_window_without_the_header_is_not_a_jk_frame():
    frame = bytearray(GOLDEN["B03"])
    frame[0:4] = jk_ble.COMMAND_HEADER
    with pytest.raises(RemoteProtocolError, match="not a JK frame: header aa5590eb"):
        jk_frames.decode_frame(bytes(frame))


def test_unknown_layouts_are_refused_by_decoder_and_encoders():
    with pytest.raises(LocalProtocolError, match="unknown JK layout 'JK05'"):
        jk_frames.decode_frame(GOLDEN["B03"], "JK05")
    with pytest.raises(LocalProtocolError, match="unknown JK layout 'JK05'"):
        jk_frames.encode_cell_info({"cell_voltages_mv": [3300]}, "JK05")
    with pytest.raises(LocalProtocolError, match="unknown JK layout 'JK05'"):
        jk_frames.encode_settings({}, "JK05")


@pytest.mark.parametrize("layout, cells", [("JK04", 25), ("JK02_24S", 25), ("JK02_32S", 33)])
def test_more_cells_than_a_layout_carries_are_refused(layout, cells):
    # section 4: JK04 and JK02_24S carry at most 24 cells, JK02_32S 32
    with pytest.raises(LocalProtocolError, match="at most"):
        jk_frames.encode_cell_info({"cell_voltages_mv": [3300] * cells}, layout)


def test_device_info_text_longer_than_its_field_is_refused():
    # section 7: vendor_id is 16 bytes
    with pytest.raises(LocalProtocolError, match="vendor_id .* is longer than 16 bytes"):
        jk_frames.encode_device_info({"vendor_id": "JK_PB2A16S20P-XYZ"})


def test_the_cell_mask_decides_which_cells_are_present():
    frame = jk_frames.encode_cell_info({"cell_voltages_mv": [3300, 3301, 3302], "cell_mask": 0b101}, "JK02_32S")
    assert jk_frames.decode_frame(frame)["cell_voltages_mv"] == [3300, 3302]


def test_jk04_wire_resistances_survive_and_an_empty_pack_has_no_cells():
    frame = jk_frames.encode_cell_info(
        {"cell_voltages_mv": [3350, 3360], "cell_wire_resistances_mohm": [61, 75]}, "JK04"
    )
    decoded = jk_frames.decode_frame(frame)
    assert decoded["cell_voltages_mv"] == [3350, 3360] and decoded["cell_wire_resistances_mohm"] == [61, 75]
    empty = jk_frames.decode_frame(jk_frames.encode_cell_info({"cell_voltages_mv": []}, "JK04"), "JK04")
    assert (empty["cell_count"], empty["cell_voltages_mv"], empty["pack_voltage_mv"]) == (0, [], 0)


def test_jk04_settings_are_written_where_the_real_frame_has_them():
    # golden B41 (section 9.2): cell count 16, power-off 3.0 V, start-balance 4.25 V, trigger delta
    # 0.005 V, max balance current 2.0 A, balancer on; the frame's f32 1.0 at byte 6
    values = {
        "cell_count": 16, "power_off_voltage_mv": 3000, "balance_start_voltage_mv": 4250,
        "balance_trigger_delta_mv": 5, "max_balance_current_ma": 2000, "balancer_switch": 1,
    }  # fmt: skip
    frame = jk_frames.encode_settings(values, "JK04", counter=GOLDEN["B41"][5])
    for start, end in ((0, 10), (34, 36), (38, 42), (98, 102), (106, 115)):
        assert frame[start:end] == GOLDEN["B41"][start:end], (start, end)
    assert jk_frames.decode_frame(frame)["layout"] == "JK04"


# --- 4E57 --------------------------------------------------------------------------------------------


def test_the_4e57_length_needs_four_bytes():
    request = GOLDEN["U01"]
    assert jk_4e57.frame_length(request[:3]) is None
    assert jk_4e57.frame_length(request[:4]) == len(request) == 21


def test_4e57_envelopes_that_do_not_check_out_are_refused():
    corrupt = bytearray(GOLDEN["U02"])
    corrupt[-1] ^= 0x01
    with pytest.raises(RemoteProtocolError, match="4E57 checksum 54D0, computed 54D1"):
        jk_4e57.decode_frame(bytes(corrupt))
    with pytest.raises(RemoteProtocolError, match="too long \\(1025 bytes\\)"):
        jk_4e57.decode_frame(b"NW" + bytes(1023))
    with pytest.raises(RemoteProtocolError, match="end marker missing"):
        jk_4e57.decode_frame(frame_4e57(b"\x00", frame_type=0, marker=0x00))
    assert jk_4e57.decode_frame(frame_4e57(b"\x00", frame_type=0)).command == 0x06


@pytest.mark.parametrize(
    "data, message",
    [
        (b"\x79", "cell block without length"),
        (b"\x79\x04\x01\x0c\xe4\x02", "cell block of 4 bytes is malformed"),
        (b"\x79\x06\x01\x0c\xe4", "cell block of 6 bytes is malformed"),
        (b"\x83\x14", "register 83 truncated"),
    ],
)
def test_4e57_data_that_breaks_the_tlv_rules_is_refused(data, message):
    with pytest.raises(RemoteProtocolError, match=message):
        jk_4e57.decode_response(frame_4e57(data))


def test_a_4e57_response_without_voltage_current_and_soc_leaves_them_unknown():
    # 0x79: one cell, index 1, 0x0EED = 3821 mV; 0x87 cycle count 5; 0xAA capacity 100 Ah (10.2)
    response = jk_4e57.decode_response(frame_4e57(bytes.fromhex("79 03 01 0EED 87 0005 AA 00000064")))
    assert response["cell_voltages_mv"] == [3821] and response["cycle_count"] == 5
    assert not {"pack_voltage_mv", "current_ma", "soc_pct"} & set(response)
    reading = battery.from_jk_4e57(response)
    assert (reading.pack_voltage_mv, reading.current_ma, reading.soc_permille) == (None, None, None)
    assert reading.design_mah == 100_000 and reading.remaining_mah is None


def test_a_negative_4e57_setting_is_sent_as_twos_complement():
    # 0xA5 charge under-temperature protection, i16 degC (10.2)
    frame = jk_4e57.encode_response([3300], {0xA5: -10})
    assert bytes.fromhex("A5FFF6") in frame
    assert jk_4e57.decode_response(frame)["registers"]["A5"] == -10


def test_a_4e57_register_the_table_does_not_know_is_not_encoded():
    with pytest.raises(LocalProtocolError, match="register 7A is unknown"):
        jk_4e57.encode_response([3300], {0x7A: 1})


def test_more_cells_than_the_4e57_cell_block_holds_are_refused_as_a_local_error():
    with pytest.raises(LocalProtocolError):
        jk_4e57.encode_response([3300] * 86, {})


# --- BLE commands and junk ----------------------------------------------------------------------------


def test_one_and_two_byte_values_are_written_little_endian_and_zero_filled():
    # section 2: value little-endian at 6..9, byte 5 its length; C05 writes 0x37 with length 1
    assert jk_ble.encode_command(0x37, 3, length=1) == command(0xAA, 0x55, 0x90, 0xEB, 0x37, 0x01, 0x03)
    assert jk_ble.encode_command(0x1C, 0x0102, length=2) == command(0xAA, 0x55, 0x90, 0xEB, 0x1C, 0x02, 0x02, 0x01)
    assert jk_ble.decode_command(GOLDEN["C05"]).value == 3  # the app's random bytes 7..9 are not the value
    # signed values (2.2): heating start 0x37 is an i8 in degC; charge UTP 0x18 in 0.1 degC, 24FFFFFF = -22.0
    assert jk_ble.encode_command(0x37, -5, length=1) == command(0xAA, 0x55, 0x90, 0xEB, 0x37, 0x01, 0xFB)
    assert jk_ble.encode_command(0x18, -220) == command(0xAA, 0x55, 0x90, 0xEB, 0x18, 0x04, 0x24, 0xFF, 0xFF, 0xFF)


@pytest.mark.parametrize(
    "encode, message",
    [
        (lambda: jk_ble.encode_command(0x100), "JK command 256 is not a byte"),
        (lambda: jk_ble.encode_command(0x97, padding=bytes(8)), "padding must be 9 bytes"),
    ],
)
def test_commands_that_do_not_fit_the_frame_are_refused(encode, message):
    with pytest.raises(LocalProtocolError, match=message):
        encode()


def test_commands_with_the_wrong_magic_or_an_overlong_value_are_refused():
    with pytest.raises(RemoteProtocolError, match="not a JK command: header 55AAEB90"):
        jk_ble.decode_command(command(0x55, 0xAA, 0xEB, 0x90, 0x97))
    with pytest.raises(RemoteProtocolError, match="value length 14 exceeds 13"):
        jk_ble.decode_command(command(0xAA, 0x55, 0x90, 0xEB, 0x9F, 14))


def test_repeated_trailers_and_keepalives_are_named_once_each():
    assert jk_ble.classify_junk(C8_TRAILER + C8_TRAILER + b"AT\r\n" + C8_TRAILER) == ["c8_trailer", "keepalive"]
    assert jk_ble.classify_junk(b"\x00" + C8_TRAILER) == ["c8_trailer", "garbage"]


# --- JK-PB ---------------------------------------------------------------------------------------------


def test_a_jk_pb_modbus_frame_outside_the_register_blocks_names_no_block():
    # a read of holding register 0 (deye-byd-modbus.md 4.2 #20): not in 0x1000..0x17FF (11.3)
    result = dissect("jk-pb", bytes.fromhex("010300000066C5E0"))
    assert result["address"] == 0 and "block" not in result and "trigger" not in result
    assert dissect("jk-pb", bytes.fromhex("01 10 16 20 00 01 02 00 00 D6 F1"))["block"] == "control"


def test_a_trigger_that_does_not_exist_is_refused():
    with pytest.raises(LocalProtocolError, match="'cells' is not one of device_info, settings, status"):
        jk_pb.encode_trigger(1, "cells")


def test_a_read_outside_the_block_image_is_refused():
    image = jk_pb.image_from_frame(GOLDEN["R02"])
    with pytest.raises(LocalProtocolError, match="falls outside the block"):
        jk_pb.image_slice(image, jk_pb.LIVE_BLOCK + 290, 2, jk_pb.LIVE_BLOCK)
    with pytest.raises(LocalProtocolError, match="falls outside the block"):
        jk_pb.image_slice(image, jk_pb.LIVE_BLOCK - 2, 1, jk_pb.LIVE_BLOCK)


def test_a_field_cut_by_the_end_of_the_image_stays_as_it_is():
    # live block (11.4): CellVol0 at 0 and CellVol1 at 2 are 16-bit; three bytes hold one whole field
    assert jk_pb.wire_image(b"\x01\x02\x03", jk_pb.LIVE_BLOCK) == b"\x02\x01\x03"


def test_a_trigger_reply_ending_in_another_function_code_is_refused():
    echo = FramerRTU(DecodePDU(False)).buildFrame(WriteSingleRegisterResponse(address=0x1620, registers=[0], dev_id=3))
    with pytest.raises(RemoteProtocolError, match="not an FC 0x10 ACK"):
        jk_pb.decode_trigger_reply(GOLDEN["R02"] + echo)
    assert jk_pb.decode_trigger_reply(GOLDEN["R02"] + GOLDEN["R03"]).ack.address == 0x1620
