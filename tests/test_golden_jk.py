"""Every real JK frame, checked whole, byte by byte and with trailing bytes.

Expected values come from each frame's summary in the reference set (written
by the reference's author from the protocol tables), parsed here.
"""

import re

import pytest
from conftest import JK_FRAMES, frames_of, protocol_of

from vbms_core import jk_ble, jk_frames
from vbms_core.dissect import dissect
from vbms_core.errors import RemoteProtocolError
from vbms_core.modbus import NEED_DATA


def summary_values(summary):
    """key=value pairs of a reference summary; lists and quoted strings kept as text."""
    return dict(re.findall(r"([A-Za-z_0-9@()/.]+)=(\[[^\]]*\]|'[^']*'|\S+)", summary))


def number(text):
    return float(text)


def collect(reassembler):
    events = []
    while (event := reassembler.next_event()) is not NEED_DATA:
        events.append(event)
    return events


@pytest.mark.parametrize("frame", frames_of("cell24", "cell32"))
def test_jk02_cell_info_matches_reference_summary(frame):
    result = dissect("jk-ble", bytes.fromhex(frame["hex"]))
    expect = summary_values(frame["summary"])
    cells_key = next(key for key in expect if key.startswith("cells_mV"))
    assert result["cell_voltages_mv"] == [int(v) for v in expect[cells_key].strip("[]").split(",")]
    assert result["cell_mask"] == int(expect["cell_enabled_mask"], 16)
    assert result["pack_voltage_mv"] == round(number(expect["pack_V"]) * 1000)
    assert result["current_ma"] == round(number(expect["current_A"]) * 1000)
    assert result["temp1_ddegc"] == round(number(expect["T1_C"]) * 10)
    assert result["temp2_ddegc"] == round(number(expect["T2_C"]) * 10)
    mosfet_key = next(key for key in expect if key.startswith("mos_temp_C"))
    assert result["mosfet_temp_ddegc"] == round(number(expect[mosfet_key]) * 10)
    assert result["soc_pct"] == int(expect["soc_pct"])
    assert result["soh_pct"] == int(expect["soh_pct"])
    assert result["remaining_capacity_mah"] == round(number(expect["cap_remaining_Ah"]) * 1000)
    assert result["full_charge_capacity_mah"] == round(number(expect["full_charge_cap_Ah"]) * 1000)
    assert result["cycle_count"] == int(expect["cycles"])
    assert result["balance_current_ma"] == round(number(expect["balance_current_A"]) * 1000)
    assert result["charge_mosfet_on"] == (expect["chg_fet"] == "1")
    assert result["discharge_mosfet_on"] == (expect["dsg_fet"] == "1")
    errors_key = next(key for key in expect if key.startswith("errors_u"))
    assert result["errors"] == int(expect[errors_key], 16)
    assert result["layout"] == ("JK02_32S" if frame["kind"] == "cell32" else "JK02_24S")


@pytest.mark.parametrize("frame", frames_of("cell04"))
def test_jk04_cell_info_matches_reference_summary(frame):
    result = dissect("jk-ble", bytes.fromhex(frame["hex"]))
    expect = summary_values(frame["summary"])
    volts = [number(v) for v in expect["cells_V(16)"].strip("[]").split(",")]
    assert result["layout"] == "JK04"
    assert result["cell_voltages_mv"] == [round(v * 1000) for v in volts]
    assert result["balance_current_ma"] == round(number(expect["balance_current_A@222"]) * 1000)
    assert result["runtime_s"] == int(expect["runtime_s@286"])
    assert result["current_ma"] is None and result["soc_pct"] is None


@pytest.mark.parametrize("frame", frames_of("dev"))
def test_device_info_matches_reference_summary(frame):
    result = dissect("jk-ble", bytes.fromhex(frame["hex"]))
    expect = {key: value.strip("'") for key, value in summary_values(frame["summary"]).items()}
    assert result["frame_type"] == "device_info"
    assert result["vendor_id"] == expect["vendor"]
    assert result["hw_version"] == expect["hw"]
    assert result["sw_version"] == expect["sw"]
    assert result["uptime_s"] == int(expect["uptime_s"])
    assert result["power_on_count"] == int(expect["power_on"])
    assert result["device_name"] == expect["name"]
    assert result["serial_number"] == expect["serial"]


@pytest.mark.parametrize("frame", frames_of("set"))
def test_jk02_settings_match_reference_summary(frame):
    result = dissect("jk-pb" if frame["id"][0] == "R" else "jk-ble", bytes.fromhex(frame["hex"]))
    expect = summary_values(frame["summary"])
    assert result["frame_type"] == "settings"
    assert result["cell_uvp_mv"] == round(number(expect["cell_uvp_V"]) * 1000)
    assert result["cell_ovp_mv"] == round(number(expect["cell_ovp_V"]) * 1000)
    assert result["max_charge_current_ma"] == round(number(expect["max_charge_A"]) * 1000)
    assert result["max_discharge_current_ma"] == round(number(expect["max_discharge_A"]) * 1000)
    assert result["charge_utp_ddegc"] == round(number(expect["chg_utp_C"]) * 10)
    assert result["cell_count"] == int(expect["cell_count"])
    assert result["nominal_capacity_mah"] == round(number(expect["capacity_Ah"]) * 1000)
    assert result["balance_start_voltage_mv"] == round(number(expect["balance_start_V"]) * 1000)
    if result["layout"] == "JK02_32S":
        assert result["device_address"] == int(expect["dev_addr(270)"])
        assert result["control_bits"] == int(expect["ctrl_bits(282)"], 16)
        assert result["smart_sleep_h"] == int(expect["smart_sleep_h(286)"])


def test_jk04_settings_match_reference_summary():
    frame = next(f for f in JK_FRAMES if f["id"] == "B41")
    result = dissect("jk-ble", bytes.fromhex(frame["hex"]))
    assert result == {
        "frame_type": "settings",
        "layout": "JK04",
        "cell_count": 16,
        "power_off_voltage_mv": 3000,
        "voltage_calibration_mv": 3015,  # 3.0155 V as an f32 is 3.01549983...
        "balance_start_voltage_mv": 4250,
        "balance_trigger_delta_mv": 5,
        "max_balance_current_ma": 2000,
        "balancer_switch": 1,
        "counter": 0x50,
        "protocol": "jk-ble",
        "frame_length": 300,
    }


@pytest.mark.parametrize("frame", frames_of("c"))
def test_commands_decode(frame):
    raw = bytes.fromhex(frame["hex"])
    result = dissect("jk-ble", raw)
    expect = summary_values(frame["summary"])
    assert result["frame_type"] == "command"
    assert result["command"] == int(expect["cmd/reg"], 16)
    assert result["length"] == int(expect["len"])
    assert result["padding_hex"] == expect["bytes10..18"]


@pytest.mark.parametrize("frame", [f for f in JK_FRAMES if f["hex"].startswith("55AAEB90")], ids=lambda f: f["id"])
def test_frames_reassemble_byte_by_byte_and_with_trailing_bytes(frame):
    raw = bytes.fromhex(frame["hex"])
    whole = jk_ble.JkReassembler()
    whole.feed(raw[:300])
    bytewise = jk_ble.JkReassembler()
    for index in range(len(raw)):
        bytewise.feed(raw[index : index + 1])
    trailing = jk_ble.JkReassembler()
    trailing.feed(b"AT\r\n" + raw + b"\x00\x01\x02")
    for reassembler in (whole, bytewise, trailing):
        frames = [e for e in collect(reassembler) if isinstance(e, jk_ble.JkFrame)]
        assert frames[0].raw == raw[:300]
    assert whole.pending() == 0
    # trailing bytes never change the decoded fields
    with_tail = dissect("jk-ble", raw[:300] + b"\x00\x01")
    assert with_tail.pop("trailing_hex") == "0001"
    assert with_tail | {"frame_length": 300} == dissect("jk-ble", raw[:300])


@pytest.mark.parametrize("frame", [f for f in JK_FRAMES if f["hex"].startswith("55AAEB90")], ids=lambda f: f["id"])
def test_corrupt_frames_are_rejected(frame):
    raw = bytearray.fromhex(frame["hex"])[:300]
    for position in (4, 10, 150, 298, 299):
        corrupt = bytearray(raw)
        corrupt[position] ^= 0x01
        with pytest.raises(RemoteProtocolError, match="checksum"):
            dissect("jk-ble", bytes(corrupt))
    with pytest.raises(RemoteProtocolError, match="truncated"):
        dissect("jk-ble", bytes(raw[:299]))


@pytest.mark.parametrize("frame", [f for f in JK_FRAMES if f["id"][0] in "RU"], ids=lambda f: f["id"])
def test_rs485_frames_decode(frame):
    result = dissect(protocol_of(frame), bytes.fromhex(frame["hex"]))
    assert "error" not in result


def test_layout_override_beats_detection():
    raw = bytes.fromhex(next(f for f in JK_FRAMES if f["id"] == "B19")["hex"])
    assert dissect("jk-ble", raw, "JK02_24S")["layout"] == "JK02_24S"
    assert dissect("jk-ble", raw, "auto")["layout"] == "JK02_32S"


def test_detect_layout_uses_byte_287_and_the_float_exponent():
    by_id = {f["id"]: bytes.fromhex(f["hex"]) for f in JK_FRAMES}
    assert jk_frames.detect_layout(by_id["B03"]) == "JK02_24S"
    assert jk_frames.detect_layout(by_id["B12"]) == "JK02_32S"
    assert jk_frames.detect_layout(by_id["B42"]) == "JK04"
    assert jk_frames.detect_layout(by_id["B41"]) == "JK04"
    assert jk_frames.detect_layout(by_id["B40"]) is None
