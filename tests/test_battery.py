"""Alarm translation to DEYE bits, checked end to end through encoded frames, row by row.

The expectations are written from the reference's tables, not read back from
vbms_core's tables: the DEYE bit names of deye-byd-modbus.md 1.3.2 (DEYE below),
the BYD state and fail bits of 2.3, the JK02 error bits of jk-protocols.md 5.1
and the 4E57 warning bits of 10.3.  Where a row follows the original firmware
(d4rkmen/virtual-bms src/bms.c) or departs from it, the comment says so; the
reasons are in docs/alarms.md.
"""

import json

import pytest
from conftest import JK_FRAMES
from test_golden_jk import summary_values

from vbms_core import battery, byd, deye, jk_4e57, jk_frames

# DEYE words as the inverter reads them: register offset from 0x1000.
WARNING, PROTECTION, FAULT = 5, 6, 7

# deye-byd-modbus.md 1.3.2, bitmask table: (word, bit) by the reference's names.
DEYE = {
    "warning: cell volt high": (WARNING, 0),
    "warning: cell volt low": (WARNING, 1),
    "warning: pack volt high": (WARNING, 2),
    "warning: pack volt low": (WARNING, 3),
    "warning: charge current high": (WARNING, 4),
    "warning: discharge current high": (WARNING, 5),
    "warning: battery temp high": (WARNING, 6),
    "warning: battery temp low": (WARNING, 7),
    "warning: env temp high": (WARNING, 8),
    "warning: env temp low": (WARNING, 9),
    "warning: MOSFET temp high": (WARNING, 10),
    "warning: capacity (SOC) low": (WARNING, 11),
    "protection: cell volt high": (PROTECTION, 0),
    "protection: cell volt low": (PROTECTION, 1),
    "protection: pack volt high": (PROTECTION, 2),
    "protection: pack volt low": (PROTECTION, 3),
    "protection: short circuit": (PROTECTION, 4),
    "protection: over-current": (PROTECTION, 5),
    "protection: charge temp high": (PROTECTION, 6),
    "protection: charge temp low": (PROTECTION, 7),
    "protection: discharge temp high": (PROTECTION, 8),
    "protection: discharge temp low": (PROTECTION, 9),
    "fault: communication fault": (FAULT, 0),
    "fault: temperature-sensor fail": (FAULT, 1),
}


def words_of(*names):
    """The (warning, protection, fault low byte) words with exactly the named DEYE bits set."""
    words = {WARNING: 0, PROTECTION: 0, FAULT: 0}
    for name in names:
        word, bit = DEYE[name]
        words[word] |= 1 << bit
    return words[WARNING], words[PROTECTION], words[FAULT]


def deye_words(reading):
    registers = deye.registers_from_reading(reading, 55_200, 50_000)
    return registers[WARNING], registers[PROTECTION], registers[FAULT] & 0xFF


# --- BYD ------------------------------------------------------------------------------

BYD_BASE = {
    "pack_voltage_mv": 53_000,
    "cell_voltages_mv": [3312] * 16,
    "current_ma": 0,
    "cell_temps_degc": [20, 20, 20, 20, 20],
    "soc_pct": 50,
    "soh_pct": 100,
}


def byd_reading(**fields):
    frame = byd.encode_response(1, {**BYD_BASE, **fields})
    return battery.from_byd(byd.decode_response(frame).fields)


def deye_words_from_byd(**fields):
    reading = byd_reading(**fields)
    registers = deye.registers_from_reading(reading, 55_200, 50_000)
    return registers[WARNING], registers[PROTECTION], registers[FAULT] & 0xFF, registers[FAULT] >> 8


# deye-byd-modbus.md 2.3 state bits -> DEYE, for alarm_state.
BYD_ALARM_ROWS = [
    (0, ["warning: pack volt high"]),  # pack V high [ORIGINAL]
    (1, ["warning: pack volt high"]),  # module V high: the module is the slot's pack [CHANGED]
    (2, ["warning: cell volt high"]),  # [ORIGINAL]
    (3, ["warning: pack volt low"]),  # [ORIGINAL]
    (4, ["warning: pack volt low"]),  # module V low [CHANGED]
    (5, ["warning: cell volt low"]),  # [ORIGINAL]
    (6, ["warning: charge current high"]),  # [ORIGINAL]
    (7, ["warning: discharge current high"]),  # [ORIGINAL]
    (8, ["warning: battery temp high"]),  # charge T high [ORIGINAL]
    (9, ["warning: battery temp high"]),  # discharge T high [ORIGINAL]
    (10, ["warning: battery temp low"]),  # [ORIGINAL]
    (11, ["warning: battery temp low"]),  # [ORIGINAL]
    (12, ["warning: capacity (SOC) low"]),  # [ORIGINAL]
    (14, ["warning: discharge current high"]),  # discharge short circuit [CHANGED]
    (15, []),  # reverse connection [ORIGINAL]
    (16, []),  # cycles high [ORIGINAL]
    (17, ["warning: battery temp low"]),  # low-temp over-charge 2 [CHANGED: original says MOSFET temp high]
    (18, ["warning: battery temp low"]),  # low-temp over-charge 3 [CHANGED]
    (19, ["warning: charge current high"]),  # charge short circuit [CHANGED]
]

BYD_PROTECT_ROWS = [
    (0, ["protection: pack volt high"]),  # [ORIGINAL]
    (1, ["protection: pack volt high"]),  # [CHANGED]
    (2, ["protection: cell volt high"]),  # [ORIGINAL]
    (3, ["protection: pack volt low"]),  # [ORIGINAL]
    (4, ["protection: pack volt low"]),  # [CHANGED]
    (5, ["protection: cell volt low"]),  # [ORIGINAL]
    (6, ["protection: over-current"]),  # [ORIGINAL]
    (7, ["protection: over-current"]),  # [ORIGINAL]
    (8, ["protection: charge temp high"]),  # [ORIGINAL]
    (9, ["protection: discharge temp high"]),  # [ORIGINAL]
    (10, ["protection: charge temp low"]),  # [ORIGINAL]
    (11, ["protection: discharge temp low"]),  # [ORIGINAL]
    (12, ["protection: cell volt low"]),  # SOC low: discharge stopped [CHANGED]
    (14, ["protection: short circuit"]),  # [ORIGINAL]
    (15, ["fault: communication fault"]),  # reverse connection [CHANGED]
    (16, []),  # [ORIGINAL]
    (17, ["protection: charge temp low"]),  # [CHANGED]
    (18, ["protection: charge temp low"]),  # [CHANGED]
    (19, ["protection: short circuit"]),  # [ORIGINAL]
]

# 2.3 fail_state bits; 2.4: "fault bit0 <- any fail bit except temp-sensor" as the original's code lists them.
BYD_FAIL_ROWS = [
    (0, ["fault: communication fault"]),  # voltage sensor [ORIGINAL]
    (1, ["fault: temperature-sensor fail"]),  # [ORIGINAL]
    (2, ["fault: communication fault"]),  # charge tube [ORIGINAL]
    (3, ["fault: communication fault"]),  # discharge tube [ORIGINAL]
    (4, ["fault: communication fault"]),  # cell broken [ORIGINAL]
    (5, ["fault: communication fault"]),  # heater [ORIGINAL]
    (7, []),  # panel switch off: not a failure [ORIGINAL]
    (8, ["fault: communication fault"]),  # charge circuit [ORIGINAL]
]


@pytest.mark.parametrize("byd_bit, deye_names", BYD_ALARM_ROWS)
def test_byd_alarm_rows(byd_bit, deye_names):
    assert deye_words(byd_reading(alarm_state=1 << byd_bit)) == words_of(*deye_names)


@pytest.mark.parametrize("byd_bit, deye_names", BYD_PROTECT_ROWS)
def test_byd_protect_rows(byd_bit, deye_names):
    assert deye_words(byd_reading(protect_state=1 << byd_bit)) == words_of(*deye_names)


@pytest.mark.parametrize("fail_bit, deye_names", BYD_FAIL_ROWS)
def test_byd_fail_rows(fail_bit, deye_names):
    assert deye_words(byd_reading(fail_state=1 << fail_bit)) == words_of(*deye_names)


# The original raises the environment warnings from the ambient sensor (cell_temp[4])
# above 50 degC and below -10 degC, strictly (env_temp > 500, env_temp < -100 in 0.1 degC).
@pytest.mark.parametrize(
    "ambient_degc, deye_names",
    [
        (51, ["warning: env temp high"]),
        (50, []),
        (-10, []),
        (-11, ["warning: env temp low"]),
    ],
)
def test_byd_ambient_temperature_raises_the_environment_warnings(ambient_degc, deye_names):
    reading = byd_reading(cell_temps_degc=[20, 20, 20, 20, ambient_degc])
    assert deye_words(reading) == words_of(*deye_names)


def test_status_bits_follow_current_and_blocking_protections():
    assert deye_words_from_byd(current_ma=5_000)[3] == 0b1101  # charging, both MOSFETs on
    assert deye_words_from_byd(current_ma=-5_000)[3] == 0b1110  # discharging
    assert deye_words_from_byd(protect_state=1 << 2)[3] == 0b1000  # cell high: charge blocked
    assert deye_words_from_byd(protect_state=1 << 14)[3] == 0b0100  # short circuit: discharge blocked


# --- JK02 --------------------------------------------------------------------------------

JK_BASE = {
    "cell_voltages_mv": [3300] * 16,
    "pack_voltage_mv": 52_800,
    "current_ma": 0,
    "soc_pct": 50,
    "soh_pct": 100,
    "remaining_capacity_mah": 50_000,
    "full_charge_capacity_mah": 100_000,
    "temp1_ddegc": 200,
    "temp2_ddegc": 210,
    "mosfet_temp_ddegc": 250,
    "temp_sensor_mask": 0x07,
    "charge_mosfet_on": True,
    "discharge_mosfet_on": True,
}


def jk_reading(layout, **fields):
    frame = jk_frames.encode_cell_info({**JK_BASE, **fields}, layout)
    return battery.from_jk(jk_frames.decode_frame(frame))


def deye_words_from_jk(layout, **fields):
    return deye_words(jk_reading(layout, **fields))


# jk-protocols.md 5.1 error bits -> DEYE.  Bits 0..15 as the original firmware maps them
# (a JK protection sets the DEYE warning and protection bits); 16..28 [INFER].
JK_ERROR_ROWS = [
    (0, ["fault: communication fault"]),  # wire resistance [ORIGINAL]
    (1, ["warning: MOSFET temp high"]),  # [ORIGINAL]
    (2, ["fault: communication fault"]),  # cell count mismatch [ORIGINAL]
    (3, ["fault: communication fault"]),  # current sensor [ORIGINAL]
    (4, ["warning: cell volt high", "protection: cell volt high"]),  # AlarmCellOVP [ORIGINAL]
    (5, ["warning: pack volt high", "protection: pack volt high"]),  # AlarmBatOVP [ORIGINAL]
    (6, ["warning: charge current high", "protection: over-current"]),  # AlarmChOCP [ORIGINAL]
    (7, ["protection: short circuit"]),  # AlarmChSCP [ORIGINAL]
    (8, ["warning: battery temp high", "protection: charge temp high"]),  # AlarmChOTP [ORIGINAL]
    (9, ["warning: battery temp low", "protection: charge temp low"]),  # AlarmChUTP [ORIGINAL]
    (10, ["fault: communication fault"]),  # AlarmCPUAuxCommuErr [ORIGINAL]
    (11, ["warning: cell volt low", "protection: cell volt low"]),  # AlarmCellUVP [ORIGINAL]
    (12, ["warning: pack volt low", "protection: pack volt low"]),  # AlarmBatUVP [ORIGINAL]
    (13, ["warning: discharge current high", "protection: over-current"]),  # AlarmDchOCP [ORIGINAL]
    (14, ["protection: short circuit"]),  # AlarmDchSCP [ORIGINAL]
    (15, ["warning: battery temp high", "protection: discharge temp high"]),  # AlarmDchOTP [ORIGINAL]
    (16, ["fault: communication fault"]),  # charge MOS abnormal
    (17, ["fault: communication fault"]),  # discharge MOS abnormal
    (18, []),  # GPS disconnected
    (19, []),  # modify password in time
    (20, ["fault: communication fault"]),  # discharge on failed
    (21, ["warning: battery temp high"]),  # battery over-temperature alarm
    (22, ["fault: temperature-sensor fail"]),  # temperature sensor anomaly
    (23, ["fault: communication fault"]),  # PL module anomaly
    (24, ["protection: short circuit"]),  # SCP release failed
    (25, ["warning: discharge current high", "protection: over-current"]),  # discharge OCP II
    (26, ["warning: discharge current high", "protection: over-current"]),  # discharge OCP III
    (27, ["warning: battery temp low", "protection: discharge temp low"]),  # discharge undertemperature
    (28, []),  # GPS remote lock
]


@pytest.mark.parametrize("jk_bit, deye_names", JK_ERROR_ROWS)
def test_jk_32s_error_rows(jk_bit, deye_names):
    assert deye_words_from_jk("JK02_32S", errors=1 << jk_bit) == words_of(*deye_names)


def test_every_jk_error_bit_has_a_row():
    assert [bit for bit, _ in JK_ERROR_ROWS] == list(range(len(jk_frames.ERROR_NAMES)))


def test_jk_24s_error_word_is_16_bits():
    assert deye_words_from_jk("JK02_24S", errors=1 << 11) == words_of(
        "warning: cell volt low", "protection: cell volt low"
    )
    with pytest.raises(jk_frames.LocalProtocolError):
        jk_frames.encode_cell_info({**JK_BASE, "errors": 1 << 16}, "JK02_24S")


# --- 4E57 ---------------------------------------------------------------------------------

# jk-protocols.md 10.3 warning bits -> DEYE; the original has no 4E57 support: all [INFER],
# with the JK02 rule (a protection sets the DEYE warning and protection bits).
JK4E57_ROWS = [
    (0, ["warning: capacity (SOC) low"]),  # low capacity
    (1, ["warning: MOSFET temp high"]),  # MOS overtemperature
    (2, ["warning: pack volt high", "protection: pack volt high"]),  # charge overvoltage
    (3, ["warning: pack volt low", "protection: pack volt low"]),  # discharge undervoltage
    (4, ["warning: battery temp high", "protection: charge temp high"]),  # battery overtemperature
    (5, ["warning: charge current high", "protection: over-current"]),  # charge overcurrent
    (6, ["warning: discharge current high", "protection: over-current"]),  # discharge overcurrent
    (7, ["warning: cell volt high"]),  # cell voltage difference
    (8, ["warning: env temp high"]),  # battery-box overtemperature
    (9, ["warning: battery temp low", "protection: charge temp low"]),  # battery undertemperature
    (10, ["warning: cell volt high", "protection: cell volt high"]),  # cell overvoltage
    (11, ["warning: cell volt low", "protection: cell volt low"]),  # cell undervoltage
    (12, []),  # 309_A protection
    (13, []),  # 309_B protection
]


@pytest.mark.parametrize("bit, deye_names", JK4E57_ROWS)
def test_jk_4e57_warning_rows(bit, deye_names):
    frame = jk_4e57.encode_response([3300] * 16, {0x83: 5280, 0x84: 0x8000, 0x85: 50, 0x8B: 1 << bit, 0xC0: 1})
    reading = battery.from_jk_4e57(jk_4e57.decode_response(frame))
    assert deye_words(reading) == words_of(*deye_names)


# --- JK cell temperatures -------------------------------------------------------------------


def test_cell_extremes_come_only_from_present_cells():
    # The original firmware read 20 cells out of a 16-cell array (reference 1.3.5 #7).
    cells = [3300] * 15 + [3350]
    frame = jk_frames.encode_cell_info({**JK_BASE, "cell_voltages_mv": cells, "current_ma": -40_000}, "JK02_32S")
    reading = battery.from_jk(jk_frames.decode_frame(frame))
    registers = deye.registers_from_reading(reading, 55_200, 100_000)
    assert registers[0x0D] == 3350 and registers[0x0E] == 3300


def test_absent_temperature_sensors_are_left_out():
    frame = jk_frames.encode_cell_info({**JK_BASE, "temp2_ddegc": None, "temp_sensor_mask": 0x03}, "JK02_32S")
    decoded = jk_frames.decode_frame(frame)
    assert decoded["temp2_ddegc"] is None
    assert battery.from_jk(decoded).cell_temps_ddegc == (200,)


def deci(text):
    return round(float(text) * 10)


@pytest.mark.parametrize("frame_id", ["R02", "B19"])
def test_byte_254_mirrors_the_mosfet_and_is_no_cell_temperature(frame_id):
    frame = next(f for f in JK_FRAMES if f["id"] == frame_id)
    expect = summary_values(frame["summary"])
    # the reference's own values: byte 254 repeats the MOSFET temperature at 144
    assert expect["temp_C@254"] == expect["mos_temp_C@144"]
    cells = [deci(expect[key]) for key in ("T1_C", "T2_C", "temp_C@256", "temp_C@258")]
    decoded = jk_frames.decode_frame(bytes.fromhex(frame["hex"]))
    assert decoded["temp3_ddegc"] == deci(expect["temp_C@254"])  # the decoded field stays (docs/fields.md)
    registers = deye.registers_from_reading(battery.from_jk(decoded), 55_200, 100_000)
    assert registers[0x10] == max(cells)  # max_cell_temp
    assert registers[0x11] == min(cells)  # min_cell_temp
    assert registers[0x03] == int(sum(cells) / len(cells) + 0.5)  # cell_temp_avg (all positive here)
    assert registers[0x12] == deci(expect["mos_temp_C@144"])  # mosfet_temp


def test_r02_max_cell_temperature_is_19_9_degc():
    # issue 9: counting byte 254 made it 20.3 degC (the MOSFET's); the warmest cell sensor reads 19.9.
    raw = bytes.fromhex(next(f for f in JK_FRAMES if f["id"] == "R02")["hex"])
    registers = deye.registers_from_reading(battery.from_jk(jk_frames.decode_frame(raw)), 55_200, 100_000)
    assert registers[0x10] == 199


def test_reading_dict_is_json():
    raw = bytes.fromhex(next(f for f in JK_FRAMES if f["id"] == "R02")["hex"])
    result = battery.from_jk(jk_frames.decode_frame(raw)).as_dict()
    assert json.loads(json.dumps(result))["soc_estimated"] is False
