"""BYD Battery-Box PRO (B-Plus 2.5) module protocol on RS485, 9600 8N1.

Reference: shared/reference/deye-byd-modbus.md section 2.2 (framing) and 2.3
(data block).  Single public source (virtual-bms), no captures: the layout is
taken as documented and the uncertain points are choices made here:
- current is signed, positive = charging (as JK and DEYE);
- cell temperatures are whole degrees C; [0..3] are cells, [4] is ambient;
- result != 0 is an error response whose data is not trusted.

request  (8 B):   addr | 00 04 | 01 | 03 | 55 AA | sum8
response (105 B): addr | 00 65 | 01 | 83 | 55 AA | result | 96-byte LE block | sum8
len (big-endian) counts from the version byte up to, not including, sum8;
sum8 covers every byte except the address and itself.
"""

import struct

from .compat import bit_names
from .errors import LocalProtocolError, RemoteProtocolError

VERSION = 0x01
READ_STATUS = 0x03
REPLY_STATUS = 0x83
MARKER = b"\x55\xaa"
REQUEST_LENGTH = 8
DATA_LENGTH = 96
RESPONSE_LENGTH = 9 + DATA_LENGTH
MAX_FRAME = 260

STATE_BIT_NAMES = (
    "pack_voltage_high",
    "module_voltage_high",
    "cell_voltage_high",
    "pack_voltage_low",
    "module_voltage_low",
    "cell_voltage_low",
    "charge_current_high",
    "discharge_current_high",
    "charge_temperature_high",
    "discharge_temperature_high",
    "charge_temperature_low",
    "discharge_temperature_low",
    "soc_low",
    None,
    "discharge_short_circuit",
    "reverse_connection",
    "cycles_high",
    "low_temperature_overcharge_2",
    "low_temperature_overcharge_3",
    "charge_short_circuit",
)
FAIL_BIT_NAMES = (
    "voltage_sensor",
    "temperature_sensor",
    "charge_mosfet",
    "discharge_mosfet",
    "cell_broken",
    "heater",
    None,
    "panel_switch_off",
    "charge_circuit",
)
BATTERY_STATE_NAMES = ("charging", "discharging", "full", "idle")
OTHERS_NAMES = ("heater_on", "full_charge_count", "voltage_calibration", "current_calibration", "charge_current")

# The 96-byte data block, little-endian (section 2.3): (name, struct code).
_DATA_FIELDS = (
    ("pack_voltage_mv", "i"),
    ("battery_voltage_mv", "i"),
    ("cell_voltages_mv", "16h"),
    ("current_ma", "i"),
    ("cell_temps_degc", "8h"),
    ("others", "I"),
    ("alarm_state", "I"),
    ("protect_state", "I"),
    ("fail_state", "I"),
    ("balance_state", "I"),
    ("battery_state", "H"),
    ("soc_pct", "H"),
    ("soh_pct", "I"),
    ("discharge_times", "I"),
    ("total_discharge_soc", "I"),
)
_DATA_FORMAT = "<" + "".join(code for _, code in _DATA_FIELDS)


def _sum8(frame, end):
    """The sum of bytes 1 .. end - 1, modulo 256 (end is at or just before the frame's end):
    the built-in sum over the whole frame, less what lies outside, costs a fraction of a loop
    in Python (and allocates nothing on MicroPython)."""
    total = sum(frame) - frame[0]
    for index in range(end, len(frame)):
        total -= frame[index]
    return total & 0xFF


def encode_request(address):
    if not 0 <= address <= 0xFF:
        raise LocalProtocolError("BYD address %r is not a byte" % (address,))
    frame = bytearray((address, 0x00, 0x04, VERSION, READ_STATUS, 0x55, 0xAA, 0))
    frame[7] = _sum8(frame, 7)
    return bytes(frame)


class BydRequest:
    __slots__ = ("address", "command")

    def __init__(self, address, command):
        self.address = address
        self.command = command


class BydStatus:
    """A decoded status response; fields holds the data block by name."""

    __slots__ = ("address", "result", "fields")

    def __init__(self, address, result, fields):
        self.address = address
        self.result = result
        self.fields = fields


def frame_length(prefix):
    """Total length announced by a frame's header, or None while unknown."""
    if len(prefix) < 3:
        return None
    return ((prefix[1] << 8) | prefix[2]) + 4


def _check(frame):
    if len(frame) < REQUEST_LENGTH:
        raise RemoteProtocolError("BYD frame too short (%d bytes)" % len(frame), raw=bytes(frame))
    if len(frame) > MAX_FRAME:
        raise RemoteProtocolError("BYD frame too long (%d bytes)" % len(frame), raw=bytes(frame))
    announced = frame_length(frame)
    if announced != len(frame):
        raise RemoteProtocolError(
            "BYD length field says %d bytes, frame has %d" % (announced, len(frame)), raw=bytes(frame), offset=1
        )
    if frame[3] != VERSION or frame[5:7] != MARKER:
        raise RemoteProtocolError("BYD frame lacks version 01 and marker 55 AA", raw=bytes(frame), offset=3)
    expected = _sum8(frame, len(frame) - 1)
    if frame[-1] != expected:
        raise RemoteProtocolError(
            "BYD checksum %02X, computed %02X" % (frame[-1], expected), raw=bytes(frame), offset=len(frame) - 1
        )


def decode_request(frame):
    _check(frame)
    if len(frame) != REQUEST_LENGTH or frame[4] & 0x80:
        raise RemoteProtocolError("not a BYD request", raw=bytes(frame), offset=4)
    return BydRequest(frame[0], frame[4])


def decode_response(frame):
    _check(frame)
    if frame[4] != REPLY_STATUS:
        raise RemoteProtocolError("BYD command %02X is not a status reply" % frame[4], raw=bytes(frame), offset=4)
    result = frame[7]
    if len(frame) != RESPONSE_LENGTH:
        if result:
            return BydStatus(frame[0], result, None)
        raise RemoteProtocolError(
            "BYD status reply must carry 96 data bytes, has %d" % (len(frame) - 9), raw=bytes(frame)
        )
    values = struct.unpack_from(_DATA_FORMAT, frame, 8)
    fields = {}
    position = 0
    for name, code in _DATA_FIELDS:
        if code[0].isdigit():
            count = int(code[:-1])
            fields[name] = list(values[position : position + count])
            position += count
        else:
            fields[name] = values[position]
            position += 1
    return BydStatus(frame[0], result, fields)


def describe(fields):
    """Bit names for the state words of a decoded data block (for people)."""
    return {
        "alarm_names": bit_names(fields["alarm_state"], STATE_BIT_NAMES),
        "protect_names": bit_names(fields["protect_state"], STATE_BIT_NAMES),
        "fail_names": bit_names(fields["fail_state"], FAIL_BIT_NAMES),
        "battery_state_names": bit_names(fields["battery_state"], BATTERY_STATE_NAMES),
        "others_names": bit_names(fields["others"], OTHERS_NAMES),
    }


def encode_response(address, fields, result=0):
    """The simulator's side: a status reply from field values (same names as decode)."""
    values = []
    for name, code in _DATA_FIELDS:
        if code[0].isdigit():
            count = int(code[:-1])
            value = list(fields.get(name, ())) + [0] * (count - len(fields.get(name, ())))
            if len(value) != count:
                raise LocalProtocolError("BYD %s takes at most %d values" % (name, count))
            values.extend(value)
        else:
            values.append(fields.get(name, 0))
    frame = bytearray(RESPONSE_LENGTH)
    frame[0] = address
    frame[1] = 0
    frame[2] = RESPONSE_LENGTH - 4
    frame[3] = VERSION
    frame[4] = REPLY_STATUS
    frame[5:7] = MARKER
    frame[7] = result
    try:
        struct.pack_into(_DATA_FORMAT, frame, 8, *values)
    except (OverflowError, ValueError, TypeError, struct.error) as error:  # CPython; MicroPython truncates
        raise LocalProtocolError("BYD field values do not fit: %s" % error) from error
    frame[-1] = _sum8(frame, RESPONSE_LENGTH - 1)
    return bytes(frame)
