"""The `vbms` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from vbms_core.dissect import PROTOCOLS
from vbms_core.jk_frames import LAYOUTS

if TYPE_CHECKING:
    from typing import TypeAlias

    # what add_subparsers() returns: the parsers of one level of commands (not subscriptable at run time)
    Subcommands: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]


def build_parser() -> argparse.ArgumentParser:
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
        description="Start a bench. On a terminal it shows its endpoints (the device under test's dashboard and "
        "token, the bench control page, the ports), the inverter's Li-BMS table and the bus counters; with --json, "
        "--headless or when its output is not a terminal it prints one JSON line with every endpoint. The bench "
        "control (a page and an HTTP API on 127.0.0.1, docs/bench.md) changes the running bench.",
    )
    sim.add_argument("--bench", metavar="FILE", help="bench file (TOML); default: the embedded default bench")
    sim.add_argument("--headless", action="store_true", help="no live table: JSON status lines instead")
    sim.add_argument(
        "--json", action="store_true", help="print the endpoints as one JSON line, on a terminal too (the live "
        "table follows)",
    )  # fmt: skip
    sim.add_argument(
        "--control-port", type=_port, default=0, metavar="PORT",
        help="the bench control's port on 127.0.0.1 (default 0: a free one, printed with the endpoints)",
    )  # fmt: skip
    sim.add_argument(
        "--replay", metavar="TRACE", help="do the operator actions recorded in TRACE (a --trace file) again, at the "
        "same times",
    )  # fmt: skip
    sim.add_argument("--duration", type=float, metavar="SECONDS", help="stop after this many seconds")
    sim.add_argument("--external", choices=("deye",), help="leave the inverter side open for an external master")
    sim.add_argument("--trace", metavar="FILE", help="write every bus frame to FILE (JSON lines)")
    sim.add_argument("--no-ble", action="store_true", help="leave the BLE batteries out")
    sim.add_argument(
        "--dut",
        choices=("vbms", "micropython", "open"),
        default="vbms",
        help="start vbms run between the devices (default), the firmware on the MicroPython unix port, "
        "or leave its ports open",
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
    run.add_argument(
        "--http-timeout", type=_positive(float, "--http-timeout"), default=10.0, metavar="SECONDS",
        help="a request not read whole within this time gets a 400 and its connection closes (default 10)",
    )  # fmt: skip

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

    report = commands.add_parser(
        "report",
        help="one HTML page from a run: plots per battery, the inverter's warnings, the failing scenarios",
        description="Write one self-contained HTML page from a bus trace (vbms sim --trace FILE) and the scenario "
        "reports (pytest --junitxml / --cucumberjson): per battery SOC, current, pack voltage and data age as the "
        "inverter saw them, its communication warnings on the same time axis, and each failing scenario with its "
        "decoded bus trace. Exit status 2 when an input cannot be used.",
    )
    report.add_argument(
        "run", nargs="+", metavar="RUN", help="a trace file (JSON lines), a JUnit XML or Cucumber JSON report, "
        "or a directory holding them (*.jsonl, *.xml, *.json)",
    )  # fmt: skip
    report.add_argument(
        "--out", "-o", metavar="FILE.html", help="where to write the page (default: the first RUN with .html, "
        "or report.html inside a RUN directory)",
    )  # fmt: skip

    bench = commands.add_parser("bench", help="benchmarks")
    bench_kinds = bench.add_subparsers(dest="bench", metavar="BENCHMARK")
    bench_kinds.required = True
    codecs = bench_kinds.add_parser("codecs", help="decoder speed on CPython; heap use on MicroPython")
    codecs.add_argument(
        "--seconds", type=_positive(float, "--seconds"), default=0.5, help="time per CPython measurement (default 0.5)"
    )
    codecs.add_argument("--no-micropython", action="store_true", help="skip the MicroPython (WebAssembly) measurements")
    codecs.add_argument("--json", action="store_true", help="print the results as one JSON object")
    wires = bench_kinds.add_parser(
        "wires", help="RS485 bus throughput, gaps inside frames and first-try misses; BLE frame latency over BlueZoo"
    )
    wires.add_argument("--json", action="store_true", help="print the results as one JSON object")
    wires.add_argument(
        "--requests", type=_count("--requests"), default=10_000, metavar="N",
        help="valid requests for the first-try miss count (default 10000, about 13 minutes; 0 skips it)",
    )  # fmt: skip
    des_bench = bench_kinds.add_parser("des", help="simulated seconds per wall second of the des target")
    des_bench.add_argument(
        "--seconds", type=_positive(float, "--seconds"), default=600.0, help="simulated seconds per bench (default 600)"
    )
    des_bench.add_argument(
        "--fidelity", choices=("fast", "full", "both"), default="both",
        help="the des target's fidelity to measure (default both; hil/des.py says what fast leaves out)",
    )  # fmt: skip
    des_bench.add_argument(
        "--repeat", type=_positive(int, "--repeat"), default=3,
        help="runs per bench, the median is reported (default 3)",
    )  # fmt: skip
    des_bench.add_argument("--json", action="store_true", help="print the results as one JSON object")
    proxy = bench_kinds.add_parser(
        "proxy", help="vbms run's reply latency and data age with 4, 8 and 15 RS485 batteries"
    )
    proxy.add_argument(
        "--seconds", type=_positive(float, "--seconds"), default=20.0, help="run time per battery count (default 20)"
    )
    proxy.add_argument("--json", action="store_true", help="print the results as one JSON object")
    add_fuzz_parser(commands)
    add_firmware_parser(commands)
    add_farm_parser(commands)
    return parser


def _positive(kind: Callable[[str], float], what: str) -> Callable[[str], float]:
    """An argparse type: a positive int or a positive finite float; a wrong one exits 2 saying so."""
    number = "a whole number" if kind is int else "a number"

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError("%s must be %s, not %r" % (what, number, text)) from None
        if not 0 < value < float("inf"):
            raise argparse.ArgumentTypeError("%s must be positive, not %s" % (what, text))
        return value

    return parse


def _count(what: str) -> Callable[[str], int]:
    """An argparse type: a whole number >= 0; a wrong one exits 2 saying so."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError("%s must be a whole number, not %r" % (what, text)) from None
        if value < 0:
            raise argparse.ArgumentTypeError("%s must be 0 or more, not %s" % (what, text))
        return value

    return parse


def _port(text: str) -> int:
    """An argparse type: a TCP port, 0 for a free one."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("a port is a whole number, not %r" % text) from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError("a port is within 0..65535, not %d" % port)
    return port


def add_fuzz_parser(commands: Subcommands) -> None:
    fuzz = commands.add_parser(
        "fuzz", help="fuzzing: coverage-guided campaigns against the decoders, live campaigns against a device"
    )
    fuzz_kinds = fuzz.add_subparsers(dest="fuzz_command", metavar="CAMPAIGN")
    fuzz_kinds.required = True
    decoders = fuzz_kinds.add_parser(
        "decoders",
        help="every decoder, framer and reassembler of vbms_core, and the config validator, under atheris",
        description="Coverage-guided campaigns (atheris/libFuzzer), one worker process per target. Each input must "
        "decode or raise RemoteProtocolError (the configuration: ConfigError), consistently, within the CPU and "
        "memory limits. Prints runs, executions per second, edges covered and findings per target; a finding is "
        "minimized and saved as a regression file. Exit status: 0 clean, 1 a finding, 2 bad arguments, 3 a worker "
        "that failed.",
    )
    decoders.add_argument(
        "--target", action="append", metavar="NAME", help="fuzz only this target (repeat for several; default: all)"
    )
    budget = decoders.add_mutually_exclusive_group()
    budget.add_argument("--runs", type=_positive(int, "--runs"), metavar="N", help="inputs per target")
    budget.add_argument(
        "--seconds", type=_positive(float, "--seconds"), metavar="S", help="time per target (default 10)"
    )
    decoders.add_argument(
        "--jobs", type=_positive(int, "--jobs"), default=1, metavar="N", help="targets fuzzed at once (default 1)"
    )
    decoders.add_argument(
        "--findings", default="fuzz-findings", metavar="DIR", help="where findings are saved (default fuzz-findings)"
    )
    decoders.add_argument(
        "--corpus", metavar="DIR", help="keep each target's corpus in DIR/TARGET between campaigns (default: none)"
    )
    decoders.add_argument("--seed", type=int, metavar="N", help="libFuzzer's random seed (default: random)")
    decoders.add_argument("--list", action="store_true", help="list the targets and what each checks, then exit")
    add_fuzz_wire_parsers(fuzz_kinds)


def add_fuzz_wire_parsers(fuzz_kinds: Subcommands) -> None:
    wire = fuzz_kinds.add_parser(
        "wire",
        help="a live campaign: malformed traffic on one port of a device under test on a simulated bench",
        description="Starts the bench with its inverter side open and the device under test between the devices, "
        "then sends malformed traffic on one port, interleaved with valid requests on the inverter bus after a "
        "proper t3.5 silence: inverter (malformed Modbus requests), bms (the campaign answers in some modules' "
        "place: foreign, doubled, garbled, truncated, late replies), ble (bit-flipped, dropped, repeated, "
        "out-of-order JK notifications). Checks every reply (CRC, unit, function, exception code, values of the "
        "right battery, never older than app.stale_s), that every valid request is answered, and that the device "
        "stays alive. Prints the numbers; findings are saved as files that `vbms fuzz replay` reproduces. Exit "
        "status: 0 clean, 1 findings, 2 bad arguments, 3 the bench did not come up.",
    )
    wire.add_argument("--bench", metavar="FILE", help="bench file (TOML); default: the embedded default bench")
    wire.add_argument("--port", required=True, choices=("inverter", "bms", "ble"), help="the port to fuzz")
    wire.add_argument(
        "--dut", choices=("vbms", "micropython", "esp32"), default="vbms",
        help="vbms run (default), the firmware on the MicroPython unix port, or a board: the one the bench's "
        "[esp32] names, else a virtual board",
    )  # fmt: skip
    wire.add_argument(
        "--frames", type=_positive(int, "--frames"), default=2000, metavar="N",
        help="malformed frames to send (bms: malformed replies, ble: mangled notification sends; default 2000)",
    )  # fmt: skip
    wire.add_argument("--seed", type=int, default=1, metavar="N", help="the grammar's random seed (default 1)")
    wire.add_argument(
        "--stale-s", type=_positive(int, "--stale-s"), metavar="S",
        help="set the device under test's app.stale_s first (2..600; default: leave it): a shorter limit makes "
        "the staleness checks of the bms and ble campaigns come sooner",
    )  # fmt: skip
    wire.add_argument(
        "--findings", default="fuzz-findings", metavar="DIR", help="where findings are saved (default fuzz-findings)"
    )
    replay = fuzz_kinds.add_parser(
        "replay",
        help="reproduce a finding (of fuzz wire or fuzz decoders) and say whether it still fails",
        description="A decoder finding runs its input through its target again. A wire finding on the inverter "
        "port sends its recorded frames again, with their timing, to a fresh bench and checks the replies the "
        "same way; a bms or ble finding runs its campaign again from its seed up to where it was found. Exit "
        "status: 0 it passes now, 1 it still fails, 2 the file cannot be used.",
    )
    replay.add_argument("file", metavar="FILE", help="a finding (JSON)")
    replay.add_argument(
        "--target", choices=("des", "sim", "micropython", "esp32"),
        help="where to replay a wire finding (default: where it was found; sim for one from vbms run)",
    )  # fmt: skip


def add_firmware_parser(commands: Subcommands) -> None:
    firmware = commands.add_parser("firmware", help="the MicroPython firmware: build, deploy, flash, run on the host")
    actions = firmware.add_subparsers(dest="firmware_command", metavar="ACTION")
    actions.required = True
    build = actions.add_parser(
        "build",
        help="compile the firmware for the ESP32 (mpy-cross), gzip the web files, write manifest.py; print sizes",
        description="Writes a ready-to-copy tree (every module compiled with mpy-cross for xtensawin, the web files "
        "gzipped) and a manifest.py for freezing the modules into a MicroPython image, then prints the sizes.",
    )
    build.add_argument(
        "--out", default="build/firmware", metavar="DIR", help="output directory (default build/firmware)"
    )
    deploy = actions.add_parser("deploy", help="copy a built tree to a board running MicroPython (mpremote)")
    deploy.add_argument("--port", required=True, metavar="PORT", help="the board's serial port, e.g. /dev/ttyUSB0")
    deploy.add_argument(
        "--tree", default="build/firmware/tree", metavar="DIR", help="the built tree (default build/firmware/tree)"
    )
    deploy.add_argument(
        "--frozen", action="store_true", help="the board's image has the modules frozen in: copy only boot, main, web"
    )
    deploy.add_argument(
        "--wifi-ssid", metavar="SSID", help="also write this Wi-Fi network into the board's device.json"
    )
    deploy.add_argument("--wifi-password", default="", metavar="PASSWORD", help="its password")
    flash = actions.add_parser("flash-micropython", help="write a MicroPython image to a fresh ESP32 (esptool)")
    flash.add_argument("--port", required=True, metavar="PORT", help="the board's serial port")
    flash.add_argument("--image", required=True, metavar="FILE", help="the MicroPython .bin for the ESP32")
    flash.add_argument("--baud", type=int, default=460800, help="esptool's baud rate (default 460800)")
    host = actions.add_parser(
        "host",
        help="run the firmware on the MicroPython unix port (stand-ins for machine, network, bluetooth)",
        description="The firmware as a device under test on this computer: its UARTs on the given ports, its "
        "Bluetooth through a bleak bridge, its flash the config file's directory. Runs until stopped.",
    )
    host.add_argument("--config", required=True, metavar="FILE", help="configuration (the JSON vbms run takes)")
    host.add_argument("--bms-port", metavar="PORT", help="the port of the BMS-side UART")
    host.add_argument("--inv-port", metavar="PORT", help="the port of the inverter-side UART")
    host.add_argument("--ble-adapter", metavar="HCI", help="Bluetooth adapter (BlueZoo on DBUS_SYSTEM_BUS_ADDRESS)")
    host.add_argument("--http-host", default="127.0.0.1", help="address the web server listens on (default 127.0.0.1)")
    host.add_argument("--http-port", type=int, default=8080, help="web server port (default 8080)")
    host.add_argument("--tree", metavar="DIR", help="run a built tree (vbms firmware build) instead of the sources")


def add_farm_parser(commands: Subcommands) -> None:
    """`vbms farm`: bench farms on labgrid (docs/farm.md; hil/farm/cli.py)."""
    farm = commands.add_parser(
        "farm",
        help="bench farms (labgrid): places, their state, tags and who holds them",
        description="Benches as labgrid places (docs/farm.md). Needs the farm extra (pip install -e '.[farm]'). "
        "The coordinator: --coordinator, else LG_COORDINATOR, else 127.0.0.1:20408. Exit status: 0 done, 1 the "
        "coordinator refused or cannot be reached, 2 bad arguments.",
    )
    actions = farm.add_subparsers(dest="farm_command", metavar="ACTION")
    actions.required = True
    coordinator = argparse.ArgumentParser(add_help=False)
    coordinator.add_argument("--coordinator", metavar="HOST:PORT", help="the labgrid coordinator")
    places = actions.add_parser("places", parents=[coordinator], help="every place: idle, reserved or held, by whom")
    places.add_argument("--json", action="store_true", help="one JSON object")
    reservations = actions.add_parser("reservations", parents=[coordinator], help="the reservations")
    reservations.add_argument("--json", action="store_true", help="a JSON list")
    create = actions.add_parser(
        "create", parents=[coordinator], help="make a place (or add to one): its resources and tags"
    )
    create.add_argument("name", metavar="NAME")
    create.add_argument(
        "--match", action="append", metavar="EXPORTER/GROUP/*",
        help="the resources of the place: an exporter's group (repeatable)",
    )  # fmt: skip
    create.add_argument(
        "--tags", metavar="KEY=VALUE[,...]",
        help="what the bench can do, one key per capability: board=esp32,inverter=deye,bms_byd=1,jk_ble=1",
    )  # fmt: skip
    create.add_argument("--comment", help="a note shown with the place")
    release = actions.add_parser(
        "release", parents=[coordinator], help="free a place (after a run that was killed before it could)"
    )
    release.add_argument("name", metavar="NAME")
    release.add_argument("--kick", action="store_true", help="free it even when another host or user holds it")
    virtual = actions.add_parser(
        "virtual", help="virtual boards as places of a coordinator on 127.0.0.1, until Ctrl-C (needs ser2net)"
    )
    virtual.add_argument("--places", type=_positive(int, "--places"), default=2, metavar="N", help="default 2")
    virtual.add_argument("--prefix", default="virtual", help="place names PREFIX-a, PREFIX-b, ... (default virtual)")
    virtual.add_argument("--json", action="store_true", help="print the coordinator and places as one JSON line")


def main(argv: Sequence[str] | None = None) -> int:
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
        from .host import runtime

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
    if args.command == "report":
        from . import report

        return report.run(args)
    if args.command == "farm":
        from .farm import cli as farm_cli

        return farm_cli.run(args)
    if args.command == "firmware":
        from . import firmware

        return firmware.run_cli(args)
    if args.command == "fuzz":
        if args.fuzz_command == "wire":
            from .fuzz import wire

            return wire.run_cli(args)
        if args.fuzz_command == "replay":
            from .fuzz import replay

            return replay.run_cli(args)
        from .fuzz import runner

        return runner.run_cli(args)
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
