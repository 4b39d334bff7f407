"""`vbms fuzz replay FILE`: does a finding still fail?

- A decoder finding (`vbms fuzz decoders`, hil/fuzz/findings.py) runs its input through its
  target again, in this process.
- A wire finding on the inverter port (`vbms fuzz wire`) sends the frames of its script again,
  at their recorded times from the first, to a fresh bench on the chosen target, and checks
  every reply as the campaign does (hil/fuzz/wire.py WireCampaign):
    sim          vbms run on the PTY bench,
    micropython  the firmware on the MicroPython unix port on the PTY bench,
    des          the proxy in this process on the simulated-time bench (hil/des.py), its
                 DEYE model kept off the line: deterministic, and a crash shows its traceback,
    esp32        a board: the one the finding's bench names in [esp32], else a virtual board.
- A wire finding on the bms or ble port runs its campaign again from the same seed, up to as
  many frames as had been sent when it was found (sim, micropython or esp32: each needs real
  time and a bench's BMS line or BLE peripherals).  The grammar then draws the
  same choices, but the device's timing is the host's, so such a replay is a likely, not a
  certain, reproduction.

The finding still fails when its problem (crash, unexpected-reply, unanswered, ...) shows
again; any other problem is reported too.  Exit status: 0 passes now, 1 fails, 2 the file
cannot be used.
"""

from __future__ import annotations

import io
import json
import sys
import tempfile
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO, cast

from . import grammar
from .wire import WireCampaign, WireError, load_bench

if TYPE_CHECKING:
    import argparse

    import simpy

    from simulators.jk.ble import JkBlePeripheral

    from ..benchfile import Bench
    from .checks import Evidence

TARGETS = ("des", "sim", "micropython", "esp32")
DUT_OF_TARGET = {"sim": "vbms", "micropython": "micropython", "des": "des", "esp32": "esp32"}


class _Crashed:
    """What a crashed in-process core looks like to the campaign's liveness check (a dead process)."""

    def __init__(self) -> None:
        self.returncode: int | None = None
        self.error: str | None = None  # the core's traceback

    def poll(self) -> int | None:
        return self.returncode


class DesLine:
    """The replay's drop on the des inverter bus, with the surface of hil/fuzz/wire.py Line: write() puts a
    frame on the bus now, read(timeout_s) lets simulated time pass until the device under test's bytes
    arrive or the time is up."""

    NAME = "fuzz"

    def __init__(self, world: DesWorld) -> None:
        self.world = world
        bus = world.bench_world.inverter_bus
        self.bus = bus
        self.char_s = grammar.char_s(bus.baud)
        self.t35_s = grammar.silence_s(bus.baud)
        self.free_s = 0.0
        self.last_rx_s = 0.0
        self.evidence: Evidence | None = None
        self._rx: list[tuple[float, bytes]] = []
        self._arrival: simpy.Event | None = None
        bus.add_endpoint(self.NAME, self.arrived)

    def arrived(self, data: bytes, end_s: float) -> None:
        self._rx.append((end_s, bytes(data)))
        self.last_rx_s = end_s
        if self._arrival is not None and not self._arrival.triggered:
            self._arrival.succeed()

    def write(self, data: bytes) -> float:
        now = self.world.env.now
        self.bus.send(self.NAME, data)
        self.free_s = max(now, self.free_s) + len(data) * self.char_s
        return now

    def read(self, timeout_s: float) -> list[tuple[float, bytes]]:
        env = self.world.env
        if not self._rx and timeout_s > 0 and self.world.dut_process.returncode is None:
            self._arrival = env.event()
            try:
                env.run(until=env.any_of([self._arrival, env.timeout(timeout_s)]))
            except Exception:  # noqa: BLE001 - the core raised inside an input: that is the finding
                self.world.dut_process.returncode = 1
                self.world.dut_process.error = traceback.format_exc()
            self._arrival = None
        if self.evidence is not None:
            self.evidence.sample(env.now)
        chunks, self._rx = self._rx, []
        return chunks

    def close(self) -> None:
        pass


class DesWorld:
    """The des bench (hil/des.py) with the surface of a Simulation that a WireCampaign uses.  Its DEYE
    model is cut off the inverter bus (a disconnect fault: it neither sends nor hears), and the replay
    is a drop of its own on that bus."""

    def __init__(self, bench: Bench) -> None:
        from ..des import TOKEN, DesBench
        from ..wires.faults import Fault

        self.bench = bench
        self.bench_world = DesBench(bench)
        self.env = self.bench_world.env
        self.bench_world.inverter_bus.add_fault(Fault("disconnect", source="deye"))
        self.batteries = self.bench_world.batteries
        self.devices = self.bench_world.devices
        self.trace = self.bench_world.trace
        self.peripherals: dict[int, JkBlePeripheral] = {}
        self.dut_process = _Crashed()
        self.dut_log = None
        self.dut_token = TOKEN
        self.line = DesLine(self)

    def rpc(
        self, method: str, params: dict[str, Any] | None = None, token: str | None = None, timeout_s: float = 60
    ) -> tuple[int, Any]:
        if self.dut_process.returncode is not None:
            # DesLine.read sets the error with the returncode
            raise OSError("the core raised: %s" % cast(str, self.dut_process.error).strip().splitlines()[-1])
        result, error = self.bench_world.rpc(method, params, token, timeout_s)
        return (200, result) if error is None else (400, {"error": error})

    def stop(self) -> None:
        pass


def des_world(bench: Bench) -> DesWorld:
    return DesWorld(bench)


# problems that are one failure seen from different sides (a garbled reply and an unexpected one, say)
FAMILIES = {
    "wrong-reply": "wrong reply", "wrong-values": "wrong reply", "wrong-identity": "wrong reply",
    "unexpected-reply": "wrong reply", "bad-crc-reply": "wrong reply", "unanswered": "unanswered",
    "stale-data": "stale data", "crash": "crash", "dut-error": "crash",
}  # fmt: skip


def still_fails(document: dict[str, Any], problems: list[str]) -> bool:
    family = FAMILIES.get(document["problem"], document["problem"])
    return any(FAMILIES.get(problem, problem) == family for problem in problems)


def replay_wire(document: dict[str, Any], target: str, out: TextIO) -> tuple[list[str], WireCampaign]:
    """Run a wire finding again on target; returns the problems seen (kinds)."""
    bench = load_bench(document["bench"])
    port = document["port"]
    if port != "inverter" and target == "des":
        raise WireError("a %s finding replays on sim, micropython or esp32: its campaign stands in for BMS modules "
                        "or mangles BLE notifications in real time" % port)  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="vbms-replay-") as directory:
        dut = "vbms" if target == "des" else DUT_OF_TARGET[target]
        frames = document.get("frames_at") or 1
        campaign = WireCampaign(bench, document["bench"], port, dut, frames, document.get("seed", 1), directory,
                                out=out, command_line="vbms fuzz replay", stale_s=document.get("stale_s"))  # fmt: skip
        try:
            if target == "des":
                world = des_world(bench)
                campaign.attach(world, world.line, clock=lambda: world.env.now, realtime=False)
                world.line.evidence = campaign.evidence
            else:
                campaign.start()
            campaign.warm_up()
            if port == "inverter":
                campaign.replay(document["script"])
            else:
                campaign.run()
        finally:
            campaign.stop()
        crashed = cast(_Crashed, campaign.sim.dut_process) if target == "des" else None  # the DesWorld's
        if crashed is not None and crashed.error:
            out.write(crashed.error)
        return [finding["problem"] for finding in campaign.findings], campaign


def run_cli(args: argparse.Namespace) -> int:
    path = Path(args.file)
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        sys.stderr.write("vbms fuzz replay: cannot read %s: %s\n" % (path, error))
        return 2
    if not isinstance(document, dict):
        sys.stderr.write("vbms fuzz replay: %s is not a finding (a JSON object)\n" % path)
        return 2
    if document.get("kind") == "wire":
        return _run_wire(document, args)
    if "input_hex" in document and "target" in document:
        return _run_decoder(path)
    sys.stderr.write("vbms fuzz replay: %s is neither a wire finding (kind \"wire\") nor a decoder finding "
                     "(target, input_hex)\n" % path)  # fmt: skip
    return 2


def _run_decoder(path: Path) -> int:
    from . import findings, targets

    try:
        document = findings.load(path)
    except ValueError as error:
        sys.stderr.write("vbms fuzz replay: %s\n" % error)
        return 2
    if document["target"] not in targets.TARGETS:
        sys.stderr.write("vbms fuzz replay: unknown decoder target %r; valid targets: %s\n"
                         % (document["target"], ", ".join(targets.TARGETS)))  # fmt: skip
        return 2
    try:
        findings.replay(document)
    except Exception as error:  # noqa: BLE001 - whatever the target raises is the answer
        sys.stdout.write("still fails: decoder target %s: %s: %s\n%s" % (
            document["target"], type(error).__name__, error, traceback.format_exc()))  # fmt: skip
        return 1
    sys.stdout.write("passes now: decoder target %s accepts the input (%d bytes) as it must\n"
                     % (document["target"], len(document["input_hex"]) // 2))  # fmt: skip
    return 0


def _run_wire(document: dict[str, Any], args: argparse.Namespace) -> int:
    for key in ("port", "bench", "problem", "script"):
        if key not in document:
            sys.stderr.write("vbms fuzz replay: a wire finding needs %r\n" % key)
            return 2
    target = args.target or {"micropython": "micropython", "esp32": "esp32"}.get(str(document.get("dut")), "sim")
    out = io.StringIO()
    try:
        problems, campaign = replay_wire(document, target, out)
    except WireError as error:
        sys.stderr.write("vbms fuzz replay: %s\n" % error)
        return 2
    sys.stdout.write(out.getvalue())
    sys.stdout.write("replayed %s finding %r (%s) on %s: %d frames sent, %d valid requests\n" % (
        document["port"], document["problem"], document.get("detail", "").splitlines()[0][:160] if document.get(
            "detail") else "", target, campaign.stats.frames, campaign.stats.valid))  # fmt: skip
    if still_fails(document, problems):
        sys.stdout.write("still fails: %s\n" % ", ".join(sorted(set(problems))))
        return 1
    if problems:
        sys.stdout.write("fails differently now: %s\n" % ", ".join(sorted(set(problems))))
        return 1
    sys.stdout.write("passes now\n")
    return 0
