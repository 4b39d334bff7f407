"""JK-BMS 300-byte "55 AA EB 90" frames: decoders and encoders.

Reference: shared/reference/jk-protocols.md sections 3 to 9 (frame layouts) and
11.3 (the same frames answer JK-PB RS485 trigger writes).  All fields are
little-endian.  Layouts: JK02_24S, JK02_32S (u16 mV cells) and JK04 (f32 volts).

Choices where the reference is unsure (marked '?' there):
- temperatures at 254/256/258 (32S) take the official names TempBat3/4/5 in
  address order: temp3_ddegc=254, temp4_ddegc=256, temp5_ddegc=258;
- the 24S error word at 136 is read little-endian (current esphome and
  dbus-serialbattery; no real 24S frame with errors exists);
- -2000 (-200.0 degC) in a temperature field means "sensor absent" -> None;
- JK04 has no pack voltage, current or SOC: pack_voltage_mv is the sum of the
  float cell voltages rounded once to mV (as esphome does: its JK04 test
  expects 53.691 V for frame B42, where adding the cells already rounded to mV
  gives 53.695 V), computed exactly with integers (compat.f32_sum_scaled) so
  every port agrees; the others are None.

Units are integers with the unit in the name: _mv, _ma, _mah, _mw, _mohm,
_ddegc (0.1 degC), _s, _pct.
"""

import struct

from .compat import ascii_field, bit_names, f32_scaled, f32_sum_scaled
from .errors import LocalProtocolError, RemoteProtocolError

FRAME_LENGTH = 300
HEADER = b"\x55\xaa\xeb\x90"

SETTINGS = 0x01
CELL_INFO = 0x02
DEVICE_INFO = 0x03
LOGBOOK = 0x05
FRAME_TYPES = {SETTINGS: "settings", CELL_INFO: "cell_info", DEVICE_INFO: "device_info", LOGBOOK: "logbook"}

JK02_24S = "JK02_24S"
JK02_32S = "JK02_32S"
JK04 = "JK04"
LAYOUTS = (JK02_24S, JK02_32S, JK04)

SENSOR_ABSENT = -2000

# Bit names of the JK02 error/alarm word (section 5.1, official Modbus names).
ERROR_NAMES = (
    "wire_resistance",
    "mosfet_overtemperature",
    "cell_count_mismatch",
    "current_sensor",
    "cell_overvoltage",
    "pack_overvoltage",
    "charge_overcurrent",
    "charge_short_circuit",
    "charge_overtemperature",
    "charge_undertemperature",
    "coprocessor_communication",
    "cell_undervoltage",
    "pack_undervoltage",
    "discharge_overcurrent",
    "discharge_short_circuit",
    "discharge_overtemperature",
    "charge_mosfet_abnormal",
    "discharge_mosfet_abnormal",
    "gps_disconnected",
    "modify_password_in_time",
    "discharge_on_failed",
    "battery_overtemperature",
    "temperature_sensor_anomaly",
    "plc_module_anomaly",
    "scp_release_failed",
    "discharge_overcurrent_2",
    "discharge_overcurrent_3",
    "discharge_undertemperature",
    "gps_remote_lock",
)

BALANCER_STATES = ("off", "charge_balancing", "discharge_balancing")
CHARGE_STATUS = ("bulk", "absorption", "float")
CONTROL_BIT_NAMES = (
    "heating_enabled",
    "temperature_sensors_disabled",
    "gps_heartbeat",
    "port_switch_rs485",
    "display_always_on",
    "special_charger",
    "smart_sleep",
    "pcl_module_disabled",
    "timed_stored_data",
    "charging_float_mode",
    "button_triggers_emergency",
    "dry_arm_intermittent",
    "discharge_ocp_2",
    "discharge_ocp_3",
    "gps_locked_charging",
    "gps_locked_discharging",
)

# --- field tables ------------------------------------------------------------
# (name, 24S offset, 24S code, 32S offset, 32S code); None: not in that layout.

_JK02_CELL_FIELDS = (
    ("cell_mask", 54, "I", 70, "I"),
    ("average_cell_voltage_mv", 58, "H", 74, "H"),
    ("delta_cell_voltage_mv", 60, "H", 76, "H"),
    ("max_cell_index", 62, "B", 78, "B"),
    ("min_cell_index", 63, "B", 79, "B"),
    ("wire_resistance_alarm_mask", 114, "I", 146, "I"),
    ("pack_voltage_mv", 118, "I", 150, "I"),
    ("pack_power_mw", 122, "I", 154, "I"),
    ("current_ma", 126, "i", 158, "i"),
    ("temp1_ddegc", 130, "h", 162, "h"),
    ("temp2_ddegc", 132, "h", 164, "h"),
    ("mosfet_temp_ddegc", 134, "h", 144, "h"),
    ("errors", 136, "H", 166, "I"),
    ("balance_current_ma", 138, "h", 170, "h"),
    ("balancer_state", 140, "B", 172, "B"),
    ("soc_pct", 141, "B", 173, "B"),
    ("remaining_capacity_mah", 142, "I", 174, "I"),
    ("full_charge_capacity_mah", 146, "I", 178, "I"),
    ("cycle_count", 150, "I", 182, "I"),
    ("cycle_capacity_mah", 154, "I", 186, "I"),
    ("soh_pct", 158, "B", 190, "B"),
    ("precharge", 159, "B", 191, "B"),
    ("user_alarm", 160, "H", 192, "H"),
    ("runtime_s", 162, "I", 194, "I"),
    ("charge_mosfet_on", 166, "B", 198, "B"),
    ("discharge_mosfet_on", 167, "B", 199, "B"),
    ("balancing", None, None, 201, "B"),
    ("temp_sensor_mask", 182, "B", 214, "B"),
    ("heating_on", 183, "B", 215, "B"),
    ("emergency_countdown_s", 186, "H", 218, "H"),
    ("heating_current_ma", 204, "h", 236, "h"),
    ("temp3_ddegc", None, None, 254, "h"),
    ("temp4_ddegc", None, None, 256, "h"),
    ("temp5_ddegc", None, None, 258, "h"),
    ("rtc_s", None, None, 262, "I"),
    ("charge_status", None, None, 280, "B"),
)

_JK02_CELL_SLOTS = {JK02_24S: (6, 24, 64), JK02_32S: (6, 32, 80)}  # cells at, count, wire resistances at
_BOOLEAN_FIELDS = ("charge_mosfet_on", "discharge_mosfet_on", "heating_on", "precharge", "balancing")
_TEMPERATURE_FIELDS = ("temp1_ddegc", "temp2_ddegc", "mosfet_temp_ddegc", "temp3_ddegc", "temp4_ddegc", "temp5_ddegc")

# Settings (section 6): offsets 6..141 are shared by 24S and 32S.
_JK02_SETTINGS_FIELDS = (
    ("smart_sleep_voltage_mv", 6, "I", 6, "I"),
    ("cell_uvp_mv", 10, "I", 10, "I"),
    ("cell_uvp_recovery_mv", 14, "I", 14, "I"),
    ("cell_ovp_mv", 18, "I", 18, "I"),
    ("cell_ovp_recovery_mv", 22, "I", 22, "I"),
    ("balance_trigger_delta_mv", 26, "I", 26, "I"),
    ("soc100_voltage_mv", 30, "I", 30, "I"),
    ("soc0_voltage_mv", 34, "I", 34, "I"),
    ("cell_request_charge_voltage_mv", 38, "I", 38, "I"),
    ("cell_request_float_voltage_mv", 42, "I", 42, "I"),
    ("power_off_voltage_mv", 46, "I", 46, "I"),
    ("max_charge_current_ma", 50, "I", 50, "I"),
    ("charge_ocp_delay_s", 54, "I", 54, "I"),
    ("charge_ocp_recovery_s", 58, "I", 58, "I"),
    ("max_discharge_current_ma", 62, "I", 62, "I"),
    ("discharge_ocp_delay_s", 66, "I", 66, "I"),
    ("discharge_ocp_recovery_s", 70, "I", 70, "I"),
    ("scp_recovery_s", 74, "I", 74, "I"),
    ("max_balance_current_ma", 78, "I", 78, "I"),
    ("charge_otp_ddegc", 82, "i", 82, "i"),
    ("charge_otp_recovery_ddegc", 86, "i", 86, "i"),
    ("discharge_otp_ddegc", 90, "i", 90, "i"),
    ("discharge_otp_recovery_ddegc", 94, "i", 94, "i"),
    ("charge_utp_ddegc", 98, "i", 98, "i"),
    ("charge_utp_recovery_ddegc", 102, "i", 102, "i"),
    ("mosfet_otp_ddegc", 106, "i", 106, "i"),
    ("mosfet_otp_recovery_ddegc", 110, "i", 110, "i"),
    ("cell_count", 114, "I", 114, "I"),
    ("charge_switch", 118, "I", 118, "I"),
    ("discharge_switch", 122, "I", 122, "I"),
    ("balancer_switch", 126, "I", 126, "I"),
    ("nominal_capacity_mah", 130, "I", 130, "I"),
    ("scp_delay_us", 134, "I", 134, "I"),
    ("balance_start_voltage_mv", 138, "I", 138, "I"),
    ("device_address", None, None, 270, "B"),
    ("precharge_time_s", None, None, 274, "B"),
    ("control_bits", None, None, 282, "H"),
    ("heating_start_degc", None, None, 284, "b"),
    ("heating_stop_degc", None, None, 285, "b"),
    ("smart_sleep_h", None, None, 286, "B"),
    ("discharge_utp_degc", None, None, 296, "b"),
    ("discharge_utp_recovery_degc", None, None, 297, "b"),
)

# Device info (section 7): one layout for all; (name, offset, length or struct code).
_DEVICE_INFO_FIELDS = (
    ("vendor_id", 6, 16),
    ("hw_version", 22, 8),
    ("sw_version", 30, 8),
    ("uptime_s", 38, "I"),
    ("power_on_count", 42, "I"),
    ("device_name", 46, 16),
    ("device_passcode", 62, 16),
    ("manufacturing_date", 78, 8),
    ("serial_number", 86, 11),
    ("passcode", 97, 5),
    ("user_data", 102, 16),
    ("setup_passcode", 118, 16),
)

# JK04 settings (section 9.2): (name, offset, kind) with kind "f32mV", "f32mA", "H", "B".
_JK04_SETTINGS_FIELDS = (
    ("cell_count", 34, "H"),
    ("power_off_voltage_mv", 38, "f32m"),
    ("voltage_calibration_mv", 74, "f32m"),
    ("balance_start_voltage_mv", 98, "f32m"),
    ("balance_trigger_delta_mv", 106, "f32m"),
    ("max_balance_current_ma", 110, "f32m"),
    ("balancer_switch", 114, "B"),
)


def _compile(fields, column):
    """One struct format and the field names, in offset order, for one layout.

    column 1 selects the 24S offsets, 3 the 32S offsets.
    """
    present = sorted((field[column], field[column + 1], field[0]) for field in fields if field[column] is not None)
    parts = ["<"]
    names = []
    position = 0
    for offset, code, name in present:
        if offset > position:
            parts.append("%dx" % (offset - position))
        parts.append(code)
        names.append(name)
        position = offset + struct.calcsize("<" + code)
    return "".join(parts), tuple(names)


_CELL_STRUCT = {JK02_24S: _compile(_JK02_CELL_FIELDS, 1), JK02_32S: _compile(_JK02_CELL_FIELDS, 3)}
_SETTINGS_STRUCT = {JK02_24S: _compile(_JK02_SETTINGS_FIELDS, 1), JK02_32S: _compile(_JK02_SETTINGS_FIELDS, 3)}


def _field_offsets(fields, column):
    return {field[0]: (field[column], field[column + 1]) for field in fields if field[column] is not None}


_CELL_OFFSETS = {JK02_24S: _field_offsets(_JK02_CELL_FIELDS, 1), JK02_32S: _field_offsets(_JK02_CELL_FIELDS, 3)}
_SETTINGS_OFFSETS = {
    JK02_24S: _field_offsets(_JK02_SETTINGS_FIELDS, 1),
    JK02_32S: _field_offsets(_JK02_SETTINGS_FIELDS, 3),
}


# --- checks and detection ------------------------------------------------------


def checksum(frame):
    """sum8 of bytes 0..298, the byte a valid frame carries at 299."""
    return sum(frame[: FRAME_LENGTH - 1]) & 0xFF


def check_frame(frame):
    """Raise RemoteProtocolError unless frame starts with a valid 300-byte frame."""
    if len(frame) < FRAME_LENGTH:
        raise RemoteProtocolError("JK frame truncated: %d of 300 bytes" % len(frame), raw=bytes(frame))
    if frame[:4] != HEADER:
        raise RemoteProtocolError("not a JK frame: header %s" % bytes(frame[:4]).hex(), raw=bytes(frame), offset=0)
    expected = checksum(frame)
    if frame[FRAME_LENGTH - 1] != expected:
        raise RemoteProtocolError(
            "JK frame checksum %02X, computed %02X" % (frame[FRAME_LENGTH - 1], expected),
            raw=bytes(frame[:FRAME_LENGTH]),
            offset=FRAME_LENGTH - 1,
        )


def detect_layout(frame):
    """Guess the layout of a valid frame (jk-protocols.md section 4).

    Cell-info and settings frames of JK04 start with an f32 (third byte 0x3F or
    0x40: a value between 1 and 8); no JK02 u16/u32 field can put that byte
    there.  A JK02_32S frame carries a non-zero byte at 287, a 24S frame zero.
    A device-info frame does not tell JK04 from JK02_24S: None then.
    """
    frame_type = frame[4]
    if frame_type in (CELL_INFO, SETTINGS) and frame[9] in (0x3F, 0x40):
        return JK04
    if frame[287]:
        return JK02_32S
    if frame_type == DEVICE_INFO:
        return None
    return JK02_24S


# --- decoders ----------------------------------------------------------------


def decode_frame(frame, layout=None):
    """A 300-byte frame (extra trailing bytes are ignored) to a dict.

    layout None means auto-detect; otherwise one of LAYOUTS.
    """
    check_frame(frame)
    if layout is not None and layout not in LAYOUTS:
        raise LocalProtocolError("unknown JK layout %r" % (layout,))
    frame_type = frame[4]
    if layout is None:
        layout = detect_layout(frame)
    if frame_type == CELL_INFO:
        result = decode_jk04_cell_info(frame) if layout == JK04 else decode_jk02_cell_info(frame, layout)
    elif frame_type == SETTINGS:
        result = decode_jk04_settings(frame) if layout == JK04 else decode_jk02_settings(frame, layout)
    elif frame_type == DEVICE_INFO:
        result = decode_device_info(frame)
        result["layout"] = layout
    elif frame_type == LOGBOOK:
        result = decode_logbook(frame)
        result["layout"] = layout
    else:
        result = {"frame_type": "unknown", "type": frame_type, "layout": layout}
    result["counter"] = frame[5]
    return result


def _temperature(value):
    return None if value == SENSOR_ABSENT else value


def decode_jk02_cell_info(frame, layout):
    fmt, names = _CELL_STRUCT[layout]
    result = dict(zip(names, struct.unpack_from(fmt, frame, 0)))
    cells_at, slots, resistances_at = _JK02_CELL_SLOTS[layout]
    raw_cells = struct.unpack_from("<%dH" % slots, frame, cells_at)
    raw_resistances = struct.unpack_from("<%dH" % slots, frame, resistances_at)
    mask = result["cell_mask"]
    cells = []
    resistances = []
    for index in range(slots):
        if mask >> index & 1:
            cells.append(raw_cells[index])
            resistances.append(raw_resistances[index])
    result["frame_type"] = "cell_info"
    result["layout"] = layout
    result["cell_count"] = len(cells)
    result["cell_voltages_mv"] = cells
    result["cell_wire_resistances_mohm"] = resistances
    for name in _TEMPERATURE_FIELDS:
        if name in result:
            result[name] = _temperature(result[name])
    for name in _BOOLEAN_FIELDS:
        if name in result:
            result[name] = result[name] != 0
    result["error_names"] = bit_names(result["errors"], ERROR_NAMES)
    state = result["balancer_state"]
    result["balancer_state"] = BALANCER_STATES[state] if state < len(BALANCER_STATES) else "unknown_%d" % state
    if "charge_status" in result:
        status = result["charge_status"]
        result["charge_status"] = CHARGE_STATUS[status] if status < len(CHARGE_STATUS) else "unknown_%d" % status
    return result


def _f32_at(frame, offset, scale):
    return f32_scaled(struct.unpack_from("<I", frame, offset)[0], scale)


def decode_jk04_cell_info(frame):
    cells = []
    cell_bits = []
    resistances = []
    for index in range(24):
        bits = struct.unpack_from("<I", frame, 6 + 4 * index)[0]
        millivolts = f32_scaled(bits, 1000)
        if millivolts:
            cells.append(millivolts)
            cell_bits.append(bits)
            resistances.append(_f32_at(frame, 102 + 4 * index, 1000))
    state = frame[220]
    return {
        "frame_type": "cell_info",
        "layout": JK04,
        "cell_count": len(cells),
        "cell_voltages_mv": cells,
        "cell_wire_resistances_mohm": resistances,
        "average_cell_voltage_mv": _f32_at(frame, 202, 1000),
        "delta_cell_voltage_mv": _f32_at(frame, 206, 1000),
        "pack_voltage_mv": f32_sum_scaled(cell_bits, 1000),
        "current_ma": None,
        "soc_pct": None,
        "soh_pct": None,
        "remaining_capacity_mah": None,
        "full_charge_capacity_mah": None,
        "cycle_count": None,
        "errors": None,
        "error_names": [],
        "balancer_state": BALANCER_STATES[state] if state < len(BALANCER_STATES) else "unknown_%d" % state,
        "balance_current_ma": _f32_at(frame, 222, 1000),
        "runtime_s": struct.unpack_from("<I", frame, 286)[0],
    }


def decode_jk02_settings(frame, layout):
    fmt, names = _SETTINGS_STRUCT[layout]
    result = dict(zip(names, struct.unpack_from(fmt, frame, 0)))
    result["frame_type"] = "settings"
    result["layout"] = layout
    if "control_bits" in result:
        result["control_bit_names"] = bit_names(result["control_bits"], CONTROL_BIT_NAMES)
    return result


def decode_jk04_settings(frame):
    result = {"frame_type": "settings", "layout": JK04}
    for name, offset, kind in _JK04_SETTINGS_FIELDS:
        if kind == "f32m":
            result[name] = _f32_at(frame, offset, 1000)
        else:
            result[name] = struct.unpack_from("<" + kind, frame, offset)[0]
    return result


def decode_device_info(frame):
    result = {"frame_type": "device_info"}
    for name, offset, size in _DEVICE_INFO_FIELDS:
        if isinstance(size, int):
            result[name] = ascii_field(frame[offset : offset + size])
        else:
            result[name] = struct.unpack_from("<" + size, frame, offset)[0]
    return result


def decode_logbook(frame):
    count = struct.unpack_from("<I", frame, 6)[0]
    entries = []
    for index in range(min(count, 50)):
        timestamp, code = struct.unpack_from("<IB", frame, 11 + 5 * index)
        entries.append([timestamp, code])
    return {"frame_type": "logbook", "entry_count": count, "entries": entries}


# --- encoders (for the simulators) ---------------------------------------------


def _finish(frame, frame_type, counter):
    frame[0:4] = HEADER
    frame[4] = frame_type
    frame[5] = counter & 0xFF
    frame[FRAME_LENGTH - 1] = checksum(frame)
    return bytes(frame)


_RANGES = {
    "B": (0, 0xFF),
    "b": (-0x80, 0x7F),
    "H": (0, 0xFFFF),
    "h": (-0x8000, 0x7FFF),
    "I": (0, 0xFFFFFFFF),
    "i": (-0x80000000, 0x7FFFFFFF),
}


def _pack_fields(frame, offsets, values):
    # Range-checked here: MicroPython's struct truncates where CPython's raises.
    for name, (offset, code) in offsets.items():
        if name not in values or values[name] is None:
            continue
        value = values[name]
        if value is True or value is False:
            value = 1 if value else 0
        low, high = _RANGES[code]
        if not isinstance(value, int) or not low <= value <= high:
            raise LocalProtocolError("JK field %s=%r does not fit %d..%d" % (name, value, low, high))
        struct.pack_into("<" + code, frame, offset, value)


def encode_cell_info(values, layout=JK02_32S, counter=0):
    """Build a cell-info frame from a dict shaped like decode_frame's result.

    The cell mask defaults to the cells given; temperatures given as None are
    encoded as an absent sensor.
    """
    frame = bytearray(FRAME_LENGTH)
    cells = values.get("cell_voltages_mv", ())
    resistances = values.get("cell_wire_resistances_mohm") or ()
    if layout == JK04:
        if len(cells) > 24:
            raise LocalProtocolError("JK04 carries at most 24 cells")
        for index in range(len(cells)):
            struct.pack_into("<f", frame, 6 + 4 * index, cells[index] / 1000)
            if index < len(resistances):
                struct.pack_into("<f", frame, 102 + 4 * index, resistances[index] / 1000)
        if cells:
            average = sum(cells) // len(cells)
            struct.pack_into("<ff", frame, 202, average / 1000, (max(cells) - min(cells)) / 1000)
        frame[214:216] = b"\xff\xff"
        frame[220] = BALANCER_STATES.index(values.get("balancer_state", "off"))
        struct.pack_into("<f", frame, 222, values.get("balance_current_ma", 0) / 1000)
        struct.pack_into("<I", frame, 286, values.get("runtime_s", 0))
        return _finish(frame, CELL_INFO, counter)
    if layout not in _CELL_STRUCT:
        raise LocalProtocolError("unknown JK layout %r" % (layout,))
    cells_at, slots, resistances_at = _JK02_CELL_SLOTS[layout]
    if len(cells) > slots:
        raise LocalProtocolError("%s carries at most %d cells" % (layout, slots))
    fields = dict(values)
    for name in _TEMPERATURE_FIELDS:
        if name in fields and fields[name] is None:
            fields[name] = SENSOR_ABSENT
    if "cell_mask" not in fields:
        fields["cell_mask"] = (1 << len(cells)) - 1
    state = fields.get("balancer_state", "off")
    fields["balancer_state"] = BALANCER_STATES.index(state) if state in BALANCER_STATES else 0
    status = fields.get("charge_status", "bulk")
    fields["charge_status"] = CHARGE_STATUS.index(status) if status in CHARGE_STATUS else 0
    _pack_fields(frame, _CELL_OFFSETS[layout], fields)
    for index in range(len(cells)):
        struct.pack_into("<H", frame, cells_at + 2 * index, cells[index])
        if index < len(resistances):
            struct.pack_into("<H", frame, resistances_at + 2 * index, resistances[index])
    if layout == JK02_32S and not frame[287]:
        # Constant-looking block real 32S firmware sends at 286..297 (section 5);
        # byte 287 is what tells a 32S frame from a 24S one.
        frame[286:298] = b"\x00\xfe\xff\x7f\xdc\x2f\x01\x01\xb0\xcf\x07\x00"
    return _finish(frame, CELL_INFO, counter)


def encode_settings(values, layout=JK02_32S, counter=0):
    frame = bytearray(FRAME_LENGTH)
    if layout == JK04:
        struct.pack_into("<f", frame, 6, 1.0)
        for name, offset, kind in _JK04_SETTINGS_FIELDS:
            value = values.get(name, 0)
            if kind == "f32m":
                struct.pack_into("<f", frame, offset, value / 1000)
            else:
                struct.pack_into("<" + kind, frame, offset, value)
        return _finish(frame, SETTINGS, counter)
    if layout not in _SETTINGS_OFFSETS:
        raise LocalProtocolError("unknown JK layout %r" % (layout,))
    _pack_fields(frame, _SETTINGS_OFFSETS[layout], values)
    if layout == JK02_32S and not frame[287]:
        frame[287] = 0xFE  # "data-field enable control 0", non-zero on 32S firmware
    return _finish(frame, SETTINGS, counter)


def encode_device_info(values, counter=0):
    frame = bytearray(FRAME_LENGTH)
    for name, offset, size in _DEVICE_INFO_FIELDS:
        value = values.get(name)
        if value is None:
            continue
        if isinstance(size, int):
            raw = value.encode()
            if len(raw) > size:
                raise LocalProtocolError("JK %s %r is longer than %d bytes" % (name, value, size))
            frame[offset : offset + len(raw)] = raw
        else:
            struct.pack_into("<" + size, frame, offset, value)
    if values.get("layout") == JK02_32S:
        frame[287] = 0xFE
    return _finish(frame, DEVICE_INFO, counter)
