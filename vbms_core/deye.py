"""DEYE "Li-BMS" RS485 protocol: the battery (slave) side, sans-I/O.

Reference: shared/reference/deye-byd-modbus.md 1.3 (framing, register map,
identity reply, bitmasks) and 3.1 (Modbus conformance).  9600 8N1, units
0x00..0x0E, one per battery; unit 0x00 (battery #1) must be answered although
it is the Modbus broadcast address.

Decisions for a request to unit U (DeyeSlave.handle):
- a frame with a bad CRC or a malformed request: silence;
- U above 0x0E, not configured, or its data older than stale_us: silence, so
  the inverter sees the loss (the original kept serving 150 s old data);
- function 0x04: quantity 0 or > 125 -> exception 03; a range outside
  0x1000..0x1018 -> exception 02; otherwise the registers;
- function 0x11: the identity reply "model*SW*HW*serial*" (no Modbus run
  indicator, as DEYE expects);
- any other function (0x03 included) -> exception 01.
Registers 0x1017 and 0x1018 (reserved) read 0, as the other reserved ones.
"""

import struct

from . import modbus
from .battery import FAULT_STATUS_NAMES, PROTECTION_NAMES, WARNING_NAMES
from .compat import bit_names, clamp, div_round
from .errors import LocalProtocolError, RemoteProtocolError

FIRST_REGISTER = 0x1000
REGISTER_COUNT = 25
LAST_REGISTER = FIRST_REGISTER + REGISTER_COUNT - 1
MAX_UNIT = 0x0E
UNITS = 15

# (address, RPC name in DEYE units, dissect name in SI-derived units, signed, factor)
# dissect value = raw (as signed if flagged) * factor.
REGISTER_MAP = (
    (0x1000, "pack_voltage", "pack_voltage_mv", False, 10),
    (0x1001, "pack_current", "pack_current_ma", True, 10),
    (0x1002, "remain_capacity", "remain_capacity_mah", False, 10),
    (0x1003, "cell_temp_avg", "cell_temp_avg_ddegc", True, 1),
    (0x1004, "env_temp", "env_temp_ddegc", True, 1),
    (0x1005, "warning", "warning", False, 1),
    (0x1006, "protection", "protection", False, 1),
    (0x1007, "fault_status", "fault_status", False, 1),
    (0x1008, "SOC", "soc_permille", False, 1),
    (0x1009, "SOH", "soh_permille", False, 1),
    (0x100A, "full_charge_capacity", "full_charge_capacity_mah", False, 10),
    (0x100B, "cycle_count", "cycle_count", False, 1),
    (0x100C, "max_charge_current", "max_charge_current_ma", False, 10),
    (0x100D, "max_cell_voltage", "max_cell_voltage_mv", False, 1),
    (0x100E, "min_cell_voltage", "min_cell_voltage_mv", False, 1),
    (0x100F, "reserved_100f", "reserved_100f", False, 1),
    (0x1010, "max_cell_temp", "max_cell_temp_ddegc", True, 1),
    (0x1011, "min_cell_temp", "min_cell_temp_ddegc", True, 1),
    (0x1012, "mosfet_temp", "mosfet_temp_ddegc", True, 1),
    (0x1013, "reserved_1013", "reserved_1013", False, 1),
    (0x1014, "nominal_float_voltage", "nominal_float_voltage_mv", False, 10),
    (0x1015, "design_capacity", "design_capacity_mah", False, 10),
    (0x1016, "reserved_1016", "reserved_1016", False, 1),
    (0x1017, "reserved_1017", "reserved_1017", False, 1),
    (0x1018, "reserved_1018", "reserved_1018", False, 1),
)

MODEL_MAX = 15
SERIAL_LENGTH = 20


def _u16(value, low, high):
    return clamp(value, low, high) & 0xFFFF


def registers_from_reading(reading, float_voltage_mv, max_charge_current_ma):
    """The 25 register values (0x1000..0x1018) for one battery.

    float_voltage_mv comes from the slot's configuration; max_charge_current_ma
    is the limit the proxy decided to advertise.  Values a source does not
    report are sent as 0 (the protocol has no "unknown").  Out-of-range values
    are clamped to the register's range, never wrapped.
    """
    current = reading.current_ma or 0
    cell_max = reading.cell_max_mv()
    cell_min = reading.cell_min_mv()
    temp_avg = reading.temp_avg_ddegc()
    temp_max = reading.temp_max_ddegc()
    temp_min = reading.temp_min_ddegc()
    env = reading.env_temp_ddegc if reading.env_temp_ddegc is not None else temp_avg
    design = reading.design_mah if reading.design_mah is not None else reading.full_charge_mah
    return [
        _u16(div_round(reading.pack_voltage_mv or 0, 10), 0, 0xFFFF),
        _u16(div_round(current, 10), -0x8000, 0x7FFF),
        _u16(div_round(reading.remaining_mah or 0, 10), 0, 0xFFFF),
        _u16(temp_avg or 0, -0x8000, 0x7FFF),
        _u16(env or 0, -0x8000, 0x7FFF),
        reading.warning & 0xFFFF,
        reading.protection & 0xFFFF,
        (reading.fault | reading.status_bits()) & 0xFFFF,
        _u16(reading.soc_permille or 0, 0, 1000),
        _u16(reading.soh_permille or 0, 0, 1000),
        _u16(div_round(reading.full_charge_mah or 0, 10), 0, 0xFFFF),
        _u16(reading.cycle_count or 0, 0, 0xFFFF),
        _u16(div_round(max_charge_current_ma, 10), 0, 0xFFFF),
        _u16(cell_max or 0, 0, 0xFFFF),
        _u16(cell_min or 0, 0, 0xFFFF),
        0,
        _u16(temp_max or 0, -0x8000, 0x7FFF),
        _u16(temp_min or 0, -0x8000, 0x7FFF),
        _u16(reading.mosfet_temp_ddegc or 0, -0x8000, 0x7FFF),
        0,
        _u16(div_round(float_voltage_mv, 10), 0, 0xFFFF),
        _u16(div_round(design or 0, 10), 0, 0xFFFF),
        0,
        0,
        0,
    ]


def named_registers(address, registers):
    """Register values read at address, scaled and named (for people and traces)."""
    result = {}
    for index in range(len(registers)):
        register = address + index
        offset = register - FIRST_REGISTER
        if not 0 <= offset < REGISTER_COUNT:
            result["register_%04x" % register] = registers[index]
            continue
        _, _, name, signed, factor = REGISTER_MAP[offset]
        value = registers[index]
        if signed and value >= 0x8000:
            value -= 0x10000
        result[name] = value * factor
        if name == "warning":
            result["warning_names"] = bit_names(value, WARNING_NAMES)
        elif name == "protection":
            result["protection_names"] = bit_names(value, PROTECTION_NAMES)
        elif name == "fault_status":
            result["fault_status_names"] = bit_names(value, FAULT_STATUS_NAMES)
    return result


def encode_identity(model, serial, sw_version=b"\x10\x11", hw_version=b"\x20\x21"):
    """The data of the 0x11 reply: model*SW*HW*serial* (section 1.3.1).

    model: up to 15 ASCII characters; serial: up to 20, NUL-padded to 20; the
    versions are 2 raw bytes each.
    """
    model_raw = model.encode()
    serial_raw = serial.encode()
    if len(model_raw) > MODEL_MAX or b"*" in model_raw:
        raise LocalProtocolError("DEYE model %r: at most 15 characters, no '*'" % (model,))
    if len(serial_raw) > SERIAL_LENGTH:
        raise LocalProtocolError("DEYE serial %r: at most 20 characters" % (serial,))
    if len(sw_version) != 2 or len(hw_version) != 2:
        raise LocalProtocolError("DEYE versions are 2 bytes each")
    return (
        model_raw + b"*" + bytes(sw_version) + b"*" + bytes(hw_version) + b"*"
        + serial_raw + bytes(SERIAL_LENGTH - len(serial_raw)) + b"*"
    )  # fmt: skip


def decode_identity(data):
    """The 0x11 reply data to its fields; positional after the model, since the
    binary version bytes may themselves be '*'."""
    star = data.find(b"*")
    if star < 0 or star > MODEL_MAX or len(data) != star + 1 + 3 + 3 + SERIAL_LENGTH + 1:
        raise RemoteProtocolError(
            "DEYE identity of %d bytes does not fit model*SW*HW*serial*" % len(data), raw=bytes(data)
        )
    position = star + 1
    if data[position + 2] != 0x2A or data[position + 5] != 0x2A or data[-1] != 0x2A:
        raise RemoteProtocolError("DEYE identity separators missing", raw=bytes(data))
    serial = data[position + 6 : position + 6 + SERIAL_LENGTH]
    text = ""
    for byte in serial:
        if byte == 0:
            break
        text += chr(byte) if 0x20 <= byte < 0x7F else "?"
    model = ""
    for byte in data[:star]:
        model += chr(byte) if 0x20 <= byte < 0x7F else "?"
    return {
        "model": model,
        "sw_version_hex": "%02X%02X" % (data[position], data[position + 1]),
        "hw_version_hex": "%02X%02X" % (data[position + 3], data[position + 4]),
        "serial": text,
    }


# --- the slave responder --------------------------------------------------------

# Why the last request got the answer it got (DeyeSlave.reason).
REPLY_REGISTERS = "registers"
REPLY_IDENTITY = "identity"
REPLY_EXCEPTION = "exception"
SILENT_BAD_FRAME = "silent: bad frame"
SILENT_OTHER_UNIT = "silent: unit outside 0x00..0x0E"
SILENT_NOT_CONFIGURED = "silent: unit not configured"
SILENT_STALE = "silent: data stale"


class DeyeSlave:
    """Answers DEYE requests for up to 15 units from their latest registers.

    set_unit() stores a unit's registers (pre-encoded big-endian) and identity
    with the time they were read; handle(adu, now_us) returns the reply bytes
    (a memoryview into a buffer reused by the next call) or None for silence,
    and leaves the decision in reason and exception_code.  The answering path
    allocates next to nothing, as it runs for every inverter poll.
    """

    __slots__ = ("stale_us", "_images", "_identities", "_updated", "_tx", "_tx_view", "reason", "exception_code",
                 "_read_asked", "_read_crc")  # fmt: skip

    def __init__(self, stale_us):
        self.stale_us = stale_us
        self._images = [None] * UNITS
        # per unit, the register read last answered ((offset << 8) | count, -1 for none) and its reply's
        # CRC: the inverter asks for the same block poll after poll, and the registers change less often
        self._read_asked = [-1] * UNITS
        self._read_crc = [0] * UNITS
        self._identities = [None] * UNITS
        self._updated = [0] * UNITS
        self._tx = bytearray(modbus.MAX_ADU)
        self._tx_view = memoryview(self._tx)
        self.reason = None
        self.exception_code = 0

    def set_unit(self, unit, registers, identity, updated_us):
        if not 0 <= unit <= MAX_UNIT:
            raise LocalProtocolError("DEYE unit %r outside 0x00..0x0E" % (unit,))
        if len(registers) != REGISTER_COUNT:
            raise LocalProtocolError("DEYE unit needs %d registers" % REGISTER_COUNT)
        image = self._images[unit]
        if image is None:
            image = bytearray(2 * REGISTER_COUNT)
            self._images[unit] = image
        for index in range(REGISTER_COUNT):
            struct.pack_into(">H", image, 2 * index, registers[index])
        self._read_asked[unit] = -1
        self._identities[unit] = identity
        self._updated[unit] = updated_us

    def touch(self, unit, updated_us):
        """The unit's registers and identity stand, read again at updated_us."""
        if self._images[unit] is not None:
            self._updated[unit] = updated_us

    def clear_unit(self, unit):
        self._read_asked[unit] = -1
        self._images[unit] = None
        self._identities[unit] = None

    def is_served(self, unit, now_us):
        return (
            0 <= unit <= MAX_UNIT and self._images[unit] is not None and now_us - self._updated[unit] <= self.stale_us
        )

    def _finish(self, length):
        crc = modbus.crc16_range(self._tx, 0, length)
        self._tx[length] = crc & 0xFF
        self._tx[length + 1] = crc >> 8
        return self._tx_view[: length + 2]

    def _exception(self, unit, function, code):
        self.reason = REPLY_EXCEPTION
        self.exception_code = code
        tx = self._tx
        tx[0] = unit
        tx[1] = (function | 0x80) & 0xFF
        tx[2] = code
        return self._finish(3)

    def handle(self, adu, now_us):
        self.exception_code = 0
        length = len(adu)
        if (
            length < 4
            or length > modbus.MAX_ADU
            or modbus.crc16_range(adu, 0, length - 2) != adu[length - 2] | adu[length - 1] << 8
        ):
            self.reason = SILENT_BAD_FRAME
            return None
        unit = adu[0]
        function = adu[1]
        if unit > MAX_UNIT:
            self.reason = SILENT_OTHER_UNIT
            return None
        image = self._images[unit]
        if image is None:
            self.reason = SILENT_NOT_CONFIGURED
            return None
        if now_us - self._updated[unit] > self.stale_us:
            self.reason = SILENT_STALE
            return None
        if function == modbus.READ_INPUT:
            if length != 8:
                self.reason = SILENT_BAD_FRAME
                return None
            address = adu[2] << 8 | adu[3]
            count = adu[4] << 8 | adu[5]
            if count < 1 or count > modbus.MAX_READ_COUNT:
                return self._exception(unit, function, modbus.ILLEGAL_VALUE)
            offset = address - FIRST_REGISTER
            if offset < 0 or offset + count > REGISTER_COUNT:
                return self._exception(unit, function, modbus.ILLEGAL_ADDRESS)
            tx = self._tx
            tx[0] = unit
            tx[1] = function
            tx[2] = 2 * count
            start = 2 * offset
            for index in range(2 * count):
                tx[3 + index] = image[start + index]
            self.reason = REPLY_REGISTERS
            length = 3 + 2 * count
            asked = offset << 8 | count
            if self._read_asked[unit] != asked:  # the CRC of this read of these registers, once
                self._read_crc[unit] = modbus.crc16_range(tx, 0, length)
                self._read_asked[unit] = asked
            crc = self._read_crc[unit]
            tx[length] = crc & 0xFF
            tx[length + 1] = crc >> 8
            return self._tx_view[: length + 2]
        if function == modbus.REPORT_ID:
            if length != 4:
                self.reason = SILENT_BAD_FRAME
                return None
            identity = self._identities[unit]
            tx = self._tx
            tx[0] = unit
            tx[1] = function
            tx[2] = len(identity)
            tx[3 : 3 + len(identity)] = identity
            self.reason = REPLY_IDENTITY
            return self._finish(3 + len(identity))
        if function & 0x80:
            self.reason = SILENT_BAD_FRAME
            return None
        return self._exception(unit, function, modbus.ILLEGAL_FUNCTION)
