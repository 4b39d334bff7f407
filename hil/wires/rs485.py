"""An RS485 multi-drop bus made of pseudo-terminals, with real timing.

Every endpoint is a PTY that pyserial (or any program) opens like a serial
port.  A byte written by one endpoint is put on the "wire" at the bus's baud
rate (10 bit times per byte, 8N1) and reaches every other endpoint when its
last bit would have: transfer times and inter-frame gaps are real.

- Collisions: an endpoint that starts sending while another one's bytes are
  still on the wire garbles both; every receiver gets the garbled bytes and
  the collision is recorded.
- Faults (switchable at run time, per sending endpoint and per receiver):
  drop a frame, flip bits, delay, inject noise bytes, disconnect an endpoint.
- Capture: every frame (a burst from one endpoint ended by a t3.5 silence)
  goes to the trace with its time, sender, hex and decoded summary.

The bus runs in one thread; its methods are thread-safe.
"""

import os
import pty
import random
import select
import termios
import threading
import time
import tty

from vbms_core.modbus import char_time_us, silence_us

DROP = "drop"
CORRUPT = "corrupt"
DELAY = "delay"
NOISE = "noise"
DISCONNECT = "disconnect"
FAULT_KINDS = (DROP, CORRUPT, DELAY, NOISE, DISCONNECT)


class BusError(Exception):
    """A bus used wrongly (unknown endpoint, bad fault): says what to do."""


class Fault:
    """A fault rule.

    kind: drop, corrupt, delay, noise or disconnect.
    source / target: endpoint names the rule applies to (None: any); a
    disconnect uses source as the endpoint to cut off.
    count: how many frames it affects before it expires (None: until removed).
    probability: chance per frame (a seeded generator keeps runs repeatable).
    delay_s (delay), noise_bytes (noise), bit (corrupt: which bit of which
    byte, as byte_index * 8 + bit; None: random).
    """

    __slots__ = ("kind", "source", "target", "count", "probability", "delay_s", "noise_bytes", "bit", "hits")

    def __init__(
        self, kind, source=None, target=None, count=None, probability=1.0, delay_s=0.05, noise_bytes=8, bit=None
    ):
        if kind not in FAULT_KINDS:
            raise BusError("unknown fault %r; choose one of %s" % (kind, ", ".join(FAULT_KINDS)))
        if not 0.0 <= probability <= 1.0:
            raise BusError("fault probability must be within 0..1, not %r" % (probability,))
        if kind == DISCONNECT and source is None:
            raise BusError("a disconnect fault names the endpoint to disconnect (source)")
        self.kind = kind
        self.source = source
        self.target = target
        self.count = count
        self.probability = probability
        self.delay_s = delay_s
        self.noise_bytes = noise_bytes
        self.bit = bit
        self.hits = 0

    def matches(self, source, target=None):
        return (self.source is None or self.source == source) and (
            target is None or self.target is None or self.target == target
        )

    def describe(self):
        parts = [self.kind]
        if self.source:
            parts.append("from %s" % self.source)
        if self.target:
            parts.append("to %s" % self.target)
        return " ".join(parts)


class Endpoint:
    """One drop on the bus: a PTY whose slave side is `path`."""

    def __init__(self, bus, name):
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

    def close(self):
        for fd in (self.master, self._slave):
            try:
                os.close(fd)
            except OSError:
                pass


class _Burst:
    """Bytes from one sender, back to back, until a t3.5 silence."""

    __slots__ = ("source", "start_s", "end_s", "raw", "faults", "collided", "dropped_for", "corrupt_for")

    def __init__(self, source, start_s):
        self.source = source
        self.start_s = start_s
        self.end_s = start_s
        self.raw = bytearray()
        self.faults = []
        self.collided = False
        self.dropped_for = set()
        self.corrupt_for = {}


class Rs485Bus:
    def __init__(self, name, baud=9600, trace=None, protocol=None, seed=0, t0=None):
        if baud <= 0:
            raise BusError("baud rate must be positive")
        self.name = name
        self.baud = baud
        self.char_s = char_time_us(baud) / 1e6
        self.gap_s = silence_us(baud) / 1e6
        self.trace = trace
        self.protocol = protocol
        self.endpoints = {}
        self.faults = []
        self.collisions = []
        self.frames = 0
        self._random = random.Random(seed)
        self._lock = threading.RLock()
        self._deliveries = []  # [due_s, target, byte, source]
        self._bursts = {}  # open burst per source
        self._wire = []  # (start_s, end_s, source) of bytes still on the wire
        self._thread = None
        self._running = False
        self._wake_r, self._wake_w = os.pipe()
        self.t0 = time.monotonic() if t0 is None else t0  # buses of one bench share it: comparable traces

    # --- set-up -------------------------------------------------------------

    def add_endpoint(self, name):
        with self._lock:
            if name in self.endpoints:
                raise BusError("bus %s already has an endpoint %r" % (self.name, name))
            endpoint = Endpoint(self, name)
            self.endpoints[name] = endpoint
        self._wake()
        return endpoint

    def endpoint(self, name):
        try:
            return self.endpoints[name]
        except KeyError:
            raise BusError(
                "bus %s has no endpoint %r (it has: %s)" % (self.name, name, ", ".join(self.endpoints))
            ) from None

    def start(self):
        if self._thread is None:
            self._running = True
            self._thread = threading.Thread(target=self._run, name="rs485-" + self.name, daemon=True)
            self._thread.start()
        return self

    def stop(self):
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

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # --- faults -------------------------------------------------------------

    def add_fault(self, fault):
        if fault.source is not None and fault.source not in self.endpoints:
            self.endpoint(fault.source)
        if fault.target is not None and fault.target not in self.endpoints:
            self.endpoint(fault.target)
        with self._lock:
            self.faults.append(fault)
        return fault

    def remove_fault(self, fault):
        with self._lock:
            if fault in self.faults:
                self.faults.remove(fault)

    def clear_faults(self):
        with self._lock:
            self.faults.clear()

    def _disconnected(self, name):
        return any(f.kind == DISCONNECT and f.source == name for f in self.faults)

    def _fires(self, fault):
        if fault.count is not None and fault.hits >= fault.count:
            return False
        if fault.probability < 1.0 and self._random.random() >= fault.probability:
            return False
        fault.hits += 1
        return True

    def _expire(self):
        self.faults = [f for f in self.faults if f.count is None or f.hits < f.count or f.kind == DISCONNECT]

    # --- the wire -----------------------------------------------------------

    def now(self):
        return time.monotonic() - self.t0

    def _wake(self):
        try:
            os.write(self._wake_w, b"\x00")
        except OSError:
            pass

    def transmit(self, source, data, now_s):
        """Put bytes sent by source on the wire at now_s (bus seconds).

        The bus thread calls this with its clock for bytes read from a PTY;
        tests (and a simulated-time driver) may call it with their own.
        """
        endpoint = self.endpoints[source]
        endpoint.tx_bytes += len(data)
        if self._disconnected(source):
            return
        start_s = max(now_s, endpoint.tx_free_s)
        burst = self._bursts.get(source)
        if burst is None or start_s - burst.end_s >= self.gap_s:
            if burst is not None:
                self._close_burst(burst)
            burst = self._open_burst(source, start_s)
            start_s = burst.start_s
        targets = [name for name in self.endpoints if name != source and not self._disconnected(name)]
        for index in range(len(data)):
            byte_start = start_s + index * self.char_s
            byte_end = byte_start + self.char_s
            value = data[index]
            collided = self._collides(source, byte_start, byte_end)
            if collided:
                value ^= self._random.randrange(1, 256)
            position = len(burst.raw)
            burst.raw.append(value)
            self._wire.append((byte_start, byte_end, source))
            for target in targets:
                if target in burst.dropped_for:
                    continue
                delivered = value
                flip = burst.corrupt_for.get(target)
                if flip is not None and flip[0] == position:
                    delivered ^= 1 << flip[1]
                self._deliveries.append([byte_end, target, delivered, source])
        endpoint.tx_free_s = start_s + len(data) * self.char_s
        burst.end_s = endpoint.tx_free_s

    def _open_burst(self, source, start_s):
        burst = _Burst(source, start_s)
        for fault in list(self.faults):
            if fault.kind == DISCONNECT or not fault.matches(source):
                continue
            if not self._fires(fault):
                continue
            burst.faults.append(fault.describe())
            targets = [fault.target] if fault.target else [n for n in self.endpoints if n != source]
            if fault.kind == DROP:
                burst.dropped_for.update(targets)
            elif fault.kind == CORRUPT:
                for target in targets:
                    if fault.bit is None:
                        burst.corrupt_for[target] = (self._random.randrange(0, 8), self._random.randrange(0, 8))
                    else:
                        burst.corrupt_for[target] = (fault.bit // 8, fault.bit % 8)
            elif fault.kind == DELAY:
                burst.start_s += fault.delay_s
                burst.end_s = burst.start_s
            elif fault.kind == NOISE:
                self._inject_noise(source, burst.start_s, fault.noise_bytes, targets)
                burst.start_s += (fault.noise_bytes * self.char_s) + self.gap_s
                burst.end_s = burst.start_s
        self._expire()
        self._bursts[source] = burst
        return burst

    def _inject_noise(self, source, start_s, count, targets):
        noise = bytes(self._random.randrange(256) for _ in range(count))
        for index, value in enumerate(noise):
            due = start_s + (index + 1) * self.char_s
            for target in targets:
                self._deliveries.append([due, target, value, "noise"])
        if self.trace is not None:
            self.trace.record(self, start_s, "noise", noise, faults=["noise before a frame from %s" % source])

    def _collides(self, source, start_s, end_s):
        """Whether a byte overlaps another sender's; if so the other's bytes in
        flight over that span are garbled too (both drivers fight the line)."""
        self._wire = [w for w in self._wire if w[1] > start_s - self.char_s]
        for other_start, other_end, other in self._wire:
            if other != source and other_start < end_s and start_s < other_end:
                for delivery in self._deliveries:
                    if delivery[3] == other and start_s < delivery[0] <= end_s + self.char_s:
                        delivery[2] ^= self._random.randrange(1, 256)
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

    def _close_burst(self, burst):
        self._bursts.pop(burst.source, None)
        self.frames += 1
        if self.trace is not None:
            self.trace.record(
                self, burst.start_s, burst.source, bytes(burst.raw), faults=burst.faults, collision=burst.collided
            )

    def _close_bursts(self, now_s):
        for burst in list(self._bursts.values()):
            if now_s - burst.end_s >= self.gap_s:
                self._close_burst(burst)

    def deliver_due(self, now_s):
        """Write to each receiver every byte whose last bit has arrived by now_s,
        close frames followed by a t3.5 silence; returns the next due time."""
        self._close_bursts(now_s)
        due_now = {}
        later = []
        for delivery in self._deliveries:
            if delivery[0] <= now_s:
                due_now.setdefault(delivery[1], bytearray()).append(delivery[2])
            else:
                later.append(delivery)
        self._deliveries = later
        for target, data in due_now.items():
            endpoint = self.endpoints.get(target)
            if endpoint is None:
                continue
            try:
                os.write(endpoint.master, bytes(data))
                endpoint.rx_bytes += len(data)
            except (BlockingIOError, OSError):
                pass  # nobody reads the port: bytes are lost, as on a real bus
        return min((d[0] for d in later), default=None)

    def _run(self):
        while self._running:
            with self._lock:
                now_s = self.now()
                next_due = self.deliver_due(now_s)
                waits = [next_due] if next_due is not None else []
                waits += [b.end_s + self.gap_s for b in self._bursts.values()]
                fds = [e.master for e in self.endpoints.values()]
            timeout = max(0.0, min(waits) - now_s) if waits else 0.2
            try:
                readable, _, _ = select.select(fds + [self._wake_r], [], [], min(timeout, 0.2))
            except (OSError, ValueError):
                continue
            with self._lock:
                now_s = self.now()
                for endpoint in list(self.endpoints.values()):
                    if endpoint.master not in readable:
                        continue
                    try:
                        data = os.read(endpoint.master, 4096)
                    except (BlockingIOError, OSError):
                        continue
                    if data:
                        self.transmit(endpoint.name, data, now_s)
            if self._wake_r in readable:
                try:
                    os.read(self._wake_r, 64)
                except OSError:
                    pass
