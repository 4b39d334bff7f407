"""One bench builder for every target: the device models of a bench, the VBMS
configuration that matches it, the model a serial adapter serves, and the clock that
moves the batteries on a real-time bench."""

import threading
import time
from typing import Any, Protocol, cast

from simulators.battery import BatteryModel
from simulators.byd.device import BydModule
from simulators.deye.master import MasterView
from simulators.jk.device import JkBms
from simulators.serial_device import DeviceModel

from .benchfile import BatterySpec, Bench

Device = BydModule | JkBms


def build_devices(bench: Bench) -> tuple[dict[int, BatteryModel], dict[int, Device]]:
    """The battery models and device models of a bench: ({slot: BatteryModel}, {slot: device})."""
    batteries: dict[int, BatteryModel]
    devices: dict[int, Device]
    batteries, devices = {}, {}
    for spec in bench.batteries:
        battery = BatteryModel(
            cells=spec.cells,
            capacity_mah=spec.capacity_mah,
            chemistry=spec.chemistry,
            soc_permille=spec.soc_permille,
            soh_permille=spec.soh_permille,
            seed=bench.seed * 100 + spec.slot,
        )
        batteries[spec.slot] = battery
        device: Device
        if spec.type == "byd_pro":
            # (a BYD's address is its DIP address, a whole number: parse() checked it)
            device = BydModule(cast(int, spec.address), battery, reply_delay_s=spec.reply_delay_s, seed=spec.slot)
        else:
            device = JkBms(
                battery, layout=spec.layout, address=spec.address if isinstance(spec.address, int) else 1,
                name=spec.name, serial_number="SIM%02d" % spec.slot, seed=spec.slot,
            )  # fmt: skip
        if spec.failure:
            device.set_failure(spec.failure)
        devices[spec.slot] = device
    return batteries, devices


def vbms_config(bench: Bench, token: str | None, mqtt_server: str | None = None) -> dict[str, Any]:
    """The VBMS configuration for a bench: one slot per battery, at its unit."""
    types = {"byd_pro": 1, "jk_ble": 2, "jk_rs485": 3, "jk_4e57": 4}
    config: dict[str, Any] = {"rpc.auth_token": token, "device.id": "vbms-sim", "app.refresh_ms": 1000}
    if mqtt_server:
        config.update({"mqtt.enable": True, "mqtt.server": mqtt_server})
    bms_buses = {spec.bus for spec in bench.batteries if spec.bus}
    if bms_buses:
        config["app.bms_baud"] = bench.buses[bms_buses.pop()].baud
    if bench.inverter:
        config["app.inv_baud"] = bench.buses[bench.inverter["bus"]].baud
    for spec in bench.batteries:
        prefix = "bms%d." % spec.slot
        config[prefix + "type"] = types[spec.type]
        config[prefix + "addr"] = str(spec.address)
        config[prefix + "name"] = spec.name
    return config


class JkRs485Model:
    """A JkBms on an RS485 line, in one of its two protocols (for a serial adapter)."""

    def __init__(self, device: JkBms, protocol: str) -> None:
        self.handle = device.handle_modbus if protocol == "jk_rs485" else device.handle_4e57
        self.request_lengths = (11, 8) if protocol == "jk_rs485" else (21,)  # trigger write, register read; 4E57


def serial_model(spec: BatterySpec, device: Device) -> DeviceModel:
    """What answers for a battery on an RS485 line: the BYD module itself, or a JK-BMS in its protocol."""
    # (the ignore: a byd_pro battery's device is a BydModule, the others' a JkBms)
    return device if spec.type == "byd_pro" else JkRs485Model(device, spec.type)  # type: ignore[return-value, arg-type]


class RealTimeWorld(Protocol):
    """What battery_clock moves: a real-time bench's models, and when it started."""

    @property
    def batteries(self) -> dict[int, BatteryModel]: ...
    @property
    def devices(self) -> dict[int, Device]: ...
    @property
    def inverter(self) -> MasterView | None: ...
    @property
    def started_s(self) -> float: ...


def battery_clock(world: RealTimeWorld, stop: threading.Event, period_s: float = 0.1) -> None:
    """On a real-time bench: the battery models advance with the current the inverter's power profile
    sends them, until stop (a threading.Event) is set.  world: batteries, devices, inverter (or None),
    started_s (its monotonic start)."""
    last = time.monotonic()
    while not stop.wait(period_s):
        now = time.monotonic()
        currents = world.inverter.battery_current_ma if world.inverter is not None else {}
        for slot, battery in world.batteries.items():
            battery.advance(now - last, currents.get(slot, 0))
            device = world.devices[slot]
            if isinstance(device, JkBms):
                device.uptime_s = int(now - world.started_s)
        last = now
