"""JK-BMS legacy RS485/UART protocol "4E 57" ("NW"), 115200 8N1.

Reference: shared/reference/jk-protocols.md section 10.  Big-endian.

Frame: 4E 57 | LENGTH (total - 2) | terminal (4) | command | source | type |
data ... | record (4) | 68 | 00 00 | sum16 of every byte before it (BE).
A response's data is a TLV list: id, then a value whose width the id fixes
(table below); 0x79 carries its own length, then index+mV triplets per cell.

Quirks (section 10.4), decoded as the official document says:
- temperatures 0x80..0x82: 0..100 = degC, above 100 = -(v - 100) degC;
- current 0x84: with protocol version 0xC0 = 1, bit 15 set = charging and the
  low 15 bits are 10 mA steps; with version 0 (or absent... the official rule
  for old firmware) the value is (10000 - v) * 10 mA, positive = charging.
"""

import struct

from .compat import ascii_field, bit_names
from .errors import LocalProtocolError, RemoteProtocolError

STX = b"\x4e\x57"
END_MARKER = 0x68
MIN_LENGTH = 21
MAX_FRAME = 1024

ACTIVATE = 0x01
WRITE = 0x02
READ_ONE = 0x03
PASSWORD = 0x05
READ_ALL = 0x06

SOURCES = ("bms", "bluetooth", "gps", "pc")
TYPES = ("request", "response", "upload")

CELLS = 0x79
# id -> (width in bytes, name, kind); kind: "u" unsigned, "s" signed, "a" ASCII
REGISTERS = {
    0x80: (2, "mosfet_temp", "t"),
    0x81: (2, "box_temp", "t"),
    0x82: (2, "battery_temp", "t"),
    0x83: (2, "pack_voltage_10mv", "u"),
    0x84: (2, "current_raw", "u"),
    0x85: (1, "soc_pct", "u"),
    0x86: (1, "temp_sensor_count", "u"),
    0x87: (2, "cycle_count", "u"),
    0x89: (4, "total_cycle_capacity_ah", "u"),
    0x8A: (2, "cell_count", "u"),
    0x8B: (2, "warnings", "u"),
    0x8C: (2, "status", "u"),
    0x8E: (2, "pack_ovp_10mv", "u"),
    0x8F: (2, "pack_uvp_10mv", "u"),
    0x90: (2, "cell_ovp_mv", "u"),
    0x91: (2, "cell_ovp_recovery_mv", "u"),
    0x92: (2, "cell_ovp_delay_s", "u"),
    0x93: (2, "cell_uvp_mv", "u"),
    0x94: (2, "cell_uvp_recovery_mv", "u"),
    0x95: (2, "cell_uvp_delay_s", "u"),
    0x96: (2, "cell_delta_protection_mv", "u"),
    0x97: (2, "discharge_ocp_a", "u"),
    0x98: (2, "discharge_oc_delay_s", "u"),
    0x99: (2, "charge_ocp_a", "u"),
    0x9A: (2, "charge_oc_delay_s", "u"),
    0x9B: (2, "balance_start_voltage_mv", "u"),
    0x9C: (2, "balance_trigger_delta_mv", "u"),
    0x9D: (1, "balancer_switch", "u"),
    0x9E: (2, "mosfet_otp_degc", "u"),
    0x9F: (2, "mosfet_otp_recovery_degc", "u"),
    0xA0: (2, "box_otp_degc", "u"),
    0xA1: (2, "box_otp_recovery_degc", "u"),
    0xA2: (2, "battery_temp_difference_degc", "u"),
    0xA3: (2, "charge_otp_degc", "u"),
    0xA4: (2, "discharge_otp_degc", "u"),
    0xA5: (2, "charge_utp_degc", "s"),
    0xA6: (2, "charge_utp_recovery_degc", "s"),
    0xA7: (2, "discharge_utp_degc", "s"),
    0xA8: (2, "discharge_utp_recovery_degc", "s"),
    0xA9: (1, "cell_count_setting", "u"),
    0xAA: (4, "capacity_setting_ah", "u"),
    0xAB: (1, "charge_switch", "u"),
    0xAC: (1, "discharge_switch", "u"),
    0xAD: (2, "current_calibration_ma", "u"),
    0xAE: (1, "board_address", "u"),
    0xAF: (1, "battery_type", "u"),
    0xB0: (2, "sleep_wait_s", "u"),
    0xB1: (1, "low_capacity_alarm_pct", "u"),
    0xB2: (10, "parameter_password", "a"),
    0xB3: (1, "dedicated_charger_switch", "u"),
    0xB4: (8, "device_id", "a"),
    0xB5: (4, "manufacturing_date", "a"),
    0xB6: (4, "working_time_min", "u"),
    0xB7: (15, "software_version", "a"),
    0xB8: (1, "start_current_calibration", "u"),
    0xB9: (4, "actual_capacity_ah", "u"),
    0xBA: (24, "manufacturer_id", "a"),
    0xBB: (1, "restart", "u"),
    0xBC: (1, "factory_reset", "u"),
    0xBD: (1, "remote_upgrade", "u"),
    0xBE: (2, "gps_low_voltage_off_mv", "u"),
    0xBF: (2, "gps_low_voltage_recover_mv", "u"),
    0xC0: (1, "protocol_version", "u"),
}

WARNING_NAMES = (
    "low_capacity",
    "mosfet_overtemperature",
    "charge_overvoltage",
    "discharge_undervoltage",
    "battery_overtemperature",
    "charge_overcurrent",
    "discharge_overcurrent",
    "cell_voltage_difference",
    "box_overtemperature",
    "battery_undertemperature",
    "cell_overvoltage",
    "cell_undervoltage",
    "protection_309_a",
    "protection_309_b",
)
STATUS_NAMES = ("charge_mosfet_on", "discharge_mosfet_on", "balancer_on", "battery_online")


def checksum(frame, end):
    total = 0
    for index in range(end):
        total += frame[index]
    return total & 0xFFFF


def temperature_degc(raw):
    """Section 10.4: 0..100 are degC, above 100 encode -(raw - 100)."""
    return raw if raw <= 100 else 100 - raw


def current_ma(raw, protocol_version):
    if protocol_version == 1:
        magnitude = (raw & 0x7FFF) * 10
        return magnitude if raw & 0x8000 else -magnitude
    return (10000 - raw) * 10


class Frame4E57:
    __slots__ = ("command", "source", "frame_type", "data", "record")

    def __init__(self, command, source, frame_type, data, record):
        self.command = command
        self.source = source
        self.frame_type = frame_type
        self.data = data
        self.record = record


def frame_length(prefix):
    if len(prefix) < 4:
        return None
    return ((prefix[2] << 8) | prefix[3]) + 2


def decode_frame(frame):
    """Check the envelope; data is the bytes between the header and the record."""
    if len(frame) < MIN_LENGTH:
        raise RemoteProtocolError("4E57 frame too short (%d bytes)" % len(frame), raw=bytes(frame))
    if len(frame) > MAX_FRAME:
        raise RemoteProtocolError("4E57 frame too long (%d bytes)" % len(frame), raw=bytes(frame))
    if frame[:2] != STX:
        raise RemoteProtocolError("not a 4E57 frame", raw=bytes(frame), offset=0)
    if frame_length(frame) != len(frame):
        raise RemoteProtocolError(
            "4E57 length field says %d bytes, frame has %d" % (frame_length(frame), len(frame)),
            raw=bytes(frame),
            offset=2,
        )
    end = len(frame) - 2
    expected = checksum(frame, end)
    if (frame[end] << 8 | frame[end + 1]) != expected:
        raise RemoteProtocolError(
            "4E57 checksum %04X, computed %04X" % (frame[end] << 8 | frame[end + 1], expected),
            raw=bytes(frame),
            offset=end,
        )
    if frame[end - 3] != END_MARKER:
        raise RemoteProtocolError("4E57 end marker missing", raw=bytes(frame), offset=end - 3)
    record = struct.unpack_from(">I", frame, end - 7)[0]
    return Frame4E57(frame[8], frame[9], frame[10], bytes(frame[11 : end - 7]), record)


def parse_registers(data):
    """TLV data of a response to (cells, {id: raw value}) in wire order."""
    cells = []
    registers = {}
    position = 0
    while position < len(data):
        register = data[position]
        position += 1
        if register == CELLS:
            if position >= len(data):
                raise RemoteProtocolError("4E57 cell block without length", raw=data, offset=position)
            length = data[position]
            position += 1
            if length % 3 or position + length > len(data):
                raise RemoteProtocolError(
                    "4E57 cell block of %d bytes is malformed" % length, raw=data, offset=position
                )
            for index in range(length // 3):
                cells.append(struct.unpack_from(">BH", data, position + 3 * index))
            position += length
            continue
        spec = REGISTERS.get(register)
        if spec is None:
            raise RemoteProtocolError(
                "4E57 register %02X is unknown, its width cannot be known" % register, raw=data, offset=position - 1
            )
        width = spec[0]
        if position + width > len(data):
            raise RemoteProtocolError("4E57 register %02X truncated" % register, raw=data, offset=position)
        value = data[position : position + width]
        if spec[2] == "a":
            registers[register] = ascii_field(value)
        else:
            number = 0
            for byte in value:
                number = (number << 8) | byte
            if spec[2] == "s" and number >= 1 << (8 * width - 1):
                number -= 1 << (8 * width)
            registers[register] = number
        position += width
    return cells, registers


def decode_response(frame):
    """A read-all response to a dict with scaled values and every register."""
    envelope = decode_frame(frame)
    cells, registers = parse_registers(envelope.data)
    version = registers.get(0xC0, 0)
    result = {
        "frame_type": "response",
        "command": envelope.command,
        "source": SOURCES[envelope.source] if envelope.source < len(SOURCES) else envelope.source,
        "cell_voltages_mv": [millivolts for _, millivolts in cells],
        "registers": {},
    }
    for register, value in registers.items():
        result["registers"]["%02X" % register] = value
    if 0x83 in registers:
        result["pack_voltage_mv"] = registers[0x83] * 10
    if 0x84 in registers:
        result["current_ma"] = current_ma(registers[0x84], version)
    if 0x85 in registers:
        result["soc_pct"] = registers[0x85]
    for register, name in ((0x80, "mosfet_temp_degc"), (0x81, "box_temp_degc"), (0x82, "battery_temp_degc")):
        if register in registers:
            result[name] = temperature_degc(registers[register])
    if 0x87 in registers:
        result["cycle_count"] = registers[0x87]
    if 0xAA in registers:
        result["capacity_setting_ah"] = registers[0xAA]
    if 0x8B in registers:
        result["warnings"] = registers[0x8B]
        result["warning_names"] = bit_names(registers[0x8B], WARNING_NAMES)
    if 0x8C in registers:
        result["status"] = registers[0x8C]
        result["status_names"] = bit_names(registers[0x8C], STATUS_NAMES)
    if 0xB7 in registers:
        result["software_version"] = registers[0xB7]
    return result


def decode(frame):
    """Request or response, told apart by the transport-type byte."""
    envelope = decode_frame(frame)
    if envelope.frame_type == 0:
        return {
            "frame_type": "request",
            "command": envelope.command,
            "source": SOURCES[envelope.source] if envelope.source < len(SOURCES) else envelope.source,
            "register": envelope.data[0] if envelope.data else None,
            "value_hex": "".join("%02X" % b for b in envelope.data[1:]),
        }
    return decode_response(frame)


def _envelope(command, source, frame_type, data):
    total = 11 + len(data) + 9
    if total > MAX_FRAME:
        raise LocalProtocolError("4E57 frame of %d bytes is too long" % total)
    frame = bytearray(total)
    frame[0:2] = STX
    struct.pack_into(">H", frame, 2, total - 2)
    frame[8] = command
    frame[9] = source
    frame[10] = frame_type
    frame[11 : 11 + len(data)] = data
    frame[total - 5] = END_MARKER
    struct.pack_into(">H", frame, total - 2, checksum(frame, total - 2))
    return bytes(frame)


def encode_read_all_request(source=3):
    return _envelope(READ_ALL, source, 0, b"\x00")


def encode_response(cells_mv, registers, source=0):
    """The simulator's side: a read-all response from cell voltages and raw register values."""
    if 3 * len(cells_mv) > 0xFF:
        raise LocalProtocolError("a 4E57 cell block holds at most 85 cells, not %d" % len(cells_mv))
    data = bytearray((CELLS, 3 * len(cells_mv)))
    for index in range(len(cells_mv)):
        data.extend(struct.pack(">BH", index + 1, cells_mv[index]))
    for register in registers:
        spec = REGISTERS.get(register)
        if spec is None:
            raise LocalProtocolError("4E57 register %02X is unknown" % register)
        width, _, kind = spec
        value = registers[register]
        data.append(register)
        if kind == "a":
            raw = value.encode()[:width]
            data.extend(raw + bytes(width - len(raw)))
        else:
            if value < 0:
                value += 1 << (8 * width)
            data.extend(bytes((value >> (8 * (width - 1 - index))) & 0xFF for index in range(width)))
    return _envelope(READ_ALL, source, 1, data)
