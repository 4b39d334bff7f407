"""Fuzz targets: every decoder, framer and reassembler of vbms_core, and the config validator.

A target is a check(data) function: it feeds one fuzz input to the code under
test and returns when the invariant holds.  The invariant (STYLE.md, Errors):
any input decodes or raises RemoteProtocolError (the configuration: ConfigError),
and what does decode is consistent: checksums that a decoder accepted are
right, lengths agree with the stream splitters, buffers stay under their
documented bounds, and what the proxy computes next from a decoded frame (the
battery reading and the 25 DEYE registers) is computable.  Any other exception,
or an InvariantViolation raised here, is a finding.  Time and memory are
bounded by the worker (see run_bounded and hil.fuzz.runner).

Inputs: for frame decoders the fuzz input IS the frame (the custom mutator of
hil.fuzz.checksums keeps its checksums right), so a saved finding is a frame
that `vbms decode` can show.  Stream and configuration targets read a small
script from the input with Reader; its format is described at each target and
is part of the regression file format (tests/fuzz_regressions/): change it
only together with those files.
"""

import json
import struct
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from vbms_core import app, battery, byd, config, deye, jk_4e57, jk_ble, jk_frames, jk_pb, modbus, rpc
from vbms_core import events as ev
from vbms_core.dissect import PROTOCOLS, dissect, guess_protocol
from vbms_core.errors import LocalProtocolError, RemoteProtocolError
from vbms_core.modbus import NEED_DATA

from . import checksums, seeds
from .checksums import Repair

# CPU time allowed per KiB of input the code under test processed (at least one KiB's worth).
# A frame decoder takes well under a millisecond even instrumented: the limit catches blow-ups
# (quadratic loops, deep recursion), not ordinary cost.
SLOW_S_PER_KIB = 0.050


class InvariantViolation(Exception):
    """The code under test returned, but what it returned breaks its documented rules."""


class SlowInput(Exception):
    """One input took longer than its CPU time limit, three times in a row."""


def require(condition: object, message: str, *args: object) -> None:
    if not condition:
        raise InvariantViolation(message % args if args else message)


# check(data): raises on a finding; returns None, or (a script target) how many bytes it fed the code under test
Check = Callable[[bytes], int | None]


class Target:
    """One fuzz target: check(data) raises on a finding; seeds() gives starting inputs.

    repair(data, choice) keeps a mutated frame's checksums right (None: the
    input is a script whose structure the check builds itself); max_len is the
    largest input libFuzzer generates (above the decoder's own limit, so the
    "too long" paths are covered); accepts names the one error that counts as
    a rejection (shown by `vbms fuzz decoders --list`).
    """

    __slots__ = ("name", "summary", "check", "seeds", "repair", "max_len", "accepts")

    def __init__(
        self,
        name: str,
        summary: str,
        check: Check,
        seeds: Callable[[], list[bytes]],
        repair: Repair | None = None,
        max_len: int = 1100,
        accepts: str = "RemoteProtocolError",
    ) -> None:
        self.name = name
        self.summary = summary
        self.check = check
        self.seeds = seeds
        self.repair = repair
        self.max_len = max_len
        self.accepts = accepts


def run_bounded(check: Check, data: bytes, per_kib_s: float = SLOW_S_PER_KIB) -> None:
    """check(data), raising SlowInput when it keeps taking more CPU than the input's size allows.

    The limit is per_kib_s per KiB processed: the input's length, or what check
    returns (a script target returns the bytes it fed to the code under test).
    The wall clock screens every run (it costs nothing); a run over the limit is
    timed again three times in CPU time, so a busy machine or a garbage
    collection in one run is not a finding.
    """
    start = time.perf_counter()
    processed = check(data)
    limit_s = per_kib_s * max(1.0, (len(data) if processed is None else processed) / 1024)
    if time.perf_counter() - start <= limit_s:
        return
    best: float | None = None
    for _ in range(3):
        begin = time.process_time()
        check(data)
        spent = time.process_time() - begin
        best = spent if best is None else min(best, spent)
    if best > limit_s:  # type: ignore[operator]  # the loop ran: best is a time
        raise SlowInput(
            "%.1f ms of CPU for one input (%d bytes; limit %.1f ms)"
            % (best * 1e3, len(data) if processed is None else processed, limit_s * 1e3)  # type: ignore[operator]
        )


# Levels of one-key objects a script may nest in all (_value's deep chains).  More would time the harness,
# not the code under test: a campaign found an input of 143 bytes that built many chains of 4095 levels,
# 30 ms of CPU in building them and in the garbage collector walking them, under 1 ms in config.merge.
DEEP_LEVELS = 4096


class Reader:
    """Reads a script from fuzz bytes; past the end every read gives zeros (so scripts end)."""

    __slots__ = ("data", "position", "deep_levels")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.position = 0
        self.deep_levels = DEEP_LEVELS  # what is left for deep chains (_value): one input builds one at most

    def exhausted(self) -> bool:
        return self.position >= len(self.data)

    def byte(self) -> int:
        if self.position >= len(self.data):
            return 0
        value = self.data[self.position]
        self.position += 1
        return value

    def u16(self) -> int:
        return self.byte() << 8 | self.byte()

    def take(self, count: int) -> bytes:
        chunk = bytes(self.data[self.position : self.position + count])
        self.position += count
        return chunk


def _crc_ok(frame: bytes) -> bool:
    return 4 <= len(frame) and checksums.crc16_modbus(frame[:-2]) == frame[-2] | frame[-1] << 8


def _json_ok(result: object, what: str) -> None:
    try:
        json.dumps(result, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise InvariantViolation("%s is not JSON-serializable: %s" % (what, error)) from error


def _registers_ok(reading: battery.Reading) -> None:
    """The next step of the proxy: a reading becomes the 25 DEYE registers."""
    registers = deye.registers_from_reading(reading, 55200, 100000)
    require(len(registers) == deye.REGISTER_COUNT, "%d DEYE registers, not 25", len(registers))
    for value in registers:
        require(isinstance(value, int) and 0 <= value <= 0xFFFF, "DEYE register value %r is not a word", value)


# --- Modbus ---------------------------------------------------------------------------------------

BAUD_RATES = (9600, 19200, 115200, 1200)


def _drain_framer(framer: modbus.RtuFramer, now_us: int, frames: list[modbus.RtuFrame], limit: int) -> None:
    for _ in range(limit):
        event = framer.next_event(now_us)
        if event is NEED_DATA:
            return
        frames.append(event)
    raise InvariantViolation("RtuFramer.next_event keeps returning frames (%d and counting)" % limit)


def framer_check(factory: Callable[[int], modbus.RtuFramer] = modbus.RtuFramer) -> Callable[[bytes], int]:
    """modbus.RtuFramer: bytes with their times in, frames split on t3.5 silence out.

    Script: baud selector byte (9600, 19200, 115200, 1200), then records
    [control][gap][length][bytes]: the chunk arrives after gap/4 character
    times of silence (x16 when control bit 4 is set); control bit 0 appends
    the chunk's CRC, bit 1 calls close_if_complete after it (with
    response_length when bit 3 is set, else request_frame_length), bit 2 polls
    next_event in the middle of the silence before it.

    Invariant: the framer never raises; its buffer never exceeds MAX_ADU;
    frames start exactly where a t3.5 silence or close_if_complete says; the
    bytes of the frames are the bytes fed, in order, when nothing overflowed;
    an overflowed frame is flagged and holds MAX_ADU bytes.
    """

    def check(data: bytes) -> int:
        reader = Reader(data)
        framer = factory(BAUD_RATES[reader.byte() & 3])
        char_us = framer.char_us
        clock_us = 0
        last_byte_us = 0
        fed = bytearray()
        frames: list[modbus.RtuFrame] = []
        starts: list[int] = []
        while not reader.exhausted():
            control = reader.byte()
            gap_us = reader.byte() * char_us * (16 if control & 0x10 else 1) // 4
            chunk = bytearray(reader.take(reader.byte()))
            if control & 4:
                _drain_framer(framer, clock_us + gap_us // 2, frames, len(fed) + 2)
            clock_us += gap_us
            if control & 1 and chunk:
                crc = checksums.crc16_modbus(chunk)
                chunk += bytes((crc & 0xFF, crc >> 8))
            if chunk:
                if (not fed or clock_us - last_byte_us >= framer.gap_us) and len(fed) not in starts:
                    starts.append(len(fed))
                clock_us += len(chunk) * char_us
                framer.feed(bytes(chunk), clock_us)
                last_byte_us = clock_us
                fed += chunk
            require(framer.pending() <= modbus.MAX_ADU, "framer holds %d bytes", framer.pending())
            if control & 2:
                if framer.close_if_complete(modbus.response_length if control & 8 else modbus.request_frame_length):
                    if len(fed) not in starts:
                        starts.append(len(fed))
            _drain_framer(framer, clock_us, frames, len(fed) + 2)
        _drain_framer(framer, clock_us + 10**9, frames, len(fed) + 2)
        require(framer.pending() == 0, "framer still holds %d bytes after a long silence", framer.pending())
        starts = [start for start in starts if start < len(fed)]
        require(len(frames) == len(starts), "%d frames for %d silences or completions", len(frames), len(starts))
        overflowed = False
        previous_start_us = None
        for frame in frames:
            require(len(frame.raw) <= modbus.MAX_ADU, "a %d-byte frame", len(frame.raw))
            require(frame.ok or len(frame.raw) == modbus.MAX_ADU, "overflowed frame of %d bytes", len(frame.raw))
            require(frame.start_us <= frame.end_us, "frame ends before it starts")
            require(previous_start_us is None or previous_start_us <= frame.start_us, "frames out of order")
            previous_start_us = frame.start_us
            overflowed = overflowed or not frame.ok
        if not overflowed:
            offset = 0
            for frame, start in zip(frames, starts, strict=True):
                require(offset == start, "a frame starts at byte %d, the silence was before byte %d", offset, start)
                require(frame.raw == bytes(fed[offset : offset + len(frame.raw)]), "frame bytes differ from those fed")
                offset += len(frame.raw)
            require(offset == len(fed), "%d of %d bytes came out of the framer", offset, len(fed))
        return len(fed)  # (what the frames decode to is the modbus-request target's)

    return check


# what modbus.decode_request returns
ModbusRequest = (
    modbus.ReadRequest
    | modbus.WriteSingle
    | modbus.WriteMultipleRequest
    | modbus.ReportIdRequest
    | modbus.UnknownRequest
)


def modbus_request_check(
    decode: Callable[[bytes], ModbusRequest] = modbus.decode_request,
) -> Callable[[bytes], None]:
    """modbus.decode_request on one ADU.

    Invariant: a decoded request had a valid CRC, its unit and function are
    the first two bytes, request_frame_length agrees with its length (None for
    a function we do not implement), and encoding it again gives the same bytes.
    """

    def check(data: bytes) -> None:
        try:
            event = decode(data)
        except RemoteProtocolError:
            return
        require(len(data) <= modbus.MAX_ADU and _crc_ok(data), "accepted a frame with a bad CRC or length")
        require(event.unit == data[0] and event.function == data[1], "unit or function differ from the frame")
        length = modbus.request_frame_length(data)
        if isinstance(event, modbus.UnknownRequest):
            require(length is None, "request_frame_length %r for an unknown function", length)
            return
        require(length == len(data), "request_frame_length says %r for a %d-byte request", length, len(data))
        try:
            if isinstance(event, modbus.ReadRequest):
                again = modbus.encode_read_request(event.unit, event.function, event.address, event.count)
            elif isinstance(event, modbus.WriteSingle):
                again = modbus.encode_write_single(event.unit, event.address, event.value)
            elif isinstance(event, modbus.WriteMultipleRequest):
                again = modbus.encode_write_multiple_request(event.unit, event.address, event.values)
            else:
                again = modbus.encode_report_id_request(event.unit)
        except LocalProtocolError:
            return  # decodes leniently (a count of 0, say); the slave answers it with an exception
        require(again == bytes(data), "decoded and encoded again gives %s", again.hex())

    return check


def modbus_response_check(data: bytes) -> None:
    """modbus.decode_response on one ADU; invariant as for requests, with response_length."""
    try:
        event = modbus.decode_response(data)
    except RemoteProtocolError:
        return
    require(len(data) <= modbus.MAX_ADU and _crc_ok(data), "accepted a frame with a bad CRC or length")
    require(event.unit == data[0], "unit differs from the frame")
    function = data[1] & 0x7F if isinstance(event, modbus.ExceptionResponse) else data[1]
    require(event.function == function, "function %r differs from the frame", event.function)
    length = modbus.response_length(data)
    require(length == len(data), "response_length says %r for a %d-byte response", length, len(data))
    try:
        again = modbus.encode_response(event)
    except LocalProtocolError:
        return
    require(again == bytes(data), "decoded and encoded again gives %s", again.hex())


# --- DEYE -----------------------------------------------------------------------------------------

DEYE_NOW_US = 100_000_000
DEYE_STALE_US = 10_000_000
DEYE_FRESH_UNITS = (0, 1, 7, 14)
DEYE_STALE_UNIT = 5


def _with_crc(body: bytes) -> bytes:
    crc = checksums.crc16_modbus(body)
    return bytes(body) + bytes((crc & 0xFF, crc >> 8))


def _deye_registers(unit: int) -> list[int]:
    return [(unit << 8 | index) & 0xFFFF for index in range(deye.REGISTER_COUNT)]


def deye_check() -> Callable[[bytes], None]:
    """deye.DeyeSlave.handle: the DEYE request path (one inverter request, one reply or silence).

    Units 0, 1, 7 and 14 hold fresh data, unit 5 stale data, the rest none.
    Invariant, from the decisions in vbms_core/deye.py: never raises; silence
    for a bad CRC or length, a unit that is not served, a malformed request or
    an exception function code; otherwise exactly the reply the rules give,
    built here independently: that unit's registers (0x04), its identity
    (0x11), or exception 03 (count), 02 (range) or 01 (function).
    """
    slave = deye.DeyeSlave(DEYE_STALE_US)
    identities: dict[int, bytes] = {}
    for unit in DEYE_FRESH_UNITS + (DEYE_STALE_UNIT,):
        identities[unit] = deye.encode_identity("VBMS-%d" % unit, "SN%04d" % unit)
        updated = DEYE_NOW_US - (DEYE_STALE_US + 1 if unit == DEYE_STALE_UNIT else 1000)
        slave.set_unit(unit, _deye_registers(unit), identities[unit], updated)
    expected_replies: dict[tuple[int, ...], bytes] = {}  # (unit, function, address, count or exception code)

    def expected_reply(data: bytes) -> bytes:
        key: tuple[int, ...]
        unit = data[0]
        function = data[1]
        if function == modbus.READ_INPUT:
            address, count = struct.unpack_from(">HH", data, 2)
            offset = address - deye.FIRST_REGISTER
            if not 1 <= count <= modbus.MAX_READ_COUNT:
                key = (unit, function, modbus.ILLEGAL_VALUE)
            elif offset < 0 or offset + count > deye.REGISTER_COUNT:
                key = (unit, function, modbus.ILLEGAL_ADDRESS)
            else:
                key = (unit, function, address, count)
                if key not in expected_replies:
                    values = _deye_registers(unit)[offset : offset + count]
                    body = struct.pack(">BBB%dH" % count, unit, function, 2 * count, *values)
                    expected_replies[key] = _with_crc(body)
        elif function == modbus.REPORT_ID:
            key = (unit, function)
            if key not in expected_replies:
                identity = identities[unit]
                expected_replies[key] = _with_crc(bytes((unit, function, len(identity))) + identity)
        else:
            key = (unit, function, modbus.ILLEGAL_FUNCTION)
        if key not in expected_replies:  # an exception: the identity's 2-tuple key was added above
            expected_replies[key] = _with_crc(bytes((unit, function | 0x80, key[2])))  # type: ignore[misc]
        return expected_replies[key]

    def check(data: bytes) -> None:
        reply = slave.handle(data, DEYE_NOW_US)
        length = len(data)
        function = data[1] if length >= 2 else None
        answerable = (
            4 <= length <= modbus.MAX_ADU
            and data[0] in DEYE_FRESH_UNITS
            and (
                (function == modbus.READ_INPUT and length == 8)
                or (function == modbus.REPORT_ID and length == 4)
                or (function not in (modbus.READ_INPUT, modbus.REPORT_ID) and not function & 0x80)  # type: ignore[operator]
            )
            and _crc_ok(data)
        )
        if reply is None:
            require(not answerable, "silent (%s) on a request it must answer", slave.reason)
            require(slave.reason is not None and slave.reason.startswith("silent"), "silent, reason %r", slave.reason)
            return
        require(answerable, "answered a frame it must not answer (%s)", slave.reason)
        raw = bytes(reply)
        wanted = expected_reply(data)
        require(raw == wanted, "replied %s where the rules give %s", raw.hex(), wanted.hex())

    return check


# --- BYD PRO --------------------------------------------------------------------------------------


def _byd_sum_ok(frame: bytes) -> bool:
    return frame[-1] == sum(frame[1:-1]) & 0xFF


def byd_request_check(data: bytes) -> None:
    """byd.decode_request: a decoded request is 8 bytes, its length field and sum8 right."""
    try:
        request = byd.decode_request(data)
    except RemoteProtocolError:
        return
    require(len(data) == byd.REQUEST_LENGTH and _byd_sum_ok(data), "accepted a bad request")
    require(byd.frame_length(data) == len(data), "frame_length disagrees with the decoder")
    require(request.address == data[0] and request.command == data[4], "address or command differ from the frame")


def byd_response_check(data: bytes) -> None:
    """byd.decode_response, then what the proxy does with it (battery reading, DEYE registers)."""
    try:
        status = byd.decode_response(data)
    except RemoteProtocolError:
        return
    require(len(data) <= byd.MAX_FRAME and _byd_sum_ok(data), "accepted a bad response")
    require(byd.frame_length(data) == len(data), "frame_length disagrees with the decoder")
    require(status.address == data[0] and status.result == data[7], "address or result differ from the frame")
    if status.fields is None:
        require(status.result != 0, "a successful status without its data block")
        return
    require(len(data) == byd.RESPONSE_LENGTH, "a data block from a %d-byte frame", len(data))
    byd.describe(status.fields)
    _registers_ok(battery.from_byd(status.fields))


# --- JK over BLE ----------------------------------------------------------------------------------


def jk_command_check(data: bytes) -> None:
    """jk_ble.decode_command: a decoded command is 20 bytes with header and sum8 right."""
    try:
        command = jk_ble.decode_command(data)
    except RemoteProtocolError:
        return
    require(len(data) == 20 and data[:4] == jk_ble.COMMAND_HEADER, "accepted a bad command frame")
    require(data[19] == sum(data[:19]) & 0xFF, "accepted a bad checksum")
    require(command.command == data[4] and command.length == data[5] <= 13, "command or length differ")
    require(len(command.value_bytes) == command.length and len(command.padding) == 9, "value or padding cut wrong")


_JK_FRAME_TYPES = (jk_frames.SETTINGS, jk_frames.CELL_INFO, jk_frames.DEVICE_INFO, jk_frames.LOGBOOK)
_BENIGN_JUNK = ("keepalive", "c8_trailer")
_C8_TRAILER = bytes(jk_ble.encode_command(jk_ble.TRAILER))
_MAX_STREAM = 4096  # bytes a reassembler script may expand to (a frame record is 300 bytes)
# Notifications a script may send, near enough (records are whole): in one-byte notifications a script
# is then 1 KiB (three frames), not 4 KiB of the same byte-by-byte path at four times the cost.
_MAX_NOTIFICATIONS = 1024


def _jk_frame_from(payload: bytes, frame_type: int, checksum_offset: int = 0) -> bytes:
    frame = bytearray(jk_frames.FRAME_LENGTH)
    frame[0:4] = jk_frames.HEADER
    frame[4] = frame_type
    body = payload[: jk_frames.FRAME_LENGTH - 6]
    frame[5 : 5 + len(body)] = body
    frame[299] = (sum(frame[:299]) + checksum_offset) & 0xFF
    return bytes(frame)


def reassembler_check(factory: Callable[[], jk_ble.JkReassembler] = jk_ble.JkReassembler) -> Callable[[bytes], int]:
    """jk_ble.JkReassembler: BLE notification chunks in, 300-byte frames and junk out.

    Script: chunk size byte (1 + value), then records [control][length][bytes]:
    control & 3 = 0 raw bytes; 1 a valid frame of type (1, 2, 3, 5)[control >> 2
    & 3] around the bytes; 2 the same with a wrong checksum (or, with bit 4, a
    right checksum and an unknown type); 3 an "AT\\r\\n" keep-alive (a C8
    trailer with bit 2).  Bit 5 ends a notification after the record.  Records
    stop at 4 KiB of stream or about 1024 notifications, whichever comes first.

    Invariant: never raises; holds at most 299 bytes between calls; every frame
    out has the header, a known type and a right checksum; bytes are conserved
    (frames + junk + held = fed); a junk sample is at most 64 bytes; and a
    stream of only valid frames and keep-alives/trailers gives back exactly
    those frames, in order, with nothing but keep-alives and trailers as junk.
    """

    def check(data: bytes) -> int:
        reader = Reader(data)
        chunk_size = 1 + reader.byte()
        pieces: list[bytes] = []
        inserted: list[bytes] = []
        benign = True
        stream = bytearray()
        total = 0
        limit = min(_MAX_STREAM, _MAX_NOTIFICATIONS * chunk_size)
        while not reader.exhausted() and total < limit:
            control = reader.byte()
            body = reader.take(reader.byte())
            kind = control & 3
            before = len(stream)
            if kind == 0:
                stream += body
                benign = False
            elif kind == 1:
                frame = _jk_frame_from(body, _JK_FRAME_TYPES[control >> 2 & 3])
                stream += frame
                inserted.append(frame)
            elif kind == 2:
                if control & 0x10:
                    unknown = body[0] if body and body[0] not in _JK_FRAME_TYPES else 0x04
                    stream += _jk_frame_from(body[1:], unknown)
                else:
                    wrong_by = 1 + (body[0] if body else 0) % 255
                    stream += _jk_frame_from(body, _JK_FRAME_TYPES[control >> 2 & 3], wrong_by)
                benign = False
            else:
                stream += _C8_TRAILER if control & 4 else jk_ble.KEEPALIVE
            total += len(stream) - before
            if control & 0x20:
                pieces.append(bytes(stream))
                stream = bytearray()
        pieces.append(bytes(stream))
        reassembler = factory()
        seen = _Seen()
        for piece in pieces:
            for start in range(0, len(piece), chunk_size):
                chunk = piece[start : start + chunk_size]
                reassembler.feed(chunk)
                seen.fed += len(chunk)
                held = reassembler.pending()
                require(held < jk_frames.FRAME_LENGTH, "holds %d bytes", held)
                event = reassembler.next_event()
                if event is NEED_DATA:  # the common case, checked inline (a chunk is often one byte)
                    frames = len(seen.frames)
                    if (
                        reassembler.frames != frames
                        or frames * jk_frames.FRAME_LENGTH + reassembler.junk_bytes + held != seen.fed
                    ):
                        _drain_reassembler(reassembler, seen)  # says which
                else:
                    _drain_reassembler(reassembler, seen, event)
        reassembler.flush()
        _drain_reassembler(reassembler, seen)
        require(reassembler.pending() == 0, "holds %d bytes after flush", reassembler.pending())
        require(seen.junk_bytes == reassembler.junk_bytes, "after flush %d bytes dropped, %d reported",
                reassembler.junk_bytes, seen.junk_bytes)  # fmt: skip
        if benign:
            require(seen.frames == inserted, "%d frames out of %d valid ones sent", len(seen.frames), len(inserted))
            require(not seen.odd_junk, "keep-alives or trailers classified as %r", seen.odd_junk)
        return seen.fed

    return check


class _Seen:
    """What came out of the reassembler so far."""

    __slots__ = ("fed", "frames", "junk_bytes", "odd_junk")

    def __init__(self) -> None:
        self.fed = 0
        self.frames: list[bytes] = []
        self.junk_bytes = 0
        self.odd_junk: list[Sequence[str]] = []  # the kinds of junk events that are not benign


def _drain_reassembler(reassembler: jk_ble.JkReassembler, seen: _Seen, first: Any = None) -> None:
    for _ in range(seen.fed + 2):
        event, first = (reassembler.next_event() if first is None else first), None
        if event is NEED_DATA:
            break
        if isinstance(event, jk_ble.JkFrame):
            raw = event.raw
            require(len(raw) == jk_frames.FRAME_LENGTH and raw[:4] == jk_frames.HEADER, "a frame without its header")
            require(raw[4] in _JK_FRAME_TYPES and raw[299] == sum(raw[:299]) & 0xFF, "a frame of bad type or checksum")
            seen.frames.append(raw)
        else:
            require(isinstance(event, jk_ble.Junk), "unknown event %r", event)
            require(event.length >= 1 and len(event.raw) == min(event.length, 64), "junk sample of the wrong size")
            if event.length <= 64 and not set(event.kinds) <= set(_BENIGN_JUNK):
                seen.odd_junk.append(event.kinds)
            seen.junk_bytes += event.length
    else:
        raise InvariantViolation("JkReassembler.next_event keeps returning events")
    require(seen.junk_bytes <= reassembler.junk_bytes, "junk events carry more bytes than were dropped")
    require(reassembler.frames == len(seen.frames), "frames counter %d, %d frames seen", reassembler.frames,
            len(seen.frames))  # fmt: skip
    accounted = len(seen.frames) * jk_frames.FRAME_LENGTH + reassembler.junk_bytes + reassembler.pending()
    require(accounted == seen.fed, "%d bytes fed, %d accounted for (frames + dropped + held)", seen.fed, accounted)


def jk_frame_check(layout: str | None) -> Callable[[bytes], None]:
    """jk_frames.decode_frame with one layout (None: auto-detection), then the battery reading.

    Invariant: a decoded frame has the header and checksum; counter and layout
    are what the frame and detect_layout say; cell_count counts the cells; the
    result is JSON; a cell-info frame gives a reading and 25 DEYE registers.
    """

    def check(data: bytes) -> None:
        try:
            result = jk_frames.decode_frame(data, layout)
        except RemoteProtocolError:
            return
        require(len(data) >= 300 and data[:4] == jk_frames.HEADER, "accepted a frame without its header")
        require(data[299] == sum(data[:299]) & 0xFF, "accepted a bad checksum")
        require(result["counter"] == data[5], "counter differs from the frame")
        kind = result["frame_type"]
        require(kind in ("cell_info", "settings", "device_info", "logbook", "unknown"), "frame type %r", kind)
        expected_layout = layout if layout is not None else jk_frames.detect_layout(data)
        require(result["layout"] == expected_layout, "layout %r, expected %r", result.get("layout"), expected_layout)
        _json_ok(result, "decode_frame's result")
        if kind == "cell_info":
            require(result["cell_count"] == len(result["cell_voltages_mv"]), "cell_count is not the number of cells")
            _registers_ok(battery.from_jk(result, None))

    return check


# --- JK over RS485 --------------------------------------------------------------------------------


def jk_pb_reply_check(data: bytes) -> None:
    """jk_pb.decode_trigger_reply and decode_frame(JK02_32S), as the proxy runs them.

    Also trigger_reply_length on every prefix: None or a length the reply can have.
    """
    for end in (0, 1, 2, 4, 5, 299, 300, 301, 302, len(data)):
        length = jk_pb.trigger_reply_length(data[:end])
        require(length is None or length in (5, 308, 309), "trigger_reply_length says %r", length)
    try:
        reply = jk_pb.decode_trigger_reply(data)
        decoded = jk_frames.decode_frame(reply.frame, jk_frames.JK02_32S)
    except RemoteProtocolError:
        return
    require(reply.frame == bytes(data[:300]), "the frame is not the first 300 bytes")
    require(0 <= reply.padding <= len(data) - 300, "padding of %d bytes", reply.padding)
    if reply.ack is not None:
        require(isinstance(reply.ack, modbus.WriteMultipleResponse), "the ACK is not an FC 0x10 response")
        start = 300 + reply.padding
        require(_crc_ok(bytes(data[start : start + 8])), "accepted an ACK with a bad CRC")
    else:
        require(len(data) - 300 == reply.padding, "bytes after the frame but no ACK")
    if decoded["frame_type"] == "cell_info":
        _registers_ok(battery.from_jk(decoded, None))


def jk_pb_registers_check(data: bytes) -> None:
    """jk_pb block reads: block_of, image_from_frame, wire_image and registers_from_image.

    Script: register (u16), count (byte), then the 55AA frame the image comes
    from.  A read outside the block raises LocalProtocolError (we asked for it);
    otherwise count 16-bit words; the wire image holds the image's bytes, only
    reordered within fields.
    """
    reader = Reader(data)
    register = reader.u16()
    count = reader.byte()
    frame = reader.take(len(data))
    block = jk_pb.block_of(register)
    require(block is None or (block in jk_pb.BLOCK_NAMES and block <= register < block + 0x200), "block %r", block)
    image = jk_pb.image_from_frame(frame)
    base = jk_pb.SETTINGS_BLOCK if block is None else block
    wire = jk_pb.wire_image(image, base)
    require(sorted(wire) == sorted(image), "the wire image is not the image's bytes reordered")
    start = register - base
    inside = start >= 0 and start + 2 * count <= len(image)
    try:
        words = jk_pb.registers_from_image(image, register, count, base)
    except LocalProtocolError:
        require(not inside, "refused a read inside the block")
        return
    require(inside, "read outside the block allowed")
    require(len(words) == count, "%d words for a read of %d", len(words), count)
    for word in words:
        require(isinstance(word, int) and 0 <= word <= 0xFFFF, "register value %r is not a word", word)


def e57_check(data: bytes) -> None:
    """jk_4e57.decode (request or response) and decode_response (the proxy's call), then the reading."""
    for decoder in (jk_4e57.decode, jk_4e57.decode_response):
        try:
            result = decoder(data)
        except RemoteProtocolError:
            continue
        require(jk_4e57.MIN_LENGTH <= len(data) <= jk_4e57.MAX_FRAME, "accepted a %d-byte frame", len(data))
        require(jk_4e57.frame_length(data) == len(data), "frame_length disagrees with the decoder")
        require(data[-2] << 8 | data[-1] == sum(data[:-2]) & 0xFFFF, "accepted a bad checksum")
        _json_ok(result, "the 4E57 result")
        if result["frame_type"] == "response":
            _registers_ok(battery.from_jk_4e57(result))


# --- the dissector --------------------------------------------------------------------------------


def dissect_check(protocol: str) -> Callable[[bytes], None]:
    """vbms_core.dissect.dissect for one protocol (JK ones with every layout), and guess_protocol.

    Invariant: a dict naming the protocol and the frame length, JSON-serializable;
    guess_protocol names a protocol or says None.
    """
    layouts = ("auto",) + jk_frames.LAYOUTS if protocol in ("jk-ble", "jk-pb") else (None,)

    def check(data: bytes) -> None:
        guessed = guess_protocol(data)
        require(guessed is None or guessed in PROTOCOLS, "guess_protocol says %r", guessed)
        for layout in layouts:
            try:
                result = dissect(protocol, data, layout)
            except RemoteProtocolError:
                continue
            require(result["protocol"] == protocol and result["frame_length"] == len(data), "protocol or length")
            _json_ok(result, "dissect's result")

    return check


# --- configuration --------------------------------------------------------------------------------

# The script's key vocabulary.  Saved findings index into it, so it only grows: the keys of
# the schema as it was when the format was fixed, then any key added to the schema since.
_SCHEMA_KEYS = ("app.refresh_ms", "app.bms_uart_no", "app.inv_uart_no", "app.bms_baud", "app.inv_baud", "app.stale_s",
                "app.bms_timeout_ms", "app.bms_retries", "app.bms_gap_ms", "app.ble_max_connections",
                "app.ble_timeout_s", "app.max_charge_current_a", "pins.led", "pins.button", "pins.button_hold_ms",
                "rpc.auth_token", "mqtt.enable", "mqtt.server", "mqtt.topic_prefix", "device.id")  # fmt: skip
_FROZEN_SLOT_FIELDS = ("type", "name", "addr", "serial", "voltage", "max_charge_a", "chemistry")
_SECTIONS = ("app", "pins", "rpc", "mqtt", "device") + tuple("bms%d" % slot for slot in range(15))


def _grown(frozen: Sequence[str], current: Iterable[str]) -> tuple[str, ...]:
    return tuple(frozen) + tuple(item for item in current if item not in frozen)


def _slot_keys(fields: Sequence[str]) -> tuple[str, ...]:
    return tuple("bms%d.%s" % (slot, field) for slot in range(15) for field in fields)


_SLOT_FIELDS = _grown(_FROZEN_SLOT_FIELDS, config.SLOT_SCHEMA)
_KEYS = _grown(_SCHEMA_KEYS + _slot_keys(_FROZEN_SLOT_FIELDS), tuple(config.SCHEMA) + _slot_keys(_SLOT_FIELDS))
_FIELDS = _grown(
    tuple(key.split(".")[1] for key in _SCHEMA_KEYS) + _FROZEN_SLOT_FIELDS,
    tuple(key.split(".")[1] for key in config.SCHEMA) + _SLOT_FIELDS,
)
# Boundaries of the schema and of its types; odd characters that text handling trips on.
_NUMBERS = (0, 1, -1, 2, 4, 5, 8, 14, 15, 20, 31, 32, 63, 64, 100, 247, 248, 255, 600, 601, 655, 656, 1000, 1200,
            5000, 9600, 60000, 60001, 115200, 921600, 2**31, -(2**31), 2**64 + 1, -(2**70))  # fmt: skip
_FLOATS = (0.0, -0.0, 40.0, 39.999, 55.2, 64.0, 64.001, float("nan"), float("inf"), float("-inf"), 1e308, 5e-324)
_ODD_CHARACTERS = ("\u00b2", "\u0663", "\u2460", "\u00b9", "\uff11", "\u0000", "\ud800", "\U0001f600", "\u0130",
                   "\u200b", ".", ":", "\x7f", "\u2028", "\ufeff", "\u00df")  # fmt: skip


def _text(reader: Reader) -> str:
    characters = []
    for _ in range(reader.byte() % 24):
        code = reader.byte()
        if code < 0x60:
            characters.append(chr(0x20 + code))
        elif code < 0x70:
            characters.append(chr(code - 0x60))
        elif code < 0x80:
            characters.append(_ODD_CHARACTERS[code - 0x70])
        elif code < 0xC0:
            characters.append(chr(reader.u16()))
        else:
            characters.append(chr(min(reader.byte() << 16 | reader.u16(), 0x10FFFF)))
    return "".join(characters)


def _key(reader: Reader) -> str | int:
    tag = reader.byte()
    if tag < 128:
        return _KEYS[tag % len(_KEYS)]
    if tag < 192:
        return _SECTIONS[tag % len(_SECTIONS)]
    if tag >= 252:
        return tag - 252  # not text: JSON cannot carry it, a caller in Python can
    if tag < 224:
        section = _SECTIONS[tag % len(_SECTIONS)] if tag & 1 else "bms" + _text(reader)
        return "%s.%s" % (section, _FIELDS[tag % len(_FIELDS)])
    return _text(reader)


def _value(reader: Reader, depth: int) -> Any:
    tag = reader.byte()
    kind = tag % 10
    if kind <= 1:
        if tag & 0x80:
            return struct.unpack(">i", reader.take(4).ljust(4, b"\0"))[0]
        return _NUMBERS[reader.byte() % len(_NUMBERS)]
    if kind == 2:
        if tag & 0x80:
            return struct.unpack(">d", reader.take(8).ljust(8, b"\0"))[0]
        return _FLOATS[reader.byte() % len(_FLOATS)]
    if kind == 3:
        return _text(reader)
    if kind == 4:
        return bool(tag & 0x80)
    if kind == 5:
        return None
    if kind == 6:
        return [_value(reader, depth + 1) for _ in range(reader.byte() % 4 if depth < 6 else 0)]
    if kind == 7:
        return _object(reader, depth + 1)
    if kind == 8:
        # deep nesting: a chain of one-key objects, up to 4095 levels
        levels = min(reader.u16() & 0x0FFF, reader.deep_levels)
        reader.deep_levels -= levels
        key = _key(reader)
        inner = _value(reader, 6)
        for _ in range(levels):
            inner = {key: inner}
        return inner
    text = "%02X:%02X:%02X:%02X:%02X:%02X" % tuple(reader.take(6).ljust(6, b"\0"))
    return text.lower() if tag & 0x80 else text[: reader.byte() % 18] if tag & 0x40 else str(reader.byte())


def _object(reader: Reader, depth: int) -> dict[str | int, Any]:
    result: dict[str | int, Any] = {}
    for _ in range(reader.byte() % 8 if depth < 6 else 0):
        key = _key(reader)
        result[key] = _value(reader, depth) if reader.byte() & 3 else _object(reader, depth + 1)
    return result


def config_tree(reader: Reader) -> dict[str | int, Any]:
    """A JSON-like configuration from a script (objects with string keys, lists, numbers, text, null)."""
    return _object(reader, 0)


def _snapshot(value: object, depth_limit: int = 50) -> str | None:
    """repr(value) to compare before and after, or None for a structure too deep to repr."""
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > depth_limit:
            return None
        if isinstance(item, dict):
            stack.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item)
    return repr(value)


def _config_ok(result: object) -> None:
    require(isinstance(result, dict) and set(result) == set(config.defaults()), "not a complete configuration")
    require(config.validate(result) == result, "a validated configuration does not validate to itself")


def config_validate_check(data: bytes) -> None:
    """config.validate on a JSON-like structure: a complete config or ConfigError; the input untouched."""
    tree = config_tree(Reader(data))
    before = _snapshot(tree)
    try:
        result = config.validate(tree)
    except config.ConfigError:
        result = None
    require(before is None or _snapshot(tree) == before, "validate changed its input")
    if result is not None:
        _config_ok(result)


def config_merge_check(data: bytes) -> None:
    """config.merge(valid config, changes): a valid config or ConfigError; the config left as it was."""
    reader = Reader(data)
    try:
        base = config.validate(config_tree(reader))
    except config.ConfigError:
        base = config.validate({})
    changes = config_tree(reader) if reader.byte() & 7 else _value(reader, 0)
    kept = dict(base)
    try:
        result = config.merge(base, changes)
    except config.ConfigError:
        result = None
    require(base == kept, "merge changed the configuration it was given")
    if result is not None:
        _config_ok(result)


_RPC_TOKEN = "fuzz-token-0123456789"
_RPC_METHODS = sorted(rpc.METHODS) + ["", "vbms.getsummary", "Config.Set ", "Sys", "No.Such"]
_RPC_ERRORS = (rpc.UNKNOWN_METHOD, rpc.BAD_PARAMS, rpc.DEVICE_ERROR, rpc.UNAUTHORIZED)
# the settings every call starts from (the Proxy validates them: given the few that differ from the
# defaults, not the whole validated configuration, so that most of an input's time goes to the call)
_RPC_SETTINGS = {"rpc.auth_token": _RPC_TOKEN, "bms0.type": 1, "bms0.addr": "1", "bms1.type": 2,
                 "bms1.addr": "C8:47:8C:10:00:01"}  # fmt: skip


def rpc_check(data: bytes) -> None:
    """Proxy.feed(RpcCall) with a drawn method, parameters and token: one RpcReply (none while a ScanBLE
    waits for its scan), a JSON result or an error with a known code and a message; a call that failed
    left the configuration as it was."""
    reader = Reader(data)
    proxy = app.Proxy(_RPC_SETTINGS, 0)
    for number in range(1 + (reader.byte() & 3)):
        choice = reader.byte()
        method = _RPC_METHODS[choice % len(_RPC_METHODS)] if choice < 250 else _text(reader)
        shape = reader.byte()
        params = None if shape & 3 == 0 else (_object(reader, 0) if shape & 3 != 3 else _value(reader, 0))
        token = (_RPC_TOKEN, None, _RPC_TOKEN[:-1], "")[(shape >> 2) & 3]
        before = dict(proxy.config)
        actions = proxy.feed(ev.RpcCall(number, method, params, 1000000 * (number + 1), token, 1.7e9))
        replies = [action for action in actions if isinstance(action, ev.RpcReply)]
        if method == "VBMS.ScanBLE" and not replies:
            continue  # answered when the scan result comes (or its deadline passes)
        require(len(replies) == 1, "%d replies to one call of %r", len(replies), method)
        reply = replies[0]
        require(reply.call_id == number, "the reply answers call %r, not %r", reply.call_id, number)
        if reply.error is None:
            _json_ok(reply.result, "the result of %s" % method)
        else:
            require(reply.result is None, "an error with a result")
            require(reply.error.get("code") in _RPC_ERRORS, "error code %r", reply.error.get("code"))
            message = reply.error.get("message")
            require(isinstance(message, str) and message, "an error without a message")
            require(proxy.config == before, "the failed call %r changed the configuration", method)


def _rpc_seeds() -> list[bytes]:
    calls = []
    for index in range(len(rpc.METHODS)):
        for shape in (0, 1, 4, 5):
            calls.append(bytes([0, index, shape]) + _config_seeds()[index % 3])
    methods = sorted(rpc.METHODS)
    calls.append(bytes([0, methods.index("Config.Set"), 1]) + _encode_value({"config": {"bms0": {"name": "A"}}}))
    calls.append(bytes([0, methods.index("VBMS.ScanBLE"), 1]) + _encode_value({"seconds": 3}))
    return calls


# --- script seeds ---------------------------------------------------------------------------------


def _framer_seeds() -> list[bytes]:
    scripts = []
    frames = seeds.modbus_frames()
    for baud in range(4):
        script = bytearray((baud,))
        for index, frame in enumerate(frames[:12]):
            # control 0x12: long gap then close_if_complete; 0x00: a short gap (frames run together)
            script += bytes((0x12 if index % 3 else 0x00, 0x10, len(frame))) + frame
        scripts.append(bytes(script))
    flood = bytearray((0,))
    for frame in frames * 2:
        flood += bytes((0x00, 0x00, len(frame))) + frame  # back to back, no silence: past MAX_ADU
    return scripts + [bytes(flood)]


def _reassembler_seeds() -> list[bytes]:
    scripts = []
    notifications = seeds.jk_notifications()
    for chunk_size in (19, 127, 243):
        script = bytearray((chunk_size,))
        for chunk in notifications:
            for start in range(0, len(chunk), 255):
                body = chunk[start : start + 255]
                script += bytes((0x20, len(body))) + body
        scripts.append(bytes(script))
    scripts.append(bytes((19, 0x05, 4, 1, 2, 3, 4, 0x03, 0, 0x09, 0, 0x07, 0)))
    return scripts


def _registers_seeds() -> list[bytes]:
    frames = seeds.jk_frames()[:3]
    return [struct.pack(">HB", register, count) + frame for register, count in ((0x1200, 64), (0x1400, 8), (0x1000, 1))
            for frame in frames]  # fmt: skip


def _encode_text(text: str) -> bytes:
    return bytes((len(text),)) + bytes(ord(char) - 0x20 for char in text)


def _encode_value(value: Any) -> bytes:
    """The script config_tree reads back as value (seeds only: ASCII text, known numbers)."""
    if isinstance(value, dict):
        script = bytearray((len(value),))
        for key, item in value.items():
            if key in _KEYS and _KEYS.index(key) < 128:
                script.append(_KEYS.index(key))
            else:
                script += b"\xe0" + _encode_text(key)  # tag 224: a key given as text
            script += b"\x00" + _encode_value(item) if isinstance(item, dict) else b"\x01" + _encode_value(item)
        return bytes(script)
    if value is True or value is False:
        return b"\x86" if value else b"\x04"
    if isinstance(value, int):
        if value in _NUMBERS:
            return bytes((0, _NUMBERS.index(value)))
        return b"\x82" + struct.pack(">i", value)  # tag 130: kind 0 with a 4-byte value
    if isinstance(value, float):
        return b"\x84" + struct.pack(">d", value)  # tag 132: kind 2 with an 8-byte value
    return b"\x03" + _encode_text(value)


_CONFIG_EXAMPLES = (
    {"app.stale_s": 10, "bms0.type": 1, "bms0.addr": "1", "bms1.type": 2, "bms1.addr": "C8:47:8C:10:00:01"},
    {"bms0": {"type": 3, "addr": "2", "name": "pack", "voltage": 55.2}, "mqtt": {"enable": True, "server": "h:1883"}},
    {"app": {"stale_s": 601, "inv_baud": 9600}, "device.id": "vbms-1", "bms14.serial": "SN*1"},
)


def _config_seeds() -> list[bytes]:
    scripts = [_encode_value(example) for example in _CONFIG_EXAMPLES]
    return scripts + [scripts[0] + b"\x01" + scripts[1], scripts[1] + b"\x01" + scripts[2], bytes(range(0, 256, 7))]


def _dissect_target(protocol: str, repair: Repair, frames: Callable[[], list[bytes]]) -> Target:
    return Target(
        "dissect-" + protocol,
        "vbms_core.dissect.dissect('%s', frame%s)"
        % (protocol, ", each layout" if protocol in ("jk-ble", "jk-pb") else ""),
        dissect_check(protocol),
        frames,
        repair,
        max_len=1100,
    )


def _targets() -> dict[str, Target]:
    targets = [
        Target("modbus-framer", "modbus.RtuFramer fed chunks with times (a script)", framer_check(), _framer_seeds,
               None, max_len=2048, accepts="none"),
        Target("modbus-request", "modbus.decode_request, request_frame_length", modbus_request_check(),
               seeds.modbus_frames, checksums.modbus_request, max_len=300),
        Target("modbus-response", "modbus.decode_response, response_length", modbus_response_check,
               seeds.modbus_frames, checksums.modbus_response, max_len=300),
        Target("deye", "deye.DeyeSlave.handle: the DEYE request path", deye_check(), seeds.deye_requests,
               checksums.modbus_request, max_len=264, accepts="none (it stays silent)"),
        Target("byd-request", "byd.decode_request, frame_length", byd_request_check, seeds.byd_frames, checksums.byd,
               max_len=300),
        Target("byd-response", "byd.decode_response, describe, battery.from_byd", byd_response_check,
               seeds.byd_frames, checksums.byd, max_len=300),
        Target("jk-command", "jk_ble.decode_command", jk_command_check, seeds.jk_commands, checksums.jk_command,
               max_len=40),
        Target("jk-reassembler", "jk_ble.JkReassembler fed notification chunks (a script)", reassembler_check(),
               _reassembler_seeds, None, max_len=1024, accepts="none"),
    ]  # fmt: skip
    for layout in (None,) + jk_frames.LAYOUTS:
        name = "jk-frame-" + ("auto" if layout is None else layout.lower().replace("jk02_", ""))
        targets.append(
            Target(name, "jk_frames.decode_frame(frame, %r), battery.from_jk" % (layout,), jk_frame_check(layout),
                   seeds.jk_frames, checksums.jk_frame, max_len=400)
        )  # fmt: skip
    targets += [
        Target("jk-pb-reply", "jk_pb.decode_trigger_reply, decode_frame(JK02_32S)", jk_pb_reply_check,
               seeds.jk_pb_replies, checksums.jk_pb_reply, max_len=400),
        Target("jk-pb-registers", "jk_pb.block_of, image_from_frame, registers_from_image (a script)",
               jk_pb_registers_check, _registers_seeds, None, max_len=400,
               accepts="LocalProtocolError, for a read outside the block"),
        Target("jk-4e57", "jk_4e57.decode, decode_response, battery.from_jk_4e57", e57_check, seeds.e57_frames,
               checksums.e57, max_len=1100),
        _dissect_target("jk-ble", checksums.jk_ble, lambda: seeds.jk_frames() + seeds.jk_commands()),
        _dissect_target("jk-pb", checksums.jk_pb, lambda: seeds.jk_pb_replies() + seeds.modbus_frames()),
        _dissect_target("jk-4e57", checksums.e57, seeds.e57_frames),
        _dissect_target("byd-pro", checksums.byd, seeds.byd_frames),
        _dissect_target("deye", checksums.modbus_either, seeds.modbus_frames),
        _dissect_target("modbus", checksums.modbus_either, seeds.modbus_frames),
        Target("config-validate", "config.validate on JSON-like structures (a script)", config_validate_check,
               _config_seeds, None, max_len=2048, accepts="ConfigError"),
        Target("config-merge", "config.merge(valid config, changes) (a script)", config_merge_check, _config_seeds,
               None, max_len=2048, accepts="ConfigError"),
        Target("rpc", "Proxy.feed(RpcCall): every method's parameter checks, the token (a script)", rpc_check,
               _rpc_seeds, None, max_len=2048, accepts="none (errors are replies)"),
    ]  # fmt: skip
    return {target.name: target for target in targets}


TARGETS = _targets()
