"""One fault model for every RS485 bus model: the PTY bus (hil/wires/rs485.py) and the
frame-level bus of the des target (hil/wires/frame_bus.py).

Sans-I/O: no clock, no I/O.  A FaultModel holds one bus's fault rules and a seeded
generator; decide(source, frame, start_s, receivers) says, for a frame a sender puts on
the line at start_s, what each receiver gets and when (a Decision).  Both buses apply the
Decision as it is, so a fault script means the same thing on every target
(tests/test_fault_model.py runs one script on both buses and compares the traces).

What each kind does (a rule applies to frames from `source`, None: any sender):

- drop: the receivers it targets get nothing of the frame; the others get it intact.
- corrupt: the receivers it targets get the frame with one bit flipped, the same bit for
  each of them: `bit` (byte_index * 8 + bit_in_byte; past the frame's end it damages
  nothing) or one drawn from the seeded generator within the bytes the sender wrote first
  (the whole frame, unless a sender writes one frame in several writes).
- noise: `noise_bytes` random bytes reach the receivers it targets first, then the line
  stays silent for twice t3.5, then the frame follows, intact.  Noise on a real line comes
  while the line is idle (interference, a transceiver's driver switching, an unbiased
  line), so a receiver sees a junk frame of its own: it must discard it and still take the
  next frame.  A frame damaged in flight is what `corrupt` models; fusing the noise into
  the frame would make the two kinds one.  Twice t3.5 keeps the two apart for a receiver
  whose clock jitters by a few milliseconds (a loaded host), as on the real-time bench.
- delay: the frame goes on the line `delay_s` later, for every receiver (a device that
  turns the line around late); it can then collide with what others send meanwhile.
  It takes no target: one line cannot carry the frame at two times.
- disconnect: the endpoint named by `source` neither sends nor hears anything until the
  rule is removed (`count` does not apply).

Collisions are no fault: they are a property of the wire, and each bus model garbles
overlapping frames itself.  `count` frames (None: until removed) and `probability` (a
draw from the seeded generator per frame) decide whether a rule fires; rules fire in the
order they were added, and the generator is drawn in that order, so a seed and a script
give the same decisions on every bus.
"""

import random
import threading
import time
from collections.abc import Iterable
from typing import Protocol, Self

DROP = "drop"
CORRUPT = "corrupt"
DELAY = "delay"
NOISE = "noise"
DISCONNECT = "disconnect"
FAULT_KINDS = (DROP, CORRUPT, DELAY, NOISE, DISCONNECT)
TARGETED = (DROP, CORRUPT, NOISE)  # kinds that may name one receiver
NOISE_SILENCE_T35 = 2  # the silence after a noise burst, in t3.5 units


class BusError(Exception):
    """A bus or fault used wrongly (unknown endpoint, bad fault): says what to do."""


class FaultFields(Protocol):
    """What Fault.from_spec reads: a bench file's FaultSpec has these fields (bit is optional)."""

    @property
    def kind(self) -> str: ...
    @property
    def source(self) -> str | None: ...
    @property
    def target(self) -> str | None: ...
    @property
    def count(self) -> int | None: ...
    @property
    def probability(self) -> float: ...
    @property
    def delay_s(self) -> float: ...
    @property
    def noise_bytes(self) -> int: ...


class Fault:
    """A fault rule.

    kind: drop, corrupt, delay, noise or disconnect (see the module's docstring).
    source / target: endpoint names the rule applies to (None: any); a disconnect uses
    source as the endpoint to cut off.
    count: how many frames it affects before it expires (None: until removed).
    probability: chance per frame (drawn from the bus's seeded generator).
    delay_s (delay), noise_bytes (noise), bit (corrupt: byte_index * 8 + bit; None: drawn).
    """

    __slots__ = ("kind", "source", "target", "count", "probability", "delay_s", "noise_bytes", "bit", "hits")

    def __init__(
        self,
        kind: str,
        source: str | None = None,
        target: str | None = None,
        count: int | None = None,
        probability: float = 1.0,
        delay_s: float = 0.05,
        noise_bytes: int = 8,
        bit: int | None = None,
    ) -> None:
        if kind not in FAULT_KINDS:
            raise BusError("unknown fault %r; choose one of %s" % (kind, ", ".join(FAULT_KINDS)))
        if not 0.0 <= probability <= 1.0:
            raise BusError("fault probability must be within 0..1, not %r" % (probability,))
        if kind == DISCONNECT and source is None:
            raise BusError("a disconnect fault names the endpoint to disconnect (source)")
        if target is not None and kind not in TARGETED:
            raise BusError(
                "a %s fault acts on the whole line and takes no target; targets go with %s"
                % (kind, ", ".join(TARGETED))
            )
        if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 1):
            raise BusError("fault count must be a whole number >= 1 (or None: until removed), not %r" % (count,))
        if delay_s < 0:
            raise BusError("fault delay_s must be >= 0, not %r" % (delay_s,))
        if noise_bytes < 1:
            raise BusError("fault noise_bytes must be >= 1, not %r" % (noise_bytes,))
        if bit is not None and bit < 0:
            raise BusError("fault bit must be >= 0 (byte_index * 8 + bit), not %r" % (bit,))
        self.kind = kind
        self.source = source
        self.target = target
        self.count = count
        self.probability = probability
        self.delay_s = delay_s
        self.noise_bytes = noise_bytes
        self.bit = bit
        self.hits = 0

    @classmethod
    def from_spec(cls, spec: FaultFields) -> Self:
        """A rule from a bench file's FaultSpec (hil/benchfile.py) or anything with those fields."""
        return cls(
            spec.kind,
            source=spec.source,
            target=spec.target,
            count=spec.count,
            probability=spec.probability,
            delay_s=spec.delay_s,
            noise_bytes=spec.noise_bytes,
            bit=getattr(spec, "bit", None),
        )

    def matches(self, source: str) -> bool:
        return self.source is None or self.source == source

    def describe(self) -> str:
        parts = [self.kind]
        if self.source:
            parts.append("from %s" % self.source)
        if self.target:
            parts.append("to %s" % self.target)
        return " ".join(parts)

    def __repr__(self) -> str:
        return "Fault(%s)" % self.describe()


class Decision:
    """What the line does with one frame.

    sent: False when the sender is disconnected (nothing goes on the line, nothing is traced).
    start_s: when the frame's first bit goes on the line (after any delay and noise).
    faults: the rules that fired, described, for the trace.
    noise, noise_start_s, noise_receivers: the noise burst before the frame (b"" if none).
    flips: receiver -> bit indexes flipped in what it gets; dropped: receivers that get nothing.
    receivers: everyone who hears the line (not the sender, not a disconnected endpoint).
    """

    __slots__ = ("sent", "start_s", "faults", "noise", "noise_start_s", "noise_receivers", "flips", "dropped",
                 "receivers")  # fmt: skip

    def __init__(self, start_s: float, receivers: Iterable[str]) -> None:
        self.sent = True
        self.start_s = start_s
        self.faults: list[str] = []
        self.noise = b""
        self.noise_start_s = start_s
        self.noise_receivers: tuple[str, ...] = ()
        self.flips: dict[str, list[int]] = {}
        self.dropped: set[str] = set()
        self.receivers = list(receivers)

    def received(self, receiver: str, data: bytes | bytearray, offset: int = 0) -> bytes | None:
        """What receiver gets of data, the bytes at offset.. of the frame (a PTY bus may
        read a frame in pieces); None when the frame is dropped for it."""
        if not self.sent or receiver in self.dropped or receiver not in self.receivers:
            return None
        flips = self.flips.get(receiver)
        if not flips:
            return bytes(data)
        damaged = bytearray(data)
        for bit in flips:
            index = bit // 8 - offset
            if 0 <= index < len(damaged):
                damaged[index] ^= 1 << (bit % 8)
        return bytes(damaged)

    def bursts(self, frame: bytes) -> list[tuple[str, bytes, float]]:
        """[(receiver, bytes, start_s)]: the noise first, then the frame, per receiver."""
        result = [(receiver, self.noise, self.noise_start_s) for receiver in self.noise_receivers]
        for receiver in self.receivers:
            data = self.received(receiver, frame)
            if data is not None:
                result.append((receiver, data, self.start_s))
        return result


class FaultModel:
    """The fault rules of one bus and the generator they draw from.

    char_s: one character's time on the line; gap_s: t3.5 (vbms_core.modbus).
    """

    def __init__(self, char_s: float, gap_s: float, seed: int = 0) -> None:
        self.char_s = char_s
        self.gap_s = gap_s
        self.faults: list[Fault] = []
        self.random = random.Random(seed)

    def add(self, fault: Fault) -> Fault:
        self.faults.append(fault)
        return fault

    def remove(self, fault: Fault) -> None:
        if fault in self.faults:
            self.faults.remove(fault)

    def clear(self) -> None:
        self.faults.clear()

    def disconnected(self, name: str) -> bool:
        return any(f.kind == DISCONNECT and f.source == name for f in self.faults)

    def _fires(self, fault: Fault) -> bool:
        if fault.count is not None and fault.hits >= fault.count:
            return False
        if fault.probability < 1.0 and self.random.random() >= fault.probability:
            return False
        fault.hits += 1
        return True

    def decide(self, source: str, frame: bytes | bytearray, start_s: float, receivers: Iterable[str]) -> Decision:
        """The Decision for frame, put on the line by source at start_s, heard by receivers
        (the other endpoints' names).  Draws from the generator; expires spent rules."""
        listening = [name for name in receivers if name != source and not self.disconnected(name)]
        decision = Decision(start_s, listening)
        if self.disconnected(source):
            decision.sent = False
            return decision
        delay_s = 0.0
        noise = bytearray()
        noise_receivers: list[str] = []
        bits = 8 * len(frame)
        for fault in list(self.faults):
            if fault.kind == DISCONNECT or not fault.matches(source) or not self._fires(fault):
                continue
            decision.faults.append(fault.describe())
            targets = listening if fault.target is None else [name for name in listening if name == fault.target]
            if fault.kind == DROP:
                decision.dropped.update(targets)
            elif fault.kind == CORRUPT and (bits or fault.bit is not None):
                bit = self.random.randrange(bits) if fault.bit is None else fault.bit
                for name in targets:
                    decision.flips.setdefault(name, []).append(bit)
            elif fault.kind == DELAY:
                delay_s += fault.delay_s
            elif fault.kind == NOISE:
                noise.extend(self.random.getrandbits(8) for _ in range(fault.noise_bytes))
                noise_receivers.extend(name for name in targets if name not in noise_receivers)
        self.faults[:] = [f for f in self.faults if f.count is None or f.hits < f.count or f.kind == DISCONNECT]
        decision.noise_start_s = start_s + delay_s
        decision.start_s = decision.noise_start_s
        if noise:
            decision.noise = bytes(noise)
            decision.noise_receivers = tuple(noise_receivers)
            decision.start_s += len(noise) * self.char_s + NOISE_SILENCE_T35 * self.gap_s
        return decision


class LiveFaults:
    """A real-time bus's faults: the harness adds and removes them while the bus's thread decides its
    frames, both under the bus's lock; now() is seconds since the bench's t0 (the traces' clock).
    A bus sets model, t0 and _lock, and adds a fault with _hold after checking its endpoints."""

    model: FaultModel
    t0: float
    _lock: "threading.Lock | threading.RLock"

    @property
    def faults(self) -> list[Fault]:
        return self.model.faults

    def _hold(self, fault: Fault) -> Fault:
        with self._lock:
            self.model.add(fault)
        return fault

    def remove_fault(self, fault: Fault) -> None:
        with self._lock:
            self.model.remove(fault)

    def clear_faults(self) -> None:
        with self._lock:
            self.model.clear()

    def now(self) -> float:
        return time.monotonic() - self.t0
