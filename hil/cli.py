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

    bench = commands.add_parser("bench", help="benchmarks")
    bench_kinds = bench.add_subparsers(dest="bench", metavar="BENCHMARK")
    bench_kinds.required = True
    codecs = bench_kinds.add_parser("codecs", help="decoder speed on CPython; heap use on MicroPython")
    codecs.add_argument("--seconds", type=float, default=0.5, help="time per CPython measurement (default 0.5)")
    codecs.add_argument("--no-micropython", action="store_true", help="skip the MicroPython (WebAssembly) measurements")
    codecs.add_argument("--json", action="store_true", help="print the results as one JSON object")
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
    if args.command == "bench":
        from . import bench

        if args.seconds <= 0:
            parser.error("--seconds must be positive")
        return bench.run_codecs(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
