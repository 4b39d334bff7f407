"""JK-PB RS485 (Modbus + 55AA trigger replies) and the legacy 4E57 protocol."""

import pytest
from conftest import JK_FRAMES
from test_golden_jk import summary_values

from vbms_core import jk_4e57, jk_frames, jk_pb, modbus
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


def reference_values(frame_id):
    frame = next(f for f in JK_FRAMES if f["id"] == frame_id)
    return summary_values(frame["summary"])


def test_register_reads_hold_the_field_values():
    # Expected values: the reference summary of the real R02 frame; byte order: jk-protocols.md 11.2,
    # dbus-serialbattery's JKBMS-PB notes (big-endian; observed 0d0e = 3342 mV), the esphome JK-PB
    # Modbus example (U_WORD / U_DWORD, high word first).
    expect = reference_values("R02")
    cells = [int(v) for v in expect["cells_mV(16)"].strip("[]").split(",")]
    image = jk_pb.image_from_frame(BY_ID["R02"])
    live = jk_pb.LIVE_BLOCK
    assert jk_pb.registers_from_image(image, 0x1200, 16, live) == tuple(cells)
    assert jk_pb.registers_from_image(image, 0x1200, 1, live) == (0x0CDD,)  # 3293 mV, not 0xDD0C
    assert jk_pb.wire_image(image, live)[:2] == b"\x0c\xdd"
    # 32-bit fields: high word first
    pack_mv = round(float(expect["pack_V"]) * 1000)
    assert jk_pb.registers_from_image(image, 0x1290, 2, live) == (pack_mv >> 16, pack_mv & 0xFFFF)
    remaining_mah = round(float(expect["cap_remaining_Ah"]) * 1000)
    full_mah = round(float(expect["full_charge_cap_Ah"]) * 1000)
    assert jk_pb.registers_from_image(image, 0x12A8, 6, live) == (
        remaining_mah >> 16,
        remaining_mah & 0xFFFF,
        full_mah >> 16,
        full_mah & 0xFFFF,
        0,
        int(expect["cycles"]),
    )
    # 16-bit temperatures in 0.1 degC
    assert jk_pb.registers_from_image(image, 0x128A, 1, live) == (round(float(expect["mos_temp_C@144"]) * 10),)
    t1, t2 = (round(float(expect[key]) * 10) for key in ("T1_C", "T2_C"))
    assert jk_pb.registers_from_image(image, 0x129C, 2, live) == (t1, t2)
    # byte pairs in address order: BalanSta (0xA6) high, SOC (0xA7) low; SOH (0xB8) high
    assert jk_pb.registers_from_image(image, 0x12A6, 1, live) == (int(expect["soc_pct"]),)
    assert jk_pb.registers_from_image(image, 0x12B8, 1, live)[0] >> 8 == int(expect["soh_pct"])
    assert dissect("jk-pb", jk_pb.encode_read(1, 0x1200, 10))["block"] == "live_data"


def test_register_reads_of_text_keep_the_characters_in_order():
    # dbus-serialbattery's observed reply to 01 03 1400 000A reads "JK_PB2A16S20P..." in order.
    image = jk_pb.image_from_frame(BY_ID["B10"])
    registers = jk_pb.registers_from_image(image, 0x1400, 8, jk_pb.DEVICE_BLOCK)
    text = b"".join(register.to_bytes(2, "big") for register in registers)
    vendor = reference_values("B10")["vendor"].strip("'")
    assert text.startswith(vendor.encode())


def test_register_reads_of_settings_are_big_endian_u32():
    expect = reference_values("R04")
    image = jk_pb.image_from_frame(BY_ID["R04"])
    uvp_mv = round(float(expect["cell_uvp_V"]) * 1000)
    assert jk_pb.registers_from_image(image, 0x1004, 2, jk_pb.SETTINGS_BLOCK) == (uvp_mv >> 16, uvp_mv & 0xFFFF)
    capacity_mah = round(float(expect["capacity_Ah"]) * 1000)
    assert jk_pb.registers_from_image(image, 0x107C, 2, jk_pb.SETTINGS_BLOCK) == (
        capacity_mah >> 16,
        capacity_mah & 0xFFFF,
    )
    assert jk_pb.registers_from_image(image, 0x1114, 1, jk_pb.SETTINGS_BLOCK) == (int(expect["ctrl_bits(282)"], 16),)


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


def test_a_trigger_reply_has_a_maximum_size():
    frame = bytes.fromhex(next(f["hex"] for f in JK_FRAMES if f["id"] == "R02"))
    ack = modbus.encode_write_multiple_response(1, jk_pb.TRIGGER_STATUS, 1)
    assert jk_pb.decode_trigger_reply(frame + b"\x00" + ack + b"\x00").ack is not None  # padded: fine
    with pytest.raises(RemoteProtocolError, match="at most"):
        jk_pb.decode_trigger_reply(frame + ack + bytes(100_000))  # was read zero by zero, in quadratic time


@pytest.mark.parametrize("base", sorted(jk_pb.BLOCK_NAMES))
def test_the_wire_image_reverses_each_wide_field_and_keeps_every_other_byte(base):
    """Against a plain reading of WIDE_FIELDS (each field's bytes reversed), on an image of distinct
    bytes, whole and cut off inside a field."""
    image = bytes(index % 251 for index in range(0x200))
    expected = bytearray(image)
    for offset, width, count in jk_pb.WIDE_FIELDS.get(base, ()):
        assert width in (2, 4)  # the widths wire_image knows
        for index in range(count):
            start = offset + width * index
            expected[start : start + width] = bytes(reversed(image[start : start + width]))
    assert jk_pb.wire_image(image, base) == bytes(expected)
    if jk_pb.WIDE_FIELDS.get(base):
        offset, width, _ = jk_pb.WIDE_FIELDS[base][0]
        cut = offset + width - 1  # the image ends inside its first wide field: that field stays as it is
        assert jk_pb.wire_image(image[:cut], base) == image[:cut]
