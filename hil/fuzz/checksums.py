"""Structure-aware repairs: keep a mutated frame's checksums and length fields right.

A byte-flipping fuzzer almost never guesses a CRC-16 or a sum byte, so without
help it would spend every execution in the first "bad checksum" branch of each
decoder.  The custom mutator (make_mutator) lets libFuzzer mutate the input as
usual and then, on three mutations in four, rewrites the fields that protect
the frame: the Modbus CRC-16, the JK sum byte, the BYD sum byte and length, the
4E57 length, end marker and sum16.  The fourth mutation stays raw, so the
rejection paths keep their coverage too.  A repair only overwrites bytes, it
never lengthens the input, so libFuzzer's -max_len holds.

The checksums are computed here again, on purpose: the code under test must
not repair its own inputs (a wrong CRC in vbms_core would then go unseen), and
the fuzzing worker instruments every vbms_core module, which makes calling into
it for a repair several times slower.  Frame layouts: shared/reference/
deye-byd-modbus.md 2.2 (BYD) and 3 (Modbus), jk-protocols.md 2 (commands),
3 (55AA frames), 10 (4E57) and 11.6 (JK-PB trigger replies).

Every repair is repair(data, choice) -> bytes: choice is a random number
whose bits pick the optional fix-ups (headers, length fields); checksums are
always fixed.  FULL_REPAIR applies every fix-up (used by the minimizer).
"""

import struct
from collections.abc import Callable

# repair(data, choice) -> the data with its checksums (and, on some choices, headers and lengths) right
Repair = Callable[[bytes, int], bytes]

FULL_REPAIR = 0xFFFF

JK_HEADER = b"\x55\xaa\xeb\x90"
JK_COMMAND_HEADER = b"\xaa\x55\x90\xeb"
JK_FRAME_LENGTH = 300
JK_COMMAND_LENGTH = 20
JK_FRAME_TYPES = (0x01, 0x02, 0x03, 0x05)
E57_HEADER = b"\x4e\x57"
E57_MIN_LENGTH = 21


def _crc_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC_TABLE = _crc_table()


def _pair_table() -> list[int]:
    """The CRC after two bytes at once: index = crc ^ (first byte | second byte << 8)."""
    table = []
    for word in range(0x10000):
        crc = (word >> 8) ^ _CRC_TABLE[word & 0xFF]
        table.append((crc >> 8) ^ _CRC_TABLE[crc & 0xFF])
    return table


_PAIR_TABLE: list[int] = []


def crc16_modbus(data: bytes | bytearray) -> int:
    """CRC-16/MODBUS (reflected polynomial 0xA001, initial 0xFFFF), two bytes per step.

    The mutator runs this on nearly every execution; taking the bytes in
    little-endian pairs through a 64 K-entry table is about 3.5 times faster.
    """
    if not _PAIR_TABLE:
        _PAIR_TABLE.extend(_pair_table())
    pairs = _PAIR_TABLE
    crc = 0xFFFF
    length = len(data)
    for word in struct.unpack_from("<%dH" % (length >> 1), data):
        crc = pairs[crc ^ word]
    if length & 1:
        crc = (crc >> 8) ^ _CRC_TABLE[(crc ^ data[length - 1]) & 0xFF]
    return crc


def _set_crc(frame: bytearray, start: int, end: int) -> None:
    """Write the CRC of frame[start:end - 2] into frame[end - 2:end], low byte first."""
    crc = crc16_modbus(frame[start : end - 2])
    frame[end - 2] = crc & 0xFF
    frame[end - 1] = crc >> 8


def modbus_request(data: bytes, choice: int) -> bytes:
    """CRC always; on some choices the byte count of a write-multiple request."""
    if len(data) < 4:
        return data
    frame = bytearray(data)
    if choice & 1 and frame[1] == 0x10 and len(frame) >= 11:
        byte_count = min(len(frame) - 9, 0xFF)
        frame[4] = 0
        frame[5] = byte_count // 2
        frame[6] = byte_count
    _set_crc(frame, 0, len(frame))
    return bytes(frame)


def modbus_response(data: bytes, choice: int) -> bytes:
    """CRC always; on some choices the byte count of a read or report-id response."""
    if len(data) < 4:
        return data
    frame = bytearray(data)
    if choice & 1 and frame[1] in (0x03, 0x04, 0x11) and len(frame) >= 5:
        frame[2] = min(len(frame) - 5, 0xFF)
    _set_crc(frame, 0, len(frame))
    return bytes(frame)


def modbus_either(data: bytes, choice: int) -> bytes:
    """A Modbus frame that may be a request or a response (the dissector tells them apart)."""
    if choice & 2:
        return modbus_response(data, choice)
    return modbus_request(data, choice)


def _sum8(data: bytearray, start: int, end: int) -> int:
    return sum(data[start:end]) & 0xFF


def byd(data: bytes, choice: int) -> bytes:
    """BYD PRO: length field (bytes 1-2 = total - 4), version and marker, sum8 of bytes 1..n-2."""
    if len(data) < 8:
        return data
    frame = bytearray(data)
    if choice & 1:
        length = len(frame) - 4
        frame[1] = (length >> 8) & 0xFF
        frame[2] = length & 0xFF
    if choice & 2:
        frame[3] = 0x01
        frame[5:7] = b"\x55\xaa"
    frame[-1] = _sum8(frame, 1, len(frame) - 1)
    return bytes(frame)


def jk_frame(data: bytes, choice: int) -> bytes:
    """A 300-byte 55AA frame: header and a known type on some choices, sum8 at 299."""
    if len(data) < JK_FRAME_LENGTH:
        return data
    frame = bytearray(data)
    if choice & 1:
        frame[0:4] = JK_HEADER
    if choice & 2 and frame[4] not in JK_FRAME_TYPES:
        frame[4] = JK_FRAME_TYPES[(choice >> 2) & 3]
    frame[JK_FRAME_LENGTH - 1] = _sum8(frame, 0, JK_FRAME_LENGTH - 1)
    return bytes(frame)


def jk_command(data: bytes, choice: int) -> bytes:
    """A 20-byte command: header on some choices, sum8 at 19."""
    if len(data) != JK_COMMAND_LENGTH:
        return data
    frame = bytearray(data)
    if choice & 1:
        frame[0:4] = JK_COMMAND_HEADER
    frame[19] = _sum8(frame, 0, 19)
    return bytes(frame)


def jk_ble(data: bytes, choice: int) -> bytes:
    """What the jk-ble dissector takes: a command or a frame, told by length and header."""
    if len(data) == JK_COMMAND_LENGTH and (data[:4] == JK_COMMAND_HEADER or choice & 1):
        return jk_command(data, choice)
    return jk_frame(data, choice)


def jk_pb_reply(data: bytes, choice: int) -> bytes:
    """A trigger reply: the 55AA frame, then (after an optional 00) the 8-byte FC 0x10 ACK."""
    frame = bytearray(jk_frame(data, choice))
    start = JK_FRAME_LENGTH
    while start < len(frame) and frame[start] == 0 and len(frame) - start != 8:
        start += 1  # the padding the decoder skips (jk_pb.decode_trigger_reply)
    if len(frame) >= start + 8:
        if choice & 16:
            frame[start + 1] = 0x10
        _set_crc(frame, start, start + 8)
    return bytes(frame)


def jk_pb(data: bytes, choice: int) -> bytes:
    """What the jk-pb dissector takes: a trigger reply or a Modbus frame."""
    if len(data) >= JK_FRAME_LENGTH:
        return jk_pb_reply(data, choice)
    return modbus_either(data, choice)


def e57(data: bytes, choice: int) -> bytes:
    """4E57: header, length (bytes 2-3 = total - 2), end marker 68 at n-5, sum16 (BE) at n-2."""
    if len(data) < E57_MIN_LENGTH:
        return data
    frame = bytearray(data)
    if choice & 1:
        frame[0:2] = E57_HEADER
    if choice & 2:
        length = len(frame) - 2
        frame[2] = (length >> 8) & 0xFF
        frame[3] = length & 0xFF
    if choice & 4:
        frame[len(frame) - 5] = 0x68
    total = sum(frame[: len(frame) - 2]) & 0xFFFF
    frame[-2] = total >> 8
    frame[-1] = total & 0xFF
    return bytes(frame)


def make_mutator(repair: Repair) -> Callable[[bytes, int, int], bytes]:
    """An atheris custom mutator: libFuzzer's own mutation, then repair on 3 of 4 calls."""
    import atheris

    def mutator(data: bytes, max_size: int, seed: int) -> bytes:
        mutated = atheris.Mutate(data, max_size)
        if seed & 3:
            mutated = repair(mutated, seed >> 2)
        return mutated

    return mutator
