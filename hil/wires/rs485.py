"""An RS485 multi-drop bus made of pseudo-terminals, with real timing.

Every endpoint is a PTY that pyserial (or any program) opens like a serial
port.  Bytes written by one endpoint go on the "wire" at the bus's baud rate
(10 bit times per byte, 8N1) and reach every other endpoint: transfer times and
inter-frame gaps are real.

- Delivery keeps a frame together.  A byte may not arrive before its last bit
  would have, and a receiver must never see a silence inside a frame: on a
  loaded host a thread that writes byte by byte is sometimes late by the
  scheduler's 5-10 ms, and a Modbus receiver then rightly splits the frame on
  t3.5.  So the bytes a sender wrote are written to each receiver in one go when
  the last of them is due, as a USB-RS485 adapter hands its host a packet: the
  frame can arrive late on a loaded host, never torn.
- Collisions: an endpoint that starts sending while another one's bytes are
  still on the wire garbles both; every receiver gets the garbled bytes and
  the collision is recorded.
- Faults: hil/wires/faults.py decides (drop, corrupt, delay, noise,
  disconnect), the same model the des target's frame bus applies.
- Capture: every frame (a burst from one endpoint ended by a t3.5 silence)
  goes to the trace with its time, sender and bytes; the trace decodes and
  writes it on its own thread, never on the bus's.

transmit(source, data, now_s) and deliver_due(now_s) take the time as an
argument, so the bus's timing is tested without a clock; the bus thread calls
them with its own.  The bus runs in one thread; its methods are thread-safe.
"""

import os
import pty
import random
import select
import termios
import threading
import time
import tty
from typing import Self

from vbms_core.modbus import char_time_us, silence_us

from ..trace import Trace
from .faults import (
    CORRUPT,
    DELAY,
    DISCONNECT,
    DROP,
    FAULT_KINDS,
    NOISE,
    BusError,
    Decision,
    Fault,
    FaultModel,
    LiveFaults,
)

__all__ = [
    "CORRUPT", "DELAY", "DISCONNECT", "DROP", "FAULT_KINDS", "NOISE", "BusError", "Endpoint", "Fault", "Rs485Bus",
]  # fmt: skip


class Endpoint:
    """One drop on the bus: a PTY whose slave side is `path`."""

    def __init__(self, bus: "Rs485Bus", name: str) -> None:
        self.bus = bus
        self.name = name
        self.master, self._slave = pty.openpty()
        tty.setraw(self._slave)
        attributes = termios.tcgetattr(self._slave)
        attributes[3] &= ~termios.ECHO
        termios.tcsetattr(self._slave, termios.TCSANOW, attributes)
        os.set_blocking(self.master, False)
        self.path = os.ttyname(self._slave)
        self.tx_free_s = 0.0  # when this endpoint's UART is done sending
        self.rx_bytes = 0
        self.tx_bytes = 0

    def close(self) -> None:
        for fd in (self.master, self._slave):
            try:
                os.close(fd)
            except OSError:
                pass


class _Burst:
    """Bytes from one sender, back to back, until a t3.5 silence: one frame on the wire."""

    __slots__ = ("source", "start_s", "end_s", "raw", "decision", "collided")

    def __init__(self, source: str, decision: Decision) -> None:
        self.source = source
        self.decision = decision
        self.start_s = decision.start_s
        self.end_s = decision.start_s
        self.raw = bytearray()
        self.collided = False


class _Run:
    """Bytes of one burst on their way to one receiver, written in one go when the last is due."""

    __slots__ = ("burst", "source", "data", "due_s")

    def __init__(self, burst: object, source: str) -> None:
        self.burst = burst  # a _Burst, or a noise burst's own token
        self.source = source
        self.data = bytearray()
        self.due_s: list[float] = []  # when each byte's last bit arrives

    def release_s(self) -> float:
        return self.due_s[-1]


class Rs485Bus(LiveFaults):
    def __init__(
        self,
        name: str,
        baud: int = 9600,
        trace: Trace | None = None,
        protocol: str | None = None,
        seed: int = 0,
        t0: float | None = None,
    ) -> None:
        if baud <= 0:
            raise BusError("baud rate must be positive")
        self.name = name
        self.baud = baud
        self.char_s = char_time_us(baud) / 1e6
        self.gap_s = silence_us(baud) / 1e6
        self.trace = trace
        self.protocol = protocol
        self.endpoints: dict[str, Endpoint] = {}
        self.model = FaultModel(self.char_s, self.gap_s, seed)
        self.collisions: list[tuple[float, str, str]] = []
        self.frames = 0
        self._collision_random = random.Random(seed)  # its own: collisions do not shift the faults' draws
        self._lock = threading.RLock()
        self._pending: dict[str, list[_Run]] = {}  # receiver -> [_Run], oldest first
        self._bursts: dict[str, _Burst] = {}  # open burst per source
        self._wire: list[tuple[float, float, str]] = []  # (start_s, end_s, source) of pieces still on the wire
        self._thread: threading.Thread | None = None
        self._running = False
        self._wake_r, self._wake_w = os.pipe()
        self.t0 = time.monotonic() if t0 is None else t0  # buses of one bench share it: comparable traces

    # --- set-up -------------------------------------------------------------

    def add_endpoint(self, name: str) -> Endpoint:
        with self._lock:
            if name in self.endpoints:
                raise BusError("bus %s already has an endpoint %r" % (self.name, name))
            endpoint = Endpoint(self, name)
            self.endpoints[name] = endpoint
        self._wake()
        return endpoint

    def endpoint(self, name: str) -> Endpoint:
        try:
            return self.endpoints[name]
        except KeyError:
            raise BusError(
                "bus %s has no endpoint %r (it has: %s)" % (self.name, name, ", ".join(self.endpoints))
            ) from None

    def start(self) -> Self:
        if self._thread is None:
            self._running = True
            self._thread = threading.Thread(target=self._run, name="rs485-" + self.name, daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._running = False
        self._wake()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        with self._lock:
            self._close_bursts(float("inf"))
            for endpoint in self.endpoints.values():
                endpoint.close()
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- faults (decided by hil/wires/faults.py; LiveFaults: faults, remove_fault, clear_faults, now) ---

    def add_fault(self, fault: Fault) -> Fault:
        for name in (fault.source, fault.target):
            if name is not None and name not in self.endpoints:
                self.endpoint(name)
        return self._hold(fault)

    # --- the wire -----------------------------------------------------------

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"\x00")
        except OSError:
            pass

    def transmit(self, source: str, data: bytes | bytearray, now_s: float) -> None:
        """Put bytes sent by source on the wire at now_s (bus seconds).

        The bus thread calls this with its clock for bytes read from a PTY;
        tests (and a simulated-time driver) may call it with their own.
        """
        endpoint = self.endpoints[source]
        endpoint.tx_bytes += len(data)
        with self._lock:
            if self.model.disconnected(source):
                return
            start_s = max(now_s, endpoint.tx_free_s)
            burst = self._bursts.get(source)
            if burst is None or start_s - burst.end_s >= self.gap_s:
                if burst is not None:
                    self._close_burst(burst)
                burst = self._open_burst(source, data, start_s)
                if burst is None:
                    return
                start_s = burst.start_s
            decision = burst.decision
            offset = len(burst.raw)
            sent = bytearray(data)
            self._wire = [piece for piece in self._wire if piece[1] > start_s - self.char_s]
            others = [piece for piece in self._wire if piece[2] != source]
            for index in range(len(sent) if others else 0):
                byte_start = start_s + index * self.char_s
                if self._collides(source, byte_start, byte_start + self.char_s, others):
                    sent[index] ^= self._collision_random.randrange(1, 256)
            self._wire.append((start_s, start_s + len(sent) * self.char_s, source))
            burst.raw.extend(sent)
            due_s = [start_s + (index + 1) * self.char_s for index in range(len(sent))]
            for receiver in decision.receivers:
                received = decision.received(receiver, sent, offset)
                if received is not None:
                    self._queue(receiver, burst, source, received, due_s)
            endpoint.tx_free_s = start_s + len(sent) * self.char_s
            burst.end_s = endpoint.tx_free_s
        if threading.current_thread() is not self._thread:
            self._wake()  # the bus thread's next deadline may have moved

    def _queue(self, receiver: str, burst: object, source: str, data: bytes, due_s: list[float]) -> None:
        runs = self._pending.setdefault(receiver, [])
        run = runs[-1] if runs and runs[-1].burst is burst else None
        if run is None:  # a burst's later bytes join its run while that is still held back
            run = _Run(burst, source)
            runs.append(run)
        run.data.extend(data)
        run.due_s.extend(due_s)

    def _open_burst(self, source: str, data: bytes | bytearray, start_s: float) -> _Burst | None:
        receivers = [name for name in self.endpoints if name != source]
        decision = self.model.decide(source, data, start_s, receivers)
        if not decision.sent:
            return None
        if decision.noise:
            noise = decision.noise
            due_s = [decision.noise_start_s + (index + 1) * self.char_s for index in range(len(noise))]
            noise_burst = object()  # a run of its own
            for receiver in decision.noise_receivers:
                self._queue(receiver, noise_burst, "noise", noise, due_s)
            if self.trace is not None:
                self.trace.record(
                    self, decision.noise_start_s, "noise", noise, faults=["noise before a frame from %s" % source]
                )
        burst = _Burst(source, decision)
        self._bursts[source] = burst
        return burst

    def _collides(self, source: str, start_s: float, end_s: float, others: list[tuple[float, float, str]]) -> bool:
        """Whether a byte overlaps another sender's bytes on the wire (others: their
        (start_s, end_s, source) pieces); if so the other's bytes in flight over that
        span are garbled too (both drivers fight the line)."""
        for other_start, other_end, other in others:
            if other_start < end_s and start_s < other_end:
                for runs in self._pending.values():
                    for run in runs:
                        if run.source != other:
                            continue
                        for index, due in enumerate(run.due_s):
                            if start_s < due <= end_s + self.char_s:
                                run.data[index] ^= self._collision_random.randrange(1, 256)
                burst = self._bursts.get(other)
                if burst is not None:
                    burst.collided = True
                mine = self._bursts.get(source)
                if mine is not None:
                    mine.collided = True
                if not self.collisions or self.collisions[-1][1:] != (other, source):
                    self.collisions.append((round(start_s, 6), other, source))
                return True
        return False

    def _close_burst(self, burst: _Burst) -> None:
        self._bursts.pop(burst.source, None)
        self.frames += 1
        if self.trace is not None:
            self.trace.record(
                self,
                burst.start_s,
                burst.source,
                bytes(burst.raw),
                faults=burst.decision.faults,
                collision=burst.collided,
            )

    def _close_bursts(self, now_s: float) -> None:
        for burst in list(self._bursts.values()):
            if now_s - burst.end_s >= self.gap_s:
                self._close_burst(burst)

    def deliver_due(self, now_s: float) -> float | None:
        """Write to each receiver, in one write, every run of bytes whose last byte
        is due by now_s; close frames followed by a t3.5 silence.  Returns when
        the next run is due (None: nothing on its way)."""
        with self._lock:
            self._close_bursts(now_s)
            next_s = None
            for receiver, runs in self._pending.items():
                due = [run for run in runs if run.release_s() <= now_s]
                if due:
                    runs[:] = [run for run in runs if run.release_s() > now_s]
                    due.sort(key=_Run.release_s)
                    self._write(receiver, b"".join(run.data for run in due))
                for run in runs:
                    if next_s is None or run.release_s() < next_s:
                        next_s = run.release_s()
            return next_s

    def _write(self, receiver: str, data: bytes) -> None:
        endpoint = self.endpoints.get(receiver)
        if endpoint is None:
            return
        try:
            endpoint.rx_bytes += os.write(endpoint.master, data)
        except OSError:
            pass  # nobody reads the port and its buffer is full: bytes are lost, as on a real bus

    def _run(self) -> None:
        while self._running:
            with self._lock:
                now_s = self.now()
                next_due = self.deliver_due(now_s)
                waits = [next_due] if next_due is not None else []
                waits += [b.end_s + self.gap_s for b in self._bursts.values()]
                fds = [e.master for e in self.endpoints.values()]
            timeout = min(max(0.0, min(waits) - now_s), 0.5) if waits else 0.5
            try:
                readable, _, _ = select.select(fds + [self._wake_r], [], [], timeout)
            except (OSError, ValueError):
                continue
            if self._wake_r in readable:
                try:
                    os.read(self._wake_r, 4096)
                except OSError:
                    pass
            with self._lock:
                now_s = self.now()
                for endpoint in list(self.endpoints.values()):
                    if endpoint.master not in readable:
                        continue
                    try:
                        data = os.read(endpoint.master, 4096)
                    except OSError:
                        continue
                    if data:
                        self.transmit(endpoint.name, data, now_s)
