"""Modbus RTU, sans-I/O.

Reference: shared/reference/deye-byd-modbus.md section 3 (Modbus RTU conformance):
ADU = unit(1) | PDU | CRC-16/MODBUS (low byte first), at most 256 bytes; read
quantity 1..125; t3.5 silence ends a frame (fixed 1750 us above 19200 baud).

Two layers:
- RtuFramer: bytes with their arrival time in, whole ADUs out, split on silence;
- decode_request / decode_response / encode_*: ADU <-> event objects for the
  function codes this project uses (0x03, 0x04, 0x06, 0x10, 0x11) and exception
  responses.  Any other function code decodes to UnknownRequest so a slave can
  answer "illegal function".

Unit 0 is an ordinary unit here: DEYE's battery #1 is unit 0 and expects a reply.
"""

import struct

from .errors import LocalProtocolError, RemoteProtocolError

MAX_ADU = 256
MAX_READ_COUNT = 125
MAX_WRITE_COUNT = 123

READ_HOLDING = 0x03
READ_INPUT = 0x04
WRITE_SINGLE = 0x06
WRITE_MULTIPLE = 0x10
REPORT_ID = 0x11

ILLEGAL_FUNCTION = 0x01
ILLEGAL_ADDRESS = 0x02
ILLEGAL_VALUE = 0x03
DEVICE_FAILURE = 0x04

EXCEPTION_NAMES = {
    0x01: "illegal_function",
    0x02: "illegal_data_address",
    0x03: "illegal_data_value",
    0x04: "server_device_failure",
    0x05: "acknowledge",
    0x06: "server_device_busy",
    0x08: "memory_parity_error",
    0x0A: "gateway_path_unavailable",
    0x0B: "gateway_target_failed",
}

FUNCTION_NAMES = {
    READ_HOLDING: "read_holding_registers",
    READ_INPUT: "read_input_registers",
    WRITE_SINGLE: "write_single_register",
    WRITE_MULTIPLE: "write_multiple_registers",
    REPORT_ID: "report_server_id",
}


def _crc_table():
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC_TABLE = _crc_table()


def crc16(data):
    """CRC-16/MODBUS (reflected 0xA001, init 0xFFFF); check("123456789") = 0x4B37."""
    crc = 0xFFFF
    table = _CRC_TABLE
    for byte in data:
        crc = (crc >> 8) ^ table[(crc ^ byte) & 0xFF]
    return crc


def crc16_range(data, start, end):
    """crc16(data[start:end]) without copying the slice (no allocation)."""
    crc = 0xFFFF
    table = _CRC_TABLE
    for index in range(start, end):
        crc = (crc >> 8) ^ table[(crc ^ data[index]) & 0xFF]
    return crc


def with_crc(body):
    """Append the CRC, low byte first, as it goes on the wire."""
    crc = crc16(body)
    return bytes(body) + bytes((crc & 0xFF, crc >> 8))


def check_crc(adu):
    """Raise RemoteProtocolError unless adu ends with its correct CRC."""
    if len(adu) < 4:
        raise RemoteProtocolError("Modbus frame too short (%d bytes)" % len(adu), raw=bytes(adu))
    if len(adu) > MAX_ADU:
        raise RemoteProtocolError("Modbus frame longer than 256 bytes (%d)" % len(adu), raw=bytes(adu))
    crc = crc16_range(adu, 0, len(adu) - 2)
    got = adu[-2] | (adu[-1] << 8)
    if crc != got:
        raise RemoteProtocolError(
            "bad CRC: frame carries %04X, computed %04X" % (got, crc), raw=bytes(adu), offset=len(adu) - 2
        )


# --- events -----------------------------------------------------------------


class ReadRequest:
    """0x03 / 0x04 request."""

    __slots__ = ("unit", "function", "address", "count")

    def __init__(self, unit, function, address, count):
        self.unit = unit
        self.function = function
        self.address = address
        self.count = count


class ReadResponse:
    __slots__ = ("unit", "function", "registers")

    def __init__(self, unit, function, registers):
        self.unit = unit
        self.function = function
        self.registers = registers


class WriteSingle:
    """0x06 request, and its echo as the response."""

    __slots__ = ("unit", "address", "value")
    function = WRITE_SINGLE

    def __init__(self, unit, address, value):
        self.unit = unit
        self.address = address
        self.value = value


class WriteMultipleRequest:
    __slots__ = ("unit", "address", "values")
    function = WRITE_MULTIPLE

    def __init__(self, unit, address, values):
        self.unit = unit
        self.address = address
        self.values = values


class WriteMultipleResponse:
    __slots__ = ("unit", "address", "count")
    function = WRITE_MULTIPLE

    def __init__(self, unit, address, count):
        self.unit = unit
        self.address = address
        self.count = count


class ReportIdRequest:
    __slots__ = ("unit",)
    function = REPORT_ID

    def __init__(self, unit):
        self.unit = unit


class ReportIdResponse:
    """0x11 response; data is everything after the byte count (device specific)."""

    __slots__ = ("unit", "data")
    function = REPORT_ID

    def __init__(self, unit, data):
        self.unit = unit
        self.data = data


class ExceptionResponse:
    __slots__ = ("unit", "function", "code")

    def __init__(self, unit, function, code):
        self.unit = unit
        self.function = function
        self.code = code


class UnknownRequest:
    """A well-formed ADU whose function code we do not implement."""

    __slots__ = ("unit", "function", "data")

    def __init__(self, unit, function, data):
        self.unit = unit
        self.function = function
        self.data = data


# --- decoding ---------------------------------------------------------------


def _expect_length(adu, length, what):
    if len(adu) != length:
        raise RemoteProtocolError(
            "%s must be %d bytes, got %d" % (what, length, len(adu)), raw=bytes(adu), function_code=adu[1]
        )


def decode_request(adu):
    """A master's request ADU (CRC included) to an event."""
    check_crc(adu)
    unit = adu[0]
    function = adu[1]
    if function in (READ_HOLDING, READ_INPUT):
        _expect_length(adu, 8, "read request")
        address, count = struct.unpack_from(">HH", adu, 2)
        return ReadRequest(unit, function, address, count)
    if function == WRITE_SINGLE:
        _expect_length(adu, 8, "write-single request")
        address, value = struct.unpack_from(">HH", adu, 2)
        return WriteSingle(unit, address, value)
    if function == WRITE_MULTIPLE:
        if len(adu) < 11:
            raise RemoteProtocolError("write-multiple request too short", raw=bytes(adu), function_code=function)
        address, count, byte_count = struct.unpack_from(">HHB", adu, 2)
        if byte_count != 2 * count or len(adu) != 9 + byte_count:
            raise RemoteProtocolError(
                "write-multiple request: count %d, byte count %d, frame %d bytes do not agree"
                % (count, byte_count, len(adu)),
                raw=bytes(adu),
                function_code=function,
            )
        values = struct.unpack_from(">%dH" % count, adu, 7)
        return WriteMultipleRequest(unit, address, values)
    if function == REPORT_ID:
        _expect_length(adu, 4, "report-server-id request")
        return ReportIdRequest(unit)
    if function & 0x80:
        raise RemoteProtocolError(
            "function code %02X is an exception code, not a request" % function, raw=bytes(adu), function_code=function
        )
    return UnknownRequest(unit, function, bytes(adu[2:-2]))


def decode_response(adu):
    """A slave's response ADU (CRC included) to an event."""
    check_crc(adu)
    unit = adu[0]
    function = adu[1]
    if function & 0x80:
        _expect_length(adu, 5, "exception response")
        return ExceptionResponse(unit, function & 0x7F, adu[2])
    if function in (READ_HOLDING, READ_INPUT):
        byte_count = adu[2]
        if byte_count % 2 or len(adu) != 5 + byte_count:
            raise RemoteProtocolError(
                "read response: byte count %d does not fit a %d-byte frame" % (byte_count, len(adu)),
                raw=bytes(adu),
                function_code=function,
            )
        return ReadResponse(unit, function, struct.unpack_from(">%dH" % (byte_count // 2), adu, 3))
    if function == WRITE_SINGLE:
        _expect_length(adu, 8, "write-single response")
        address, value = struct.unpack_from(">HH", adu, 2)
        return WriteSingle(unit, address, value)
    if function == WRITE_MULTIPLE:
        _expect_length(adu, 8, "write-multiple response")
        address, count = struct.unpack_from(">HH", adu, 2)
        return WriteMultipleResponse(unit, address, count)
    if function == REPORT_ID:
        byte_count = adu[2] if len(adu) > 4 else 0
        if len(adu) != 5 + byte_count:
            raise RemoteProtocolError(
                "report-server-id response: byte count %d does not fit a %d-byte frame" % (byte_count, len(adu)),
                raw=bytes(adu),
                function_code=function,
            )
        return ReportIdResponse(unit, bytes(adu[3:-2]))
    raise RemoteProtocolError(
        "unsupported function code %02X in a response" % function, raw=bytes(adu), function_code=function
    )


def request_frame_length(prefix):
    """Length of the request ADU that starts with prefix, or None while unknown.

    Used to split a stream when timing is lost (a USB adapter that batches bytes).
    """
    if len(prefix) < 2:
        return None
    function = prefix[1]
    if function in (READ_HOLDING, READ_INPUT, WRITE_SINGLE):
        return 8
    if function == REPORT_ID:
        return 4
    if function == WRITE_MULTIPLE:
        return 9 + prefix[6] if len(prefix) >= 7 else None
    return None


def response_length(prefix):
    """Length of the response ADU that starts with prefix, or None while unknown."""
    if len(prefix) < 3:
        return None
    function = prefix[1]
    if function & 0x80:
        return 5
    if function in (READ_HOLDING, READ_INPUT, REPORT_ID):
        return 5 + prefix[2]
    if function in (WRITE_SINGLE, WRITE_MULTIPLE):
        return 8
    return None


# --- encoding ---------------------------------------------------------------


def _check_unit(unit):
    if not 0 <= unit <= 255:
        raise LocalProtocolError("unit %r outside 0..255" % (unit,))


def encode_read_request(unit, function, address, count):
    _check_unit(unit)
    if function not in (READ_HOLDING, READ_INPUT):
        raise LocalProtocolError("function %r is not a register read" % (function,))
    if not 1 <= count <= MAX_READ_COUNT or not 0 <= address <= 0xFFFF:
        raise LocalProtocolError("read of %r registers at %r is not allowed" % (count, address))
    return with_crc(struct.pack(">BBHH", unit, function, address, count))


def encode_read_response(unit, function, registers):
    _check_unit(unit)
    count = len(registers)
    if not 1 <= count <= MAX_READ_COUNT:
        raise LocalProtocolError("a read response carries 1..125 registers, not %d" % count)
    body = bytearray(3 + 2 * count)
    body[0] = unit
    body[1] = function
    body[2] = 2 * count
    for index in range(count):
        value = registers[index]
        if not 0 <= value <= 0xFFFF:
            raise LocalProtocolError("register value %r is not a 16-bit word" % (value,))
        struct.pack_into(">H", body, 3 + 2 * index, value)
    return with_crc(body)


def encode_write_single(unit, address, value):
    _check_unit(unit)
    if not 0 <= value <= 0xFFFF or not 0 <= address <= 0xFFFF:
        raise LocalProtocolError("write of %r at %r is not allowed" % (value, address))
    return with_crc(struct.pack(">BBHH", unit, WRITE_SINGLE, address, value))


def encode_write_multiple_request(unit, address, values):
    _check_unit(unit)
    count = len(values)
    if not 1 <= count <= MAX_WRITE_COUNT:
        raise LocalProtocolError("a write carries 1..123 registers, not %d" % count)
    for value in values:
        if not 0 <= value <= 0xFFFF:
            raise LocalProtocolError("register value %r is not a 16-bit word" % (value,))
    return with_crc(
        struct.pack(">BBHHB", unit, WRITE_MULTIPLE, address, count, 2 * count) + struct.pack(">%dH" % count, *values)
    )


def encode_write_multiple_response(unit, address, count):
    _check_unit(unit)
    return with_crc(struct.pack(">BBHH", unit, WRITE_MULTIPLE, address, count))


def encode_report_id_request(unit):
    _check_unit(unit)
    return with_crc(bytes((unit, REPORT_ID)))


def encode_report_id_response(unit, data):
    _check_unit(unit)
    if len(data) > MAX_ADU - 5:
        raise LocalProtocolError("report-server-id data of %d bytes does not fit an ADU" % len(data))
    return with_crc(bytes((unit, REPORT_ID, len(data))) + bytes(data))


def encode_exception(unit, function, code):
    _check_unit(unit)
    return with_crc(bytes((unit, (function | 0x80) & 0xFF, code)))


def encode_response(event):
    """Any response event to its ADU."""
    if isinstance(event, ReadResponse):
        return encode_read_response(event.unit, event.function, event.registers)
    if isinstance(event, ExceptionResponse):
        return encode_exception(event.unit, event.function, event.code)
    if isinstance(event, ReportIdResponse):
        return encode_report_id_response(event.unit, event.data)
    if isinstance(event, WriteSingle):
        return encode_write_single(event.unit, event.address, event.value)
    if isinstance(event, WriteMultipleResponse):
        return encode_write_multiple_response(event.unit, event.address, event.count)
    raise LocalProtocolError("not a response event: %r" % (event,))


# --- framing on silence -----------------------------------------------------


class NeedData:
    """Sentinel: no complete frame yet."""


NEED_DATA = NeedData()


def char_time_us(baud, bits_per_char=10):
    return (bits_per_char * 1000000 + baud - 1) // baud


def silence_us(baud, bits_per_char=10):
    """t3.5 at this baud rate; fixed 1750 us above 19200 baud (spec)."""
    if baud > 19200:
        return 1750
    return (35 * 1000000 * bits_per_char // 10 + baud - 1) // baud


_EMPTY = b""


class RtuFrame:
    """A frame the framer closed; ok is False when it overflowed MAX_ADU."""

    __slots__ = ("raw", "start_us", "end_us", "ok")

    def __init__(self, raw, start_us, end_us, ok):
        self.raw = raw
        self.start_us = start_us
        self.end_us = end_us
        self.ok = ok


class RtuFramer:
    """Splits a byte stream into ADUs on t3.5 silence.

    feed(data, end_us): data arrived, its last byte completed at end_us.  The
    bytes of one chunk are taken to have arrived back to back.
    next_event(now_us): the oldest closed frame (an RtuFrame), or NEED_DATA.
    A frame also closes when now_us shows that the line has been silent for
    t3.5 since its last byte.  The buffer never holds more than MAX_ADU bytes:
    a longer burst is reported as one frame with ok=False, and its excess
    bytes are counted, not kept.  CRC is checked by the decoders, not here.
    """

    __slots__ = ("baud", "char_us", "gap_us", "_buf", "_start_us", "_last_us", "_overflow", "_closed")

    def __init__(self, baud=9600, gap_us=None):
        if baud <= 0:
            raise LocalProtocolError("baud rate must be positive")
        self.baud = baud
        self.char_us = char_time_us(baud)
        self.gap_us = silence_us(baud) if gap_us is None else gap_us
        self._buf = bytearray()
        self._start_us = 0
        self._last_us = 0
        self._overflow = 0
        self._closed = []

    def _close(self):
        """The open frame is whole (callers check that one is open)."""
        self._closed.append(RtuFrame(bytes(self._buf), self._start_us, self._last_us, self._overflow == 0))
        self._buf[:] = _EMPTY  # emptied in place: it keeps its room, so the next frame allocates nothing
        self._overflow = 0

    def feed(self, data, end_us):
        if not data:
            return
        first_end_us = end_us - (len(data) - 1) * self.char_us
        if (self._buf or self._overflow) and first_end_us - self.char_us - self._last_us >= self.gap_us:
            self._close()
        if not self._buf and not self._overflow:
            self._start_us = first_end_us - self.char_us
        room = MAX_ADU - len(self._buf)
        if len(data) > room:
            self._buf.extend(data[:room] if room > 0 else b"")
            self._overflow += len(data) - max(room, 0)
        else:
            self._buf.extend(data)
        self._last_us = end_us

    def next_event(self, now_us):
        if not self._closed and (self._buf or self._overflow) and now_us - self._last_us >= self.gap_us:
            self._close()
        if self._closed:
            return self._closed.pop(0)
        return NEED_DATA

    def pending(self):
        """Bytes held for the frame still open."""
        return len(self._buf)

    def deadline_us(self):
        """When silence will close the open frame (next_event then returns it), or None."""
        if self._closed or not (self._buf or self._overflow):
            return None
        return self._last_us + self.gap_us

    def close_if_complete(self, length_of):
        """Close the open frame now, without waiting for t3.5, when length_of
        (request_frame_length, say) says it is whole and its CRC is right.

        A slave can answer sooner this way; a frame that does not check out
        still waits for the silence.  Returns True when it closed one.
        """
        buffer = self._buf
        if self._overflow or len(buffer) < 4:
            return False
        expected = length_of(buffer)
        if expected is None or expected != len(buffer):
            return False
        if crc16_range(buffer, 0, expected - 2) != buffer[expected - 2] | buffer[expected - 1] << 8:
            return False
        self._close()
        return True
