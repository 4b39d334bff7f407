"""`vbms sim`: a whole bench in real time, with the device under test's ports open.

Simulation(bench) builds it: one PTY RS485 bus per [buses] entry, every
battery as its device on its bus or as a BLE peripheral (one BlueZoo adapter,
so one MAC, per JK module), the DEYE inverter on the pymodbus client, and a
clock that advances the battery models with the current the inverter's power
profile sends them.  The device under test attaches to the "dut" endpoint of
each bus and to the BLE adapter named in endpoints()["ble"]["dut_adapter"].
"""

import asyncio
import json
import logging
import signal
import sys
import threading
import time

from simulators.battery import BatteryModel
from simulators.byd.device import BydModule
from simulators.deye.inverter import DeyeInverter, PowerProfile, render_table
from simulators.jk.device import JkBms
from simulators.serial_device import SerialDevice

from .benchfile import BenchError, load, load_default
from .trace import Trace
from .wires.rs485 import Fault, Rs485Bus

DUT = "dut"
INVERTER = "deye"


class _JkRs485Model:
    """Adapts JkBms to SerialDevice for one of its RS485 protocols."""

    def __init__(self, device, protocol):
        self.handle = device.handle_modbus if protocol == "jk_rs485" else device.handle_4e57


class Simulation:
    def __init__(self, bench, trace_path=None, external_deye=False, ble=True):
        self.bench = bench
        self.trace = Trace(trace_path, {name: bus.protocol for name, bus in bench.buses.items()})
        self.external_deye = external_deye
        self.use_ble = ble
        self.buses = {}
        self.batteries = {}  # slot -> BatteryModel
        self.devices = {}  # slot -> BydModule / JkBms
        self.serial_devices = []
        self.peripherals = {}
        self.inverter = None
        self.ble = None
        self._loop = None
        self._loop_thread = None
        self._clock_thread = None
        self._stop = threading.Event()
        self.started_s = None

    # --- build ------------------------------------------------------------------

    def start(self):
        bench = self.bench
        for name, spec in bench.buses.items():
            bus = Rs485Bus(name, spec.baud, trace=self.trace, protocol=spec.protocol, seed=bench.seed)
            bus.add_endpoint(DUT)
            self.buses[name] = bus
        for spec in bench.batteries:
            battery = BatteryModel(
                cells=spec.cells,
                capacity_mah=spec.capacity_mah,
                chemistry=spec.chemistry,
                soc_permille=spec.soc_permille,
                soh_permille=spec.soh_permille,
                seed=bench.seed * 100 + spec.slot,
            )
            self.batteries[spec.slot] = battery
            if spec.type == "byd_pro":
                device = BydModule(spec.address, battery, reply_delay_s=spec.reply_delay_s, seed=spec.slot)
            else:
                device = JkBms(
                    battery, layout=spec.layout, address=spec.address if isinstance(spec.address, int) else 1,
                    name=spec.name, serial_number="SIM%02d" % spec.slot, seed=spec.slot,
                )  # fmt: skip
            if spec.failure:
                device.set_failure(spec.failure)
            self.devices[spec.slot] = device
            if spec.type in ("byd_pro", "jk_rs485", "jk_4e57"):
                bus = self.buses[spec.bus]
                endpoint = bus.add_endpoint(spec.name)
                model = device if spec.type == "byd_pro" else _JkRs485Model(device, spec.type)
                self.serial_devices.append(SerialDevice(endpoint.path, bus.baud, model, spec.name))
        for fault in bench.faults:
            self.buses[fault.bus].add_fault(
                Fault(
                    fault.kind,
                    fault.source,
                    fault.target,
                    fault.count,
                    fault.probability,
                    fault.delay_s,
                    fault.noise_bytes,
                )
            )
        if bench.inverter:
            bus = self.buses[bench.inverter["bus"]]
            bus.add_endpoint("inverter" if self.external_deye else INVERTER)
        for bus in self.buses.values():
            bus.start()
        for device in self.serial_devices:
            device.start()
        self._start_ble()
        if bench.inverter and not self.external_deye:
            logging.getLogger("pymodbus").setLevel(logging.CRITICAL)  # a silent unit is news here, not an error
            self.inverter = DeyeInverter(
                self.buses[bench.inverter["bus"]].endpoint(INVERTER).path,
                units=bench.inverter["units"],
                baud=self.buses[bench.inverter["bus"]].baud,
                timeout_s=bench.inverter["timeout_s"],
                poll_period_s=bench.inverter["poll_period_s"],
                identity_interval_s=bench.inverter["identity_interval_s"],
                warn_after=bench.inverter["warn_after"],
                profile=PowerProfile(**bench.profile),
            ).start()
        self.started_s = time.monotonic()
        self._clock_thread = threading.Thread(target=self._clock, name="battery-clock", daemon=True)
        self._clock_thread.start()
        return self

    def _start_ble(self):
        jk_ble = [spec for spec in self.bench.batteries if spec.type == "jk_ble"]
        if not jk_ble or not self.use_ble:
            return
        from simulators.jk.ble import JkBlePeripheral

        from .wires.ble import BleEnvironment

        addresses = [spec.address for spec in jk_ble] + [self.bench.dut["ble_address"]]
        self.ble = BleEnvironment(adapters=addresses).start()
        self._loop = asyncio.new_event_loop()
        self._loop_thread = threading.Thread(target=self._loop.run_forever, name="ble-loop", daemon=True)
        self._loop_thread.start()
        for index, spec in enumerate(jk_ble):
            peripheral = JkBlePeripheral(
                self.devices[spec.slot],
                adapter="hci%d" % index,
                name=spec.name,
                gatt_layout=spec.gatt,
                chunking=spec.chunking,
            )
            asyncio.run_coroutine_threadsafe(peripheral.start(), self._loop).result(timeout=30)
            self.peripherals[spec.slot] = peripheral

    def _clock(self):
        last = time.monotonic()
        while not self._stop.wait(0.1):
            now = time.monotonic()
            currents = self.inverter.battery_current_ma if self.inverter is not None else {}
            for slot, battery in self.batteries.items():
                battery.advance(now - last, currents.get(slot, 0))
                device = self.devices[slot]
                if isinstance(device, JkBms):
                    device.uptime_s = int(now - self.started_s)
            last = now

    def stop(self):
        self._stop.set()
        if self.inverter is not None:
            self.inverter.stop()
        for device in self.serial_devices:
            device.stop()
        if self._loop is not None:
            for peripheral in self.peripherals.values():
                try:
                    asyncio.run_coroutine_threadsafe(peripheral.stop(), self._loop).result(timeout=10)
                except Exception:  # noqa: BLE001 - shutting down anyway
                    pass
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._loop_thread.join(timeout=5)
        if self.ble is not None:
            self.ble.stop()
        for bus in self.buses.values():
            bus.stop()
        self.trace.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # --- what a device under test, or a person, needs to know ---------------------

    def endpoints(self):
        result = {"event": "started", "bench": self.bench.name, "dut": "open", "buses": {}}
        for name, bus in self.buses.items():
            result["buses"][name] = {
                "baud": bus.baud,
                "protocol": bus.protocol,
                "endpoints": {endpoint.name: endpoint.path for endpoint in bus.endpoints.values()},
            }
        if self.ble is not None:
            result["ble"] = {
                "dbus_system_bus_address": self.ble.address,
                "dut_adapter": self.ble.adapters[-1],
                "dut_address": self.bench.dut["ble_address"],
                "devices": [
                    {"slot": slot, "name": p.name, "address": self.bench.battery(slot).address, "adapter": p.adapter}
                    for slot, p in self.peripherals.items()
                ],
            }
        result["slots"] = [
            {"slot": spec.slot, "type": spec.type, "address": spec.address, "bus": spec.bus, "name": spec.name}
            for spec in self.bench.batteries
        ]
        return result

    def status(self):
        status = {
            "event": "status",
            "t_s": round(time.monotonic() - self.started_s, 1),
            "buses": {
                name: {"frames": bus.frames, "collisions": len(bus.collisions)} for name, bus in self.buses.items()
            },
            "batteries": {
                slot: {"soc_permille": b.soc_permille, "current_ma": b.current_ma} for slot, b in self.batteries.items()
            },
        }
        if self.inverter is not None:
            status["inverter"] = {
                "cycles": self.inverter.cycles,
                "answering": sorted(
                    s.unit for s in self.inverter.units.values() if s.values is not None and not s.comm_warning
                ),
                "warnings": self.inverter.warnings(),
            }
        return status


def run(args):
    try:
        bench = load(args.bench) if args.bench else load_default()
    except BenchError as error:
        sys.stderr.write("vbms sim: %s\n" % error)
        return 2
    if args.duration is not None and args.duration <= 0:
        sys.stderr.write("vbms sim: --duration must be positive\n")
        return 2
    stop = threading.Event()
    for signal_number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signal_number, lambda *_: stop.set())
    simulation = Simulation(bench, trace_path=args.trace, external_deye=args.external == "deye", ble=not args.no_ble)
    try:
        simulation.start()
    except Exception as error:  # noqa: BLE001 - report, clean up, fail
        sys.stderr.write("vbms sim: the bench did not start: %s\n" % error)
        simulation.stop()
        return 1
    try:
        print(json.dumps(simulation.endpoints()), flush=True)
        deadline = None if args.duration is None else time.monotonic() + args.duration
        if args.headless or simulation.inverter is None or not sys.stdout.isatty():
            next_status = time.monotonic() + args.status_every
            while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
                stop.wait(0.2)
                if time.monotonic() >= next_status:
                    print(json.dumps(simulation.status()), flush=True)
                    next_status += args.status_every
        else:
            from rich.live import Live

            with Live(render_table(simulation.inverter), refresh_per_second=2) as live:
                while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
                    stop.wait(0.5)
                    live.update(render_table(simulation.inverter))
        final = simulation.status()
        final["event"] = "stopped"
        print(json.dumps(final), flush=True)
    finally:
        simulation.stop()
    return 0
