"""`vbms bench codecs`: decoder throughput on CPython, heap use on MicroPython.

Wall-clock numbers belong here, never in tests.  Targets (issue 3): JK
cell-info decode >= 50,000 frames/s on CPython; a DEYE request answered with
<= 256 bytes allocated on MicroPython.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import select
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vbms_core import byd, deye, jk_4e57, jk_ble, jk_frames, modbus
from vbms_core.dissect import dissect

if TYPE_CHECKING:
    import subprocess

    from .benchfile import Bench

TARGET_JK_FRAMES_PER_S = 50_000
TARGET_DEYE_BYTES = 256


def golden() -> dict[str, str]:
    """Inputs: real frames from the demo captures; 24S and JK04 frames built by the encoder."""
    captures = json.loads(resources.files("hil").joinpath("data/demo_captures.json").read_text())
    reply = bytes.fromhex(captures["rs485_jk_pb"]["reply"])
    return {
        "cell_32s": reply[:300].hex().upper(),
        "cell_24s": jk_frames.encode_cell_info({"cell_voltages_mv": [3300] * 16, "current_ma": -2400}, "JK02_24S")
        .hex()
        .upper(),
        "cell_jk04": jk_frames.encode_cell_info({"cell_voltages_mv": [3353, 3359] * 8}, "JK04").hex().upper(),
        "byd_reply": captures["rs485_byd"]["replies"][0],
        "deye_request": modbus.encode_read_request(0, modbus.READ_INPUT, 0x1000, 25).hex().upper(),
        "deye_identity_request": modbus.encode_report_id_request(0).hex().upper(),
    }


def measure(function: Callable[..., object], args: tuple[Any, ...], seconds: float) -> float:
    """Calls per second: best of three runs of seconds/3 each."""
    best = 0.0
    for _ in range(3):
        count = 0
        start = time.perf_counter()
        deadline = start + seconds / 3
        while True:
            for _ in range(200):
                function(*args)
            count += 200
            now = time.perf_counter()
            if now >= deadline:
                break
        best = max(best, count / (now - start))
    return best


def cpython_results(inputs: dict[str, str], seconds: float) -> dict[str, int]:
    cell_32s = bytes.fromhex(inputs["cell_32s"])
    cell_24s = bytes.fromhex(inputs["cell_24s"])
    cell_jk04 = bytes.fromhex(inputs["cell_jk04"])
    byd_reply = bytes.fromhex(inputs["byd_reply"])
    request = bytes.fromhex(inputs["deye_request"])
    response_4e57 = jk_4e57.encode_response([3300] * 16, {0x83: 5280, 0x84: 0x8064, 0x85: 50, 0xC0: 1})
    slave = deye.DeyeSlave(10_000_000)
    slave.set_unit(0, list(range(25)), deye.encode_identity("BYD PRO 2.5", "BYD12345678901234567"), 0)
    chunks = [cell_32s[0:128], cell_32s[128:150], cell_32s[150:278], cell_32s[278:300]]

    def reassemble() -> object:
        reassembler = jk_ble.JkReassembler()
        for chunk in chunks:
            reassembler.feed(chunk)
        return reassembler.next_event()

    cases: tuple[tuple[str, Callable[..., object], tuple[Any, ...]], ...] = (
        ("jk_cell_info_32s", jk_frames.decode_frame, (cell_32s,)),
        ("jk_cell_info_24s", jk_frames.decode_frame, (cell_24s,)),
        ("jk_cell_info_jk04", jk_frames.decode_frame, (cell_jk04,)),
        ("jk_reassemble_300b_in_4_chunks", reassemble, ()),
        ("dissect_jk_ble_cell_info", dissect, ("jk-ble", cell_32s)),
        ("byd_response", byd.decode_response, (byd_reply,)),
        ("jk_4e57_response", jk_4e57.decode_response, (response_4e57,)),
        ("modbus_decode_request", modbus.decode_request, (request,)),
        ("deye_request_answered_25_registers", slave.handle, (request, 5)),
    )
    return {name: round(measure(function, args, seconds)) for name, function, args in cases}


def micropython_results(inputs: dict[str, str]) -> tuple[dict[str, Any], str]:
    from . import micropython

    with tempfile.TemporaryDirectory() as directory:
        Path(directory, "inputs.json").write_text(json.dumps(inputs))
        script = resources.files("hil").joinpath("data/mpy_bench_codecs.py")
        with resources.as_file(script) as path:
            output = micropython.run(path, mounts=[(directory, "/bench")])
    return json.loads(output.strip().splitlines()[-1]), micropython.version()


def run_codecs(args: argparse.Namespace) -> int:
    inputs = golden()
    report: dict[str, Any] = {
        "machine": {"python": sys.version.split()[0], "platform": platform.platform(), "processor": platform.machine()},
        "cpython_frames_per_s": cpython_results(inputs, args.seconds),
    }
    if not args.no_micropython:
        report["micropython"], report["micropython_version"] = micropython_results(inputs)
    jk_rate = report["cpython_frames_per_s"]["jk_cell_info_32s"]
    report["targets"] = {
        "jk_cell_info_per_s": {
            "target": TARGET_JK_FRAMES_PER_S,
            "measured": jk_rate,
            "met": jk_rate >= TARGET_JK_FRAMES_PER_S,
        }
    }
    if "micropython" in report:
        used = report["micropython"]["deye_request_answered_25_registers"]["bytes_allocated"]
        report["targets"]["deye_request_bytes_on_micropython"] = {
            "target": TARGET_DEYE_BYTES,
            "measured": used,
            "met": used <= TARGET_DEYE_BYTES,
        }
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    print("vbms bench codecs on %s, Python %s" % (report["machine"]["platform"], report["machine"]["python"]))
    print()
    print("CPython, calls per second (best of 3):")
    for name, value in report["cpython_frames_per_s"].items():
        print("  %-38s %12s" % (name, format(value, ",")))
    if "micropython" in report:
        print()
        print("%s (WebAssembly port), bytes allocated per call / calls per second:" % report["micropython_version"])
        for name, value in report["micropython"].items():
            per_second = "-" if value["per_second"] is None else format(value["per_second"], ",")
            print("  %-38s %8d B %12s" % (name, value["bytes_allocated"], per_second))
    print()
    for name, target in report["targets"].items():
        print(
            "  target %-36s %s (target %s, measured %s)"
            % (
                name,
                "met" if target["met"] else "NOT MET",
                format(target["target"], ","),
                format(target["measured"], ","),
            )
        )
    return 0


# --- vbms bench wires -------------------------------------------------------------


def bus_throughput(baud: int = 9600, payload_bytes: int = 4800) -> dict[str, Any]:
    """Bytes per second across a PTY bus: the sender's write to the last byte out."""
    import serial

    from .wires.rs485 import Rs485Bus

    bus = Rs485Bus("bench", baud).start()
    try:
        sender = serial.Serial(bus.add_endpoint("a").path, baud, timeout=2)
        receiver = serial.Serial(bus.add_endpoint("b").path, baud, timeout=10)
        payload = bytes(index & 0xFF for index in range(payload_bytes))
        received = bytearray()
        written = time.perf_counter()
        sender.write(payload)
        while len(received) < payload_bytes:
            chunk = receiver.read(payload_bytes - len(received))
            if not chunk:
                raise RuntimeError("the bus stopped delivering after %d bytes" % len(received))
            received.extend(chunk)
        elapsed = time.perf_counter() - written
        intact = bytes(received) == payload
        sender.close()
        receiver.close()
    finally:
        bus.stop()
    measured = payload_bytes / elapsed
    theoretical = baud / 10
    return {
        "baud": baud,
        "bytes": payload_bytes,
        "measured_bytes_per_s": round(measured, 1),
        "theoretical_bytes_per_s": theoretical,
        "error_pct": round(100 * (measured - theoretical) / theoretical, 2),
        "intact": intact,
    }


# A receiver in a process of its own, as a device under test is: timestamps each read.
GAP_READER = """
import json, os, select, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_NOCTTY)
wanted, got, reads = int(sys.argv[2]), 0, []
print("ready", flush=True)
deadline = time.monotonic() + 600
while got < wanted and time.monotonic() < deadline:
    if select.select([fd], [], [], 0.5)[0]:
        data = os.read(fd, 4096)
        reads.append((time.monotonic(), len(data)))
        got += len(data)
print(json.dumps(reads))
"""
GAP_FRAME_BYTES = (8, 55, 105, 308)  # a DEYE request, its reply, a BYD reply, a JK-PB reply


def cpu_hogs(count: int) -> list[subprocess.Popen[bytes]]:
    """count busy processes (one per core loads the machine as another job would)."""
    import subprocess

    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]


def frame_silences(
    reads: Sequence[tuple[float, int]], frame_bytes: Sequence[int], written_s: Sequence[float], char_s: float
) -> tuple[list[float], list[float]]:
    """From a receiver's reads [(t_s, bytes)], frames of frame_bytes written at written_s:
    each silence inside a frame (time between reads less one character) and how late
    each frame's last byte was read after it was due."""
    silences: list[float]
    late: list[float]
    last_read: float | None
    silences, late = [], []
    frame, left, last_read = 0, frame_bytes[0], None
    for t_s, count in reads:
        while count and frame < len(frame_bytes):
            if last_read is not None:
                silences.append(t_s - last_read - char_s)
            taken = min(count, left)
            count -= taken
            left -= taken
            last_read = t_s
            if left == 0:
                late.append(t_s - written_s[frame] - frame_bytes[frame] * char_s)
                frame += 1
                left = frame_bytes[frame] if frame < len(frame_bytes) else 0
                last_read = None
    return silences, late


def frame_gaps(cycles: int = 25, hogs: int = 0, traced: bool = False, baud: int = 9600) -> dict[str, Any]:
    """Frames written on one endpoint of a PTY bus, read at another by a process of its own:
    the largest silence inside a frame (Modbus allows 1.5 characters) and how late frames end."""
    import subprocess

    from .trace import Trace
    from .wires.rs485 import Rs485Bus

    frame_bytes = list(GAP_FRAME_BYTES) * cycles
    directory = tempfile.mkdtemp(prefix="vbms-gaps-")
    trace = Trace(str(Path(directory, "trace.jsonl")), {"bench": "deye"}) if traced else None
    bus = Rs485Bus("bench", baud, trace=trace, protocol="deye").start()
    busy = cpu_hogs(hogs)
    written_s: list[float] = []
    try:
        sender = os.open(bus.add_endpoint("sender").path, os.O_RDWR | os.O_NOCTTY)
        receiver_path = bus.add_endpoint("receiver").path
        bus.add_endpoint("spy")
        reader = subprocess.Popen(
            [sys.executable, "-c", GAP_READER, receiver_path, str(sum(frame_bytes))], stdout=subprocess.PIPE, text=True
        )
        reader.stdout.readline()  # type: ignore[union-attr]  # the pipe asked for
        for length in frame_bytes:
            frame = bytes((index * 7 + length) & 0xFF for index in range(length))
            written_s.append(time.monotonic())
            os.write(sender, frame)
            time.sleep(length * bus.char_s + 0.015)  # then a silence of several t3.5
        reads = json.loads(reader.communicate(timeout=60)[0])
        os.close(sender)
    finally:
        for hog in busy:
            hog.kill()
            hog.wait()
        bus.stop()
        if trace is not None:
            trace.close()
    silences, late = frame_silences(reads, frame_bytes, written_s, bus.char_s)
    late.sort()
    return {
        "hogs": hogs,
        "traced": traced,
        "frames": len(frame_bytes),
        "reads": len(reads),
        "limit_ms": round(1.5 * bus.char_s * 1000, 3),
        "max_silence_ms": round(1000 * max(silences, default=0.0), 3),
        "silences_over_t1_5": sum(1 for s in silences if s > 1.5 * bus.char_s),
        "silences_over_t3_5": sum(1 for s in silences if s > bus.gap_s),
        "late_ms": {"p50": round(1000 * late[len(late) // 2], 2), "max": round(1000 * late[-1], 2)},
    }


def first_try_misses(
    requests: int = 10_000,
    registers: int = 25,
    timeout_s: float = 0.5,
    pause_s: float = 0.01,
    progress: Callable[[str], object] | None = None,
) -> dict[str, Any]:
    """Acting as the inverter on `vbms sim --external deye` (default bench, no BLE): valid, well-separated
    reads of the BYD units' registers, counting those that get no valid reply on the first try."""
    import serial

    from vbms_core import modbus

    from .benchfile import load_default
    from .sim import Simulation

    bench = load_default()
    units = [spec.slot for spec in bench.batteries if spec.type == "byd_pro"]
    misses = {"silent": 0, "partial": 0, "bad": 0, "exception": 0}
    late: list[float] = []
    with Simulation(bench, external_deye=True, ble=False) as simulation:
        bus = simulation.buses[bench.inverter["bus"]]
        port = serial.Serial(bus.endpoint("inverter").path, bus.baud, timeout=0)

        def ask(unit: int) -> str | None:
            request = modbus.encode_read_request(unit, modbus.READ_INPUT, 0x1000, registers)
            expected = 5 + 2 * registers
            port.reset_input_buffer()
            sent_s = time.monotonic()
            port.write(request)
            reply = bytearray()
            deadline = sent_s + len(request) * bus.char_s + timeout_s
            while len(reply) < expected and time.monotonic() < deadline:
                if select.select([port.fileno()], [], [], max(0.0, deadline - time.monotonic()))[0]:
                    reply.extend(port.read(expected - len(reply)))
                    if len(reply) == 5 and reply[1] & 0x80:
                        break
            if not reply:
                return "silent"
            try:
                event = modbus.decode_response(bytes(reply))
            except modbus.RemoteProtocolError:
                return "partial" if len(reply) < expected else "bad"
            if isinstance(event, modbus.ExceptionResponse):
                return "exception"
            late.append(time.monotonic() - sent_s - (len(request) + expected) * bus.char_s)
            return None

        deadline = time.monotonic() + 60
        while any(ask(unit) for unit in units):  # the proxy has read every module
            if time.monotonic() > deadline:
                raise RuntimeError("vbms run did not answer every BYD unit within 60 s")
            time.sleep(0.5)
        late.clear()
        for index in range(requests):
            outcome = ask(units[index % len(units)])
            if outcome is not None:
                misses[outcome] += 1
            if progress is not None and (index + 1) % 1000 == 0:
                progress("%d requests, %d missed" % (index + 1, sum(misses.values())))
            time.sleep(pause_s)
        port.close()
        # a module whose port failed goes stale, and the proxy then rightly stays silent for its unit
        device_errors = {device.name: device.errors for device in simulation.serial_devices if device.errors}
    late.sort()
    return {
        "requests": requests,
        "registers": registers,
        "missed": sum(misses.values()),
        "by_kind": misses,
        "device_errors": device_errors,
        "reply_late_ms": {"p50": round(1000 * late[len(late) // 2], 2), "max": round(1000 * late[-1], 2)},
    }


def ble_frame_latency(frames: int = 12) -> list[dict[str, Any]]:
    """Seconds from a JK cell-info frame being generated to its last notification at a bleak client."""
    import asyncio

    from bleak import BleakClient

    from simulators.battery import BatteryModel
    from simulators.jk.ble import CHARACTERISTIC_UUID, JkBlePeripheral
    from simulators.jk.device import JkBms

    from .host.ble import find_device
    from .wires.ble import BleEnvironment

    async def measure(chunking: str) -> dict[str, Any]:
        device = JkBms(BatteryModel(), name="JK-BENCH")
        peripheral = await JkBlePeripheral(device, adapter="hci0", chunking=chunking).start()
        arrivals: dict[int, float] = {}  # frame counter -> when its last notification arrived
        reassembler = jk_ble.JkReassembler()

        def on_notification(_: object, data: bytearray) -> None:
            reassembler.feed(bytes(data))
            while (event := reassembler.next_event()) is not modbus.NEED_DATA:
                if isinstance(event, jk_ble.JkFrame) and event.raw[4] == 2:
                    arrivals[event.raw[5]] = time.monotonic()

        try:
            found = await find_device(address="00:11:22:33:44:55", adapter="hci1")
            # (the ignore: not found is None, and BleakClient then fails, which ends the benchmark as well)
            async with BleakClient(found, bluez={"adapter": "hci1"}) as client:  # type: ignore[arg-type]
                await client.start_notify(CHARACTERISTIC_UUID, on_notification)
                await client.write_gatt_char(
                    CHARACTERISTIC_UUID, jk_ble.encode_command(jk_ble.GET_SETTINGS), response=False
                )
                await asyncio.sleep(0.55 * frames)
        finally:
            await peripheral.stop()
        delays = sorted(arrivals[counter] - sent for sent, counter in peripheral.frames_sent if counter in arrivals)
        return {
            "chunking": chunking,
            "frames": len(delays),
            "median_ms": round(1000 * delays[len(delays) // 2], 2) if delays else None,
            "max_ms": round(1000 * delays[-1], 2) if delays else None,
        }

    with BleEnvironment():
        return [asyncio.run(measure(chunking)) for chunking in ("mtu23", "mtu131", "mtu247")]


def run_wires(args: argparse.Namespace) -> int:
    """Throughput, the silences inside frames (idle, traced, under a CPU hog per core), first-try
    misses of a DEYE master on `vbms sim --external deye`, BLE frame latency."""
    hogs = os.cpu_count() or 2
    requests = args.requests
    report: dict[str, Any] = {
        "rs485": bus_throughput(),
        "frame_gaps": [frame_gaps(), frame_gaps(traced=True), frame_gaps(hogs=hogs, traced=True)],
    }
    if requests:
        report["first_try"] = first_try_misses(requests, progress=lambda line: print(line, file=sys.stderr))
    report["ble_cell_info_latency"] = ble_frame_latency()
    worst_gap = max(row["max_silence_ms"] for row in report["frame_gaps"])
    report["targets"] = {
        "rs485_throughput_within_2pct": {
            "target": 2.0,
            "measured": abs(report["rs485"]["error_pct"]),
            "met": abs(report["rs485"]["error_pct"]) <= 2.0,
        },
        "silence_inside_a_frame_under_t1_5_ms": {
            "target": report["frame_gaps"][0]["limit_ms"],
            "measured": worst_gap,
            "met": worst_gap < report["frame_gaps"][0]["limit_ms"],
        },
    }
    if requests:
        report["targets"]["first_try_misses"] = {
            "target": 0,
            "measured": report["first_try"]["missed"],
            "met": report["first_try"]["missed"] == 0,
        }
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    bus = report["rs485"]
    print(
        "RS485 PTY bus at %d baud: %s B/s measured, %s theoretical (%+.2f %%), data intact: %s"
        % (bus["baud"], bus["measured_bytes_per_s"], bus["theoretical_bytes_per_s"], bus["error_pct"], bus["intact"])
    )
    print(
        "Silences inside frames at a receiver in its own process (limit t1.5 = %s ms):"
        % report["frame_gaps"][0]["limit_ms"]
    )
    for row in report["frame_gaps"]:
        print(
            "  %d CPU hogs, trace %-3s: %4d frames in %4d reads, largest silence %6.3f ms, frame ends late p50 %s ms"
            " max %s ms"
            % (
                row["hogs"], "on" if row["traced"] else "off", row["frames"], row["reads"], row["max_silence_ms"],
                row["late_ms"]["p50"], row["late_ms"]["max"],
            )
        )  # fmt: skip
    if requests:
        first = report["first_try"]
        print(
            "DEYE master on vbms sim --external deye: %d of %d valid requests (%d registers) missed on the first try"
            " %s; replies late p50 %s ms, max %s ms"
            % (
                first["missed"], first["requests"], first["registers"], first["by_kind"],
                first["reply_late_ms"]["p50"], first["reply_late_ms"]["max"],
            )
        )  # fmt: skip
    print("JK cell-info frame generated -> last notification at a bleak client (BlueZoo):")
    for row in report["ble_cell_info_latency"]:
        print(
            "  %-7s %2d frames  median %s ms  max %s ms"
            % (row["chunking"], row["frames"], row["median_ms"], row["max_ms"])
        )
    for name, target in report["targets"].items():
        print("  target %s: %s" % (name, "met" if target["met"] else "NOT MET"))
    return 0


# --- vbms bench proxy ---------------------------------------------------------------


def proxy_bench(batteries: int, seconds: float) -> dict[str, Any]:
    """vbms run between the DEYE simulator and `batteries` BYD modules; stats from the bus traces."""
    from .benchfile import parse
    from .sim import DUT, Simulation

    data = {
        "name": "proxy-%d" % batteries,
        "buses": {"inverter": {"baud": 9600, "protocol": "deye"}, "bms": {"baud": 9600, "protocol": "byd-pro"}},
        "inverter": {"bus": "inverter", "units": list(range(batteries)), "poll_period_s": 0.0, "timeout_s": 0.3},
        "batteries": [
            {"slot": slot, "type": "byd_pro", "bus": "bms", "address": slot + 1, "soc_permille": 800}
            for slot in range(batteries)
        ],
    }
    bench = parse(data)
    with Simulation(bench, ble=False) as simulation:
        char_s = simulation.buses["inverter"].char_s
        time.sleep(seconds)
        records = list(simulation.trace.records)
    inverter = [r for r in records if r["bus"] == "inverter"]
    bms = [r for r in records if r["bus"] == "bms"]
    latencies: list[float] = []
    ages: list[float] = []
    last_reply_end: dict[int, float] = {}  # BYD address -> end of its latest good reply on the BMS bus
    bms_index = 0
    bms_char = char_s
    for request, reply in zip(inverter, inverter[1:], strict=False):
        if request["from"] != "deye" or reply["from"] != DUT:
            continue
        request_end = request["t"] + len(request["hex"]) // 2 * char_s
        latencies.append(reply["t"] - request_end)
        decoded = reply.get("decoded") or {}
        if decoded.get("function_name") != "read_input_registers" or decoded.get("direction") != "response":
            continue
        while bms_index < len(bms) and bms[bms_index]["t"] < request_end:
            record = bms[bms_index]
            summary = record.get("decoded") or {}
            if record["from"] != DUT and summary.get("direction") == "response":
                last_reply_end[summary["address"]] = record["t"] + len(record["hex"]) // 2 * bms_char
            bms_index += 1
        source = last_reply_end.get(decoded["unit"] + 1)
        if source is not None:
            ages.append(reply["t"] - source)
    latencies.sort()
    ages.sort()
    wire_bound_s = batteries * (8 + 105) * char_s  # every module polled once: request out, reply back

    def percentile(values: Sequence[float], fraction: float) -> float | None:
        return values[min(len(values) - 1, int(fraction * len(values)))] if values else None

    # (the ignores: percentile() is None for no values only, and there are values where it is called)
    return {
        "batteries": batteries,
        "replies": len(latencies),
        "latency_ms": {
            "p50": round(1000 * percentile(latencies, 0.50), 2),  # type: ignore[operator]
            "p99": round(1000 * percentile(latencies, 0.99), 2),  # type: ignore[operator]
            "max": round(1000 * latencies[-1], 2),
        }
        if latencies
        else None,
        "data_age_ms": {"p50": round(1000 * percentile(ages, 0.5), 1), "max": round(1000 * ages[-1], 1)}  # type: ignore[operator]
        if ages
        else None,
        "wire_bound_ms": round(1000 * wire_bound_s, 1),
        "oldest_over_bound": round(ages[-1] / wire_bound_s, 2) if ages else None,
    }


def run_proxy(args: argparse.Namespace) -> int:
    rows = []
    for count in (4, 8, 15):
        row = proxy_bench(count, args.seconds)
        if row["data_age_ms"] is None:
            what = "no inverter read was answered" if not row["replies"] else "no answer carried a battery's data"
            print(
                "vbms bench proxy: with %d batteries %s in %g s; a longer --seconds may help, or `vbms run` may "
                "have failed to start" % (count, what, args.seconds),
                file=sys.stderr,
            )
            return 1
        rows.append(row)
    report: dict[str, Any] = {"rows": rows, "targets": {}}
    worst_p99 = max(row["latency_ms"]["p99"] for row in rows)
    worst_ratio = max(row["oldest_over_bound"] for row in rows)
    report["targets"]["reply_latency_p99_under_5ms"] = {"measured": worst_p99, "met": worst_p99 < 5.0}
    report["targets"]["oldest_data_under_1.5x_wire_bound"] = {"measured": worst_ratio, "met": worst_ratio < 1.5}
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    print("vbms run between the DEYE simulator and N BYD PRO modules (PTY buses, 9600 baud), %g s each:" % args.seconds)
    print("  N   replies  latency p50/p99/max ms   data age p50/max ms   wire bound ms   oldest/bound")
    for row in rows:
        print(
            "  %-3d %7d  %6.2f %6.2f %6.2f        %7.1f %7.1f       %7.1f         %.2f"
            % (
                row["batteries"], row["replies"], row["latency_ms"]["p50"], row["latency_ms"]["p99"],
                row["latency_ms"]["max"], row["data_age_ms"]["p50"], row["data_age_ms"]["max"],
                row["wire_bound_ms"], row["oldest_over_bound"],
            )
        )  # fmt: skip
    for name, target in report["targets"].items():
        print("  target %s: %s (measured %s)" % (name, "met" if target["met"] else "NOT MET", target["measured"]))
    return 0


# --- vbms bench des -------------------------------------------------------------------

TARGET_DES_SPEEDUP = 1440  # the default bench, fast fidelity: a simulated day in a minute (issue 14)
TARGET_DES_FIFTEEN_DAY_S = 90  # fifteen BYD modules, fast fidelity: a simulated day in 90 s


def fifteen_byd_bench() -> Bench:
    """Fifteen BYD PRO modules on one bus, every DEYE unit answering."""
    from .benchfile import parse

    return parse(
        {
            "name": "fifteen",
            "buses": {"inverter": {"baud": 9600, "protocol": "deye"}, "bms": {"baud": 9600, "protocol": "byd-pro"}},
            "inverter": {"bus": "inverter", "units": list(range(15))},
            "batteries": [{"slot": s, "type": "byd_pro", "bus": "bms", "address": s + 1} for s in range(15)],
        }
    )


def solar_day_bench(day_length_s: float = 86400.0, peak_solar_w: float = 1950.0, base_load_w: float = 500.0) -> Bench:
    """The solar-day and soak scenarios' bench: the default bench's eight batteries under days of sun
    and household load (a day lasts day_length_s), the inverter polling their eight units.

    The defaults are a small house whose week neither drains nor floods the batteries: the sun brings
    about what the house uses in a day (7.6 h of peak sun against 29 h of base load, the evening's
    doubled), so the small BYD packs fill up every afternoon and give about 40 % back by morning."""
    from .benchfile import load_default

    bench = load_default()
    bench.profile = {"kind": "day", "peak_solar_w": peak_solar_w, "base_load_w": base_load_w,
                     "day_length_s": day_length_s}  # fmt: skip
    bench.inverter["units"] = list(range(8))
    return bench


def des_speed(bench: Bench, simulated_s: float, fidelity: str) -> dict[str, Any]:
    from .des import DesBench

    world = DesBench(bench, fidelity=fidelity)
    start = time.perf_counter()
    cpu_start = time.process_time()
    world.run_for(simulated_s)
    cpu = time.process_time() - cpu_start
    wall = time.perf_counter() - start
    return {
        "bench": bench.name,
        "batteries": len(bench.batteries),
        "fidelity": fidelity,
        "simulated_s": simulated_s,
        "wall_s": round(wall, 3),
        "cpu_s": round(cpu, 3),
        "speedup": round(simulated_s / wall),
        "day_wall_s": round(86400 * wall / simulated_s, 1),
        "inverter_cycles": world.inverter.cycles,
        "bms_cycles": world.proxy.rs485.cycles,
        "proxy_ticks": world.ticks,
    }


def run_des(args: argparse.Namespace) -> int:
    from .benchfile import load_default

    fidelities = ("fast", "full") if args.fidelity == "both" else (args.fidelity,)
    load_before = os.getloadavg()
    rows: list[dict[str, Any]] = []
    for fidelity in fidelities:
        for make in (load_default, fifteen_byd_bench):
            runs = sorted((des_speed(make(), args.seconds, fidelity) for _ in range(args.repeat)),
                          key=lambda row: row["wall_s"])  # fmt: skip
            row = dict(runs[len(runs) // 2])  # the median run
            row["runs_wall_s"] = [run["wall_s"] for run in runs]
            rows.append(row)
    report: dict[str, Any] = {
        "rows": rows,
        "load_average": {"before": load_before, "after": os.getloadavg()},
        "targets": {},
    }
    fast = {row["bench"]: row for row in rows if row["fidelity"] == "fast"}
    if fast:
        speedup = fast["default"]["speedup"]
        day_s = fast["fifteen"]["day_wall_s"]
        report["targets"]["default_fast_speedup_1440x"] = {"measured": speedup, "met": speedup >= TARGET_DES_SPEEDUP}
        report["targets"]["fifteen_fast_day_under_90_s"] = {"measured": day_s, "met": day_s < TARGET_DES_FIFTEEN_DAY_S}
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    print(
        "des target (simpy), %g simulated seconds each, median of %d runs; load average %.2f before, %.2f after:"
        % (args.seconds, args.repeat, load_before[0], report["load_average"]["after"][0])
    )
    for row in rows:
        print(
            "  %-8s %2d batteries, %-4s fidelity: %7.3f s wall (%6.3f s CPU), %5dx real time, a day in %6.1f s"
            % (row["bench"], row["batteries"], row["fidelity"], row["wall_s"], row["cpu_s"], row["speedup"],
               row["day_wall_s"])
        )  # fmt: skip
    for name, target in report["targets"].items():
        print("  target %s: %s (measured %s)" % (name, "met" if target["met"] else "NOT MET", target["measured"]))
    return 0
