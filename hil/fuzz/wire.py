"""`vbms fuzz wire`: live campaigns against a running device under test on a simulated bench.

The bench (hil/sim.py Simulation) runs with its inverter side open; the campaign is the
master on the inverter bus, and for --port bms also an extra device on the BMS bus, for
--port ble the hand that mangles the JK peripherals' notifications.  With --dut esp32 the
device under test is a board (hil/fuzz/board.py: a real one as the bench's [esp32] names
it, else the virtual board): the campaign is the master on its inverter adapter, and for
--port bms a tap on its battery adapter beside the simulated modules (hil/shared_port.py
PortTap).  On bms and ble, a battery side quiet for HAND_IDLE_S is a finding.

  inverter  bursts of malformed frames (hil/fuzz/grammar.py InverterGrammar), each burst
            ending with valid requests after a proper t3.5 silence;
  bms       the campaign stands in for some of the BMS modules (each set silent) and
            answers the device under test's polls of their addresses with valid, doubled,
            foreign, garbled, truncated, late replies (BmsReplyGrammar), while it reads
            every unit on the inverter side;
  ble       every notification the JK modules send is mangled or passed (NotificationMangler),
            while it reads every unit on the inverter side.

The checks, on every reply on the inverter bus:
- its CRC is right, and it answers a frame that a correct slave answers (grammar.expect),
  with the unit, function and length that frame asks for; for an exception, the code of
  the reference; so a frame with a bad CRC is never answered;
- register values are those of the unit's own battery model (pack voltage, SOC, highest
  and lowest cell, within the tolerances of the scenarios), no other slot's model is
  closer, reserved registers read 0 and the charge voltage is the configured one;
  an identity has the reference's layout and stays the same for a unit;
- data is never older than app.stale_s: a unit whose module has delivered nothing
  usable for longer (the evidence below) must be silent;
- every valid request, and every frame a correct slave answers, that follows a proper
  silence is answered, when the unit's module has delivered a reading within the
  staleness limit (less margins);
- after each burst the device under test is alive: its process runs and RPC answers,
  and its log holds no Python traceback (a board: RPC answers, and its console shows
  no traceback and no new ready line).

Evidence of fresh data comes from the simulated devices, never from the device under
test: a BMS module's request counter (it answers every poll of its address), a JK
peripheral's notification counter (it counts only what a subscribed central gets), and
the campaign's own valid replies and intact notifications (hil/fuzz/checks.py, with the
value checks; hil/fuzz/line.py is the campaign's end of a bus, hil/fuzz/stand_in.py its
hands on the battery side).

A problem is a finding: a JSON file with the bytes sent and received and their timing
(the recent script), the port, the bench, the device under test and the seed, which
`vbms fuzz replay` reproduces.
"""

from __future__ import annotations

import collections
import hashlib
import json
import sys
import threading
import time
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TextIO

from . import grammar
from .checks import Checker, Evidence, delivered_count
from .line import Line, ReplySplitter

if TYPE_CHECKING:
    import argparse
    import random

    from simulators.battery import BatteryModel
    from simulators.byd.device import BydModule
    from simulators.jk.ble import JkBlePeripheral
    from simulators.jk.device import JkBms

    from ..benchfile import Bench
    from ..trace import Trace
    from .board import ConsoleLog
    from .stand_in import BleMangling, BmsStandIn

BURST_FRAMES = (10, 60)  # malformed frames per burst, drawn
GAP_MARGIN_S = 0.003  # past t3.5 between frames that stand alone
SILENCE_S = 0.02  # the proper silence before a request whose reply is awaited
REPLY_TIMEOUT_S = 0.5  # past the reply's own wire time
SETTLE_S = 0.004  # after a reply, before the next frame
REPEAT_SILENCE_S = 0.25  # before the repeat of a request that went unanswered
WARM_UP_S = 120.0
SCRIPT_KEEP = 4000  # events of the script kept for a finding
FINDING_EVENTS = 600  # events written into a finding at most
PROBE_PERIOD_S = 0.05  # bms/ble: pause between two valid requests on the inverter side
HAND_IDLE_S = 60.0  # bms/ble: the battery side quiet this long (no poll, no notification) ends the campaign
PORTS = ("inverter", "bms", "ble")
DUTS = ("vbms", "micropython", "esp32")


class WireError(Exception):
    """The campaign cannot run (bench, port, device under test): the message says what to do."""


class DutProcess(Protocol):
    """What the liveness checks ask of the device under test's process: a subprocess.Popen, or replay's _Crashed."""

    @property
    def returncode(self) -> int | None: ...

    def poll(self) -> int | None: ...


class World(Protocol):
    """What a campaign uses of a started bench: hil/sim.py Simulation, hil/fuzz/replay.py DesWorld, or
    hil/fuzz/board.py BoardWorld (a board, with a `console` in place of a process and a log file)."""

    @property
    def bench(self) -> Bench: ...

    @property
    def batteries(self) -> Mapping[int, BatteryModel]: ...

    @property
    def devices(self) -> Mapping[int, BydModule | JkBms]: ...

    @property
    def peripherals(self) -> Mapping[int, JkBlePeripheral]: ...

    @property
    def trace(self) -> Trace: ...

    @property
    def dut_process(self) -> DutProcess | None: ...

    @property
    def dut_token(self) -> str | None: ...

    def rpc(
        self, method: str, params: dict[str, Any] | None = None, token: str | None = None, timeout_s: float = 10
    ) -> tuple[int, Any]: ...

    def stop(self) -> None: ...


class InverterLine(Protocol):
    """The campaign's end of the inverter bus: hil/fuzz/line.py Line, or hil/fuzz/replay.py DesLine."""

    @property
    def char_s(self) -> float: ...

    @property
    def t35_s(self) -> float: ...

    @property
    def free_s(self) -> float: ...

    @property
    def last_rx_s(self) -> float: ...

    def write(self, data: bytes) -> float: ...

    def read(self, timeout_s: float) -> list[tuple[float, bytes]]: ...

    def close(self) -> None: ...


# --- the campaign --------------------------------------------------------------------------------


class FileLog:
    """The device under test's log file (vbms run's output, the firmware's console on the unix port)."""

    restarts: tuple[str, ...] = ()  # a process that starts again is a new process: alive() sees it exit

    def __init__(self, path: str | None) -> None:
        self.path = path  # None: a device without one (the des bench's proxy in this process)
        self.offset = 0

    def new_text(self) -> str:
        """What it gained since the last call."""
        try:
            with open(self.path or "", encoding="utf-8", errors="replace") as handle:
                handle.seek(self.offset)
                text = handle.read()
                self.offset = handle.tell()
        except OSError:
            return ""
        return text

    def tail(self, characters: int = 2000) -> str:
        try:
            with open(self.path or "", encoding="utf-8", errors="replace") as handle:
                return handle.read()[-characters:] or "(empty)"
        except OSError:  # none, or gone with the bench's directory
            return "(no log)"


class Stats:
    __slots__ = ("frames", "writes", "valid", "answered", "repeated", "wrong", "unanswered", "optional_unanswered",
                 "crashes", "answerable", "answerable_ok", "answerable_repeated", "stale_served", "stale_silent",
                 "merges", "dut_errors", "started_s", "ended_s", "kinds")  # fmt: skip

    frames: int
    writes: int
    valid: int
    answered: int
    repeated: int
    wrong: int
    unanswered: int
    optional_unanswered: int
    crashes: int
    answerable: int
    answerable_ok: int
    answerable_repeated: int
    stale_served: int
    stale_silent: int
    merges: int
    dut_errors: int
    started_s: float
    ended_s: float
    kinds: collections.Counter[str]

    def __init__(self) -> None:
        for name in self.__slots__:
            setattr(self, name, 0)
        self.kinds = collections.Counter()

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) if name != "kinds" else dict(self.kinds) for name in self.__slots__}


class Outstanding:
    """A frame sent whose reply is expected: what it must be, by when, whether one is required."""

    __slots__ = ("frame", "expectation", "sent_s", "deadline_s", "required", "valid", "event", "repeat", "missed")

    def __init__(
        self,
        frame: bytes,
        expectation: grammar.Expectation,
        sent_s: float,
        deadline_s: float,
        required: bool,
        valid: bool,
        event: dict[str, Any],
        repeat: bool = False,
    ) -> None:
        self.frame = frame
        self.expectation = expectation
        self.sent_s = sent_s
        self.deadline_s = deadline_s
        self.required = required
        self.valid = valid
        self.event = event
        self.repeat = repeat
        self.missed = False


class Problem(Exception):
    def __init__(self, kind: str, detail: str) -> None:
        super().__init__("%s: %s" % (kind, detail))
        self.kind = kind
        self.detail = detail


class WireCampaign:
    def __init__(self, bench: Bench, bench_ref: str, port: str, dut: str = "vbms", frames: int = 2000, seed: int = 1,
                 findings_dir: str | Path = "fuzz-findings", out: TextIO | None = None, command_line: str | None = None,
                 max_findings: int = 20, stale_s: int | None = None) -> None:  # fmt: skip
        if port not in PORTS:
            raise WireError("--port must be one of %s, not %r" % (", ".join(PORTS), port))
        self.bench = bench
        self.bench_ref = bench_ref  # how to load the bench again: "default" or a path
        self.port = port
        self.dut = dut
        self.frames_wanted = frames
        self.seed = seed
        self.random = grammar.make_random(seed)
        self.findings_dir = Path(findings_dir)
        self.out = sys.stdout if out is None else out
        self.command_line = command_line or ""
        self.max_findings = max_findings
        self.clock: Callable[[], float] = time.monotonic  # a simulated-time world replaces it (hil/fuzz/replay.py)
        self.stats = Stats()
        self.script: collections.deque[dict[str, Any]] = collections.deque(maxlen=SCRIPT_KEEP)
        self.findings: list[dict[str, Any]] = []
        # set by start() or attach(), which every other method but stop() runs after
        self.sim: World = None  # type: ignore[assignment]
        self.line: InverterLine = None  # type: ignore[assignment]
        self.splitter: ReplySplitter = None  # type: ignore[assignment]
        self.evidence: Evidence = None  # type: ignore[assignment]
        self.checker: Checker = None  # type: ignore[assignment]
        self.outstanding: list[Outstanding] = []
        # (start, end on the wire, bytes): merges, collisions
        self.recent_writes: collections.deque[tuple[float, float, bytes]] = collections.deque(maxlen=12)
        self.configured = sorted(spec.slot for spec in bench.batteries)
        self.realtime = True
        # the stand-in or the BLE mangling, while a bms or ble campaign runs
        self.hand: BmsStandIn | BleMangling | None = None
        self.stale_s = stale_s  # None: the device under test's own app.stale_s
        self.t0: float = None  # type: ignore[assignment]  # set by attach(), as sim is
        self.log: FileLog | ConsoleLog = FileLog(None)  # set by attach(), as sim is
        self._lock = threading.RLock()
        self._stop = False

    # --- set-up ---------------------------------------------------------------------------------

    def start(self) -> None:
        from ..sim import Simulation

        if not self.bench.inverter:
            raise WireError("bench %s has no [inverter]: the campaign reads the batteries on the inverter bus"
                            % self.bench.name)  # fmt: skip
        if self.dut == "esp32":
            from .board import BoardWorld

            board = BoardWorld(self.bench, self.bench_ref)
            try:
                board.start()
            except Exception as error:  # noqa: BLE001 - BoardError, BenchError, the virtual board's: no board
                raise WireError("the board did not come up: %s" % error) from error
            self.sim = board
            self.attach(board, Line(*board.inverter_port))
            return
        ble = self.port == "ble" or any(spec.type == "jk_ble" for spec in self.bench.batteries)
        self.sim = Simulation(self.bench, external_deye=True, ble=ble, dut=self.dut)
        try:
            self.sim.start()
        except Exception as error:  # noqa: BLE001 - a bench that does not come up, whatever the reason
            raise WireError("the bench did not start: %s" % error) from error
        bus = self.sim.buses[self.bench.inverter["bus"]]
        self.attach(self.sim, Line(bus.endpoint("inverter").path, bus.baud))

    def attach(
        self, world: World, line: InverterLine, clock: Callable[[], float] | None = None, realtime: bool = True
    ) -> None:
        """Take a started world (a Simulation, or anything with its surface) and the line to its inverter bus."""
        self.sim = world
        self.log = getattr(world, "console", None) or FileLog(getattr(world, "dut_log", None))
        self.line = line
        self.realtime = realtime
        if clock is not None:
            self.clock = clock
        self.splitter = ReplySplitter(self.line.t35_s + 0.02)
        self.t0 = self.clock()
        if self.stale_s is not None:
            self._rpc("Config.Set", {"config": {"app.stale_s": self.stale_s}})
        config, _ = self._rpc("Config.Get")
        self.stale_s = config["app"]["stale_s"]
        voltages = {slot: round(config["bms%d" % slot]["voltage"] * 1000) for slot in self.configured}
        self.checker = Checker(self.sim, voltages)
        kinds = {spec.slot: "ble" if spec.type == "jk_ble" else "rs485" for spec in self.bench.batteries}
        self.evidence = Evidence(self.stale_s, kinds, self.t0)

    def _rpc(self, method: str, params: dict[str, Any] | None = None) -> tuple[Any, int]:
        status, body = self.sim.rpc(method, params or {}, self.sim.dut_token, timeout_s=5)
        if status != 200:
            raise WireError("RPC %s answered %s: %s" % (method, status, body))
        return body, status

    def _watch_devices(self, skip: Collection[int] = ()) -> None:
        """Evidence from the simulated modules themselves, except the ones the campaign stands in for."""
        for spec in self.bench.batteries:
            if spec.slot in skip:
                continue
            peripheral = self.sim.peripherals.get(spec.slot)
            if peripheral is not None:
                self.evidence.watch(spec.slot, lambda p=peripheral: p.notifications)
            else:  # an RS485 module, or a JK module of the simulated-time bench (its frames: counter)
                self.evidence.watch(spec.slot, lambda d=self.sim.devices[spec.slot]: delivered_count(d))

    def warm_up(self) -> None:
        """Every configured unit answers a valid read (the bench is up: data has come); identities learned."""
        deadline = self.clock() + WARM_UP_S
        waiting = set(self.configured)
        while waiting and self.clock() < deadline and not self.dut_gone():
            for unit in sorted(waiting):
                reply = self._ask(grammar.read_request(unit))
                if reply is not None and grammar.crc_ok(reply) and reply[:3] == bytes((unit, 4, 50)):
                    waiting.discard(unit)  # its values are the campaign's to check
            if waiting:
                self._wait_until(self.clock() + 0.5)
        if waiting and not self.dut_gone():
            raise WireError("units %s never answered a read of their registers within %d s; the device under "
                            "test's log ends:\n%s" % (sorted(waiting), WARM_UP_S, self.log.tail()))  # fmt: skip
        for unit in self.configured:
            reply = self._ask(grammar.identity_request(unit))
            if reply is not None and grammar.crc_ok(reply):
                self.checker.identity(unit, reply[3:-2])

    def _ask(self, request: bytes) -> bytes | None:
        """A plain exchange outside the checks (warm-up): the reply bytes or None."""
        self._wait_until(max(self.line.free_s, self.line.last_rx_s) + SILENCE_S)
        self.line.write(request)
        deadline = self.line.free_s + REPLY_TIMEOUT_S
        data = bytearray()
        while self.clock() < deadline and not self.dut_gone():
            for _, chunk in self.line.read(deadline - self.clock()):
                data.extend(chunk)
            length = grammar.response_length(data)
            if length is not None and len(data) >= length:
                break
        self._wait_until(self.clock() + SETTLE_S)
        self._drain(0)
        return bytes(data) if data else None

    def _drain(self, timeout_s: float) -> None:
        for _ in self.line.read(timeout_s):
            pass

    def stop(self) -> None:
        self._stop = True
        if self.evidence is not None:
            self.evidence.stop()
        if self.line is not None:
            self.line.close()
        if self.sim is not None:
            self.sim.stop()

    # --- time and the script ------------------------------------------------------------------------

    def now(self) -> float:
        return self.clock() - self.t0

    def note(self, op: str, **fields: Any) -> dict[str, Any]:
        event = {"t_s": round(self.now(), 5), "op": op}
        event.update(fields)
        with self._lock:
            self.script.append(event)
        return event

    def _wait_until(self, when_s: float, done: Callable[[], bool] | None = None) -> None:
        """Read and check what arrives until the monotonic time when_s, or until done() says so."""
        while True:
            now = self.clock()
            self._collect(now)
            if now >= when_s or (done is not None and done()) or self.dut_gone():
                return
            for t_s, data in self.line.read(min(when_s - now, 0.02)):
                self.splitter.feed(t_s, data)

    def dut_gone(self) -> bool:
        process = self.sim.dut_process
        return process is not None and process.poll() is not None

    def _collect(self, now: float) -> None:
        for t_s, frame in self.splitter.frames(now):
            self._received(t_s, frame)
        for item in [o for o in self.outstanding if o.deadline_s <= now]:
            self.outstanding.remove(item)
            self._unanswered(item)

    # --- sending on the inverter bus, and the checks ------------------------------------------------

    def served(self, unit: int, t_s: float) -> str:
        """ "yes": must answer, "no": must be silent, "maybe"."""
        if unit not in self.evidence.kinds:
            return "no"
        if self.evidence.must_answer(unit, t_s):
            return "yes"
        if self.evidence.must_be_silent(unit, t_s):
            return "no"
        return "maybe"

    def send(
        self,
        data: bytes,
        kind: str,
        frames: int = 1,
        pause: str = grammar.GAP,
        valid: bool = False,
        at_s: float | None = None,
    ) -> grammar.Expectation:
        """One write; a frame a correct slave answers is sent after a proper silence and its reply awaited.
        at_s: send it then (a replay) instead of after the pause."""
        if self.dut_gone():
            return grammar.NO_REPLY  # the liveness check after the burst says so
        expectation = grammar.expect(data, self.configured)
        awaited = expectation.kind != grammar.SILENT
        if at_s is not None:
            self._wait_until(max(at_s, self.line.free_s))
        elif awaited or pause == grammar.SILENCE:
            if self.outstanding:
                self._wait_until(max(o.deadline_s for o in self.outstanding), lambda: not self.outstanding)
            self._wait_until(max(self.line.free_s, self.line.last_rx_s) + SILENCE_S)
        else:
            self._wait_until(self.line.free_s + self.line.t35_s + GAP_MARGIN_S)
        # an awaited expectation (not SILENT) has its unit
        state = self.served(expectation.unit, self.clock()) if awaited else None  # type: ignore[arg-type]
        event = self.note("send", hex=data.hex(), kind=kind, expect=expectation.describe(), valid=valid,
                          served=state)  # fmt: skip
        sent_s = self.line.write(data)
        self.recent_writes.append((sent_s, self.line.free_s, data))
        self.stats.writes += 1
        if valid:
            self.stats.valid += 1
        else:
            self.stats.frames += frames
            self.stats.kinds[kind] += frames
        if awaited:
            if not valid:
                self.stats.answerable += 1
            outstanding = self._await(data, expectation, sent_s, state, valid, event)
            if outstanding.missed:
                self._repeat(outstanding)
        return expectation

    def _await(
        self,
        data: bytes,
        expectation: grammar.Expectation,
        sent_s: float,
        state: str | None,
        valid: bool,
        event: dict[str, Any],
        repeat: bool = False,
    ) -> Outstanding:
        """Wait for the reply to a frame just sent (checked as it arrives); returns its Outstanding."""
        # (a REGISTERS expectation has its count)
        reply_s = (5 + (2 * expectation.count if expectation.kind == grammar.REGISTERS else 60)) * self.line.char_s  # type: ignore[operator]
        outstanding = Outstanding(data, expectation, sent_s, self.line.free_s + reply_s + REPLY_TIMEOUT_S,
                                  state == "yes", valid, event, repeat)  # fmt: skip
        if state == "no":
            outstanding.expectation = grammar.NO_REPLY  # data too old: silence is the only right answer
        self.outstanding.append(outstanding)
        self._wait_until(outstanding.deadline_s, lambda: outstanding not in self.outstanding)
        self._wait_until(self.clock() + SETTLE_S)
        return outstanding

    def _repeat(self, missed: Outstanding) -> None:
        """A required reply did not come: the same frame again after a long silence.  Answered now, the
        first was most likely read run together with the frame before it by a device under test whose
        reader was late (a host process timestamps bytes when it reads them); unanswered again, a finding."""
        self._wait_until(max(self.line.free_s, self.line.last_rx_s) + REPEAT_SILENCE_S)
        state = self.served(missed.expectation.unit, self.clock())  # type: ignore[arg-type]  # awaited: has its unit
        event = self.note("send", hex=missed.frame.hex(), kind="repeat", expect=missed.expectation.describe(),
                          valid=missed.valid, served=state)  # fmt: skip
        sent_s = self.line.write(missed.frame)
        self.recent_writes.append((sent_s, self.line.free_s, missed.frame))
        before = self.stats.answered + self.stats.answerable_ok
        again = self._await(missed.frame, missed.expectation, sent_s, state, missed.valid, event, repeat=True)
        if self.stats.answered + self.stats.answerable_ok > before:
            if missed.valid:  # counted apart: answered only when repeated
                self.stats.answered -= 1
                self.stats.repeated += 1
            else:
                self.stats.answerable_ok -= 1
                self.stats.answerable_repeated += 1
        elif again.missed:
            self.stats.unanswered += 1
            # (missed was awaited: its expectation has its unit)
            self._finding("unanswered", "%s (%s) got no reply within %.0f ms, nor when repeated after %.0f ms of "
                          "silence; unit %d's module delivered a reading within the staleness limit; %s"
                          % (missed.frame.hex(), missed.expectation.describe(), 1000 * (missed.deadline_s -  # type: ignore[str-format]
                             missed.sent_s), 1000 * REPEAT_SILENCE_S, missed.expectation.unit,
                             self._on_the_wire(missed.frame)), missed.event)  # fmt: skip

    def _received(self, t_s: float, frame: bytes) -> None:
        event = self.note("recv", hex=frame.hex())
        try:
            self._check_reply(frame)
        except Problem as problem:
            self._finding(problem.kind, problem.detail, event)

    def _check_reply(self, frame: bytes) -> None:
        if not grammar.crc_ok(frame):
            # judged once the bus has written the frame into its trace (after t3.5): did it collide?
            collision = self._collision(frame)
            if collision is not None:
                raise Problem("unexpected-reply", "the device under test sent %s while the campaign was sending %s "
                              "(the bus garbles both): it answered a frame that must stay unanswered; the frames "
                              "before it: %s" % (frame.hex(), collision, self._recent()))  # fmt: skip
            raise Problem("bad-crc-reply", "a reply with a bad CRC: %s" % frame.hex())
        unit = frame[0]
        match = next((o for o in self.outstanding if o.expectation.unit == unit), None)
        if match is None:
            stale = next((o for o in self.outstanding if o.frame[0] == unit), None)
            if stale is not None:
                self.outstanding.remove(stale)
                self.stats.stale_served += 1
                # (attach() has set stale_s)
                raise Problem(
                    "stale-data",
                    "unit %d answered %s to %s although its module delivered nothing for "
                    "more than app.stale_s = %d s" % (unit, frame.hex(), stale.frame.hex(), self.stale_s),  # type: ignore[str-format]
                )
            if self._explained_by_merge(frame):
                self.stats.merges += 1
                return
            raise Problem("unexpected-reply", "a reply no frame sent asks for: %s (the frames before it: %s)"
                          % (frame.hex(), self._recent()))  # fmt: skip
        self.outstanding.remove(match)
        expectation = match.expectation
        if not grammar.reply_matches(expectation, frame):
            raise Problem("wrong-reply", "%s was answered %s; expected %s"
                          % (match.frame.hex(), frame.hex(), expectation.describe()))  # fmt: skip
        if expectation.kind == grammar.REGISTERS:
            problem = self.checker.registers(unit, expectation.address, _words(frame[3:-2]))  # type: ignore[arg-type]
            if problem:
                raise Problem("wrong-values", "%s was answered %s: %s" % (match.frame.hex(), frame.hex(), problem))
        elif expectation.kind == grammar.IDENTITY:
            problem = self.checker.identity(unit, frame[3:-2])
            if problem:
                raise Problem("wrong-identity", "%s: %s" % (match.frame.hex(), problem))
        if match.valid:
            self.stats.answered += 1
        else:
            self.stats.answerable_ok += 1

    def _explained_by_merge(self, frame: bytes) -> bool:
        """A reply a correct slave gives to two or more consecutive writes read as one frame (the
        device under test's reader was late): timing on a loaded host, not a wrong reply."""
        writes = [data for _, _, data in self.recent_writes]
        for start in range(len(writes)):
            for end in range(start + 2, len(writes) + 1):
                expectation = grammar.expect(b"".join(writes[start:end]), self.configured)
                if expectation.kind != grammar.SILENT and grammar.reply_matches(expectation, frame):
                    return True
        return False

    def _unanswered(self, item: Outstanding) -> None:
        if item.expectation.kind == grammar.SILENT:
            self.stats.stale_silent += 1  # a unit whose data is too old stayed silent: right
            return
        if not item.required or self.dut_gone():
            self.stats.optional_unanswered += 1
            return
        item.missed = True  # send() repeats it

    def _recent(self) -> str:
        return ", ".join(data.hex() for _, _, data in list(self.recent_writes)[-6:])

    def _collision(self, frame: bytes) -> str | None:
        """The write of the campaign's that was on the wire while this reply was, if any: a reply arrives
        when its last byte has (the bus delivers a frame whole), so it was on the wire for its length before."""
        if self.splitter.last_frame_s is None:
            return None
        end_s = self.splitter.last_frame_s
        start_s = end_s - len(frame) * self.line.char_s
        for write_start_s, write_end_s, data in reversed(self.recent_writes):
            if write_start_s < end_s and write_end_s > start_s:
                return data.hex()
        return None

    def _on_the_wire(self, frame: bytes) -> str:
        """How the bus carried a frame (its trace): alone, or run together with what was sent before it."""
        bus = self.bench.inverter["bus"]
        for entry in reversed(self.sim.trace.tail(80)):
            raw = bytes.fromhex(entry["hex"])
            if entry["bus"] == bus and entry["from"] == "inverter" and frame in raw:
                if raw == frame:
                    return "the bus carried it as a frame of its own at %.4f s" % entry["t"]
                return "the bus carried it run together with other bytes (%d in all): the host was late" % len(raw)
        return "the bus trace does not show it"

    # --- the device under test's health ------------------------------------------------------------

    def alive(self) -> bool:
        process = self.sim.dut_process
        if process is not None and process.poll() is not None:
            self.stats.crashes += 1
            self._finding("crash", "the device under test exited with status %s" % process.returncode, None)
            return False
        status: int | OSError
        try:
            status, _ = self.sim.rpc("Sys.GetInfo", {}, self.sim.dut_token, timeout_s=10)
        except OSError as error:
            status = error
        if status != 200:
            self.stats.crashes += 1
            self._finding("crash", "RPC Sys.GetInfo failed: %s" % status, None)
            return False
        self._scan_log()
        if self.log.restarts:  # a board's console (hil/fuzz/board.py)
            self.stats.crashes += 1
            self._finding("crash", "the board started again during the campaign (a crash, a watchdog, a reset): its "
                          "ready line came again:\n%s\nits console before:\n%s"
                          % (self.log.restarts[0], self.log.tail()), None)  # fmt: skip
            return False
        return True

    def _scan_log(self) -> None:
        text = self.log.new_text()
        if "Traceback" in text:
            self.stats.dut_errors += 1
            start = text.index("Traceback")
            self._finding("dut-error", "the device under test logged an exception:\n%s" % text[start : start + 2000],
                          None)  # fmt: skip

    # --- findings ----------------------------------------------------------------------------------

    def _finding(self, kind: str, detail: str, event: dict[str, Any] | None) -> None:
        if kind in ("wrong-reply", "wrong-values", "wrong-identity", "unexpected-reply", "bad-crc-reply"):
            self.stats.wrong += 1
        with self._lock:
            events = list(self.script)[-FINDING_EVENTS:]
        document = {
            "kind": "wire",
            "port": self.port,
            "dut": self.dut,
            "bench": self.bench_ref,
            "seed": self.seed,
            "problem": kind,
            "detail": detail,
            "status": "open",
            "note": "",
            "found_by": self.command_line,
            "at_t_s": event["t_s"] if event else round(self.now(), 5),
            "frames_at": self.frames_sent(),
            "stale_s": self.stale_s,
            "script": events,
        }
        self.findings.append(document)
        if len(self.findings) <= self.max_findings:
            document["path"] = str(save_finding(document, self.findings_dir))
        self.out.write("FINDING %s: %s\n" % (kind, detail.splitlines()[0] if detail else ""))
        self.out.flush()

    def frames_sent(self) -> int:
        return self.hand.malformed if self.hand is not None else self.stats.frames

    # --- the three campaigns -----------------------------------------------------------------------

    def replay(self, script: list[dict[str, Any]]) -> None:
        """Send the frames of a finding's script again, at their times from the first (hil/fuzz/replay.py)."""
        self._watch_devices()
        self.evidence.start(self.realtime)
        self.stats.started_s = self.clock()
        sends = [event for event in script if event["op"] == "send" and event.get("kind") != "repeat"]
        base = self.clock() - (sends[0]["t_s"] if sends else 0.0)
        for event in sends:
            data = bytes.fromhex(event["hex"])
            self.send(data, event.get("kind", "replay"), valid=bool(event.get("valid")), at_s=base + event["t_s"])
            if self.dut_gone():
                break
        self._wait_until(self.clock() + REPLY_TIMEOUT_S)
        self.alive()
        self.stats.ended_s = self.clock()

    def run(self) -> None:
        self.stats.started_s = self.clock()
        if self.port == "inverter":
            self._watch_devices()
            self.evidence.start(self.realtime)
            self._inverter()
        elif self.port == "bms":
            self._bms()
        else:
            self._ble()
        self.stats.ended_s = self.clock()

    def _inverter(self) -> None:
        rng = self.random
        inverter = grammar.InverterGrammar(rng, self.configured)
        while self.stats.frames < self.frames_wanted:
            size = min(rng.randint(*BURST_FRAMES), self.frames_wanted - self.stats.frames)
            for item in inverter.burst(size):
                self.send(item.data, item.kind, len(item.frames), item.pause, item.valid)
            self._wait_until(self.clock() + SETTLE_S)
            if not self.alive():
                return

    def probe(self, rng: random.Random, inverter_grammar: grammar.InverterGrammar) -> None:
        """One valid request on the inverter side (bms and ble campaigns)."""
        self.send(inverter_grammar.valid(), "valid", pause=grammar.SILENCE, valid=True)
        self._wait_until(self.clock() + PROBE_PERIOD_S * rng.random())

    def _bms(self) -> None:
        from .stand_in import BmsStandIn

        stand_in = BmsStandIn(self)
        self._with_hand(stand_in, skip=stand_in.slots)

    def _ble(self) -> None:
        from .stand_in import BleMangling

        jk = [spec.slot for spec in self.bench.batteries if spec.type == "jk_ble"]
        if not jk:
            raise WireError("bench %s has no JK BLE battery to mangle the notifications of" % self.bench.name)
        self._with_hand(BleMangling(self, jk), skip=jk)

    def _with_hand(self, hand: BmsStandIn | BleMangling, skip: Collection[int]) -> None:
        """The bms and ble ports: the hand on the battery side sends the malformed traffic while this
        side reads every unit on the inverter bus, checking the device under test is alive each second."""
        self.hand = hand
        self._watch_devices(skip=skip)
        self.evidence.start()
        hand.start()
        inverter = grammar.InverterGrammar(self.random, self.configured)
        try:
            last_alive = last_traffic_s = self.clock()
            traffic = hand.traffic
            while hand.malformed < self.frames_wanted and not self._stop:
                self.probe(self.random, inverter)
                if hand.traffic != traffic:
                    traffic, last_traffic_s = hand.traffic, self.clock()
                elif self.clock() - last_traffic_s > HAND_IDLE_S:
                    quiet = ("it polled none of the modules the campaign stands in for" if self.port == "bms"
                             else "no notification of the JK modules reached it")  # fmt: skip
                    self._finding("stalled", "nothing on the battery side for %d s: %s" % (HAND_IDLE_S, quiet), None)
                    return
                if self.clock() - last_alive > 1.0:
                    last_alive = self.clock()
                    if not self.alive():
                        return
        finally:
            hand.stop()
            self.stats.frames = hand.malformed
            self.stats.kinds.update(hand.kinds)
        self.alive()

    # --- the report ----------------------------------------------------------------------------------

    def report(self) -> str:
        stats = self.stats
        seconds = max((stats.ended_s or self.clock()) - stats.started_s, 1e-9)
        required = stats.answered + stats.repeated + stats.unanswered
        lines = [
            "vbms fuzz wire: port %s, device under test %s, bench %s, seed %d" % (self.port, self.dut, self.bench_ref,
                                                                                 self.seed),
            "  malformed frames sent  %8d  (%.0f per second)" % (stats.frames, stats.frames / seconds),
            "  valid requests         %8d" % stats.valid,
            "  answered               %8d  (%s of those that must be)" % (
                stats.answered, "%.2f %%" % (100.0 * stats.answered / required) if required else "-"),
            "  answered when repeated %8d  (after %d ms of silence; most likely the host read late)" % (
                stats.repeated, 1000 * REPEAT_SILENCE_S),
            "  not required (stale)   %8d" % stats.optional_unanswered,
            "  unanswered             %8d" % stats.unanswered,
            "  answerable malformed   %8d  (answered as the reference says: %d, when repeated: %d)" % (
                stats.answerable, stats.answerable_ok, stats.answerable_repeated),
            "  wrong replies          %8d" % stats.wrong,
            "  silent, data too old   %8d  (as they must be)" % stats.stale_silent,
            "  stale data served      %8d" % stats.stale_served,
            "  crashes                %8d" % stats.crashes,
            "  DUT log exceptions     %8d" % stats.dut_errors,
            "  replies to merged frames (timing) %d" % stats.merges,
            "  duration               %8.1f s" % seconds,
            "  by kind: %s" % ", ".join("%s %d" % item for item in sorted(stats.kinds.items())),
            "%d finding%s%s" % (len(self.findings), "" if len(self.findings) == 1 else "s",
                                " (saved in %s)" % self.findings_dir if self.findings else ""),
        ]  # fmt: skip
        return "\n".join(lines) + "\n"


def _words(data: bytes) -> list[int]:
    return [data[index] << 8 | data[index + 1] for index in range(0, len(data) - 1, 2)]


def save_finding(document: dict[str, Any], directory: str | Path) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha1(json.dumps(document["script"], sort_keys=True).encode()).hexdigest()[:12]
    path = directory / ("wire-%s-%s-%s.json" % (document["port"], document["problem"], digest))
    document = {key: value for key, value in document.items() if key != "path"}
    path.write_text(json.dumps(document, indent=1) + "\n")
    return path


# --- the command ---------------------------------------------------------------------------------


def load_bench(reference: str | None) -> Bench:
    from ..benchfile import load, load_default

    return load_default() if reference in (None, "default") else load(reference)


def run_cli(args: argparse.Namespace) -> int:
    from ..benchfile import BenchError

    try:
        bench = load_bench(args.bench)
    except BenchError as error:
        sys.stderr.write("vbms fuzz wire: %s\n" % error)
        return 2
    if args.stale_s is not None and not 2 <= args.stale_s <= 600:
        sys.stderr.write("vbms fuzz wire: --stale-s must be within 2..600 (app.stale_s), not %d\n" % args.stale_s)
        return 2
    if args.port == "ble" and not any(spec.type == "jk_ble" for spec in bench.batteries):
        sys.stderr.write("vbms fuzz wire: --port ble needs a bench with a JK BLE battery (type jk_ble)\n")
        return 2
    if args.port == "bms" and not any(spec.bus for spec in bench.batteries):
        sys.stderr.write("vbms fuzz wire: --port bms needs a bench with a battery on an RS485 bus\n")
        return 2
    command_line = "vbms fuzz wire --bench %s --port %s --dut %s --frames %d --seed %d" % (
        args.bench or "default", args.port, args.dut, args.frames, args.seed)  # fmt: skip
    if args.stale_s is not None:
        command_line += " --stale-s %d" % args.stale_s
    campaign = WireCampaign(bench, args.bench or "default", args.port, args.dut, args.frames, args.seed,
                            args.findings, command_line=command_line, stale_s=args.stale_s)  # fmt: skip
    try:
        campaign.start()
        campaign.warm_up()
        campaign.run()
    except WireError as error:
        sys.stderr.write("vbms fuzz wire: %s\n" % error)
        return 3
    except KeyboardInterrupt:
        campaign.stats.ended_s = campaign.clock()
        sys.stdout.write("interrupted\n")
    finally:
        campaign.stop()
    sys.stdout.write(campaign.report())
    return 1 if campaign.findings else 0
