"""`vbms demo`: captures through the proxy core, read back as the inverter would.

The main job until the simulated bench exists: a real BLE session (JK-PB),
a real JK-PB RS485 trigger reply and two BYD PRO replies are decoded by
vbms_core, turned into readings, served by the DEYE slave, and polled the way
the inverter polls (read 0x1000 x 25 and the 0x11 identity for units 0..3).
"""

import argparse
import json
from collections.abc import Callable
from importlib import resources
from typing import Any, cast

from vbms_core import battery, byd, deye, jk_ble, jk_frames, jk_pb, modbus
from vbms_core.compat import unhexlify
from vbms_core.dissect import dissect

STALE_US = 10_000_000
NOW_US = 1_000_000


def load_captures() -> dict[str, Any]:
    return json.loads(resources.files("hil").joinpath("data/demo_captures.json").read_text())


def ble_frames(session: dict[str, Any]) -> tuple[list[jk_ble.JkFrame], list[jk_ble.Junk]]:
    reassembler = jk_ble.JkReassembler()
    frames: list[jk_ble.JkFrame] = []
    junk: list[jk_ble.Junk] = []
    for event in session["events"]:
        if event["dir"] != "rx":
            continue
        reassembler.feed(unhexlify(event["hex"]))
        while (item := reassembler.next_event()) is not modbus.NEED_DATA:
            (frames if isinstance(item, jk_ble.JkFrame) else junk).append(item)
    return frames, junk


def build_units(
    captures: dict[str, Any], report: Callable[[str], object]
) -> tuple[deye.DeyeSlave, list[tuple[str, str, str, battery.Reading]]]:
    slave = deye.DeyeSlave(STALE_US)
    units: list[tuple[str, str, str, battery.Reading]] = []

    frames, junk = ble_frames(captures["ble_session"])
    report(f"BLE session: {len(frames)} frames reassembled, {sum(j.length for j in junk)} junk bytes dropped "
           f"({', '.join(sorted({k for j in junk for k in j.kinds}))})")  # fmt: skip
    decoded = [jk_frames.decode_frame(frame.raw) for frame in frames]
    info = next(d for d in decoded if d["frame_type"] == "device_info")
    settings = next(d for d in decoded if d["frame_type"] == "settings")
    cells = [d for d in decoded if d["frame_type"] == "cell_info"][-1]
    units.append(("JK BLE", info["vendor_id"], info["serial_number"], battery.from_jk(cells, settings)))

    reply = jk_pb.decode_trigger_reply(unhexlify(captures["rs485_jk_pb"]["reply"]))
    status = jk_frames.decode_frame(reply.frame, jk_frames.JK02_32S)
    units.append(("JK RS485", "JK-PB addr %d" % reply.ack.unit, "JKPB-R02", battery.from_jk(status)))

    for raw in captures["rs485_byd"]["replies"]:
        status = byd.decode_response(unhexlify(raw))
        units.append(("BYD PRO", "BYD PRO 2.5", "BYD-MODULE-%d" % status.address, battery.from_byd(status.fields)))

    for unit, (_, model, serial, reading) in enumerate(units):
        limit = reading.max_charge_current_ma if reading.max_charge_current_ma is not None else 50_000
        registers = deye.registers_from_reading(reading, 55_200, limit if reading.charge_enabled else 0)
        slave.set_unit(unit, registers, deye.encode_identity(model[:15], serial[:20]), NOW_US)
    return slave, units


def poll(slave: deye.DeyeSlave, unit: int) -> tuple[dict[str, Any] | None, dict[str, Any] | None, str]:
    request = modbus.encode_read_request(unit, modbus.READ_INPUT, deye.FIRST_REGISTER, deye.REGISTER_COUNT)
    # handle() answers in a buffer it reuses: take each reply before the next call.
    reply = slave.handle(request, NOW_US)
    values = dissect("deye", bytes(reply))["values"] if reply is not None else None
    reason = cast(str, slave.reason)  # handle() has just set it
    identity_reply = slave.handle(modbus.encode_report_id_request(unit), NOW_US)
    identity = dissect("deye", bytes(identity_reply))["identity"] if identity_reply is not None else None
    return values, identity, reason


def run(args: argparse.Namespace) -> int:
    lines: list[str] = []
    captures = load_captures()
    slave, units = build_units(captures, lines.append if not args.json else lambda _: None)
    rows = []
    for unit in range(len(units) + 1):
        values, identity, reason = poll(slave, unit)
        rows.append((unit, values, identity, reason))
    if args.json:
        for unit, values, identity, reason in rows:
            print(json.dumps({"unit": unit, "values": values, "identity": identity, "answer": reason}))
        return 0
    for line in lines:
        print(line)
    print()
    print("What the DEYE inverter's Li-BMS screen would show (read 0x1000 x25 and 0x11 per unit):")
    header = (
        f"{'#':>2} {'source':9} {'model':16} {'Volt':>7} {'Curr':>8} {'Temp':>6} "
        f"{'SOC':>6} {'Energy':>8} {'ChgV':>6} {'ChgI':>6}  fault"
    )
    print(header)
    print("-" * len(header))
    for unit, values, identity, reason in rows:
        if values is None:
            print(f"{unit + 1:>2} {'-':9} {'(' + reason + ')':16}")
            continue
        source = units[unit][0]
        # identity: a unit that answers the read answers the 0x11 identity request too
        print(
            f"{unit + 1:>2} {source:9} {identity['model']:16} {values['pack_voltage_mv'] / 1000:6.2f}V "  # type: ignore[index]
            f"{values['pack_current_ma'] / 1000:7.2f}A {values['cell_temp_avg_ddegc'] / 10:5.1f}C "
            f"{values['soc_permille'] / 10:5.1f}% {values['remain_capacity_mah'] / 1000:7.1f}Ah "
            f"{values['nominal_float_voltage_mv'] / 1000:5.1f}V {values['max_charge_current_ma'] / 1000:5.1f}A  "
            f"{values['warning']}|{values['protection']}|{values['fault_status'] & 0xFF}"
        )
    print()
    print("Next: `vbms decode --protocol jk-ble HEX` decodes any frame; see README.md.")
    return 0
