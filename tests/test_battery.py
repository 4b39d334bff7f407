"""Alarm translation to DEYE bits, checked end to end through encoded frames.

The expectations are written from the DEYE bit table in the reference
(deye-byd-modbus.md 1.3.2), not read back from vbms_core's tables.
"""

import pytest

from vbms_core import battery, byd, deye, jk_frames

# DEYE words as the inverter reads them: (register offset, bit)
WARNING, PROTECTION, FAULT = 5, 6, 7

BYD_BASE = {
    "pack_voltage_mv": 53_000,
    "cell_voltages_mv": [3312] * 16,
    "current_ma": 0,
    "cell_temps_degc": [20, 20, 20, 20, 20],
    "soc_pct": 50,
    "soh_pct": 100,
}


def deye_words_from_byd(**fields):
    frame = byd.encode_response(1, {**BYD_BASE, **fields})
    reading = battery.from_byd(byd.decode_response(frame).fields)
    registers = deye.registers_from_reading(reading, 55_200, 50_000)
    return registers[WARNING], registers[PROTECTION], registers[FAULT] & 0xFF, registers[FAULT] >> 8


@pytest.mark.parametrize(
    "byd_bit, deye_bit",
    [(0, 2), (1, 2), (2, 0), (3, 3), (4, 3), (5, 1), (6, 4), (7, 5), (8, 6), (9, 6), (10, 7), (11, 7), (12, 11)],
)
def test_byd_alarms_become_deye_warnings(byd_bit, deye_bit):
    warning, protection, fault, _ = deye_words_from_byd(alarm_state=1 << byd_bit)
    assert (warning, protection, fault) == (1 << deye_bit, 0, 0)


@pytest.mark.parametrize(
    "byd_bit, deye_bit",
    [
        (0, 2),
        (1, 2),
        (2, 0),
        (3, 3),
        (4, 3),
        (5, 1),
        (6, 5),
        (7, 5),
        (8, 6),
        (9, 8),
        (10, 7),
        (11, 9),
        (14, 4),
        (19, 4),
    ],
)
def test_byd_protections_become_deye_protections(byd_bit, deye_bit):
    warning, protection, fault, _ = deye_words_from_byd(protect_state=1 << byd_bit)
    assert (warning, protection, fault) == (0, 1 << deye_bit, 0)


@pytest.mark.parametrize("fail_bit, deye_fault", [(0, 0), (1, 1), (2, 0), (3, 0), (4, 0), (5, 0), (7, 0), (8, 0)])
def test_byd_failures_become_deye_faults(fail_bit, deye_fault):
    assert deye_words_from_byd(fail_state=1 << fail_bit)[2] == 1 << deye_fault


def test_status_bits_follow_current_and_blocking_protections():
    assert deye_words_from_byd(current_ma=5_000)[3] == 0b1101  # charging, both MOSFETs on
    assert deye_words_from_byd(current_ma=-5_000)[3] == 0b1110  # discharging
    assert deye_words_from_byd(protect_state=1 << 2)[3] == 0b1000  # cell high: charge blocked
    assert deye_words_from_byd(protect_state=1 << 14)[3] == 0b0100  # short circuit: discharge blocked


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


def deye_words_from_jk(layout, **fields):
    frame = jk_frames.encode_cell_info({**JK_BASE, **fields}, layout)
    reading = battery.from_jk(jk_frames.decode_frame(frame))
    registers = deye.registers_from_reading(reading, 55_200, 100_000)
    return registers[WARNING], registers[PROTECTION], registers[FAULT] & 0xFF


@pytest.mark.parametrize(
    "jk_bit, word, deye_bit",
    [
        (1, WARNING, 10),  # MOSFET over-temperature
        (4, PROTECTION, 0),  # cell over-voltage protection
        (5, PROTECTION, 2),
        (6, PROTECTION, 5),
        (7, PROTECTION, 4),
        (8, PROTECTION, 6),
        (9, PROTECTION, 7),
        (11, PROTECTION, 1),
        (12, PROTECTION, 3),
        (13, PROTECTION, 5),
        (14, PROTECTION, 4),
        (15, PROTECTION, 8),
        (22, FAULT, 1),  # temperature sensor anomaly
        (10, FAULT, 0),
        (27, WARNING, 7),
    ],
)
def test_jk_32s_errors_become_deye_bits(jk_bit, word, deye_bit):
    words = dict(zip((WARNING, PROTECTION, FAULT), deye_words_from_jk("JK02_32S", errors=1 << jk_bit), strict=True))
    assert words[word] == 1 << deye_bit
    assert sum(1 for value in words.values() if value) == 1


def test_jk_24s_error_word_is_16_bits():
    assert deye_words_from_jk("JK02_24S", errors=1 << 11)[1] == 1 << 1
    with pytest.raises(jk_frames.LocalProtocolError):
        jk_frames.encode_cell_info({**JK_BASE, "errors": 1 << 16}, "JK02_24S")


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
