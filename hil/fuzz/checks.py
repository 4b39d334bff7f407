"""What the live campaigns hold a device under test to, besides the oracle (hil/fuzz/grammar.py expect).

Evidence: when each slot's module last delivered a reading the device under test could
use, from the simulated devices themselves (never from the device under test), and from
the campaign's own valid replies and intact notifications.  A unit must answer when a
reading came well within app.stale_s, and must be silent when none came for longer.

Checker: register values against the battery models (the right slot, within the
scenarios' tolerances), reserved registers and the configured charge voltage, and an
identity's layout (reference 1.3.1) and stability.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from . import grammar

if TYPE_CHECKING:
    from simulators.byd.device import BydModule
    from simulators.jk.device import JkBms

    from .wire import World

ANSWER_MARGIN_S = 1.0  # evidence must be this much inside the staleness limit to require an answer
ARRIVAL_S = {"rs485": 0.5, "ble": 1.5}  # evidence is this old before the device under test can have used it
SILENT_MARGIN_S = 2.0  # no evidence for stale_s plus this: the unit must be silent
BLE_RECOVERY_S = 45.0  # after a BLE starvation, the time the device under test has to be back
TOLERANCES = {"pack_voltage_mv": 100, "soc_permille": 10, "cell_max_mv": 20, "cell_min_mv": 20}


class Evidence:
    """When each slot's module last delivered a reading the device under test could use.

    sure(slot, t): a reading it must have taken; possible(slot, t): one it may have taken.
    A monitor thread samples the simulated devices' own counters; the campaign adds its own
    replies and notifications.
    """

    def __init__(self, stale_s: float, kinds: Mapping[int, str], started_s: float) -> None:
        self.stale_s = stale_s
        self.kinds = kinds  # slot -> "rs485" or "ble"
        self._sure: dict[int, collections.deque[float]] = {slot: collections.deque(maxlen=256) for slot in kinds}
        self._possible = {slot: collections.deque([started_s], maxlen=256) for slot in kinds}
        # slot -> time before which an answer is not required (BLE reconnecting)
        self.grace_until: dict[int, float] = {}
        self.lock = threading.Lock()
        self._sources: list[tuple[int, Callable[..., int | None], list[int | None]]] = []  # slot, counter, last
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def sure(self, slot: int, t_s: float) -> None:
        with self.lock:
            self._sure[slot].append(t_s)
            self._possible[slot].append(t_s)

    def possible(self, slot: int, t_s: float) -> None:
        with self.lock:
            self._possible[slot].append(t_s)

    def watch(self, slot: int, counter: Callable[..., int | None]) -> None:  # ...: a lambda binds a device by default
        """counter() grows by one or more each time the slot's module delivers a reading."""
        self._sources.append((slot, counter, [counter()]))

    def start(self, thread: bool = True) -> None:
        if thread:
            self._thread = threading.Thread(target=self._monitor, name="fuzz-evidence", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)

    def _monitor(self) -> None:
        while not self._stop.wait(0.02):
            self.sample(time.monotonic())

    def sample(self, now: float) -> None:
        """Look at the devices' counters once (the monitor thread does, every 20 ms; a simulated-time
        world after each step)."""
        for slot, counter, last in self._sources:
            value = counter()
            if value is not None and value != last[0]:
                self.sure(slot, now)
            last[0] = value

    def must_answer(self, slot: int, t_s: float) -> bool:
        if slot not in self._sure or t_s < self.grace_until.get(slot, 0.0):
            return False
        arrival = ARRIVAL_S[self.kinds[slot]]
        with self.lock:
            return any(t_s - self.stale_s + ANSWER_MARGIN_S <= e <= t_s - arrival for e in self._sure[slot])

    def must_be_silent(self, slot: int, t_s: float) -> bool:
        if slot not in self._possible:
            return True
        with self.lock:
            return not any(e >= t_s - self.stale_s - SILENT_MARGIN_S for e in self._possible[slot])


class Checker:
    """Register values against the battery models, identities against their layout and first sighting."""

    def __init__(self, sim: World, float_voltage_mv: Mapping[int, int]) -> None:
        self.sim = sim
        self.specs = {spec.slot: spec for spec in sim.bench.batteries}
        self.float_voltage_mv = float_voltage_mv  # slot -> configured charge voltage
        self.identities: dict[int, bytes] = {}  # unit -> the identity data first seen

    def model_fields(self, slot: int) -> dict[str, int]:
        battery = self.sim.batteries[slot]
        cells = battery.cell_voltages_mv()
        fields = {"pack_voltage_mv": battery.pack_voltage_mv, "cell_max_mv": max(cells), "cell_min_mv": min(cells)}
        spec = self.specs[slot]
        if not (spec.type == "jk_ble" and spec.layout == "JK04"):  # JK04 carries no SOC: the VBMS estimates one
            fields["soc_permille"] = battery.soc_permille
        return fields

    @staticmethod
    def shown_fields(address: int, values: Sequence[int]) -> tuple[dict[int, int], dict[str, int]]:
        """The fields a read shows (reference 1.3.2 scaling), by register."""
        registers = {address + index: value for index, value in enumerate(values)}
        shown: dict[str, int] = {}
        for register, name, factor in ((0x1000, "pack_voltage_mv", 10), (0x1008, "soc_permille", 1),
                                       (0x100D, "cell_max_mv", 1), (0x100E, "cell_min_mv", 1)):  # fmt: skip
            if register in registers:
                shown[name] = registers[register] * factor
        return registers, shown

    def registers(self, unit: int, address: int, values: Sequence[int]) -> str | None:
        """None, or what is wrong with these values for this unit."""
        registers, shown = self.shown_fields(address, values)
        for register in grammar.RESERVED_REGISTERS:
            if registers.get(register, 0) != 0:
                return "reserved register %04X reads %d, not 0" % (register, registers[register])
        if 0x1014 in registers and registers[0x1014] * 10 != self.float_voltage_mv.get(unit, registers[0x1014] * 10):
            return "charge voltage %d mV, configured %d mV" % (registers[0x1014] * 10, self.float_voltage_mv[unit])
        if unit not in self.sim.batteries:
            return "unit %d has no battery on this bench" % unit
        own = self.model_fields(unit)
        for name, value in shown.items():
            if name in own and abs(value - own[name]) > TOLERANCES[name]:
                return "%s %d, battery model of slot %d has %d (tolerance %d)" % (
                    name, value, unit, own[name], TOLERANCES[name])  # fmt: skip
        own_distance = self._distance(shown, own)
        for slot in self.sim.batteries:
            if slot == unit:
                continue
            other = self.model_fields(slot)
            if self._distance(shown, other) < own_distance:
                return "values closer to slot %d's battery than to slot %d's: %s" % (slot, unit, shown)
        return None

    @staticmethod
    def _distance(shown: Mapping[str, int], model: Mapping[str, int]) -> float:
        common = [name for name in shown if name in model]
        return sum(abs(shown[name] - model[name]) / TOLERANCES[name] for name in common)

    def identity(self, unit: int, data: bytes) -> str | None:
        fields = grammar.identity_fields(data)
        if fields is None:
            return "identity %s does not have the layout model*SW*HW*serial*" % data.hex()
        known = self.identities.setdefault(unit, data)
        if known != data:
            return "identity %r changed; it was %r" % (fields, grammar.identity_fields(known))
        return None


def delivered_count(device: BydModule | JkBms) -> int | None:
    """A simulated RS485 module's count of readings sent (None while a failure is set): a BYD module answers
    every poll of its address (requests), a JK one builds a frame for each answer (counter)."""
    if device.failure is not None:
        return None
    return device.requests if hasattr(device, "requests") else device.counter
