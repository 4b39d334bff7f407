"""A frame-level model of an RS485 bus for simulated time (the `des` target).

A byte takes 10 bit times at the bus's baud rate (vbms_core.modbus, as on the PTY bus);
a sender's UART sends what it is given one frame after another; a frame is a burst from
one sender ended by a t3.5 silence, and it is recorded in the trace when that silence
has passed, as the PTY bus does.  Faults are decided by hil/wires/faults.py, the model
the PTY bus applies too, so a fault script gives the same trace on both.  Collisions
are the wire's own: two frames from different senders that overlap on the line arrive
garbled.

Endpoints: add_endpoint(name, deliver) names a receiver; send(source, data) reaches
every other endpoint's deliver(bytes, end_s) at the time the frame's last bit arrives.
add_endpoint(name, deliver, hears=(...)) names a receiver that listens to those senders
only (a device model that answers the master and ignores the other devices' replies).
send(source, data, deliver) is the older form: that one callback is the only receiver,
with no name (so a fault that names a target does not reach it).

The bus runs on simpy's queue with callbacks (call_later), not a process per frame: a frame
costs two scheduled calls (its last bit arriving, and t3.5 after that; a third when it goes
on the line later than it was sent) and no generator.
"""

from collections.abc import Callable, Iterable
from typing import Any, cast

from simpy.core import Environment
from simpy.events import NORMAL

from vbms_core.modbus import char_time_us, silence_us

from ..trace import Trace
from .faults import Decision, Fault, FaultModel

# deliver(bytes, end_s): an endpoint receiving what its line carried, when the last bit arrived
Deliver = Callable[[bytes, float], object]


def _fire(call: "_Call") -> None:
    call.function(*call.arguments)


class _Call:
    """What simpy's Environment.step needs of an event (callbacks, _ok) and no more: a call at a
    time costs one of these instead of a Timeout, its callback list and a closure.  (step takes
    the callbacks, sets them to None, calls each with the event, then looks at _ok.)"""

    __slots__ = ("callbacks", "function", "arguments")
    _ok = True
    _FIRE = (_fire,)

    def __init__(self, function: Callable[..., object], arguments: tuple[Any, ...]) -> None:
        self.callbacks = self._FIRE
        self.function = function
        self.arguments = arguments


def call_later(env: Environment, delay_s: float, function: Callable[..., object], *arguments: Any) -> None:
    """function(*arguments) delay_s of simulated time from now (as a Timeout's callback would be)."""
    if delay_s < 0:
        raise ValueError("negative delay %r" % (delay_s,))
    # (each arg-type ignore in this module: a _Call stands in for the Event schedule() is typed to take)
    env.schedule(_Call(function, arguments), NORMAL, delay_s)  # type: ignore[arg-type]


class _Burst:
    """A frame on the line: bytes from one sender until a t3.5 silence."""

    __slots__ = ("source", "decision", "start_s", "end_s", "raw", "collided", "receivers", "untouched")

    def __init__(
        self,
        source: str,
        decision: Decision | None,
        receivers: dict[str | None, Deliver],
        untouched: bool,
        start_s: float,
    ) -> None:
        self.source = source
        self.decision = decision  # None when untouched (no fault rule was in force)
        self.start_s = start_s
        self.end_s = start_s
        self.raw = bytearray()
        self.collided = False
        self.receivers = receivers  # name -> deliver
        self.untouched = untouched  # no fault rule was in force: every receiver gets the bytes as sent


class _Piece:
    """Bytes of a burst handed to the bus in one send: on the line from start_s to end_s."""

    __slots__ = ("burst", "data", "offset", "start_s", "end_s", "garbled")

    def __init__(self, burst: _Burst, data: bytes, offset: int, start_s: float, end_s: float) -> None:
        self.burst = burst
        self.data = data
        self.offset = offset
        self.start_s = start_s
        self.end_s = end_s
        self.garbled = False


class FrameBus:
    """Frame-level RS485: transfer time, collisions, faults; records a trace.

    FrameBus(env, name, baud, protocol, trace=None, seed=0) with a simpy Environment.
    """

    def __init__(
        self, env: Environment, name: str, baud: int, protocol: str | None, trace: Trace | None = None, seed: int = 0
    ) -> None:
        self.env = env
        self.trace = trace
        self.name = name
        self.baud = baud
        self.protocol = protocol
        self.char_s = char_time_us(baud) / 1e6
        self.gap_s = silence_us(baud) / 1e6
        self.model = FaultModel(self.char_s, self.gap_s, seed)
        self.endpoints: dict[str, Deliver] = {}  # name -> deliver(bytes, end_s)
        self.hears: dict[str, frozenset[str]] = {}  # name -> the senders it listens to (absent: every sender)
        # source -> {name: deliver} of the endpoints that hear it
        self._receivers: dict[str, dict[str | None, Deliver]] = {}
        self.collisions = 0
        self.frames = 0
        self.sending_until: dict[str, float] = {}  # source -> when its UART has sent everything it was given
        self._bursts: dict[str, _Burst] = {}  # open burst per source
        self._line: list[_Piece] = []  # pieces still on the line, for collisions

    # --- set-up and faults ---------------------------------------------------------------

    def add_endpoint(self, name: str, deliver: Deliver, hears: Iterable[str] | None = None) -> None:
        self.endpoints[name] = deliver
        if hears is None:
            self.hears.pop(name, None)
        else:
            self.hears[name] = frozenset(hears)
        self._receivers.clear()

    def _receivers_of(self, source: str) -> dict[str | None, Deliver]:
        receivers = self._receivers.get(source)
        if receivers is None:
            hears = self.hears
            receivers = {
                name: deliver
                for name, deliver in self.endpoints.items()
                if name != source and (name not in hears or source in hears[name])
            }
            self._receivers[source] = receivers
        return receivers

    @property
    def faults(self) -> list[Fault]:
        """The fault rules (hil/wires/faults.Fault)."""
        return self.model.faults

    def add_fault(self, fault: Fault) -> Fault:
        return self.model.add(fault)

    def remove_fault(self, fault: Fault) -> None:
        self.model.remove(fault)

    def clear_faults(self) -> None:
        self.model.clear()

    def transfer_s(self, data: bytes) -> float:
        return len(data) * self.char_s

    # --- the line ------------------------------------------------------------------------

    def send(self, source: str, data: bytes | bytearray, deliver: Deliver | None = None) -> None:
        """A frame from source.  A sender's UART sends its frames one after another: a
        frame given while the sender's previous one is still on the line follows it (and,
        with no t3.5 between them, is the same frame on the wire)."""
        env = self.env
        data = bytes(data)
        now_s = env.now
        start_s = self.sending_until.get(source, 0.0)
        if start_s < now_s:
            start_s = now_s
        burst = self._bursts.get(source)
        if burst is None or start_s - burst.end_s >= self.gap_s:
            if burst is not None:
                self._close(burst)
            receivers: dict[str | None, Deliver] = self._receivers_of(source) if deliver is None else {None: deliver}
            untouched = not self.model.faults
            if untouched:  # no rule to decide by: everyone who hears the line gets the frame as sent
                burst = _Burst(source, None, receivers, True, start_s)
            else:
                # (the ignore: None names send()'s one unnamed receiver, a name no fault rule targets)
                decision = self.model.decide(source, data, start_s, list(receivers))  # type: ignore[arg-type]
                if not decision.sent:
                    return
                burst = _Burst(source, decision, receivers, False, decision.start_s)
                if decision.noise:
                    self._record(
                        decision.noise_start_s, "noise", decision.noise, ["noise before a frame from %s" % source]
                    )
                    noise_end_s = decision.noise_start_s + self.transfer_s(decision.noise)
                    for name in decision.noise_receivers:
                        self._at(noise_end_s, self._noise_arrived, receivers[name], decision.noise)
                start_s = decision.start_s
            self._bursts[source] = burst
        raw = burst.raw
        offset = len(raw)
        raw.extend(data)
        end_s = start_s + len(data) * self.char_s
        burst.end_s = end_s
        self.sending_until[source] = end_s
        piece = _Piece(burst, data, offset, start_s, end_s)
        if start_s <= now_s:
            self._on_line(piece)
        else:
            env.schedule(_Call(self._on_line, (piece,)), NORMAL, start_s - now_s)  # type: ignore[arg-type]
        env.schedule(_Call(self._arrived, (piece,)), NORMAL, end_s - now_s)  # type: ignore[arg-type]

    def _at(self, at_s: float, function: Callable[..., object], *arguments: Any) -> None:
        """function(*arguments) at simulated time at_s (now if it has passed)."""
        env = self.env
        env.schedule(_Call(function, arguments), NORMAL, max(at_s - env.now, 0.0))  # type: ignore[arg-type]

    def _noise_arrived(self, deliver: Deliver, noise: bytes) -> None:
        deliver(noise, self.env.now)

    def _on_line(self, piece: _Piece) -> None:
        """The piece's first bit goes on the line now: does it collide?"""
        now_s = piece.start_s
        if not self._line:
            self._line.append(piece)
            return
        self._line = [other for other in self._line if other.end_s > now_s]
        others = [other for other in self._line if other.burst.source != piece.burst.source]
        if others:  # both drivers fight the line: this piece goes out garbled, the others arrive so
            self.collisions += 1
            piece.burst.collided = True
            piece.data = bytes(b ^ 0xA5 for b in piece.data)
            piece.burst.raw[piece.offset : piece.offset + len(piece.data)] = piece.data
            for other in others:
                other.garbled = True
                other.burst.collided = True
        self._line.append(piece)

    def _arrived(self, piece: _Piece) -> None:
        """The piece's last bit has arrived: each receiver gets what the decision gives it."""
        burst = piece.burst
        now_s = self.env.now
        data: bytes | None
        if burst.untouched:
            data = bytes(b ^ 0x5A for b in piece.data) if piece.garbled else piece.data
            for deliver in burst.receivers.values():
                deliver(data, now_s)
        else:
            decision = cast(Decision, burst.decision)  # decide() made it: the burst is not untouched
            for name, deliver in burst.receivers.items():
                data = decision.received(name, piece.data, piece.offset)  # type: ignore[arg-type]  # (see send)
                if data is not None:
                    deliver(bytes(b ^ 0x5A for b in data) if piece.garbled else data, now_s)
        self.env.schedule(_Call(self._quiet, (burst,)), NORMAL, self.gap_s)  # type: ignore[arg-type]

    def _quiet(self, burst: _Burst) -> None:
        """t3.5 after a piece: the burst is a frame if its sender has sent nothing since."""
        # (a nanosecond's grace: the callback's time is a sum of floats, and may fall a hair short)
        if self._bursts.get(burst.source) is burst and self.env.now - burst.end_s >= self.gap_s - 1e-9:
            self._close(burst)

    def _close(self, burst: _Burst) -> None:
        self._bursts.pop(burst.source, None)
        self.frames += 1
        faults = burst.decision.faults if burst.decision is not None else ()
        self._record(burst.start_s, burst.source, bytes(burst.raw), faults, burst.collided)

    def _record(self, t_s: float, source: str, raw: bytes, faults: Iterable[str], collision: bool = False) -> None:
        if self.trace is not None:
            self.trace.record(self, t_s, source, raw, faults=faults, collision=collision)
