"""One normalized reading per battery, and the alarm translation to DEYE bits.

Reference: shared/reference/deye-byd-modbus.md 1.3.2 (DEYE bitmasks), 2.3 and
2.4 (BYD states and the original firmware's mapping), jk-protocols.md 5.1 (JK
error word) and 10.3 (4E57 warnings).

Units are integers: mV, mA (positive = charging), mAh, 0.1 degC (_ddegc) and
0.1 % (_permille).  None means "the source does not report it".

The translation tables are literal: (source bit, DEYE word, DEYE bit), one row
per DEYE bit a source bit sets.  Where a source bit has no DEYE meaning it is
listed with None so the choice is visible.  Fixes against the original firmware (section 1.3.5):
- cell min/max come from the cells that exist, never from neighbouring fields;
- BYD module/pack bits land on the pack bits, short circuits on their own bit;
- the DEYE status bits (charging, discharging) come from the sign of the
  current, not from a copy of the BYD state word, and the MOSFET bits from what
  the source reports (BYD reports none: no charge- or discharge-blocking
  protection active is taken as "on").
Each table row is marked [ORIGINAL], [CHANGED: reason] or [INFER] against the
original firmware; docs/alarms.md explains the marks.

JK04 frames carry no SOC: estimate_soc fills one in from the cell voltages on
an open-circuit-voltage curve (OCV_CURVES) and marks the reading
soc_estimated, so the inverter is never told a silent 0 %.
"""

from .compat import clamp

WARNING = "warning"
PROTECTION = "protection"
FAULT = "fault"

# DEYE 0x1005 warning bits
W_CELL_HIGH = 0
W_CELL_LOW = 1
W_PACK_HIGH = 2
W_PACK_LOW = 3
W_CHARGE_CURRENT = 4
W_DISCHARGE_CURRENT = 5
W_TEMP_HIGH = 6
W_TEMP_LOW = 7
W_ENV_HIGH = 8
W_ENV_LOW = 9
W_MOSFET_HIGH = 10
W_SOC_LOW = 11
# DEYE 0x1006 protection bits
P_CELL_HIGH = 0
P_CELL_LOW = 1
P_PACK_HIGH = 2
P_PACK_LOW = 3
P_SHORT_CIRCUIT = 4
P_OVERCURRENT = 5
P_CHARGE_TEMP_HIGH = 6
P_CHARGE_TEMP_LOW = 7
P_DISCHARGE_TEMP_HIGH = 8
P_DISCHARGE_TEMP_LOW = 9
# DEYE 0x1007 fault (low byte) and status (high byte) bits
F_COMMUNICATION = 0
F_TEMP_SENSOR = 1
S_CHARGING = 8
S_DISCHARGING = 9
S_CHARGE_MOSFET = 10
S_DISCHARGE_MOSFET = 11
S_CHARGE_LIMIT = 12

WARNING_NAMES = (
    "cell_voltage_high", "cell_voltage_low", "pack_voltage_high", "pack_voltage_low",
    "charge_current_high", "discharge_current_high", "battery_temperature_high",
    "battery_temperature_low", "env_temperature_high", "env_temperature_low",
    "mosfet_temperature_high", "soc_low",
)  # fmt: skip
PROTECTION_NAMES = (
    "cell_voltage_high", "cell_voltage_low", "pack_voltage_high", "pack_voltage_low",
    "short_circuit", "overcurrent", "charge_temperature_high", "charge_temperature_low",
    "discharge_temperature_high", "discharge_temperature_low",
)  # fmt: skip
FAULT_STATUS_NAMES = (
    "communication_fault", "temperature_sensor_fault", None, None, None, None, None, None,
    "charging", "discharging", "charge_mosfet_on", "discharge_mosfet_on", "charge_current_limited",
)  # fmt: skip

# Every row is marked against the original firmware (d4rkmen/virtual-bms src/bms.c,
# reference deye-byd-modbus.md 2.4): [ORIGINAL] does what it does, [CHANGED: why]
# departs from it, [INFER] has no counterpart there.  docs/alarms.md lists the same.
# A DEYE inverter stops charging or discharging on a protection bit and shows a
# warning bit; so a condition the battery acts on must reach a protection bit,
# one it only reports a warning bit.

# BYD alarm_state -> DEYE warning (section 2.3 bit table).
BYD_ALARM_TO_DEYE = (
    (0, WARNING, W_PACK_HIGH),  # [ORIGINAL]
    # [CHANGED: one B-Plus module is the whole battery of its slot, so its module-voltage alarm is
    # the slot's pack-voltage alarm; the original dropped bits 1 and 4]
    (1, WARNING, W_PACK_HIGH),
    (2, WARNING, W_CELL_HIGH),  # [ORIGINAL]
    (3, WARNING, W_PACK_LOW),  # [ORIGINAL]
    (4, WARNING, W_PACK_LOW),  # [CHANGED: see bit 1]
    (5, WARNING, W_CELL_LOW),  # [ORIGINAL]
    (6, WARNING, W_CHARGE_CURRENT),  # [ORIGINAL]
    (7, WARNING, W_DISCHARGE_CURRENT),  # [ORIGINAL]
    (8, WARNING, W_TEMP_HIGH),  # [ORIGINAL]
    (9, WARNING, W_TEMP_HIGH),  # [ORIGINAL]
    (10, WARNING, W_TEMP_LOW),  # [ORIGINAL]
    (11, WARNING, W_TEMP_LOW),  # [ORIGINAL]
    (12, WARNING, W_SOC_LOW),  # [ORIGINAL]
    # [CHANGED: the original drops the short-circuit alarms; DEYE has no short-circuit warning, the
    # nearest is the current warning of the same direction, and a warning only informs]
    (14, WARNING, W_DISCHARGE_CURRENT),
    (15, None, None),  # [ORIGINAL] reverse connection: no DEYE warning
    (16, None, None),  # [ORIGINAL] cycles high: informational
    # [CHANGED: the original sets "MOSFET temperature high" for the low-temperature overcharge alarms,
    # the opposite condition on another part; a low battery temperature is DEYE's battery-temp-low]
    (17, WARNING, W_TEMP_LOW),
    (18, WARNING, W_TEMP_LOW),  # [CHANGED: see bit 17]
    (19, WARNING, W_CHARGE_CURRENT),  # [CHANGED: see bit 14]
)

# BYD protect_state -> DEYE protection (same bit table).  The original raises no
# warning from protect_state; neither does this.
BYD_PROTECT_TO_DEYE = (
    (0, PROTECTION, P_PACK_HIGH),  # [ORIGINAL]
    (1, PROTECTION, P_PACK_HIGH),  # [CHANGED: module = the slot's pack, see BYD_ALARM_TO_DEYE bit 1]
    (2, PROTECTION, P_CELL_HIGH),  # [ORIGINAL]
    (3, PROTECTION, P_PACK_LOW),  # [ORIGINAL]
    (4, PROTECTION, P_PACK_LOW),  # [CHANGED: see bit 1]
    (5, PROTECTION, P_CELL_LOW),  # [ORIGINAL]
    (6, PROTECTION, P_OVERCURRENT),  # [ORIGINAL]
    (7, PROTECTION, P_OVERCURRENT),  # [ORIGINAL]
    (8, PROTECTION, P_CHARGE_TEMP_HIGH),  # [ORIGINAL]
    (9, PROTECTION, P_DISCHARGE_TEMP_HIGH),  # [ORIGINAL]
    (10, PROTECTION, P_CHARGE_TEMP_LOW),  # [ORIGINAL]
    (11, PROTECTION, P_DISCHARGE_TEMP_LOW),  # [ORIGINAL]
    # [CHANGED: the module has stopped discharging; the original does not tell the inverter, which
    # keeps drawing until the module cuts off.  DEYE has no SOC protection bit: cell-low stops discharge]
    (12, PROTECTION, P_CELL_LOW),
    (14, PROTECTION, P_SHORT_CIRCUIT),  # [ORIGINAL]
    # [CHANGED: a reverse-connected module delivers nothing; the original drops it; DEYE has no
    # matching protection bit, so the generic fault bit]
    (15, FAULT, F_COMMUNICATION),
    (16, None, None),  # [ORIGINAL] cycles high: informational
    # [CHANGED: the module has stopped charging because it is too cold; the original drops it]
    (17, PROTECTION, P_CHARGE_TEMP_LOW),
    (18, PROTECTION, P_CHARGE_TEMP_LOW),  # [CHANGED: see bit 17]
    (19, PROTECTION, P_SHORT_CIRCUIT),  # [ORIGINAL]
)

# BYD fail_state -> DEYE fault: temperature sensor on its bit, every other
# failure on bit 0 as the original firmware did (DEYE has no other fault bit).
BYD_FAIL_TO_DEYE = (
    (0, FAULT, F_COMMUNICATION),  # [ORIGINAL] voltage sensor
    (1, FAULT, F_TEMP_SENSOR),  # [ORIGINAL]
    (2, FAULT, F_COMMUNICATION),  # [ORIGINAL] charge MOSFET
    (3, FAULT, F_COMMUNICATION),  # [ORIGINAL] discharge MOSFET
    (4, FAULT, F_COMMUNICATION),  # [ORIGINAL] cell broken
    (5, FAULT, F_COMMUNICATION),  # [ORIGINAL] heater
    (7, None, None),  # [ORIGINAL] panel switch off: someone switched the module off, nothing failed
    (8, FAULT, F_COMMUNICATION),  # [ORIGINAL] charge circuit
)
# BYD reports no environment-temperature alarm: the original raises the DEYE
# environment warnings from the ambient sensor (cell_temp[4]) above 50.0 degC
# and below -10.0 degC (strictly); [ORIGINAL].
BYD_ENV_HIGH_DDEGC = 500
BYD_ENV_LOW_DDEGC = -100
# Protection bits that block charging / discharging (for the MOSFET status bits).
BYD_CHARGE_BLOCKING = (
    (1 << 0) | (1 << 1) | (1 << 2) | (1 << 6) | (1 << 8) | (1 << 10) | (1 << 17) | (1 << 18) | (1 << 19)
)
BYD_DISCHARGE_BLOCKING = (1 << 3) | (1 << 4) | (1 << 5) | (1 << 7) | (1 << 9) | (1 << 11) | (1 << 12) | (1 << 14)

# JK02 error word (jk-protocols.md 5.1).  JK names most bits "protection": the
# BMS has opened its MOSFET.  As the original does, such a bit sets the DEYE
# protection bit (the inverter stops) and the matching warning bit (the inverter
# shows why).  DEYE has no short-circuit warning: those set protection only,
# as in the original.  The original reads the word as 16 bits: bits 16..28 are
# [INFER], following the same rule.
JK_ERROR_TO_DEYE = (
    # [ORIGINAL] balance-wire resistance: like a cell-count mismatch or a current-sensor error, the
    # BMS's own measurements cannot be trusted; DEYE's only generic fault bit is bit 0
    (0, FAULT, F_COMMUNICATION),
    (1, WARNING, W_MOSFET_HIGH),  # [ORIGINAL]
    (2, FAULT, F_COMMUNICATION),  # [ORIGINAL] cell count mismatch
    (3, FAULT, F_COMMUNICATION),  # [ORIGINAL] current sensor
    (4, WARNING, W_CELL_HIGH),  # [ORIGINAL] cell over-voltage protection
    (4, PROTECTION, P_CELL_HIGH),  # [ORIGINAL]
    (5, WARNING, W_PACK_HIGH),  # [ORIGINAL]
    (5, PROTECTION, P_PACK_HIGH),  # [ORIGINAL]
    (6, WARNING, W_CHARGE_CURRENT),  # [ORIGINAL]
    (6, PROTECTION, P_OVERCURRENT),  # [ORIGINAL]
    (7, PROTECTION, P_SHORT_CIRCUIT),  # [ORIGINAL] charge short circuit
    (8, WARNING, W_TEMP_HIGH),  # [ORIGINAL]
    (8, PROTECTION, P_CHARGE_TEMP_HIGH),  # [ORIGINAL]
    (9, WARNING, W_TEMP_LOW),  # [ORIGINAL]
    (9, PROTECTION, P_CHARGE_TEMP_LOW),  # [ORIGINAL]
    (10, FAULT, F_COMMUNICATION),  # [ORIGINAL] coprocessor communication
    (11, WARNING, W_CELL_LOW),  # [ORIGINAL]
    (11, PROTECTION, P_CELL_LOW),  # [ORIGINAL]
    (12, WARNING, W_PACK_LOW),  # [ORIGINAL]
    (12, PROTECTION, P_PACK_LOW),  # [ORIGINAL]
    (13, WARNING, W_DISCHARGE_CURRENT),  # [ORIGINAL]
    (13, PROTECTION, P_OVERCURRENT),  # [ORIGINAL]
    (14, PROTECTION, P_SHORT_CIRCUIT),  # [ORIGINAL] discharge short circuit
    (15, WARNING, W_TEMP_HIGH),  # [ORIGINAL]
    (15, PROTECTION, P_DISCHARGE_TEMP_HIGH),  # [ORIGINAL]
    (16, FAULT, F_COMMUNICATION),  # [INFER] charge MOSFET abnormal
    (17, FAULT, F_COMMUNICATION),  # [INFER] discharge MOSFET abnormal
    (18, None, None),  # [INFER] GPS disconnected: no DEYE meaning
    (19, None, None),  # [INFER] modify password in time: no DEYE meaning
    (20, FAULT, F_COMMUNICATION),  # [INFER] discharge on failed
    (21, WARNING, W_TEMP_HIGH),  # [INFER] battery over-temperature alarm (an alarm, not a protection)
    (22, FAULT, F_TEMP_SENSOR),  # [INFER]
    (23, FAULT, F_COMMUNICATION),  # [INFER] parallel current-limit module anomaly
    (24, PROTECTION, P_SHORT_CIRCUIT),  # [INFER] SCP release failed
    (25, WARNING, W_DISCHARGE_CURRENT),  # [INFER] discharge OCP II
    (25, PROTECTION, P_OVERCURRENT),  # [INFER]
    (26, WARNING, W_DISCHARGE_CURRENT),  # [INFER] discharge OCP III
    (26, PROTECTION, P_OVERCURRENT),  # [INFER]
    # [INFER] discharge under-temperature: a protection (logbook 0x48 "discharge UT protection",
    # thresholds discharge_utp_degc in the settings frame)
    (27, WARNING, W_TEMP_LOW),
    (27, PROTECTION, P_DISCHARGE_TEMP_LOW),  # [INFER]
    (28, None, None),  # [INFER] GPS remote lock: no DEYE meaning
)

# 4E57 warning word (jk-protocols.md 10.3).  The original has no 4E57 support:
# every row is [INFER], with the JK02 rule (a protection sets the protection bit
# and the matching warning bit).
JK4E57_WARNING_TO_DEYE = (
    (0, WARNING, W_SOC_LOW),  # low capacity
    (1, WARNING, W_MOSFET_HIGH),
    (2, WARNING, W_PACK_HIGH),  # charge over-voltage
    (2, PROTECTION, P_PACK_HIGH),
    (3, WARNING, W_PACK_LOW),  # discharge under-voltage
    (3, PROTECTION, P_PACK_LOW),
    (4, WARNING, W_TEMP_HIGH),  # battery over-temperature
    (4, PROTECTION, P_CHARGE_TEMP_HIGH),
    (5, WARNING, W_CHARGE_CURRENT),
    (5, PROTECTION, P_OVERCURRENT),
    (6, WARNING, W_DISCHARGE_CURRENT),
    (6, PROTECTION, P_OVERCURRENT),
    (7, WARNING, W_CELL_HIGH),  # cell voltage difference
    (8, WARNING, W_ENV_HIGH),  # box over-temperature
    (9, WARNING, W_TEMP_LOW),  # battery under-temperature
    (9, PROTECTION, P_CHARGE_TEMP_LOW),
    (10, WARNING, W_CELL_HIGH),
    (10, PROTECTION, P_CELL_HIGH),
    (11, WARNING, W_CELL_LOW),
    (11, PROTECTION, P_CELL_LOW),
    (12, None, None),  # 309_A protection: meaning unknown
    (13, None, None),  # 309_B protection: meaning unknown
)


def translate(bits, table):
    """Source bits -> (warning, protection, fault) words through a table."""
    words = {WARNING: 0, PROTECTION: 0, FAULT: 0}
    for source_bit, word, deye_bit in table:
        if word is not None and bits >> source_bit & 1:
            words[word] |= 1 << deye_bit
    return words[WARNING], words[PROTECTION], words[FAULT]


class Reading:
    """A normalized battery reading (see the module docstring for units)."""

    __slots__ = (
        "source",
        "pack_voltage_mv",
        "current_ma",
        "remaining_mah",
        "full_charge_mah",
        "design_mah",
        "soc_permille",
        "soh_permille",
        "cycle_count",
        "cell_voltages_mv",
        "cell_temps_ddegc",
        "env_temp_ddegc",
        "mosfet_temp_ddegc",
        "warning",
        "protection",
        "fault",
        "charge_enabled",
        "discharge_enabled",
        "max_charge_current_ma",
        "soc_estimated",
    )

    def __init__(self, source):
        self.source = source
        self.pack_voltage_mv = None
        self.current_ma = None
        self.remaining_mah = None
        self.full_charge_mah = None
        self.design_mah = None
        self.soc_permille = None
        self.soh_permille = None
        self.cycle_count = None
        self.cell_voltages_mv = ()
        self.cell_temps_ddegc = ()
        self.env_temp_ddegc = None
        self.mosfet_temp_ddegc = None
        self.warning = 0
        self.protection = 0
        self.fault = 0
        self.charge_enabled = None
        self.discharge_enabled = None
        self.max_charge_current_ma = None
        self.soc_estimated = False  # True when soc_permille comes from estimate_soc, not the BMS

    # Aggregates over what exists: no reading past the cells a source has.
    def cell_max_mv(self):
        return max(self.cell_voltages_mv) if self.cell_voltages_mv else None

    def cell_min_mv(self):
        return min(self.cell_voltages_mv) if self.cell_voltages_mv else None

    def temp_max_ddegc(self):
        return max(self.cell_temps_ddegc) if self.cell_temps_ddegc else None

    def temp_min_ddegc(self):
        return min(self.cell_temps_ddegc) if self.cell_temps_ddegc else None

    def temp_avg_ddegc(self):
        temps = self.cell_temps_ddegc
        if not temps:
            return None
        total = sum(temps)
        count = len(temps)
        # round half away from zero, identical on every port
        return (2 * total + count) // (2 * count) if total >= 0 else -((-2 * total + count) // (2 * count))

    def status_bits(self):
        """The DEYE 0x1007 high byte: charging/discharging and MOSFET states."""
        bits = 0
        if self.current_ma is not None:
            if self.current_ma > 0:
                bits |= 1 << S_CHARGING
            elif self.current_ma < 0:
                bits |= 1 << S_DISCHARGING
        if self.charge_enabled:
            bits |= 1 << S_CHARGE_MOSFET
        if self.discharge_enabled:
            bits |= 1 << S_DISCHARGE_MOSFET
        return bits

    def as_dict(self):
        result = {}
        for name in Reading.__slots__:
            value = getattr(self, name)
            result[name] = list(value) if isinstance(value, tuple) else value
        return result


def from_byd(fields, design_mah=50000):
    """A BYD PRO data block (byd.decode_response(...).fields) to a Reading.

    BYD reports SOC and SOH as whole percent and no capacity: a B-Plus 2.5
    module is 50 Ah (design_mah); remaining and full-charge capacity follow
    from SOC and SOH.
    """
    reading = Reading("byd_pro")
    reading.pack_voltage_mv = fields["pack_voltage_mv"]
    reading.current_ma = fields["current_ma"]
    soc = clamp(fields["soc_pct"], 0, 100)
    soh = clamp(fields["soh_pct"], 0, 100)
    reading.soc_permille = soc * 10
    reading.soh_permille = soh * 10
    reading.design_mah = design_mah
    reading.full_charge_mah = design_mah * soh // 100
    reading.remaining_mah = reading.full_charge_mah * soc // 100
    reading.cycle_count = fields["discharge_times"]
    reading.cell_voltages_mv = tuple(mv for mv in fields["cell_voltages_mv"] if mv > 0)
    temps = fields["cell_temps_degc"]
    reading.cell_temps_ddegc = tuple(10 * t for t in temps[0:4])
    reading.env_temp_ddegc = 10 * temps[4]
    # BYD reports no MOSFET sensor; the original firmware used cell_temp[0]. Report none.
    reading.mosfet_temp_ddegc = None
    warning, protection, fault = translate(fields["alarm_state"], BYD_ALARM_TO_DEYE)
    more = translate(fields["protect_state"], BYD_PROTECT_TO_DEYE)
    fail = translate(fields["fail_state"], BYD_FAIL_TO_DEYE)
    if reading.env_temp_ddegc > BYD_ENV_HIGH_DDEGC:
        warning |= 1 << W_ENV_HIGH
    if reading.env_temp_ddegc < BYD_ENV_LOW_DDEGC:
        warning |= 1 << W_ENV_LOW
    reading.warning = warning | more[0] | fail[0]
    reading.protection = protection | more[1] | fail[1]
    reading.fault = fault | more[2] | fail[2]
    reading.charge_enabled = not fields["protect_state"] & BYD_CHARGE_BLOCKING
    reading.discharge_enabled = not fields["protect_state"] & BYD_DISCHARGE_BLOCKING
    return reading


# JK cell-info temperatures that are battery (cell) temperatures, with their bit
# in temp_sensor_mask.  temp3_ddegc (JK02_32S byte 254) is decoded but is not
# one: on real frames it repeats the MOSFET temperature (reference frames R02
# and B19: 20.3 and 12.9 degC at both 144 and 254; jk-protocols.md 5.3;
# dbus-serialbattery's JKBMS-PB notes: "identical to [144] (MOS temp
# duplicate)", and its driver leaves it out).
JK_CELL_TEMPERATURES = ((1, "temp1_ddegc"), (2, "temp2_ddegc"), (4, "temp4_ddegc"), (5, "temp5_ddegc"))


def from_jk(cell_info, settings=None):
    """A decoded JK cell-info frame (jk_frames.decode_frame) to a Reading.

    settings, a decoded settings frame, supplies the design capacity and the
    charge current limit when known.  JK04 frames carry no current, SOC or
    temperatures: those stay None (estimate_soc can fill the SOC in).
    """
    reading = Reading("jk")
    reading.pack_voltage_mv = cell_info["pack_voltage_mv"]
    reading.current_ma = cell_info["current_ma"]
    reading.remaining_mah = cell_info["remaining_capacity_mah"]
    reading.full_charge_mah = cell_info["full_charge_capacity_mah"]
    if cell_info["soc_pct"] is not None:
        reading.soc_permille = clamp(cell_info["soc_pct"], 0, 100) * 10
    if cell_info["soh_pct"] is not None:
        reading.soh_permille = clamp(cell_info["soh_pct"], 0, 100) * 10
    reading.cycle_count = cell_info["cycle_count"]
    reading.cell_voltages_mv = tuple(cell_info["cell_voltages_mv"])
    # bit1 = T1 ... bit5 = T5 present (jk-protocols.md section 5; 24S frames say 0x07).
    sensor_mask = cell_info.get("temp_sensor_mask") or 0
    temps = []
    for bit, name in JK_CELL_TEMPERATURES:
        if sensor_mask >> bit & 1 and cell_info.get(name) is not None:
            temps.append(cell_info[name])
    reading.cell_temps_ddegc = tuple(temps)
    reading.mosfet_temp_ddegc = cell_info.get("mosfet_temp_ddegc")
    errors = cell_info["errors"] or 0
    reading.warning, reading.protection, reading.fault = translate(errors, JK_ERROR_TO_DEYE)
    reading.charge_enabled = cell_info.get("charge_mosfet_on")
    reading.discharge_enabled = cell_info.get("discharge_mosfet_on")
    if settings is not None:
        reading.design_mah = settings.get("nominal_capacity_mah")
        reading.max_charge_current_ma = settings.get("max_charge_current_ma")
    return reading


def from_jk_4e57(response):
    """A decoded 4E57 read-all response (jk_4e57.decode_response) to a Reading."""
    reading = Reading("jk_4e57")
    reading.pack_voltage_mv = response.get("pack_voltage_mv")
    reading.current_ma = response.get("current_ma")
    if response.get("soc_pct") is not None:
        reading.soc_permille = clamp(response["soc_pct"], 0, 100) * 10
    reading.cycle_count = response.get("cycle_count")
    reading.cell_voltages_mv = tuple(response.get("cell_voltages_mv", ()))
    temps = []
    for name in ("box_temp_degc", "battery_temp_degc"):
        if response.get(name) is not None:
            temps.append(10 * response[name])
    reading.cell_temps_ddegc = tuple(temps)
    if response.get("mosfet_temp_degc") is not None:
        reading.mosfet_temp_ddegc = 10 * response["mosfet_temp_degc"]
    capacity_ah = response.get("capacity_setting_ah")
    if capacity_ah is not None:
        reading.design_mah = capacity_ah * 1000
        reading.full_charge_mah = reading.design_mah
        if reading.soc_permille is not None:
            reading.remaining_mah = reading.design_mah * reading.soc_permille // 1000
    reading.warning, reading.protection, reading.fault = translate(response.get("warnings", 0), JK4E57_WARNING_TO_DEYE)
    status = response.get("status")
    if status is not None:
        reading.charge_enabled = bool(status & 1)
        reading.discharge_enabled = bool(status & 2)
    return reading
