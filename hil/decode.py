"""`vbms decode`: frames in hex (arguments, a file or a capture) to JSON lines."""

import argparse
import json
import sys
from collections.abc import Iterable, Sequence
from typing import TextIO

from vbms_core import jk_ble
from vbms_core.compat import hexlify, unhexlify
from vbms_core.dissect import PROTOCOLS, dissect
from vbms_core.errors import RemoteProtocolError
from vbms_core.modbus import NEED_DATA


class InputError(Exception):
    """Bad command-line input: says what was wrong and what to do."""


def read_inputs(hex_args: Sequence[str], file_path: str | None) -> list[tuple[str, bytes]]:
    """(label, bytes) for each frame given; raises InputError on bad hex.

    A file holds one frame per line: plain hex (spaces allowed), or a JSON
    object with a "hex" field (a vbms trace line).  Blank lines and lines
    starting with # are skipped.
    """
    items = []
    for index, text in enumerate(hex_args):
        items.append(("arg %d" % (index + 1), text))
    if file_path is not None:
        try:
            handle = sys.stdin if file_path == "-" else open(file_path, encoding="utf-8")
        except OSError as error:
            raise InputError("cannot read %s: %s" % (file_path, error.strerror)) from error
        with handle:
            for number, line in enumerate(handle, 1):
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                if line.startswith("{"):
                    try:
                        record = json.loads(line)
                    except ValueError as error:
                        raise InputError("%s line %d: not valid JSON (%s)" % (file_path, number, error)) from error
                    if not isinstance(record, dict) or not isinstance(record.get("hex"), str):
                        raise InputError('%s line %d: a JSON line needs a "hex" field' % (file_path, number))
                    line = record["hex"]
                items.append(("%s line %d" % (file_path, number), line))
    frames = []
    for label, text in items:
        try:
            frames.append((label, unhexlify(text)))
        except ValueError as error:
            raise InputError("%s: %s: %r (give frames as hex, e.g. 0011C1BC)" % (label, error, text[:40])) from error
    if not frames:
        raise InputError("no frames given: pass hex arguments or --file FILE")
    return frames


def decode_frames(protocol: str, frames: Iterable[tuple[str, bytes]], layout: str | None, out: TextIO) -> int:
    """Dissect each frame; returns the number that failed."""
    failures = 0
    for label, raw in frames:
        try:
            result = dissect(protocol, raw, layout)
        except RemoteProtocolError as error:
            failures += 1
            result = {"error": str(error), "protocol": protocol, "input": label, "hex": hexlify(raw[:1024])}
        out.write(json.dumps(result) + "\n")
    return failures


def decode_stream(frames: Iterable[tuple[str, bytes]], layout: str | None, out: TextIO, show_junk: bool) -> int:
    """Feed every frame as a notification chunk through the JK reassembler."""
    reassembler = jk_ble.JkReassembler()
    failures = 0

    def drain() -> None:
        nonlocal failures
        while True:
            event = reassembler.next_event()
            if event is NEED_DATA:
                return
            if isinstance(event, jk_ble.JkFrame):
                try:
                    result = dissect("jk-ble", event.raw, layout)
                except RemoteProtocolError as error:
                    failures += 1
                    result = {"error": str(error), "protocol": "jk-ble", "hex": hexlify(event.raw)}
                out.write(json.dumps(result) + "\n")
            elif show_junk:
                out.write(
                    json.dumps({"junk_bytes": event.length, "kinds": event.kinds, "hex": hexlify(event.raw)}) + "\n"
                )

    for _, raw in frames:
        reassembler.feed(raw)
        drain()
    reassembler.flush()
    drain()
    return failures


def run(args: argparse.Namespace, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    if args.protocol not in PROTOCOLS:
        err.write("vbms decode: unknown protocol %r; choose one of %s\n" % (args.protocol, ", ".join(PROTOCOLS)))
        return 2
    if args.stream and args.protocol != "jk-ble":
        err.write("vbms decode: --stream reassembles BLE notifications; it works with --protocol jk-ble only\n")
        return 2
    try:
        frames = read_inputs(args.hex, args.file)
    except InputError as error:
        err.write("vbms decode: %s\n" % error)
        return 2
    layout = None if args.layout == "auto" else args.layout
    if args.stream:
        failures = decode_stream(frames, layout, out, args.show_junk)
    else:
        failures = decode_frames(args.protocol, frames, layout, out)
    return 1 if failures else 0
