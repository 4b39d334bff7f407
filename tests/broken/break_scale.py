"""A pytest plugin that breaks the proxy on purpose: pack voltage scaled wrong (x 1.1)."""

from vbms_core import deye

_original = deye.registers_from_reading


def _wrong_scale(reading, float_voltage_mv, max_charge_current_ma):
    registers = _original(reading, float_voltage_mv, max_charge_current_ma)
    registers[0] = registers[0] * 11 // 10
    return registers


deye.registers_from_reading = _wrong_scale
