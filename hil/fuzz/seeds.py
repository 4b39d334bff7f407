"""Seed inputs: the real frames the project already has, by protocol.

Sources, in order: tests/golden/ when the repository is at hand (a verbatim
copy of shared/reference/frames/jk_frames.json and the BYD/DEYE/Modbus vectors
of byd_deye_vectors.json, with their provenance), and hil/data/
demo_captures.json, shipped with the package (a real JK BLE session and a real
JK-PB RS485 capture).  Seeds only show the fuzzer where the interesting
structure is; nothing is compared against them, so a few frames built with
the project's encoders fill the gaps (a JK04 settings frame, a 4E57 request).
"""

import json
from importlib import resources
from pathlib import Path
from typing import Any

GOLDEN = Path(__file__).resolve().parents[2] / "tests" / "golden"

JK_300_KINDS = ("dev", "set", "cell24", "cell32", "set04", "cell04")


def _golden(name: str) -> dict[str, Any] | None:
    path = GOLDEN / name
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def _demo() -> dict[str, Any]:
    return json.loads(resources.files("hil").joinpath("data/demo_captures.json").read_text())


def _jk_golden(*kinds: str) -> list[bytes]:
    document = _golden("jk_frames.json")
    if document is None:
        return []
    return [bytes.fromhex(frame["hex"]) for frame in document["frames"] if frame["kind"] in kinds]


def _vectors(*groups: str) -> list[bytes]:
    document = _golden("byd_deye_vectors.json")
    if document is None:
        return []
    return [bytes.fromhex(vector["hex"]) for group in groups for vector in document.get(group, ())]


def _unique(frames: list[bytes]) -> list[bytes]:
    seen: list[bytes] = []
    for frame in frames:
        if frame and frame not in seen:
            seen.append(frame)
    return seen


def modbus_frames() -> list[bytes]:
    """Requests and responses: DEYE polls and identity, generic Modbus, JK-PB trigger and ACK."""
    from vbms_core import deye, modbus

    demo = _demo()
    built = [
        modbus.encode_read_request(0, modbus.READ_INPUT, deye.FIRST_REGISTER, deye.REGISTER_COUNT),
        modbus.encode_report_id_request(1),
        modbus.encode_read_response(2, modbus.READ_INPUT, list(range(25))),
        modbus.encode_report_id_response(0, deye.encode_identity("VBMS", "SN0001")),
        modbus.encode_write_multiple_request(3, 0x1620, (0,)),
        modbus.encode_exception(4, modbus.READ_INPUT, modbus.ILLEGAL_ADDRESS),
    ]
    return _unique(
        _vectors("deye", "modbus") + _jk_golden("modbus") + [bytes.fromhex(demo["rs485_jk_pb"]["request"])] + built
    )


def deye_requests() -> list[bytes]:
    """What the inverter sends: register reads and identity requests first."""
    from vbms_core import modbus

    frames = modbus_frames()
    requests = [frame for frame in frames if frame[1] in (modbus.READ_INPUT, modbus.REPORT_ID) and len(frame) <= 8]
    return _unique(requests + frames)


def byd_frames() -> list[bytes]:
    from vbms_core import byd

    demo = _demo()
    replies = [bytes.fromhex(text) for text in demo["rs485_byd"]["replies"]]
    built = [byd.encode_request(address) for address in (1, 2, 63)]
    return _unique(_vectors("byd_requests", "byd_responses") + replies + built)


def jk_frames() -> list[bytes]:
    """300-byte 55AA frames of every type and layout (extra bytes after some)."""
    from vbms_core import jk_frames as codec

    demo = _demo()
    built = [
        codec.encode_settings({"cell_count": 16, "nominal_capacity_mah": 280000}, codec.JK04),
        codec.encode_cell_info({"cell_voltages_mv": [3300] * 16, "current_ma": -2400}, codec.JK02_24S),
        codec.encode_cell_info({"cell_voltages_mv": [3353, 3359] * 8}, codec.JK04),
        codec.encode_device_info({"vendor_id": "JK_B2A24S15P", "sw_version": "10.XW"}),
    ]
    logbook = bytearray(built[0])
    logbook[4] = codec.LOGBOOK
    logbook[6] = 3
    logbook[299] = sum(logbook[:299]) & 0xFF
    real = _jk_golden(*JK_300_KINDS) + [bytes.fromhex(demo["rs485_jk_pb"]["reply"])[:300]]
    return _unique(real + built + [bytes(logbook)] + _jk_golden("raw"))


def jk_commands() -> list[bytes]:
    from vbms_core import jk_ble

    built = [jk_ble.encode_command(jk_ble.GET_DEVICE_INFO), jk_ble.encode_command(0x1D, 1, 4)]
    return _unique(_jk_golden("c") + built)


def jk_notifications() -> list[bytes]:
    """Notification chunks in wire order: the real BLE session, then the raw buffers."""
    demo = _demo()
    chunks = [bytes.fromhex(event["hex"]) for event in demo["ble_session"]["events"] if event["op"] == "Notify"]
    return chunks + _jk_golden("raw")


def jk_pb_replies() -> list[bytes]:
    """Trigger replies: the 55AA frame followed by the FC 0x10 acknowledgement."""
    demo = _demo()
    replies = [bytes.fromhex(demo["rs485_jk_pb"]["reply"])]
    golden = _jk_golden("cell32", "set")
    acks = [frame for frame in _jk_golden("modbus") if len(frame) == 8]
    if golden and acks:
        replies.append(golden[0] + acks[0])
        replies.append(golden[-1] + b"\x00" + acks[0] + b"\x00")
    return _unique(replies + jk_frames()[:4])


def e57_frames() -> list[bytes]:
    from vbms_core import jk_4e57

    built = [
        jk_4e57.encode_read_all_request(),
        jk_4e57.encode_response([3300, 3301, 3302], {0x80: 25, 0x83: 5320, 0x84: 0x8000 | 150, 0xC0: 1, 0xB7: "11A"}),
    ]
    return _unique(_jk_golden("u") + built)
