"""What can be done to a running bench: one place for the scenarios' targets (hil/targets.py) and the
bench control (hil/bench_control.py), so an operation means the same from a step and from the page.

Each function takes the world, a bench built from a bench file: `batteries` (slot -> BatteryModel,
simulators/battery.py), `devices` (slot -> BydModule / JkBms), `buses` (name -> an RS485 bus model with
add_fault / remove_fault / clear_faults: hil/wires/rs485.py on the real-time bench, hil/wires/frame_bus.py
on the des target) and `inverter` (its `profile` a PowerProfile).  Arguments are checked by the callers;
what a device or a bus refuses raises its own error (ValueError, BusError).
"""

from collections.abc import Mapping
from typing import Any, Protocol

from simulators.battery import FLAGS, BatteryModel
from simulators.byd.device import FAILURES as BYD_FAILURES
from simulators.byd.device import BydModule
from simulators.deye.profile import PowerProfile
from simulators.jk.device import FAILURES as JK_FAILURES
from simulators.jk.device import JkBms

from .wires.faults import Fault

# The alarm words a BMS model can raise, by the name a scenario uses (BYD: alarm, protect, fail; JK: error).
ALARM_WORDS = {"alarm": "force_alarm_bits", "protect": "force_protect_bits", "fail": "force_fail_bits",
               "error": "force_error_bits"}  # fmt: skip
BLE_ONLY_FAILURES = ("stop_streaming", "disconnect", "refuse_reconnect")  # acted on by the BLE adapter
# The failures each kind of battery can show (simulators/byd/device.py, simulators/jk/device.py).
FAILURES = {
    "byd_pro": BYD_FAILURES,
    "jk_ble": JK_FAILURES,
    "jk_rs485": tuple(f for f in JK_FAILURES if f not in BLE_ONLY_FAILURES),
    "jk_4e57": tuple(f for f in JK_FAILURES if f not in BLE_ONLY_FAILURES),
}
CONDITIONS = FLAGS  # the generic conditions a battery model can be forced into (BatteryModel.forced)


# --- what each operation uses of the world -----------------------------------------------------------


class ProfiledInverter(Protocol):
    """An inverter model whose power profile can be replaced (simulators/deye/master.MasterView)."""

    profile: PowerProfile


class FaultBus(Protocol):
    """An RS485 bus model: hil/wires/rs485.Rs485Bus or hil/wires/frame_bus.FrameBus."""

    def add_fault(self, fault: Fault) -> Fault: ...
    def remove_fault(self, fault: Fault) -> None: ...
    def clear_faults(self) -> None: ...


class WithInverter(Protocol):
    @property
    def inverter(self) -> ProfiledInverter | None: ...


class WithDevices(Protocol):
    @property
    def devices(self) -> Mapping[int, BydModule | JkBms]: ...


class WithBatteries(Protocol):
    @property
    def batteries(self) -> Mapping[int, BatteryModel]: ...


class WithBuses(Protocol):
    @property
    def buses(self) -> Mapping[str, FaultBus]: ...


# --- the inverter ---------------------------------------------------------------------------------


def set_profile(world: WithInverter, kind: str = "constant", **parameters: Any) -> PowerProfile:
    """The inverter's power profile becomes PowerProfile(kind, **parameters); returns it."""
    profile = PowerProfile(kind, **parameters)
    world.inverter.profile = profile  # type: ignore[union-attr]  # a bench whose profile is set has an inverter
    return profile


def set_power(world: WithInverter, watts: float) -> PowerProfile:
    """A constant power profile (positive: charging the batteries)."""
    return set_profile(world, "constant", watts=watts)


# --- the devices ----------------------------------------------------------------------------------


def device_failure(world: WithDevices, slot: int, failure: str | None) -> None:
    """A device fails (silent, garbage, bad_checksum, slow, stuck, ...), or recovers with None."""
    world.devices[slot].set_failure(failure)


def raise_alarm(world: WithDevices, slot: int, word: str, bit: int) -> None:
    """A BMS raises a bit of one of its alarm words (BYD: alarm, protect, fail; JK: error)."""
    setattr(world.devices[slot], ALARM_WORDS[word], 1 << bit)


def alarm_words(device: BydModule | JkBms) -> dict[str, int]:
    """{word: forced bits} for the words this device has."""
    return {word: getattr(device, name) for word, name in ALARM_WORDS.items() if hasattr(device, name)}


def clear_alarms(world: WithDevices, slot: int) -> None:
    device = world.devices[slot]
    for attribute in ALARM_WORDS.values():
        if hasattr(device, attribute):
            setattr(device, attribute, 0)


def drop_ble(world: WithDevices, slot: int, refuse: bool = False) -> None:
    """The radio link to a JK module is lost (refuse: the module refuses to reconnect), on the
    real-time bench where the JK peripheral acts on its device's failure."""
    device_failure(world, slot, "refuse_reconnect" if refuse else "disconnect")


def allow_ble(world: WithDevices, slot: int) -> None:
    device = world.devices[slot]
    if getattr(device, "failure", None) in ("refuse_reconnect", "disconnect"):
        device.set_failure(None)


# --- the battery models -------------------------------------------------------------------------------


def _settle(battery: BatteryModel) -> None:
    """No time passes: the model derives its values (cells, SOC, warnings) from its new state, which it
    does once per step, and its BMS's protections follow that state at once."""
    battery.advance(0.0, battery.current_ma)


def set_soc(world: WithBatteries, slot: int, soc_permille: float) -> None:
    """Every cell of the pack at soc_permille of its own (aged) capacity, as after a long rest."""
    battery = world.batteries[slot]
    battery.charge_mah = [battery.full_mah * factor * soc_permille / 1000 for factor in battery.cell_capacity_factor]
    _settle(battery)


def set_temperature(world: WithBatteries, slot: int, temperature_ddegc: float) -> None:
    """The pack and its surroundings at this temperature: it stays there (apart from the pack's own
    I2R heating) instead of drifting back to the bench's ambient; its BMS's protections follow."""
    battery = world.batteries[slot]
    degc = temperature_ddegc / 10
    battery.ambient_c = battery.temperature_c = battery.mosfet_c = degc
    _settle(battery)


def cell_spread_mv(battery: BatteryModel) -> int:
    """The spread of the cells' voltage offsets: highest minus lowest cell at equal SOC, mV."""
    return round(max(battery.cell_offset_mv) - min(battery.cell_offset_mv))


def set_cell_spread(world: WithBatteries, slot: int, spread_mv: float) -> None:
    """The cells' voltage offsets scaled to span spread_mv (the same cells stay highest and lowest); from
    no spread at all, cell 1 lowest to the last cell highest, evenly."""
    battery = world.batteries[slot]
    offsets = battery.cell_offset_mv
    low, high = min(offsets), max(offsets)
    if high > low:
        middle = (high + low) / 2
        battery.cell_offset_mv = [(offset - middle) * spread_mv / (high - low) for offset in offsets]
    else:
        last = max(1, len(offsets) - 1)
        battery.cell_offset_mv = [spread_mv * (index / last - 0.5) for index in range(len(offsets))]
    _settle(battery)


def force_condition(world: WithBatteries, slot: int, condition: str, on: bool = True) -> None:
    """A generic battery condition (cell_overvoltage, soc_low, ...) held on or released: the device
    reports it as its warning and protection, and the BMS opens the path it blocks."""
    battery = world.batteries[slot]
    if on:
        battery.forced.add(condition)
    else:
        battery.forced.discard(condition)
    _settle(battery)


# --- the wires ------------------------------------------------------------------------------------------


def bus_fault(world: WithBuses, bus: str, kind: str, source: str | None = None, target: str | None = None,
              count: int | None = None, probability: float = 1.0, delay_s: float = 0.05, noise_bytes: int = 8,
              bit: int | None = None) -> Fault:  # fmt: skip
    """A fault rule on a bus (hil/wires/faults.py says what each kind does); returns the rule."""
    fault = Fault(kind, source=source, target=target, count=count, probability=probability, delay_s=delay_s,
                  noise_bytes=noise_bytes, bit=bit)  # fmt: skip
    return world.buses[bus].add_fault(fault)


def remove_bus_fault(world: WithBuses, bus: str, fault: Fault) -> None:
    world.buses[bus].remove_fault(fault)


def clear_bus_faults(world: WithBuses, bus: str) -> None:
    world.buses[bus].clear_faults()
