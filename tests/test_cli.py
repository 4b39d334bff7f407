"""`vbms decode` and `vbms demo` as a user runs them (a real subprocess)."""

import json
import subprocess
import sys

import pytest
from conftest import JK_FRAMES, VECTORS, protocol_of


def vbms(*args, stdin=None):
    return subprocess.run(
        [sys.executable, "-m", "hil.cli", *args], capture_output=True, text=True, input=stdin, timeout=60
    )


def lines(completed):
    return [json.loads(line) for line in completed.stdout.splitlines()]


@pytest.mark.parametrize("protocol", ["jk-ble", "jk-pb", "jk-4e57"])
def test_decodes_every_shared_frame(protocol):
    frames = [f["hex"] for f in JK_FRAMES if protocol_of(f) == protocol]
    completed = vbms("decode", "--protocol", protocol, *frames)
    assert completed.returncode == 0, completed.stderr
    results = lines(completed)
    assert len(results) == len(frames)
    assert all("error" not in r for r in results)


def test_corrupt_frame_prints_an_error_object_and_fails():
    good = next(f["hex"] for f in JK_FRAMES if f["id"] == "B19")
    corrupt = good[:20] + ("00" if good[20:22] != "00" else "01") + good[22:]
    completed = vbms("decode", "-p", "jk-ble", good, corrupt)
    assert completed.returncode == 1
    ok, bad = lines(completed)
    assert ok["frame_type"] == "cell_info" and ok["current_ma"] == 31_881
    assert "checksum" in bad["error"] and bad["input"] == "arg 2"


def test_stream_reassembles_buffers_with_junk():
    session = [
        e["hex"] for e in json.load(open("hil/data/demo_captures.json"))["ble_session"]["events"] if e["dir"] == "rx"
    ]
    completed = vbms("decode", "-p", "jk-ble", "--stream", "--show-junk", *session)
    assert completed.returncode == 0, completed.stderr
    results = lines(completed)
    frames = [r for r in results if "frame_type" in r]
    assert [r["frame_type"] for r in frames] == ["device_info", "settings", "device_info", "cell_info", "cell_info"]
    junk = [r for r in results if "junk_bytes" in r]
    assert {kind for r in junk for kind in r["kinds"]} == {"keepalive", "c8_trailer"}


def test_stream_of_the_raw_notification_buffers():
    n01, n02 = (next(f["hex"] for f in JK_FRAMES if f["id"] == i) for i in ("N01", "N02"))
    completed = vbms("decode", "-p", "jk-ble", "--stream", n02, n01)
    results = lines(completed)
    # N02 = settings + the first 84 bytes of a device-info frame that N01 does not continue
    assert [r["frame_type"] for r in results] == ["settings", "device_info"]


def test_file_with_hex_lines_and_trace_lines(tmp_path):
    capture = tmp_path / "capture.txt"
    capture.write_text(
        "# DEYE poll\n00 04 10 00 00 19 34 D1\n\n"
        + json.dumps({"t": 0.1, "endpoint": "inverter", "hex": "0011C1BC"})
        + "\n"
        + next(v["hex"] for v in VECTORS["deye"] if v["id"] == "DEYE-IR")
        + "\n"
    )
    completed = vbms("decode", "-p", "deye", "--file", str(capture))
    assert completed.returncode == 0, completed.stderr
    results = lines(completed)
    assert [r["direction"] for r in results] == ["request", "request", "response"]
    assert results[2]["identity"]["model"] == "BYD PRO 2.5"


@pytest.mark.parametrize(
    "args, message",
    [
        (["decode", "-p", "deye", "0011C1B"], "odd number of hex digits"),
        (["decode", "-p", "deye", "zz"], "not a hex string"),
        (["decode", "-p", "deye"], "no frames given"),
        (["decode", "-p", "deye", "--stream", "00"], "jk-ble only"),
        (["decode", "-p", "nope", "00"], "invalid choice"),
        (["decode", "-p", "deye", "--file", "/no/such/file"], "cannot read"),
        (["decode", "-p", "jk-ble", "--layout", "JK05", "00"], "invalid choice"),
    ],
)
def test_bad_command_lines_say_what_is_wrong(args, message):
    completed = vbms(*args)
    assert completed.returncode == 2
    assert message in completed.stderr
    assert completed.stdout == ""


def test_bad_json_line_in_a_file(tmp_path):
    capture = tmp_path / "bad.jsonl"
    capture.write_text('{"t": 1, "hex": 12}\n')
    completed = vbms("decode", "-p", "deye", "--file", str(capture))
    assert completed.returncode == 2 and "line 1" in completed.stderr


def test_demo_shows_every_unit_the_inverter_would_read():
    completed = vbms("demo", "--json")
    assert completed.returncode == 0, completed.stderr
    rows = lines(completed)
    assert [r["answer"] for r in rows] == ["registers"] * 4 + ["silent: unit not configured"]
    assert rows[2]["values"]["pack_voltage_mv"] == 54_580
    assert rows[0]["identity"]["model"] == "JK_PB2A16S15P"
