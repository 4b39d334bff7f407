"""What the live campaigns send (`vbms fuzz wire`), and what a correct device does with it.

Three grammars, one per port, each driven by a seeded random.Random so a campaign is
reproducible from its seed:

- InverterGrammar: Modbus RTU requests as a DEYE master would send them, malformed in
  every way the issue lists (bad CRCs, truncations, wrong lengths and counts, bad
  addresses, every function code, unknown units, writes to unit 0, oversize frames,
  replies where a request belongs, garbage, floods of frames without gaps), grouped in
  bursts that end with valid requests after a proper silence.
- BmsReplyGrammar: what the fuzzer answers, in a BMS module's place, to the device under
  test's poll: valid replies, replies from another address, a module answering twice,
  bad checksums, truncated, garbled, padded and late replies, silence.
- NotificationMangler: JK BLE notifications bit-flipped, dropped, repeated, swapped,
  held back past the next frame, with junk between them.

The oracle (expect) says what a correct slave does with one frame on the inverter bus.
Its rules come from the reference, not from the code under test:
shared/reference/deye-byd-modbus.md 1.3.1 (units 0x00..0x0E, 0x1000..0x1018, FC 0x04 and
0x11; unknown units, stale data and malformed frames get no reply) and 3.1 (ADU of at
most 256 bytes, CRC-16/MODBUS, quantity 1..125 or exception 03, a range beyond the map
exception 02, an unsupported function exception 01).  An exception code is not a
request (0x80 and up: no reply).

The grammars never produce what the protocol itself cannot catch: a BYD or JK frame
whose payload was changed and its sum repaired, or a JK notification stream in which a
header-started 300-byte window that the module never sent passes the sum8 (JK's
checksum is a plain byte sum, so reordering chunks of one frame keeps it).  A device
would accept those as true readings; that is the protocol's limit, not the device's.
"""

import random
from collections.abc import Collection, Container, Iterable
from typing import Any, cast

from . import checksums

# --- facts from the reference ----------------------------------------------------------

MAX_ADU = 256  # 3.1
MAX_UNIT = 0x0E  # 1.3.1
FIRST_REGISTER = 0x1000  # 1.3.2
REGISTER_COUNT = 25  # 0x1000..0x1018
MAX_READ_COUNT = 125  # 3.1
READ_INPUT = 0x04
REPORT_ID = 0x11
ILLEGAL_FUNCTION = 0x01
ILLEGAL_ADDRESS = 0x02
ILLEGAL_VALUE = 0x03
RESERVED_REGISTERS = (0x100F, 0x1013, 0x1016)  # "returns 0" (1.3.2)
BYD_REQUEST_LENGTH = 8  # 2.2
JK_HEADER = checksums.JK_HEADER
JK_FRAME_LENGTH = checksums.JK_FRAME_LENGTH
JK_FRAME_TYPES = checksums.JK_FRAME_TYPES


def char_s(baud: int) -> float:
    """One character on the wire: 10 bits (8N1)."""
    return 10.0 / baud


def silence_s(baud: int) -> float:
    """t3.5: 3.5 characters, fixed 1.75 ms above 19200 baud (3.1)."""
    return 0.00175 if baud > 19200 else 35.0 / baud


def with_crc(body: bytes) -> bytes:
    crc = checksums.crc16_modbus(bytes(body))
    return bytes(body) + bytes((crc & 0xFF, crc >> 8))


def crc_ok(frame: bytes) -> bool:
    return len(frame) >= 4 and checksums.crc16_modbus(bytes(frame[:-2])) == frame[-2] | frame[-1] << 8


def read_request(
    unit: int, address: int = FIRST_REGISTER, count: int = REGISTER_COUNT, function: int = READ_INPUT
) -> bytes:
    return with_crc(bytes((unit, function, address >> 8 & 0xFF, address & 0xFF, count >> 8 & 0xFF, count & 0xFF)))


def identity_request(unit: int) -> bytes:
    return with_crc(bytes((unit, REPORT_ID)))


def response_length(prefix: bytes | bytearray) -> int | None:
    """A slave's reply length from its first bytes (3.1), or None while unknown or not a reply we know."""
    if len(prefix) < 3:
        return None
    if prefix[1] & 0x80:
        return 5
    if prefix[1] in (0x03, READ_INPUT, REPORT_ID):
        return 5 + prefix[2]
    return None


# --- the oracle --------------------------------------------------------------------------

SILENT = "silent"
REGISTERS = "registers"
IDENTITY = "identity"
EXCEPTION = "exception"


class Expectation:
    """What a correct slave answers to one frame: nothing, registers, its identity, or an exception."""

    __slots__ = ("kind", "unit", "function", "code", "address", "count")

    def __init__(
        self,
        kind: str,
        unit: int | None = None,
        function: int | None = None,
        code: int | None = None,
        address: int | None = None,
        count: int | None = None,
    ) -> None:
        self.kind = kind
        self.unit = unit
        self.function = function
        self.code = code
        self.address = address
        self.count = count

    def describe(self) -> str:
        if self.kind == SILENT:
            return "no reply"
        if self.kind == EXCEPTION:
            # every kind but SILENT has its unit and function, EXCEPTION its code, REGISTERS address and count
            return "exception %02X to function %02X from unit %d" % (self.code, self.function, self.unit)  # type: ignore[str-format]
        if self.kind == IDENTITY:
            return "the identity of unit %d" % self.unit  # type: ignore[str-format]
        return "%d registers at %04X from unit %d" % (self.count, self.address, self.unit)  # type: ignore[str-format]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Expectation) and all(getattr(self, n) == getattr(other, n) for n in self.__slots__)

    def __hash__(self) -> int:
        return hash(tuple(getattr(self, name) for name in self.__slots__))


NO_REPLY = Expectation(SILENT)


def expect(frame: bytes, served: Container[int]) -> Expectation:
    """What a correct slave does with frame (one frame: the bytes between two t3.5 silences).

    served: the units whose data is fresh (configured, and read within the staleness limit).
    """
    length = len(frame)
    if length < 4 or length > MAX_ADU or not crc_ok(frame):
        return NO_REPLY
    unit, function = frame[0], frame[1]
    if unit > MAX_UNIT or unit not in served or function & 0x80:
        return NO_REPLY
    if function == READ_INPUT:
        if length != 8:
            return NO_REPLY
        address = frame[2] << 8 | frame[3]
        count = frame[4] << 8 | frame[5]
        if not 1 <= count <= MAX_READ_COUNT:
            return Expectation(EXCEPTION, unit, function, ILLEGAL_VALUE)
        if address < FIRST_REGISTER or address + count > FIRST_REGISTER + REGISTER_COUNT:
            return Expectation(EXCEPTION, unit, function, ILLEGAL_ADDRESS)
        return Expectation(REGISTERS, unit, function, address=address, count=count)
    if function == REPORT_ID:
        return Expectation(IDENTITY, unit, function) if length == 4 else NO_REPLY
    return Expectation(EXCEPTION, unit, function, ILLEGAL_FUNCTION)


def reply_matches(expectation: Expectation, reply: bytes) -> bool:
    """Whether a reply (CRC already checked) has the shape the expectation asks for: unit, function, length,
    exception code.  Values and identities are checked by the caller."""
    if len(reply) < 5 or reply[0] != expectation.unit:
        return False
    if expectation.kind == EXCEPTION:  # has its function (Expectation.describe)
        return len(reply) == 5 and reply[1] == expectation.function | 0x80 and reply[2] == expectation.code  # type: ignore[operator]
    if expectation.kind == REGISTERS:  # has its count
        return reply[1] == READ_INPUT and reply[2] == 2 * expectation.count and len(reply) == 5 + 2 * expectation.count  # type: ignore[operator]
    if expectation.kind == IDENTITY:
        return reply[1] == REPORT_ID and len(reply) == 5 + reply[2]
    return False


def identity_fields(data: bytes) -> tuple[str, str] | None:
    """The 0x11 reply data as (model, serial), or None when it does not have the layout of 1.3.1:
    model (up to 15 ASCII) '*' SW(2) '*' HW(2) '*' serial(20, NUL-padded) '*'."""
    star = data.find(b"*")
    if star < 0 or star > 15 or len(data) != star + 1 + 3 + 3 + 20 + 1:
        return None
    rest = data[star + 1 :]
    if rest[2] != 0x2A or rest[5] != 0x2A or data[-1] != 0x2A:
        return None
    if any(not 0x20 <= byte < 0x7F for byte in data[:star]):
        return None
    return data[:star].decode(), rest[6:26].rstrip(b"\x00").decode("ascii", "replace")


# --- the inverter port ---------------------------------------------------------------------

GAP = "gap"  # t3.5 and a little: the frame stands alone, nothing waits for a reply
SILENCE = "silence"  # a proper silence before it, and the reply is waited for
FLOOD = "flood"


class Item:
    """One write on the inverter bus: the frames in it (several for a flood), what kind, and the pause before."""

    __slots__ = ("data", "frames", "kind", "pause", "valid")

    def __init__(self, kind: str, frames: list[bytes], pause: str = GAP, valid: bool = False) -> None:
        self.kind = kind
        self.frames = frames
        self.data = b"".join(frames)
        self.pause = pause
        self.valid = valid


class InverterGrammar:
    """Malformed and valid Modbus requests; configured: the units the bench has batteries on."""

    # kind -> weight
    KINDS = {
        "bad_crc": 14,
        "truncated": 10,
        "wrong_length": 6,
        "bad_count": 4,
        "bad_address": 4,
        "function": 8,
        "unknown_unit": 8,
        "broadcast": 3,
        "write": 3,
        "oversize": 1,
        "reply": 3,
        "garbage": 8,
        "noise": 6,
        "flood": 24,
    }

    def __init__(self, rng: random.Random, configured: Collection[int]) -> None:
        self.random = rng
        self.configured = sorted(configured)
        self.unconfigured = [unit for unit in range(MAX_UNIT + 1) if unit not in configured]
        self._kinds = list(self.KINDS)
        self._weights = [self.KINDS[kind] for kind in self._kinds]

    def _unit(self) -> int:
        return self.random.choice(self.configured) if self.configured else self.random.randrange(MAX_UNIT + 1)

    def valid(self) -> bytes:
        """A request a DEYE master sends: the whole register block, a part of it, or the identity."""
        unit = self._unit()
        draw = self.random.random()
        if draw < 0.7:
            return read_request(unit)
        if draw < 0.85:
            address = FIRST_REGISTER + self.random.randrange(REGISTER_COUNT)
            count = self.random.randint(1, FIRST_REGISTER + REGISTER_COUNT - address)
            return read_request(unit, address, count)
        return identity_request(unit)

    def _bytes(self, count: int) -> bytes:
        return bytes(self.random.randrange(256) for _ in range(count))

    def malformed(self, kind: str | None = None, in_flood: bool = False) -> tuple[str, bytes | list[bytes]]:
        """(kind, frame) of the given or a drawn kind (a flood's parts are never floods)."""
        rng = self.random
        frame: bytes | bytearray  # bad_crc's copy is mutable, truncated's not
        if kind is None:
            kind = rng.choices(self._kinds, self._weights)[0]
            while in_flood and kind in ("flood", "oversize"):
                kind = rng.choices(self._kinds, self._weights)[0]
        if kind == "bad_crc":
            frame = bytearray(self.valid())
            bit = rng.randrange(8 * len(frame))
            frame[bit // 8] ^= 1 << bit % 8  # CRC-16 detects every single-bit error
            return kind, bytes(frame)
        if kind == "truncated":
            frame = self.valid()
            return kind, frame[: rng.randrange(1, len(frame))]
        if kind == "wrong_length":
            function = rng.choice((READ_INPUT, REPORT_ID))
            size = rng.choice([n for n in range(0, 9) if n != (4 if function == READ_INPUT else 0)])
            return kind, with_crc(bytes((self._unit(), function)) + self._bytes(size))
        if kind == "bad_count":
            count = rng.choice((0, 126, 127, 0x80, 0xFF, 0x100, 0x7FFF, 0xFFFF, 26, rng.randrange(0x10000)))
            return kind, read_request(self._unit(), FIRST_REGISTER, count)
        if kind == "bad_address":
            count = rng.randint(1, REGISTER_COUNT)
            address = rng.choice((0, 0x0FFF, FIRST_REGISTER + REGISTER_COUNT, 0xFFFF, rng.randrange(0x10000),
                                  FIRST_REGISTER + REGISTER_COUNT - count + rng.randint(1, count)))  # fmt: skip
            return kind, read_request(self._unit(), address & 0xFFFF, count)
        if kind == "function":
            function = rng.randrange(256)
            unit = self._unit() if rng.random() < 0.8 else rng.randrange(256)
            return kind, with_crc(bytes((unit, function)) + self._bytes(rng.choice((0, 1, 2, 4, 4, 5, 8))))
        if kind == "unknown_unit":
            unit = rng.choice(self.unconfigured) if self.unconfigured and rng.random() < 0.3 else rng.randint(15, 255)
            return kind, read_request(unit) if rng.random() < 0.7 else identity_request(unit)
        if kind == "broadcast":  # unit 0, the Modbus broadcast address (DEYE's battery 1): writes
            if rng.random() < 0.5:
                return kind, with_crc(bytes((0, 0x06, 0x10, 0x00)) + self._bytes(2))
            count = rng.randint(1, 4)
            return kind, with_crc(bytes((0, 0x10, 0x10, 0x00, 0, count, 2 * count)) + self._bytes(2 * count))
        if kind == "write":
            if rng.random() < 0.5:
                return kind, with_crc(bytes((self._unit(), 0x06)) + self._bytes(4))
            count = rng.randint(1, 10)
            return kind, with_crc(bytes((self._unit(), 0x10, 0x10, 0, 0, count, 2 * count)) + self._bytes(2 * count))
        if kind == "oversize":
            body = bytes((self._unit(), READ_INPUT)) + self._bytes(rng.randint(MAX_ADU - 1, MAX_ADU + 60))
            return kind, with_crc(body)
        if kind == "reply":  # a slave's answer where a request belongs
            unit = self._unit()
            if rng.random() < 0.5:
                count = rng.randint(1, 25)
                return kind, with_crc(bytes((unit, READ_INPUT, 2 * count)) + self._bytes(2 * count))
            return kind, with_crc(bytes((unit, rng.choice((0x84, 0x91, 0x83)), rng.randint(1, 4))))
        if kind == "garbage":
            return kind, self._bytes(rng.randint(1, 24))
        if kind == "noise":
            return kind, self._bytes(rng.randint(1, 3))
        if kind == "flood":
            parts = [cast(bytes, self.malformed(in_flood=True)[1]) if rng.random() < 0.75 else self.valid()
                     for _ in range(rng.randint(2, 10))]  # fmt: skip
            return kind, parts
        raise ValueError("unknown kind %r" % kind)

    def burst(self, size: int) -> list[Item]:
        """size malformed frames in writes, then one or two valid requests after a proper silence."""
        items: list[Item] = []
        frames = 0
        while frames < size:
            kind, frame = self.malformed()
            if kind == "flood":
                frame = cast(list[bytes], frame)[: max(1, size - frames)]  # only a flood's frame is a list
                items.append(Item(kind, frame))
                frames += len(frame)
            else:
                items.append(Item(kind, [cast(bytes, frame)]))
                frames += 1
        for _ in range(self.random.choice((1, 1, 2))):
            items.append(Item("valid", [self.valid()], SILENCE, valid=True))
        return items


# --- the BMS port ----------------------------------------------------------------------------

BMS_REPLY_KINDS = {
    "valid": 30,
    "duplicate": 8,  # the module answers twice: back to back, or after a gap
    "other_address": 8,  # a valid reply from another module, in this one's turn
    "address_field": 5,  # this module's reply with another address in it (checksum repaired)
    "length_field": 3,  # the length field changed (checksum repaired)
    "bad_checksum": 8,
    "bit_flip": 8,  # one bit flipped, nothing repaired
    "truncated": 8,
    "garbled": 5,  # random bytes of a reply's length
    "trailing_junk": 4,
    "leading_junk": 4,
    "late": 3,  # a valid reply after the master gave up
    "silent": 6,
}
# kinds whose first frame is the module's own valid reply, sent promptly: the master takes it
FRESHENING = ("valid", "duplicate", "trailing_junk")
# kinds that carry a valid reply of this module somewhere: the master may take it
MAY_FRESHEN = FRESHENING + ("leading_junk", "late")


class BmsSend:
    """One write of the fuzzer on the BMS bus: bytes after delay_s from the request it answers."""

    __slots__ = ("delay_s", "data")

    def __init__(self, delay_s: float, data: bytes | bytearray) -> None:
        self.delay_s = delay_s
        self.data = data

    def to_json(self) -> dict[str, Any]:
        return {"delay_s": round(self.delay_s, 4), "hex": self.data.hex()}


def repair_byd(frame: bytes | bytearray) -> bytes:
    """BYD's sum8 over bytes 1..n-2 (reference 2.2), after a header field was changed."""
    frame = bytearray(frame)
    frame[-1] = sum(frame[1:-1]) & 0xFF
    return bytes(frame)


class BmsReplyGrammar:
    """The fuzzer's answer to a poll of an address it stands in for.

    replies(kind, own, other, timeout_s): own is the module's valid reply now, other a valid reply of
    another module (or None); timeout_s how long the master waits.  Returns [BmsSend].
    """

    def __init__(self, rng: random.Random, protocol: str = "byd-pro") -> None:
        self.random = rng
        self.protocol = protocol
        self._kinds = list(BMS_REPLY_KINDS)
        self._weights = [BMS_REPLY_KINDS[kind] for kind in self._kinds]

    def kind(self, starving: bool = False) -> str:
        """A reply kind; while starving (a staleness check runs) never one that may freshen."""
        kind = self.random.choices(self._kinds, self._weights)[0]
        while starving and kind in MAY_FRESHEN:
            kind = self.random.choices(self._kinds, self._weights)[0]
        return kind

    def _repair(self, frame: bytearray) -> bytes | bytearray:
        return repair_byd(frame) if self.protocol == "byd-pro" else frame

    def replies(
        self, kind: str, own: bytes, other: bytes | None, timeout_s: float, char_time_s: float
    ) -> list[BmsSend]:
        rng = self.random
        prompt = rng.uniform(0.0, 0.03)
        if kind == "valid":
            return [BmsSend(prompt, own)]
        if kind == "duplicate":
            gap = rng.choice((0.0, 0.0, rng.uniform(0.002, 0.01), rng.uniform(0.01, 0.06)))
            if gap == 0.0:
                return [BmsSend(prompt, own + own)]
            return [BmsSend(prompt, own), BmsSend(prompt + len(own) * char_time_s + gap, own)]
        if kind == "other_address":
            return [BmsSend(prompt, other if other is not None else self._bit_flip(own))]
        if kind == "address_field":
            frame = bytearray(own)
            frame[0] = (frame[0] + rng.randint(1, 255)) & 0xFF
            return [BmsSend(prompt, bytes(frame) if self.protocol == "byd-pro" else self._bit_flip(own))]
        if kind == "length_field" and self.protocol == "byd-pro":
            frame = bytearray(own)
            length = rng.choice((0, 4, 0x64, 0x66, 0xFF, 0xFFFF, rng.randrange(0x10000)))
            frame[1], frame[2] = length >> 8 & 0xFF, length & 0xFF
            return [BmsSend(prompt, self._repair(frame))]
        if kind == "bad_checksum":
            frame = bytearray(own)
            frame[-1] = (frame[-1] + rng.randint(1, 255)) & 0xFF
            return [BmsSend(prompt, bytes(frame))]
        if kind == "truncated":
            return [BmsSend(prompt, own[: rng.randrange(1, len(own))])]
        if kind == "garbled":
            return [BmsSend(prompt, bytes(rng.randrange(256) for _ in range(len(own))))]
        if kind == "trailing_junk":
            return [BmsSend(prompt, own + bytes(rng.randrange(256) for _ in range(rng.randint(1, 20))))]
        if kind == "leading_junk":
            return [BmsSend(prompt, bytes(rng.randrange(256) for _ in range(rng.randint(1, 20))) + own)]
        if kind == "late":
            return [BmsSend(timeout_s + rng.uniform(0.02, 0.2), own)]
        if kind == "silent":
            return []
        return [BmsSend(prompt, self._bit_flip(own))]  # bit_flip, and length_field on protocols without it

    def _bit_flip(self, frame: bytes | bytearray) -> bytes:
        """One bit flipped anywhere but the address: a sum8 catches every single-bit error."""
        frame = bytearray(frame)
        bit = self.random.randrange(8, 8 * len(frame))
        frame[bit // 8] ^= 1 << bit % 8
        return bytes(frame)


# --- the BLE port ----------------------------------------------------------------------------

BLE_MANGLE_KINDS = {
    "intact": 40,
    "bit_flip": 14,
    "drop_chunk": 10,
    "repeat_chunk": 8,
    "swap_chunks": 10,
    "hold_back": 8,  # a chunk arrives after the next frame's chunks
    "truncate": 6,
    "junk_between": 4,
}


def _is_jk_frame(window: bytes) -> bool:
    return (
        len(window) == JK_FRAME_LENGTH
        and window[:4] == JK_HEADER
        and window[4] in JK_FRAME_TYPES
        and sum(window[: JK_FRAME_LENGTH - 1]) & 0xFF == window[JK_FRAME_LENGTH - 1]
    )


class NotificationMangler:
    """Mangles one JK module's notifications, one send (a frame's chunks, or a command's answer) at a time.

    mangle(payloads, starving) -> (kind, payloads to send, cell-info frames delivered whole).
    It keeps the recent stream it has sent and never lets a header-started 300-byte window
    that passes JK's sum8 appear unless the module sent exactly that frame; while starving
    (a staleness check runs) no such window appears at all.
    """

    STREAM_KEEP = 2 * JK_FRAME_LENGTH
    CELL_INFO = 0x02

    def __init__(self, rng: random.Random) -> None:
        self.random = rng
        self.stream = bytearray()  # the recent part of what the central has been sent
        self.held: list[bytes] = []  # chunks held back, sent after the next send's chunks
        self.recent: list[bytes] = []  # frames the module sent lately (a held-back chunk may complete one later)
        self._kinds = list(BLE_MANGLE_KINDS)
        self._weights = [BLE_MANGLE_KINDS[kind] for kind in self._kinds]

    def mangle(self, payloads: Iterable[bytes], starving: bool = False) -> tuple[str, list[bytes], list[bytes]]:
        payloads = [bytes(payload) for payload in payloads]
        self.recent = (self.recent + sorted(self._frames_in(b"".join(payloads))))[-6:]
        allowed = set() if starving else set(self.recent)
        for _ in range(20):
            kind = self.random.choices(self._kinds, self._weights)[0]
            if starving and kind == "intact":
                kind = "bit_flip"
            if not payloads:
                kind = "intact"
            sent, held = self._apply(kind, payloads)
            sent = self.held + sent if kind != "hold_back" else sent + self.held
            passing = self._passing(sent)
            if passing <= allowed:
                return kind, self._commit(sent, held), [f for f in passing if f[4] == self.CELL_INFO]
        sent = [self._flip(chunk) for chunk in self.held + payloads]  # every chunk damaged: nothing passes
        while self._passing(sent):
            sent = [self._flip(chunk) for chunk in sent]
        return "bit_flip", self._commit(sent, []), []

    def _commit(self, sent: list[bytes], held: list[bytes]) -> list[bytes]:
        self.held = held
        self.stream.extend(b"".join(sent))
        del self.stream[: max(0, len(self.stream) - self.STREAM_KEEP)]
        return sent

    def _apply(self, kind: str, payloads: list[bytes]) -> tuple[list[bytes], list[bytes]]:
        rng = self.random
        chunks = list(payloads)
        if kind == "intact" or not chunks:
            return chunks, []
        index = rng.randrange(len(chunks))
        if kind == "bit_flip":
            chunks[index] = self._flip(chunks[index])
        elif kind == "drop_chunk":
            del chunks[index]
        elif kind == "repeat_chunk":
            chunks.insert(index, chunks[index])
        elif kind == "swap_chunks" and len(chunks) > 1:
            other = rng.randrange(len(chunks) - 1)
            other += other >= index
            chunks[index], chunks[other] = chunks[other], chunks[index]
        elif kind == "hold_back":
            return chunks[:index] + chunks[index + 1 :], [chunks[index]]
        elif kind == "truncate":
            chunks[index] = chunks[index][: rng.randrange(len(chunks[index]))] if chunks[index] else b""
            del chunks[index + 1 :]
        elif kind == "junk_between":
            chunks.insert(index, bytes(rng.randrange(256) for _ in range(rng.randint(1, 24))))
        else:
            chunks[index] = self._flip(chunks[index])
        return chunks, []

    def _flip(self, chunk: bytes) -> bytes:
        if not chunk:
            return chunk
        chunk = bytearray(chunk)  # type: ignore[assignment]  # a mutable copy, under the same name
        bit = self.random.randrange(8 * len(chunk))
        chunk[bit // 8] ^= 1 << bit % 8  # type: ignore[index]  # (that bytearray)
        return bytes(chunk)

    @staticmethod
    def _frames_in(data: bytes) -> set[bytes]:
        found: set[bytes] = set()
        start = data.find(JK_HEADER)
        while start >= 0:
            window = data[start : start + JK_FRAME_LENGTH]
            if _is_jk_frame(window):
                found.add(bytes(window))
            start = data.find(JK_HEADER, start + 1)
        return found

    def _passing(self, sent: list[bytes]) -> set[bytes]:
        """The windows that pass the sum8 among those these chunks complete or change."""
        stream = bytes(self.stream) + b"".join(sent)
        first_new = len(self.stream)
        passing: set[bytes] = set()
        start = stream.find(JK_HEADER)
        while start >= 0:
            if start + JK_FRAME_LENGTH > first_new:
                window = stream[start : start + JK_FRAME_LENGTH]
                if _is_jk_frame(window):
                    passing.add(window)
            start = stream.find(JK_HEADER, start + 1)
        return passing


def make_random(seed: int) -> random.Random:
    return random.Random(seed)
