"""JK-PB RS485 (Modbus + 55AA trigger replies) and the legacy 4E57 protocol."""

import pytest
from conftest import JK_FRAMES

from vbms_core import jk_4e57, jk_frames, jk_pb
from vbms_core.dissect import dissect
from vbms_core.errors import RemoteProtocolError

BY_ID = {f["id"]: bytes.fromhex(f["hex"]) for f in JK_FRAMES}


def test_trigger_requests_match_the_captures():
    assert jk_pb.encode_trigger(3, "status") == BY_ID["R01"]
    assert dissect("jk-pb", BY_ID["R01"])["trigger"] == "status"
    assert dissect("jk-pb", BY_ID["R03"])["trigger"] == "status"


@pytest.mark.parametrize("padded", [False, True])
def test_trigger_reply_with_and_without_padding(padded):
    raw = BY_ID["R02"] + (b"\x00" if padded else b"") + BY_ID["R03"] + (b"\x00" if padded else b"")
    result = dissect("jk-pb", raw)
    assert result["frame_type"] == "cell_info" and result["pack_voltage_mv"] == 52_695
    assert result["ack"] == {"unit": 3, "register": 0x1620, "count": 1}
    assert result["padding_bytes"] == (1 if padded else 0)
    assert jk_pb.encode_trigger_reply(3, 0x1620, BY_ID["R02"], padded) == raw


def test_trigger_reply_with_garbage_after_the_ack_is_rejected():
    with pytest.raises(RemoteProtocolError):
        dissect("jk-pb", BY_ID["R02"] + BY_ID["R03"] + b"\x01\x02")


def test_register_reads_return_the_block_image_bytes():
    image = jk_pb.image_from_frame(BY_ID["R02"])
    # 0x1200: cell voltages as the BMS returns them (LE u16 memory read as BE words)
    words = jk_pb.registers_from_image(image, 0x1200, 2, jk_pb.LIVE_BLOCK)
    assert words == (0xDD0C, 0xDD0C)  # 3293 mV = 0x0CDD stored little-endian
    # 0x1290: pack voltage, 4 bytes at byte offset 0x90
    raw = jk_pb.image_slice(image, 0x1290, 2, jk_pb.LIVE_BLOCK)
    assert int.from_bytes(raw, "little") == 52_695
    assert dissect("jk-pb", jk_pb.encode_read(1, 0x1200, 10))["block"] == "live_data"


def test_legacy_4e57_frames():
    assert jk_4e57.encode_read_all_request() == BY_ID["U01"]
    u02 = dissect("jk-4e57", BY_ID["U02"])
    assert u02["cell_voltages_mv"][:3] == [3821, 3834, 3831] and len(u02["cell_voltages_mv"]) == 14
    assert u02["pack_voltage_mv"] == 53_590
    assert u02["current_ma"] == 2_080  # 0x80D0: bit 15 = charging, 0xD0 x 10 mA
    assert u02["software_version"] == "H6.X__S6.1.3S__"
    u03 = dissect("jk-4e57", BY_ID["U03"])
    assert u03["soc_pct"] == 94 and u03["current_ma"] == 0


@pytest.mark.parametrize("raw, degc", [(0, 0), (25, 25), (100, 100), (101, -1), (140, -40)])
def test_4e57_temperature_rule(raw, degc):
    assert jk_4e57.temperature_degc(raw) == degc


@pytest.mark.parametrize(
    "raw, version, ma", [(0x87D0, 1, 20_000), (0x07D0, 1, -20_000), (10_000, 0, 0), (9_000, 0, 10_000)]
)
def test_4e57_current_rules(raw, version, ma):
    assert jk_4e57.current_ma(raw, version) == ma


def test_4e57_encoder_round_trip():
    frame = jk_4e57.encode_response([3300, 3310], {0x83: 662, 0x84: 0x8064, 0x85: 80, 0xC0: 1, 0xB7: "SIM 1.0"})
    result = jk_4e57.decode_response(frame)
    assert result["cell_voltages_mv"] == [3300, 3310]
    assert result["pack_voltage_mv"] == 6620 and result["current_ma"] == 1000 and result["soc_pct"] == 80


def test_4e57_unknown_register_cannot_be_skipped():
    frame = bytearray(jk_4e57.encode_response([3300], {0x85: 50}))
    frame[16] = 0x88  # after 79 03 01 0C E4: an id the table does not know: its width is unknown
    end = len(frame) - 2
    frame[end:] = jk_4e57.checksum(frame, end).to_bytes(2, "big")
    with pytest.raises(RemoteProtocolError, match="unknown"):
        dissect("jk-4e57", bytes(frame))


def test_settings_reply_over_rs485_is_a_32s_frame():
    result = jk_frames.decode_frame(BY_ID["R04"])
    assert result["layout"] == "JK02_32S" and result["device_address"] == 3
