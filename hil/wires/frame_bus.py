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
send(source, data, deliver) is the older form: that one callback is the only receiver,
with no name (so a fault that names a target does not reach it).
"""

from vbms_core.modbus import char_time_us, silence_us

from .faults import FaultModel


class _Burst:
    """A frame on the line: bytes from one sender until a t3.5 silence."""

    __slots__ = ("source", "decision", "start_s", "end_s", "raw", "collided", "receivers")

    def __init__(self, source, decision, receivers):
        self.source = source
        self.decision = decision
        self.start_s = decision.start_s
        self.end_s = decision.start_s
        self.raw = bytearray()
        self.collided = False
        self.receivers = receivers  # name -> deliver


class _Piece:
    """Bytes of a burst handed to the bus in one send: on the line from start_s to end_s."""

    __slots__ = ("burst", "data", "offset", "start_s", "end_s", "garbled")

    def __init__(self, burst, data, offset, start_s, end_s):
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

    def __init__(self, env, name, baud, protocol, trace=None, seed=0):
        self.env = env
        self.trace = trace
        self.name = name
        self.baud = baud
        self.protocol = protocol
        self.char_s = char_time_us(baud) / 1e6
        self.gap_s = silence_us(baud) / 1e6
        self.model = FaultModel(self.char_s, self.gap_s, seed)
        self.endpoints = {}  # name -> deliver(bytes, end_s)
        self.collisions = 0
        self.frames = 0
        self.sending_until = {}  # source -> when its UART has sent everything it was given
        self._bursts = {}  # open burst per source
        self._line = []  # pieces still on the line, for collisions

    # --- set-up and faults ---------------------------------------------------------------

    def add_endpoint(self, name, deliver):
        self.endpoints[name] = deliver

    @property
    def faults(self):
        """The fault rules (hil/wires/faults.Fault)."""
        return self.model.faults

    def add_fault(self, fault):
        return self.model.add(fault)

    def remove_fault(self, fault):
        self.model.remove(fault)

    def clear_faults(self):
        self.model.clear()

    def transfer_s(self, data):
        return len(data) * self.char_s

    # --- the line ------------------------------------------------------------------------

    def send(self, source, data, deliver=None):
        """A frame from source.  A sender's UART sends its frames one after another: a
        frame given while the sender's previous one is still on the line follows it (and,
        with no t3.5 between them, is the same frame on the wire)."""
        env = self.env
        data = bytes(data)
        start_s = max(env.now, self.sending_until.get(source, 0.0))
        burst = self._bursts.get(source)
        if burst is None or start_s - burst.end_s >= self.gap_s:
            if burst is not None:
                self._close(burst)
            if deliver is None:
                receivers = {name: callback for name, callback in self.endpoints.items() if name != source}
            else:
                receivers = {None: deliver}
            decision = self.model.decide(source, data, start_s, list(receivers))
            if not decision.sent:
                return
            burst = _Burst(source, decision, receivers)
            self._bursts[source] = burst
            if decision.noise:
                self._record(decision.noise_start_s, "noise", decision.noise, ["noise before a frame from %s" % source])
                noise_end_s = decision.noise_start_s + self.transfer_s(decision.noise)
                for name in decision.noise_receivers:
                    env.process(self._arrive(noise_end_s, receivers[name], decision.noise))
            start_s = decision.start_s
        offset = len(burst.raw)
        burst.raw.extend(data)
        end_s = start_s + self.transfer_s(data)
        burst.end_s = end_s
        self.sending_until[source] = end_s
        piece = _Piece(burst, data, offset, start_s, end_s)
        if start_s <= env.now:
            self._on_line(piece)
        env.process(self._carry(piece))

    def _on_line(self, piece):
        """The piece's first bit goes on the line now: does it collide?"""
        now_s = piece.start_s
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

    def _carry(self, piece):
        env = self.env
        if piece.start_s > env.now:
            yield env.timeout(piece.start_s - env.now)
            self._on_line(piece)
        yield env.timeout(piece.end_s - env.now)
        burst = piece.burst
        for name, deliver in burst.receivers.items():
            data = burst.decision.received(name, piece.data, piece.offset)
            if data is not None:
                deliver(bytes(b ^ 0x5A for b in data) if piece.garbled else data, env.now)
        yield env.timeout(self.gap_s)
        if self._bursts.get(burst.source) is burst and env.now - burst.end_s >= self.gap_s:
            self._close(burst)

    def _arrive(self, end_s, deliver, data):
        yield self.env.timeout(end_s - self.env.now)
        deliver(data, self.env.now)

    def _close(self, burst):
        self._bursts.pop(burst.source, None)
        self.frames += 1
        self._record(burst.start_s, burst.source, bytes(burst.raw), burst.decision.faults, burst.collided)

    def _record(self, t_s, source, raw, faults, collision=False):
        if self.trace is not None:
            self.trace.record(self, t_s, source, raw, faults=faults, collision=collision)
