"""The `vbms` command line."""

import argparse
import sys

from vbms_core.dissect import PROTOCOLS
from vbms_core.jk_frames import LAYOUTS


def build_parser():
    parser = argparse.ArgumentParser(
        prog="vbms", description="Virtual BMS: protocol tools, simulators and test harness."
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    decode = commands.add_parser(
        "decode",
        help="decode frames given in hex",
        description="Decode frames given in hex; prints one JSON object per line. "
        "An invalid frame prints an object with an 'error' field and the exit status is 1.",
    )
    decode.add_argument("--protocol", "-p", required=True, choices=PROTOCOLS, help="protocol of the frames")
    decode.add_argument("--layout", default="auto", choices=("auto",) + LAYOUTS, help="JK frame layout (default: auto)")
    decode.add_argument(
        "--stream", action="store_true", help="treat the inputs as consecutive BLE notification chunks (jk-ble)"
    )
    decode.add_argument(
        "--show-junk", action="store_true", help="with --stream, also print the bytes dropped between frames"
    )
    decode.add_argument(
        "--file", "-f", metavar="FILE", help="read frames from FILE (hex or JSON trace lines; - for stdin)"
    )
    decode.add_argument("hex", nargs="*", metavar="HEX", help="frames in hex")

    demo = commands.add_parser(
        "demo", help="replay real captures through the proxy core and show what the inverter would read"
    )
    demo.add_argument("--json", action="store_true", help="print JSON lines instead of text")

    sim = commands.add_parser(
        "sim",
        help="run a simulated bench in real time (DEYE inverter, batteries, buses, BLE)",
        description="Start a bench; prints one JSON line with every endpoint a device under test attaches to.",
    )
    sim.add_argument("--bench", metavar="FILE", help="bench file (TOML); default: the embedded default bench")
    sim.add_argument("--headless", action="store_true", help="no live table: JSON status lines instead")
    sim.add_argument("--duration", type=float, metavar="SECONDS", help="stop after this many seconds")
    sim.add_argument("--external", choices=("deye",), help="leave the inverter side open for an external master")
    sim.add_argument("--trace", metavar="FILE", help="write every bus frame to FILE (JSON lines)")
    sim.add_argument("--no-ble", action="store_true", help="leave the BLE batteries out")
    sim.add_argument(
        "--dut",
        choices=("vbms", "open"),
        default="vbms",
        help="start vbms run between the devices (default), or leave its ports open",
    )
    sim.add_argument("--status-every", type=float, default=10.0, metavar="SECONDS", help="headless status period")

    run = commands.add_parser(
        "run",
        help="run the VBMS on this computer (a virtual ESP32, or a gateway with USB-RS485 adapters)",
        description="The VBMS proxy: polls the batteries, answers the DEYE inverter, serves RPC over HTTP/WebSocket.",
    )
    run.add_argument(
        "--config", required=True, metavar="FILE", help="configuration (JSON); created with defaults if missing"
    )
    run.add_argument("--bms-port", metavar="PORT", help="serial port of the BMS-side RS485 bus")
    run.add_argument("--inv-port", metavar="PORT", help="serial port of the inverter-side RS485 bus")
    run.add_argument("--ble-adapter", metavar="HCI", help="Bluetooth adapter for JK-BMS over BLE (e.g. hci0)")
    run.add_argument("--http-host", default="127.0.0.1", help="address the RPC server listens on (default 127.0.0.1)")
    run.add_argument("--http-port", type=int, default=8080, help="RPC server port (default 8080)")

    ble = commands.add_parser("ble", help="the Bluetooth LE environment without a radio (dbus-daemon + BlueZoo)")
    ble_commands = ble.add_subparsers(dest="ble_command", metavar="ACTION")
    ble_commands.required = True
    env = ble_commands.add_parser(
        "env", help="start a private D-Bus with BlueZoo; prints its address; runs until stopped (Ctrl-C)"
    )
    env.add_argument("--address", action="append", metavar="MAC", help="adapter MAC address (repeat; default two)")
    env.add_argument("--duration", type=float, metavar="SECONDS", help="stop after this many seconds")

    trace = commands.add_parser("trace", help="bus traces")
    trace_commands = trace.add_subparsers(dest="trace_command", metavar="ACTION")
    trace_commands.required = True
    show = trace_commands.add_parser("show", help="print a trace file readably")
    show.add_argument("file", metavar="FILE")

    bench = commands.add_parser("bench", help="benchmarks")
    bench_kinds = bench.add_subparsers(dest="bench", metavar="BENCHMARK")
    bench_kinds.required = True
    codecs = bench_kinds.add_parser("codecs", help="decoder speed on CPython; heap use on MicroPython")
    codecs.add_argument("--seconds", type=float, default=0.5, help="time per CPython measurement (default 0.5)")
    codecs.add_argument("--no-micropython", action="store_true", help="skip the MicroPython (WebAssembly) measurements")
    codecs.add_argument("--json", action="store_true", help="print the results as one JSON object")
    wires = bench_kinds.add_parser("wires", help="RS485 bus throughput against theory; BLE frame latency over BlueZoo")
    wires.add_argument("--json", action="store_true", help="print the results as one JSON object")
    des_bench = bench_kinds.add_parser("des", help="simulated seconds per wall second of the des target")
    des_bench.add_argument("--seconds", type=float, default=600.0, help="simulated seconds per bench (default 600)")
    des_bench.add_argument("--json", action="store_true", help="print the results as one JSON object")
    proxy = bench_kinds.add_parser(
        "proxy", help="vbms run's reply latency and data age with 4, 8 and 15 RS485 batteries"
    )
    proxy.add_argument("--seconds", type=float, default=20.0, help="run time per battery count (default 20)")
    proxy.add_argument("--json", action="store_true", help="print the results as one JSON object")
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "decode":
        from . import decode

        return decode.run(args)
    if args.command == "demo":
        from . import demo

        return demo.run(args)
    if args.command == "sim":
        from . import sim

        return sim.run(args)
    if args.command == "run":
        from . import runtime

        return runtime.run(args)
    if args.command == "ble":
        from . import ble_cli

        return ble_cli.run(args)
    if args.command == "trace":
        from . import trace

        try:
            return 1 if trace.show(args.file, sys.stdout) else 0
        except OSError as error:
            sys.stderr.write("vbms trace show: cannot read %s: %s\n" % (args.file, error.strerror))
            return 2
    if args.command == "bench":
        from . import benchmarks

        if args.bench == "wires":
            return benchmarks.run_wires(args)
        if args.seconds <= 0:
            parser.error("--seconds must be positive")
        if args.bench == "proxy":
            return benchmarks.run_proxy(args)
        if args.bench == "des":
            return benchmarks.run_des(args)
        if args.seconds <= 0:
            parser.error("--seconds must be positive")
        return benchmarks.run_codecs(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
