"""JK-BMS over Bluetooth LE: 20-byte commands and notification reassembly.

Reference: shared/reference/jk-protocols.md section 1 (transport, chunking,
junk), 1.5 (reassembly), 2 (command frame).  The 300-byte frames themselves are
decoded in jk_frames.

Commands: AA 55 90 EB | register | length | value (LE) ... | sum8 at byte 19.
Bytes 10..18 are padding: zero from open-source clients, random from the
official app; both are valid.

Reassembly: notifications are cut at arbitrary points, may carry "AT\\r\\n"
keep-alives (even in front of a header inside one notification) and the
20-byte "AA 55 90 EB C8 ..." trailer.  JkReassembler searches the header
anywhere, accepts a 300-byte window only if its checksum is right and its type
is known, otherwise drops 4 bytes and resynchronises.  Its buffer never holds
more than 299 bytes between calls.
"""

import struct

from .compat import hexlify
from .errors import LocalProtocolError, RemoteProtocolError
from .jk_frames import FRAME_LENGTH, HEADER
from .modbus import NEED_DATA

COMMAND_HEADER = b"\xaa\x55\x90\xeb"
COMMAND_LENGTH = 20
KEEPALIVE = b"AT\r\n"

GET_DEVICE_INFO = 0x97
GET_SETTINGS = 0x96
GET_LOGBOOK = 0xA1
TRAILER = 0xC8

COMMAND_NAMES = {
    GET_DEVICE_INFO: "get_device_info",
    GET_SETTINGS: "get_settings",
    GET_LOGBOOK: "get_logbook",
    0x65: "shutdown",
    0x66: "restart",
    0x9D: "factory_reset",
    TRAILER: "c8_trailer",
    0x1D: "charge_switch",
    0x1E: "discharge_switch",
    0x1F: "balancer_switch",
    0x6C: "time_sync_or_jk04_balancer_switch",
}

_KNOWN_FRAME_TYPES = (0x01, 0x02, 0x03, 0x05)
_JUNK_SAMPLE = 64


class JkCommand:
    """value_bytes: the value as long as length says; value_field: bytes 6..9
    (or more for a string) as sent, the app fills unused ones at random."""

    __slots__ = ("command", "length", "value", "value_bytes", "value_field", "padding")

    def __init__(self, command, length, value, value_bytes, value_field, padding):
        self.command = command
        self.length = length
        self.value = value
        self.value_bytes = value_bytes
        self.value_field = value_field
        self.padding = padding


def encode_command(command, value=0, length=None, padding=None):
    """A 20-byte command frame.

    value is an int written little-endian (length defaults to 4 when value is
    non-zero, 0 otherwise) or bytes of up to 13 (the user-data string).
    padding, for bytes 10..18, defaults to zeros.
    """
    if not 0 <= command <= 0xFF:
        raise LocalProtocolError("JK command %r is not a byte" % (command,))
    frame = bytearray(COMMAND_LENGTH)
    frame[0:4] = COMMAND_HEADER
    frame[4] = command
    if isinstance(value, (bytes, bytearray)):
        if len(value) > 13:
            raise LocalProtocolError("JK command value of %d bytes exceeds 13" % len(value))
        frame[6 : 6 + len(value)] = value
        frame[5] = len(value) if length is None else length
    else:
        if length is None:
            length = 4 if value else 0
        if length not in (0, 1, 2, 4):
            raise LocalProtocolError("JK command value length must be 0, 1, 2 or 4, not %r" % (length,))
        if length:
            limit = 1 << (8 * length)
            if not -(limit >> 1) <= value < limit:
                raise LocalProtocolError("JK command value %r does not fit %d bytes" % (value, length))
            struct.pack_into("<I", frame, 6, value & 0xFFFFFFFF)
            if length < 4:
                frame[6 + length : 10] = bytes(4 - length)
        frame[5] = length
    if padding is not None:
        if len(padding) != 9:
            raise LocalProtocolError("JK command padding must be 9 bytes")
        frame[10:19] = padding
    frame[19] = sum(frame[:19]) & 0xFF
    return bytes(frame)


def decode_command(frame):
    if len(frame) != COMMAND_LENGTH:
        raise RemoteProtocolError("JK command must be 20 bytes, got %d" % len(frame), raw=bytes(frame))
    if frame[:4] != COMMAND_HEADER:
        raise RemoteProtocolError("not a JK command: header %s" % hexlify(frame[:4]), raw=bytes(frame), offset=0)
    expected = sum(frame[:19]) & 0xFF
    if frame[19] != expected:
        raise RemoteProtocolError(
            "JK command checksum %02X, computed %02X" % (frame[19], expected), raw=bytes(frame), offset=19
        )
    length = frame[5]
    if length > 13:
        raise RemoteProtocolError("JK command value length %d exceeds 13" % length, raw=bytes(frame), offset=5)
    value_bytes = bytes(frame[6 : 6 + length])
    value = 0
    for index in range(min(length, 4) - 1, -1, -1):
        value = (value << 8) | value_bytes[index]
    value_field = bytes(frame[6 : 6 + max(length, 4)])
    return JkCommand(frame[4], length, value, value_bytes, value_field, bytes(frame[10:19]))


# --- reassembly ----------------------------------------------------------------


class JkFrame:
    """A complete, checksum-valid 300-byte frame."""

    __slots__ = ("raw",)

    def __init__(self, raw):
        self.raw = raw


class Junk:
    """Bytes dropped before a frame: keep-alives, trailers, or garbage.

    raw holds at most the first 64 of them; length counts them all; kinds
    names what was recognised ("keepalive", "c8_trailer", "garbage").
    """

    __slots__ = ("raw", "length", "kinds")

    def __init__(self, raw, length, kinds):
        self.raw = raw
        self.length = length
        self.kinds = kinds


def classify_junk(raw):
    """Names for what a run of dropped bytes contains."""
    kinds = []
    position = 0
    garbage = False
    while position < len(raw):
        if raw[position : position + 4] == KEEPALIVE:
            if "keepalive" not in kinds:
                kinds.append("keepalive")
            position += 4
        elif raw[position : position + 5] == COMMAND_HEADER + b"\xc8":
            if "c8_trailer" not in kinds:
                kinds.append("c8_trailer")
            position += COMMAND_LENGTH
        else:
            garbage = True
            position += 1
    if garbage:
        kinds.append("garbage")
    return kinds


class JkReassembler:
    """Notification chunks in, JkFrame and Junk events out (sans-I/O).

    feed(chunk) any number of times; next_event() returns events in wire order,
    then NEED_DATA.  flush() turns bytes still held into a Junk event (use it
    when the link drops).
    """

    __slots__ = ("_buffer", "_events", "_junk", "_junk_length", "frames", "junk_bytes")

    def __init__(self):
        self._buffer = bytearray()
        self._events = []
        self._junk = bytearray()
        self._junk_length = 0
        self.frames = 0
        self.junk_bytes = 0

    def _drop(self, count):
        if count <= 0:
            return
        room = _JUNK_SAMPLE - len(self._junk)
        if room > 0:
            self._junk.extend(self._buffer[: min(count, room)])
        self._junk_length += count
        self.junk_bytes += count
        self._buffer[0:count] = b""

    def _emit_junk(self):
        if self._junk_length:
            sample = bytes(self._junk)
            self._events.append(Junk(sample, self._junk_length, classify_junk(sample)))
            self._junk = bytearray()
            self._junk_length = 0

    def feed(self, chunk):
        self._buffer.extend(chunk)
        buffer = self._buffer
        while True:
            start = buffer.find(HEADER)
            if start < 0:
                # Keep a tail that may be the start of a header split across notifications.
                self._drop(len(buffer) - 3)
                return
            if start:
                self._drop(start)
            if len(buffer) < FRAME_LENGTH:
                return
            if buffer[4] in _KNOWN_FRAME_TYPES and sum(buffer[: FRAME_LENGTH - 1]) & 0xFF == buffer[FRAME_LENGTH - 1]:
                self._emit_junk()
                self._events.append(JkFrame(bytes(buffer[:FRAME_LENGTH])))
                self.frames += 1
                buffer[0:FRAME_LENGTH] = b""
            else:
                self._drop(4)

    def next_event(self):
        if self._events:
            return self._events.pop(0)
        return NEED_DATA

    def flush(self):
        self._drop(len(self._buffer))
        self._emit_junk()

    def pending(self):
        return len(self._buffer)
