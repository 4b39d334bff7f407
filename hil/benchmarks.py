"""`vbms bench codecs`: decoder throughput on CPython, heap use on MicroPython.

Wall-clock numbers belong here, never in tests.  Targets (issue 3): JK
cell-info decode >= 50,000 frames/s on CPython; a DEYE request answered with
<= 256 bytes allocated on MicroPython.
"""

import json
import platform
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path

from vbms_core import byd, deye, jk_4e57, jk_ble, jk_frames, modbus
from vbms_core.dissect import dissect

TARGET_JK_FRAMES_PER_S = 50_000
TARGET_DEYE_BYTES = 256


def golden():
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


def measure(function, args, seconds):
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


def cpython_results(inputs, seconds):
    cell_32s = bytes.fromhex(inputs["cell_32s"])
    cell_24s = bytes.fromhex(inputs["cell_24s"])
    cell_jk04 = bytes.fromhex(inputs["cell_jk04"])
    byd_reply = bytes.fromhex(inputs["byd_reply"])
    request = bytes.fromhex(inputs["deye_request"])
    response_4e57 = jk_4e57.encode_response([3300] * 16, {0x83: 5280, 0x84: 0x8064, 0x85: 50, 0xC0: 1})
    slave = deye.DeyeSlave(10_000_000)
    slave.set_unit(0, list(range(25)), deye.encode_identity("BYD PRO 2.5", "BYD12345678901234567"), 0)
    chunks = [cell_32s[0:128], cell_32s[128:150], cell_32s[150:278], cell_32s[278:300]]

    def reassemble():
        reassembler = jk_ble.JkReassembler()
        for chunk in chunks:
            reassembler.feed(chunk)
        return reassembler.next_event()

    cases = (
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


def micropython_results(inputs):
    from . import micropython

    with tempfile.TemporaryDirectory() as directory:
        Path(directory, "inputs.json").write_text(json.dumps(inputs))
        script = resources.files("hil").joinpath("data/mpy_bench_codecs.py")
        with resources.as_file(script) as path:
            output = micropython.run(path, mounts=[(directory, "/bench")])
    return json.loads(output.strip().splitlines()[-1]), micropython.version()


def run_codecs(args):
    inputs = golden()
    report = {
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


def bus_throughput(baud=9600, payload_bytes=4800):
    """Bytes per second across a PTY bus: first byte in to last byte out."""
    import serial

    from .wires.rs485 import Rs485Bus

    bus = Rs485Bus("bench", baud).start()
    try:
        sender = serial.Serial(bus.add_endpoint("a").path, baud, timeout=2)
        receiver = serial.Serial(bus.add_endpoint("b").path, baud, timeout=2)
        payload = bytes(index & 0xFF for index in range(payload_bytes))
        received = bytearray()
        sender.write(payload)
        first = None
        while len(received) < payload_bytes:
            chunk = receiver.read(min(256, payload_bytes - len(received)))
            if not chunk:
                raise RuntimeError("the bus stopped delivering after %d bytes" % len(received))
            if first is None:
                first = time.perf_counter()
                first_count = len(chunk)
            received.extend(chunk)
        elapsed = time.perf_counter() - first
        intact = bytes(received) == payload
        sender.close()
        receiver.close()
    finally:
        bus.stop()
    measured = (payload_bytes - first_count) / elapsed
    theoretical = baud / 10
    return {
        "baud": baud,
        "bytes": payload_bytes,
        "measured_bytes_per_s": round(measured, 1),
        "theoretical_bytes_per_s": theoretical,
        "error_pct": round(100 * (measured - theoretical) / theoretical, 2),
        "intact": intact,
    }


def ble_frame_latency(frames=12):
    """Seconds from a JK cell-info frame being generated to its last notification at a bleak client."""
    import asyncio

    from bleak import BleakClient

    from simulators.battery import BatteryModel
    from simulators.jk.ble import CHARACTERISTIC_UUID, JkBlePeripheral
    from simulators.jk.device import JkBms

    from .host.ble import find_device
    from .wires.ble import BleEnvironment

    async def measure(chunking):
        device = JkBms(BatteryModel(), name="JK-BENCH")
        peripheral = await JkBlePeripheral(device, adapter="hci0", chunking=chunking).start()
        arrivals = {}
        reassembler = jk_ble.JkReassembler()

        def on_notification(_, data):
            reassembler.feed(bytes(data))
            while (event := reassembler.next_event()) is not modbus.NEED_DATA:
                if isinstance(event, jk_ble.JkFrame) and event.raw[4] == 2:
                    arrivals[event.raw[5]] = time.monotonic()

        try:
            found = await find_device(address="00:11:22:33:44:55", adapter="hci1")
            async with BleakClient(found, bluez={"adapter": "hci1"}) as client:
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


def run_wires(args):
    report = {"rs485": bus_throughput(), "ble_cell_info_latency": ble_frame_latency()}
    report["targets"] = {
        "rs485_throughput_within_2pct": {
            "target": 2.0,
            "measured": abs(report["rs485"]["error_pct"]),
            "met": abs(report["rs485"]["error_pct"]) <= 2.0,
        }
    }
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    bus = report["rs485"]
    print(
        "RS485 PTY bus at %d baud: %s B/s measured, %s theoretical (%+.2f %%), data intact: %s"
        % (bus["baud"], bus["measured_bytes_per_s"], bus["theoretical_bytes_per_s"], bus["error_pct"], bus["intact"])
    )
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


def proxy_bench(batteries, seconds):
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
    latencies = []
    ages = []
    last_reply_end = {}  # BYD address -> end of its latest good reply on the BMS bus
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

    def percentile(values, fraction):
        return values[min(len(values) - 1, int(fraction * len(values)))] if values else None

    return {
        "batteries": batteries,
        "replies": len(latencies),
        "latency_ms": {
            "p50": round(1000 * percentile(latencies, 0.50), 2),
            "p99": round(1000 * percentile(latencies, 0.99), 2),
            "max": round(1000 * latencies[-1], 2),
        },
        "data_age_ms": {"p50": round(1000 * percentile(ages, 0.5), 1), "max": round(1000 * ages[-1], 1)}
        if ages
        else None,
        "wire_bound_ms": round(1000 * wire_bound_s, 1),
        "oldest_over_bound": round(ages[-1] / wire_bound_s, 2) if ages else None,
    }


def run_proxy(args):
    rows = [proxy_bench(count, args.seconds) for count in (4, 8, 15)]
    report = {"rows": rows, "targets": {}}
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


def des_speed(bench, simulated_s):
    from .des import DesBench

    world = DesBench(bench)
    start = time.perf_counter()
    world.run_for(simulated_s)
    wall = time.perf_counter() - start
    return {
        "bench": bench.name,
        "batteries": len(bench.batteries),
        "simulated_s": simulated_s,
        "wall_s": round(wall, 2),
        "speedup": round(simulated_s / wall),
        "day_wall_s": round(86400 * wall / simulated_s),
        "inverter_cycles": world.inverter.cycles,
        "bms_cycles": world.proxy.rs485.cycles,
    }


def run_des(args):
    from .benchfile import load_default, parse

    fifteen = parse(
        {
            "name": "fifteen",
            "buses": {"inverter": {"baud": 9600, "protocol": "deye"}, "bms": {"baud": 9600, "protocol": "byd-pro"}},
            "inverter": {"bus": "inverter", "units": list(range(15))},
            "batteries": [{"slot": s, "type": "byd_pro", "bus": "bms", "address": s + 1} for s in range(15)],
        }
    )
    rows = [des_speed(load_default(), args.seconds), des_speed(fifteen, args.seconds)]
    report = {"rows": rows, "target": {"day_under_60_s": all(r["day_wall_s"] < 60 for r in rows)}}
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    print("des target (simpy), %g simulated seconds each:" % args.seconds)
    for row in rows:
        print(
            "  %-8s %2d batteries: %6.2f s wall, %5dx real time, a simulated day in %5d s"
            % (row["bench"], row["batteries"], row["wall_s"], row["speedup"], row["day_wall_s"])
        )
    print("  target a simulated day under 60 s: %s" % ("met" if report["target"]["day_under_60_s"] else "NOT MET"))
    return 0
