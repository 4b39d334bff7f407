"""A battery pack model shared by every simulated BMS; advanced by simulated time.

advance(dt_s, current_ma) moves the pack forward: positive current charges.
The model limits the current the way a BMS does (a protection opens the
charge or discharge path) and reports generic warning and protection flags;
each device maps them to its own alarm bits.

Physics, kept simple but plausible:
- open-circuit voltage from SOC by a chemistry table, per cell, with a seeded
  spread of capacity and voltage offsets (so cells differ a little);
- terminal voltage = OCV + I * R_internal;
- temperature with a thermal lag toward ambient plus I^2 R heating;
- SOC by coulomb counting against the aged capacity; cycles from discharged
  charge; SOH fades by a small amount per cycle.
"""

import bisect
import random
from typing import TypedDict, TypeVar

# (SOC permille, cell mV) breakpoints; linear in between.  Past 1000 a cell
# that is still pushed overshoots steeply (the BMS's over-voltage protection
# is what stops it); charge is allowed up to OVERCHARGE_PERMILLE.
OCV_TABLES = {
    "LFP": ((0, 2500), (50, 3000), (100, 3200), (200, 3250), (300, 3275), (500, 3300), (700, 3320),
            (900, 3340), (950, 3380), (990, 3450), (1000, 3550), (1010, 3680), (1020, 3850)),
    "NMC": ((0, 3000), (100, 3450), (300, 3600), (500, 3700), (700, 3850), (900, 4050), (1000, 4200),
            (1010, 4280), (1020, 4400)),
    "LTO": ((0, 1800), (100, 2150), (500, 2300), (900, 2450), (1000, 2700), (1010, 2820), (1020, 2950)),
}  # fmt: skip
OVERCHARGE_PERMILLE = 1020
_Current = TypeVar("_Current", int, float)  # a current in mA: whole for the BMS's own, a mean may be fractional


class CellLimits(TypedDict):
    """One chemistry's cell limits, mV: protections as (trip, recover), warnings as a threshold."""

    ovp: tuple[int, int]
    uvp: tuple[int, int]
    ov_warn: int
    uv_warn: int


# Protection thresholds per chemistry: (trip, recover) in mV.
CELL_LIMITS: dict[str, CellLimits] = {
    "LFP": {"ovp": (3650, 3450), "uvp": (2600, 2900), "ov_warn": 3550, "uv_warn": 2900},
    "NMC": {"ovp": (4250, 4100), "uvp": (2900, 3200), "ov_warn": 4180, "uv_warn": 3200},
    "LTO": {"ovp": (2800, 2650), "uvp": (1700, 1900), "ov_warn": 2750, "uv_warn": 1900},
}

FLAGS = (
    "cell_overvoltage",
    "cell_undervoltage",
    "pack_overvoltage",
    "pack_undervoltage",
    "charge_overcurrent",
    "discharge_overcurrent",
    "charge_overtemperature",
    "charge_undertemperature",
    "discharge_overtemperature",
    "discharge_undertemperature",
    "mosfet_overtemperature",
    "soc_low",
)
CHARGE_BLOCKING = (
    "cell_overvoltage",
    "pack_overvoltage",
    "charge_overcurrent",
    "charge_overtemperature",
    "charge_undertemperature",
)
DISCHARGE_BLOCKING = (
    "cell_undervoltage",
    "pack_undervoltage",
    "discharge_overcurrent",
    "discharge_overtemperature",
    "discharge_undertemperature",
)


# the segments' upper SOC ends per chemistry, for a binary search of the table
_OCV_ENDS = {chemistry: [soc for soc, _ in table[1:]] for chemistry, table in OCV_TABLES.items()}


def ocv_mv(chemistry: str, soc_permille: float) -> float:
    table = OCV_TABLES[chemistry]
    soc = min(max(soc_permille, 0), OVERCHARGE_PERMILLE)
    index = bisect.bisect_left(_OCV_ENDS[chemistry], soc)  # the first segment that ends at or above soc
    if index >= len(table) - 1:
        return table[-1][1]
    (soc_a, mv_a), (soc_b, mv_b) = table[index], table[index + 1]
    return mv_a + (mv_b - mv_a) * (soc - soc_a) / (soc_b - soc_a)


class BatteryModel:
    """A pack; its state changes only through advance(), so what is derived from it (cell
    voltages, SOC, warnings) is computed once per step, however often devices read it."""

    def __init__(
        self,
        cells: int = 16,
        capacity_mah: int = 50_000,
        chemistry: str = "LFP",
        soc_permille: float = 800,
        soh_permille: float = 1000,
        cycles: int = 0,
        internal_resistance_mohm: float = 2.0,
        cell_spread_mv: float = 8,
        ambient_ddegc: float = 250,
        thermal_time_constant_s: float = 1800.0,
        max_charge_current_ma: int = 50_000,
        max_discharge_current_ma: int = 100_000,
        seed: int = 0,
    ) -> None:
        if chemistry not in OCV_TABLES:
            raise ValueError("unknown chemistry %r; choose one of %s" % (chemistry, ", ".join(OCV_TABLES)))
        if not 1 <= cells <= 32:
            raise ValueError("a pack has 1..32 cells, not %r" % (cells,))
        if capacity_mah <= 0:
            raise ValueError("capacity must be positive")
        generator = random.Random(seed)
        self.chemistry = chemistry
        self.cells = cells
        self.design_mah = capacity_mah
        self.soh = soh_permille / 1000
        self.cycles = cycles
        self.discharged_mah = 0.0
        self.resistance_ohm = internal_resistance_mohm / 1000  # per cell
        self.cell_capacity_factor = [1 + generator.uniform(-0.01, 0.01) for _ in range(cells)]
        self.cell_offset_mv = [generator.uniform(-cell_spread_mv / 2, cell_spread_mv / 2) for _ in range(cells)]
        self.charge_mah = [capacity_mah * self.soh * f * soc_permille / 1000 for f in self.cell_capacity_factor]
        self.ambient_c = ambient_ddegc / 10
        self.temperature_c = self.ambient_c
        self.mosfet_c = self.ambient_c
        self.tau_s = thermal_time_constant_s
        self.max_charge_current_ma = max_charge_current_ma
        self.max_discharge_current_ma = max_discharge_current_ma
        self.current_ma = 0
        self.limits = CELL_LIMITS[chemistry]
        self.protections: set[str] = set()
        self.forced: set[str] = set()  # flags raised on request (failure injection)
        self.charge_enabled = True
        self.discharge_enabled = True
        self._step = 0  # advance() counts its steps: the derived values below belong to one
        self._cells_step: int | None = None
        self._cells: list[int] = []
        self._soc_step: int | None = None
        self._soc = 0
        self._warnings_step: int | None = None
        self._warnings: set[str] = set()
        self._limits_soh: float | None = None
        self._limits_mah: list[float] = []

    # --- state ----------------------------------------------------------------

    @property
    def steps(self) -> int:
        """How many times advance() ran: the model's state changes there only."""
        return self._step

    @property
    def full_mah(self) -> float:
        return self.design_mah * self.soh

    def cell_soc_permille(self, index: int) -> float:
        return 1000 * self.charge_mah[index] / (self.full_mah * self.cell_capacity_factor[index])

    @property
    def soc_permille(self) -> int:
        if self._soc_step != self._step:
            charge = 1000 * sum(self.charge_mah) / sum(self.full_mah * f for f in self.cell_capacity_factor)
            self._soc = min(round(charge), 1000)
            self._soc_step = self._step
        return self._soc

    @property
    def remaining_mah(self) -> int:
        return round(self.full_mah * self.soc_permille / 1000)

    def cell_voltages_mv(self) -> list[int]:
        # Computed once per step: frames ask for them many times between two advance() calls.
        if self._cells_step != self._step:
            self._cells = self._cell_voltages()
            self._cells_step = self._step
        return list(self._cells)

    def _cell_voltages(self) -> list[int]:
        """ocv_mv(chemistry, cell_soc_permille(i)) + offset + I * R per cell, with the table look-up inlined."""
        drop = self.current_ma / 1000 * self.resistance_ohm * 1000
        table = OCV_TABLES[self.chemistry]
        ends = _OCV_ENDS[self.chemistry]
        last = len(table) - 1
        full_mah = self.full_mah
        cells = []
        for charge, factor, offset in zip(self.charge_mah, self.cell_capacity_factor, self.cell_offset_mv, strict=True):
            soc = min(max(1000 * charge / (full_mah * factor), 0), OVERCHARGE_PERMILLE)
            index = bisect.bisect_left(ends, soc)
            mv: float
            if index >= last:
                mv = table[-1][1]
            else:
                (soc_a, mv_a), (soc_b, mv_b) = table[index], table[index + 1]
                mv = mv_a + (mv_b - mv_a) * (soc - soc_a) / (soc_b - soc_a)
            cells.append(round(mv + offset + drop))
        return cells

    @property
    def pack_voltage_mv(self) -> int:
        self.cell_voltages_mv()
        return sum(self._cells)

    def temperatures_ddegc(self, sensors: int = 2) -> list[int]:
        # sensors sit at slightly different spots of the pack
        return [round(10 * self.temperature_c) + 3 * index for index in range(sensors)]

    @property
    def mosfet_temp_ddegc(self) -> int:
        return round(10 * self.mosfet_c)

    def flags(self) -> tuple[set[str], set[str]]:
        """Warnings (soft thresholds) and protections (path opened), as sets of FLAGS names."""
        if self._warnings_step != self._step:
            self._warnings = self._soft_warnings()
            self._warnings_step = self._step
        return self._warnings | self.forced, set(self.protections) | self.forced

    def _soft_warnings(self) -> set[str]:
        self.cell_voltages_mv()
        cells = self._cells
        warnings: set[str] = set()
        if max(cells) >= self.limits["ov_warn"]:
            warnings.add("cell_overvoltage")
        if min(cells) <= self.limits["uv_warn"]:
            warnings.add("cell_undervoltage")
        if self.soc_permille < 100:
            warnings.add("soc_low")
        if self.temperature_c > 50:
            warnings.add("charge_overtemperature")
        if self.temperature_c < 5:
            warnings.add("charge_undertemperature")
        if self.current_ma > 0.9 * self.max_charge_current_ma:
            warnings.add("charge_overcurrent")
        if -self.current_ma > 0.9 * self.max_discharge_current_ma:
            warnings.add("discharge_overcurrent")
        if self.mosfet_c > 80:
            warnings.add("mosfet_overtemperature")
        return warnings

    # --- time -----------------------------------------------------------------

    def allowed_current_ma(self, requested_ma: _Current) -> _Current:
        """What the BMS lets through of a requested current."""
        if requested_ma > 0:
            return 0 if not self.charge_enabled else min(requested_ma, self.max_charge_current_ma)
        if requested_ma < 0:
            return 0 if not self.discharge_enabled else max(requested_ma, -self.max_discharge_current_ma)
        return 0

    def advance(self, dt_s: float, current_ma: int, mean_current_ma: float | None = None) -> int:
        """Move dt_s seconds forward with current_ma requested (positive charges);
        returns the current that actually flowed.

        mean_current_ma: when the requested current was not constant over those seconds
        (one long step standing for many short ones), its mean over them: the charge and
        the heat come from it, and current_ma is the one flowing at the end (what the BMS
        reports).  Each is limited by the BMS as it stands at the step's start."""
        if dt_s < 0:
            raise ValueError("time does not run backwards")
        current = self.allowed_current_ma(current_ma)
        flowed = current if mean_current_ma is None else self.allowed_current_ma(mean_current_ma)
        self.current_ma = current
        self._step += 1
        delta_mah = flowed * dt_s / 3600
        if self._limits_soh != self.soh:
            self._limits_mah = [self.full_mah * f * OVERCHARGE_PERMILLE / 1000 for f in self.cell_capacity_factor]
            self._limits_soh = self.soh
        charge = self.charge_mah
        for index, limit in enumerate(self._limits_mah):
            charge[index] = min(max(charge[index] + delta_mah, 0.0), limit)
        if flowed < 0:
            self.discharged_mah -= delta_mah
            while self.discharged_mah >= self.full_mah:
                self.discharged_mah -= self.full_mah
                self.cycles += 1
                self.soh = max(0.5, self.soh - 0.00005)  # about 20 % after 4000 cycles
        amps = flowed / 1000
        heat_c_per_s = amps * amps * self.resistance_ohm * self.cells / 2000  # ~2 kJ/K pack heat capacity
        self.temperature_c += dt_s * ((self.ambient_c - self.temperature_c) / self.tau_s + heat_c_per_s)
        self.mosfet_c += dt_s * ((self.temperature_c + abs(amps) * 0.05 - self.mosfet_c) / 300)
        self._protect()
        return current

    def _protect(self) -> None:
        self.cell_voltages_mv()
        cells = self._cells
        trip, recover = self.limits["ovp"]
        if max(cells) >= trip:
            self.protections.add("cell_overvoltage")
        elif max(cells) <= recover:
            self.protections.discard("cell_overvoltage")
        trip, recover = self.limits["uvp"]
        if min(cells) <= trip:
            self.protections.add("cell_undervoltage")
        elif min(cells) >= recover:
            self.protections.discard("cell_undervoltage")
        for flag, hot, limit in (
            ("charge_overtemperature", True, 55),
            ("discharge_overtemperature", True, 60),
            ("charge_undertemperature", False, 0),
            ("discharge_undertemperature", False, -20),
        ):
            if (self.temperature_c > limit) if hot else (self.temperature_c < limit):
                self.protections.add(flag)
            elif (self.temperature_c < limit - 5) if hot else (self.temperature_c > limit + 5):
                self.protections.discard(flag)
        active = self.protections | self.forced
        self.charge_enabled = not any(flag in active for flag in CHARGE_BLOCKING)
        self.discharge_enabled = not any(flag in active for flag in DISCHARGE_BLOCKING)
