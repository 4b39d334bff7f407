"""Bus traces on a mixed RS485 bus: every frame decoded as what it is.

A BMS bus may carry BYD modules, JK-PB packs and legacy 4E57 packs at once; the
bus's protocol ("byd-pro") must not turn a healthy JK-PB reply into "BYD frame
too long".  Frames are real captures from the reference (JK) or written part by
part from it (BYD, tests/golden/README.md).
"""

import io
import json

import pytest
from conftest import JK_FRAMES, VECTORS
from hypothesis import given
from hypothesis import strategies as st

from hil.trace import Trace, format_record, summarize
from vbms_core import modbus
from vbms_core.dissect import PROTOCOLS, guess_protocol

JK = {f["id"]: bytes.fromhex(f["hex"]) for f in JK_FRAMES}
BYD = {v["id"]: bytes.fromhex(v["hex"]) for v in VECTORS["byd_requests"] + VECTORS["byd_responses"]}
MODBUS = {v["id"]: bytes.fromhex(v["hex"]) for v in VECTORS["modbus"] + VECTORS["deye"]}
# dbus-serialbattery's FC 0x03 probe of a JK-PB ("test D": 01 03 1200 000A) and the start of its reply
JK_PB_READ = modbus.with_crc(bytes.fromhex("01031200000A"))
JK_PB_READ_REPLY = modbus.with_crc(bytes.fromhex("0103140D0D0D0E0D0D") + bytes(14))


class Bus:
    def __init__(self, name, protocol):
        self.name = name
        self.protocol = protocol


def record(frame, protocol="byd-pro"):
    trace = Trace()
    trace.record(Bus("bms", protocol), 0.0, "somebody", frame)
    return trace.records[0]["decoded"]


def test_a_healthy_jk_pb_reply_on_a_byd_bus_is_decoded_as_jk_pb():
    summary = record(JK["R02"] + JK["R03"])  # 308 bytes: status frame and its ACK (MPP capture form)
    assert "error" not in summary
    assert summary["decoded_as"] == "jk-pb"
    assert summary["frame_type"] == "cell_info" and summary["pack_voltage_mv"] == 52_695


def test_a_padded_jk_pb_reply_on_a_byd_bus():
    summary = record(JK["R02"] + b"\x00" + JK["R03"] + b"\x00")  # 310 bytes (dbus-serialbattery form)
    assert summary["decoded_as"] == "jk-pb" and summary["frame_type"] == "cell_info"


@pytest.mark.parametrize(
    "frame, expect",
    [
        (JK["R01"], {"decoded_as": "jk-pb", "trigger": "status", "direction": "request", "unit": 3}),
        (JK["R03"], {"decoded_as": "jk-pb", "function_name": "write_multiple_registers", "direction": "response"}),
        (JK["R04"], {"decoded_as": "jk-pb", "frame_type": "settings"}),
        (JK_PB_READ, {"decoded_as": "jk-pb", "function_name": "read_holding_registers", "count": 10}),
        (JK_PB_READ_REPLY, {"decoded_as": "modbus", "direction": "response"}),
        (JK["U01"], {"decoded_as": "jk-4e57"}),
        (JK["U02"], {"decoded_as": "jk-4e57"}),
    ],
    ids=["trigger", "ack", "settings-reply", "fc03-read", "fc03-reply", "4e57-request", "4e57-response"],
)
def test_foreign_frames_on_a_byd_bus(frame, expect):
    summary = record(frame)
    assert "error" not in summary, summary
    assert {key: summary.get(key) for key in expect} == expect


@pytest.mark.parametrize("vector", ["BYD-Q1", "BYD-R1", "BYD-R2"])
def test_byd_frames_stay_byd(vector):
    summary = record(BYD[vector])
    assert "error" not in summary and "decoded_as" not in summary
    assert summary["direction"] == ("request" if vector.startswith("BYD-Q") else "response")


def test_a_damaged_byd_frame_keeps_the_byd_error():
    damaged = bytearray(BYD["BYD-R1"])
    damaged[20] ^= 0x01
    assert "checksum" in record(bytes(damaged))["error"]


def test_noise_keeps_the_bus_protocols_error():
    assert record(b"\x13\x37\x42")["error"].startswith("BYD frame too short")


def test_a_damaged_jk_pb_reply_is_not_hidden():
    damaged = bytearray(JK["R02"] + JK["R03"])
    damaged[100] ^= 0x01
    assert "error" in record(bytes(damaged))


def test_the_printed_trace_names_the_protocol():
    trace = Trace()
    trace.record(Bus("bms", "byd-pro"), 0.5, "JK-PB-3", JK["R02"] + JK["R03"])
    line = format_record(trace.records[0])
    assert "decoded_as=jk-pb" in line and "frame_type=cell_info" in line and "!!" not in line


def test_frames_of_the_bus_protocol_are_decoded_as_before():
    assert summarize("deye", MODBUS["DEYE-Q0"])["battery"] == 1
    assert "decoded_as" not in summarize("deye", MODBUS["DEYE-Q0"])


@pytest.mark.parametrize(
    "frame, protocol",
    [
        (JK["R02"], "jk-pb"),
        (JK["R02"] + JK["R03"], "jk-pb"),
        (JK["R01"], "jk-pb"),
        (JK["R03"], "jk-pb"),
        (JK_PB_READ, "jk-pb"),
        (JK["C01"], "jk-ble"),
        (JK["U01"], "jk-4e57"),
        (JK["U03"], "jk-4e57"),
        (BYD["BYD-Q2"], "byd-pro"),
        (BYD["BYD-R3"], "byd-pro"),
        (MODBUS["DEYE-Q1"], "deye"),
        (MODBUS["DEYE-I0"], "deye"),
        (MODBUS["DEYE-IR"], "deye"),
        (MODBUS["MB-0"], "modbus"),
        (MODBUS["MB-11"], "modbus"),  # JK's official example write: register 0x0020 is no JK-PB block
        (b"\x01\x02\x03", None),
        (b"", None),
    ],
)
def test_guess_protocol(frame, protocol):
    assert guess_protocol(frame) == protocol


@given(st.binary(max_size=400))
def test_guess_protocol_never_raises(frame):
    assert guess_protocol(frame) in PROTOCOLS + (None,)
    summarize("byd-pro", frame)


def test_trace_show_prints_mixed_bus_lines(tmp_path):
    from hil.trace import show

    path = tmp_path / "trace.jsonl"
    trace = Trace(str(path))
    bus = Bus("bms", "byd-pro")
    for source, frame in (("DUT", JK["R01"]), ("JK-PB-3", JK["R02"] + JK["R03"]), ("DUT", BYD["BYD-Q1"])):
        trace.record(bus, 0.1, source, frame)
    trace.close()
    out = io.StringIO()
    assert show(str(path), out) == 0
    assert "BYD frame too long" not in out.getvalue()
    assert out.getvalue().count("decoded_as=jk-pb") == 2


def test_recording_leaves_decoding_and_writing_to_another_thread(tmp_path, monkeypatch):
    """A PTY bus records from its own thread, whose timing must not wait for decoding or a disk."""
    import threading

    from conftest import wait_for

    import hil.trace

    decoded_on = []

    def spy(protocol, raw):
        decoded_on.append(threading.current_thread())
        return summarize(protocol, raw)

    monkeypatch.setattr(hil.trace, "summarize", spy)
    path = tmp_path / "trace.jsonl"
    trace = Trace(str(path), {"inverter": "deye"})
    trace.record(Bus("inverter", "deye"), 0.0, "deye", MODBUS["DEYE-Q0"])
    assert threading.current_thread() not in decoded_on
    assert wait_for(lambda: path.read_text().count("\n") == 1, 5, 0.05)  # written without being asked
    assert decoded_on and threading.current_thread() not in decoded_on
    trace.record(Bus("inverter", "deye"), 0.1, "deye", MODBUS["DEYE-Q1"])
    trace.close()
    lines = path.read_text().splitlines()
    assert [json.loads(line)["decoded"]["battery"] for line in lines] == [1, 2]


def test_records_read_at_once_are_complete_without_a_file():
    trace = Trace(protocols={"inverter": "deye"})
    trace.record(Bus("inverter", "deye"), 0.0, "deye", MODBUS["DEYE-Q0"])
    trace.ble(0.1, "JK-4", JK["C01"][:20])
    assert [record["from"] for record in trace.records] == ["deye", "JK-4"]
    assert trace.records[0]["decoded"]["battery"] == 1 and trace.records[1]["bus"] == "ble"
