"""The BMS-side RS485 master: every RS485 slot polled in turn, back to back at wire speed.

What differs between battery types (the request, the reply's size, where a reply
starts, its length from a prefix, what it decodes to) is one table, BUS_KINDS, keyed
by slot type; the sizes come from the codecs.  The master waits for the wire time of
the request and of the reply the type sends, plus app.bms_timeout_ms; a reply that
announces more than that (a 4E57 frame's length field) extends the wait by its wire
time.  A bad or missing reply is retried app.bms_retries times, then the slot's
failure is recorded and the next slot is polled.
"""

from . import battery, byd, jk_4e57, jk_frames, jk_pb
from . import config as config_module
from .errors import ProtocolError
from .events import BmsWrite

# The receive buffer's bound: a 4E57 frame may be 1024 bytes (jk_4e57.MAX_FRAME), and an
# adapter that echoes puts the request in front of it.
MAX_RX = jk_4e57.MAX_FRAME + 64
SETTINGS_EVERY = 30  # JK-PB: ask for the settings frame again every N polls (charge limit, capacity)


def _byd_request(slot):
    return byd.encode_request(int(slot.address))


def _byd_decode(slot, raw):
    status = byd.decode_response(raw)
    if status.address != int(slot.address):
        raise ProtocolError("reply from BYD address %d" % status.address)
    if status.result != 0 or status.fields is None:
        raise ProtocolError("BYD result code %d" % status.result)
    return battery.from_byd(status.fields)


def _jk_pb_request(slot):
    return jk_pb.encode_trigger(int(slot.address), "settings" if slot.polls % SETTINGS_EVERY == 0 else "status")


def _jk_pb_start(rx):
    """A trigger reply begins at the 55AA header; a Modbus exception (FC 0x90) at byte 0."""
    if len(rx) >= 2 and rx[1] == 0x90:
        return 0
    start = rx.find(jk_frames.HEADER)
    return start if start >= 0 else max(len(rx) - 3, 0)


def _jk_pb_decode(slot, raw):
    reply = jk_pb.decode_trigger_reply(raw)
    decoded = jk_frames.decode_frame(reply.frame, jk_frames.JK02_32S)
    if decoded["frame_type"] == "settings":
        slot.settings = decoded
    elif decoded["frame_type"] == "cell_info":
        slot.layout = jk_frames.JK02_32S
        return battery.from_jk(decoded, slot.settings)
    return None


def _jk_4e57_request(slot):
    return jk_4e57.encode_read_all_request()


def _jk_4e57_decode(slot, raw):
    return battery.from_jk_4e57(jk_4e57.decode_response(raw))


def _at_start(rx):
    return 0


# Reply sizes, bytes: BYD's status reply; a JK-PB trigger reply with both padding bytes
# (jk-protocols.md 11.6); the longest 4E57 read-all reply: its envelope, 32 cells and every
# register the codec knows (section 10.2).
BYD_REPLY_BYTES = byd.RESPONSE_LENGTH
JK_PB_REPLY_BYTES = jk_frames.FRAME_LENGTH + 1 + jk_pb.ACK_LENGTH + 1
JK_4E57_REPLY_BYTES = (jk_4e57.MIN_LENGTH - 1) + 2 + 3 * 32 + sum(1 + spec[0] for spec in jk_4e57.REGISTERS.values())


class BusKind:
    """How the master talks to one battery type.

    request(slot) -> bytes; reply_bytes: the size of the reply it expects, for the timeout;
    start(rx) -> offset where the reply begins (bytes before it are dropped);
    reply_length(prefix) -> total length or None while unknown;
    decode(slot, raw) -> a battery.Reading, or None for an answer without one (settings),
    raising ProtocolError for a reply that cannot be used;
    same_bytes_same_reading: decode depends on the reply's bytes and the slot's settings only, so
    an answer byte for byte the same as the slot's last one is that reading again (a battery at
    rest answers the same frame poll after poll: its decoding and its registers are skipped).
    """

    __slots__ = ("name", "request", "reply_bytes", "start", "reply_length", "decode", "same_bytes_same_reading")

    def __init__(self, name, request, reply_bytes, start, reply_length, decode, same_bytes_same_reading):
        self.name = name
        self.request = request
        self.reply_bytes = reply_bytes
        self.start = start
        self.reply_length = reply_length
        self.decode = decode
        self.same_bytes_same_reading = same_bytes_same_reading


BUS_KINDS = {
    config_module.TYPE_BYD_PRO: BusKind(
        "BYD PRO", _byd_request, BYD_REPLY_BYTES, _at_start, byd.frame_length, _byd_decode, True
    ),
    # (a JK-PB status frame is read with the settings frame the slot has: not the bytes alone)
    config_module.TYPE_JK_PB: BusKind(
        "JK-PB", _jk_pb_request, JK_PB_REPLY_BYTES, _jk_pb_start, jk_pb.trigger_reply_length, _jk_pb_decode, False
    ),
    config_module.TYPE_JK_4E57: BusKind(
        "JK 4E57", _jk_4e57_request, JK_4E57_REPLY_BYTES, _at_start, jk_4e57.frame_length, _jk_4e57_decode, True
    ),
}


class PendingRequest:
    """The request on the wire and what is known of its answer."""

    __slots__ = ("slot", "kind", "request", "deadline_us", "attempts", "rx")

    def __init__(self, slot, kind, request, deadline_us, attempts):
        self.slot = slot
        self.kind = kind
        self.request = request
        self.deadline_us = deadline_us
        self.attempts = attempts
        self.rx = bytearray()


class Rs485Master:
    """owner: the Proxy (config, emit(action), reading(slot, reading, now_us), failure(slot, message))."""

    __slots__ = ("owner", "order", "next_index", "pending", "next_send_us", "cycles", "cycle_started_us",
                 "last_cycle_us", "char_us")  # fmt: skip

    def __init__(self, owner, now_us):
        self.owner = owner
        self.order = []
        self.next_index = 0
        self.pending = None
        self.next_send_us = now_us
        self.cycles = 0
        self.cycle_started_us = now_us
        self.last_cycle_us = None
        self.char_us = 0

    def configure(self, slots, config):
        self.order = [slot for slot in slots if slot.kind in BUS_KINDS]
        self.char_us = 10 * 1000000 // config["app.bms_baud"]
        if self.pending is not None and self.pending.slot not in self.order:
            self.pending = None
        if self.next_index >= len(self.order):
            self.next_index = 0

    def next_deadline_us(self):
        if self.pending is not None:
            return self.pending.deadline_us
        return self.next_send_us if self.order else None

    def tick(self, now_us):
        pending = self.pending
        if pending is not None and now_us >= pending.deadline_us:
            timeout_ms = self.owner.config["app.bms_timeout_ms"]
            self._retry_or_give_up("no reply within %d ms" % timeout_ms, now_us)
        if self.pending is None and self.order and now_us >= self.next_send_us:
            self._start(now_us)

    def _start(self, now_us):
        if self.next_index >= len(self.order):
            self.next_index = 0
            self.cycles += 1
            self.last_cycle_us = now_us - self.cycle_started_us
            self.cycle_started_us = now_us
        slot = self.order[self.next_index]
        kind = BUS_KINDS[slot.kind]
        self._send(slot, kind, kind.request(slot), 0, now_us)

    def _send(self, slot, kind, request, attempts, now_us):
        wire_us = (len(request) + kind.reply_bytes) * self.char_us
        deadline_us = now_us + wire_us + self.owner.config["app.bms_timeout_ms"] * 1000
        self.pending = PendingRequest(slot, kind, request, deadline_us, attempts)
        slot.polls += 1
        self.owner.emit(BmsWrite(request))

    def bytes_in(self, data, now_us):
        pending = self.pending
        if pending is None:
            return  # unsolicited bytes (another master, noise, a late reply): ignored
        rx = pending.rx
        rx.extend(data[: MAX_RX - len(rx)])  # a full buffer never waits: its reply is complete or refused
        request = pending.request
        if rx[: len(request)] == request:
            rx[0 : len(request)] = b""  # an adapter that echoes what it sends
        start = pending.kind.start(rx)
        if start:
            rx[0:start] = b""
        expected = pending.kind.reply_length(rx)
        if expected is None:
            return
        if expected > MAX_RX:
            self._retry_or_give_up("bad reply: announces %d bytes" % expected, now_us)
            return
        if len(rx) < expected:
            # the rest of a reply whose length is now known: its wire time, then the timeout again
            rest_us = (expected - len(rx)) * self.char_us + self.owner.config["app.bms_timeout_ms"] * 1000
            if now_us + rest_us > pending.deadline_us:
                pending.deadline_us = now_us + rest_us
            return
        slot = pending.slot
        raw = bytes(rx[:expected])
        if pending.kind.same_bytes_same_reading and raw == slot.last_raw:
            self.owner.answered_again(slot, now_us)
            self._finish(now_us)
            return
        try:
            reading = pending.kind.decode(slot, raw)
        except ProtocolError as error:
            self._retry_or_give_up("bad reply: %s" % error, now_us)
            return
        self.owner.answered(slot, reading, now_us)
        slot.last_raw = raw if reading is not None else None
        self._finish(now_us)

    def _retry_or_give_up(self, message, now_us):
        pending = self.pending
        attempts = pending.attempts + 1
        if attempts <= self.owner.config["app.bms_retries"]:
            self._send(pending.slot, pending.kind, pending.request, attempts, now_us)
            return
        self.owner.failure(pending.slot, message)
        self._finish(now_us)

    def _finish(self, now_us):
        self.pending = None
        self.next_index += 1
        self.next_send_us = now_us + self.owner.config["app.bms_gap_ms"] * 1000
