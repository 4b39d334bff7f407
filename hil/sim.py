"""`vbms sim`: a whole bench in real time, with the device under test's ports open.

Simulation(bench) builds it: one PTY RS485 bus per [buses] entry, every
battery as its device on its bus or as a BLE peripheral (one BlueZoo adapter,
so one MAC, per JK module), the DEYE inverter on the pymodbus client, and a
clock that advances the battery models with the current the inverter's power
profile sends them.  The device under test is `vbms run` (a separate
process, configured from the bench) on the "dut" endpoint of each bus and the
BLE adapter endpoints()["ble"]["dut_adapter"]; with dut="open" those are left
for another device (a real ESP32 behind USB-RS485 adapters, say).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from typing import TYPE_CHECKING, Any, Self, cast

from simulators.deye.inverter import DeyeInverter
from simulators.deye.profile import PowerProfile
from simulators.serial_device import SerialDevice

from . import rpc_client
from .benchfile import BenchError, load, load_default
from .builder import battery_clock, build_devices, serial_model, vbms_config
from .console import render_table
from .procs import STOP_SIGNALS, start_tied, stop_group
from .trace import Trace
from .wires.rs485 import Fault, Rs485Bus

if TYPE_CHECKING:
    from rich.console import Group
    from rich.text import Text

    from simulators.battery import BatteryModel
    from simulators.byd.device import BydModule
    from simulators.jk.ble import JkBlePeripheral, PeripheralHost
    from simulators.jk.device import JkBms

    from .bench_control import BenchControl
    from .benchfile import BatterySpec, Bench, BusSpec
    from .wires.ble import BleEnvironment

DUT = "dut"
DUT_KINDS = ("vbms", "micropython", "open")  # the device under test the bench starts, or none
DUT_NAMES = {"vbms": "vbms run", "micropython": "firmware (MicroPython unix port)"}
INVERTER = "deye"


class Simulation:
    def __init__(
        self,
        bench: Bench,
        trace_path: str | None = None,
        external_deye: bool = False,
        ble: bool = True,
        dut: str = "vbms",
        http_port: int | None = None,
        mqtt_server: str | None = None,
        control_port: int | None = None,
        keep_dut_files: bool = False,
    ) -> None:
        """keep_dut_files: leave the device under test's directory (its config.json and log, dut_dir) in place
        at stop(), for a person to read; by default stop() removes it."""
        if dut not in DUT_KINDS:
            raise BenchError("dut must be one of %s, not %r" % (", ".join(DUT_KINDS), dut))
        self.bench = bench
        self.dut_mode = dut
        self.http_port = http_port
        self.mqtt_server = mqtt_server
        self.dut_process: subprocess.Popen[Any] | None = None
        self.dut_dir: str | None = None
        self.keep_dut_files = keep_dut_files
        self.dut_token: str | None = None
        self.trace = Trace(trace_path, {name: bus.protocol for name, bus in bench.buses.items()})
        self.external_deye = external_deye
        self.use_ble = ble
        self.buses: dict[str, Rs485Bus] = {}
        self.batteries: dict[int, BatteryModel] = {}  # slot -> BatteryModel
        self.devices: dict[int, BydModule | JkBms] = {}  # slot -> BydModule / JkBms
        self.serial_devices: list[SerialDevice] = []
        self.peripherals: dict[int, JkBlePeripheral] = {}
        self.inverter: DeyeInverter | None = None
        self.ble: BleEnvironment | None = None
        self._ble_host: PeripheralHost | None = None
        self._clock_thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.started_s: float | None = None
        self.control_port = control_port  # None: no bench control; 0: on a free port (hil/bench_control.py)
        self.control: BenchControl | None = None

    # --- build ------------------------------------------------------------------

    def start(self) -> Self:
        bench = self.bench
        t0 = time.monotonic()
        spec: BusSpec | BatterySpec  # a bus's, then a battery's
        device: BydModule | JkBms | SerialDevice  # a battery's, then what answers for it on its bus
        for name, spec in bench.buses.items():
            bus = Rs485Bus(name, spec.baud, trace=self.trace, protocol=spec.protocol, seed=bench.seed, t0=t0)
            bus.add_endpoint(DUT)
            self.buses[name] = bus
        self.batteries, self.devices = build_devices(bench)
        for spec in bench.batteries:
            device = self.devices[spec.slot]
            if spec.type in ("byd_pro", "jk_rs485", "jk_4e57"):
                bus = self.buses[cast(str, spec.bus)]  # an RS485 battery is on a bus (hil/benchfile.py parse)
                endpoint = bus.add_endpoint(spec.name)
                model = serial_model(spec, device)
                self.serial_devices.append(SerialDevice(endpoint.path, bus.baud, model, spec.name))
        for fault in bench.faults:
            self.buses[fault.bus].add_fault(Fault.from_spec(fault))
        if bench.inverter:
            bus = self.buses[bench.inverter["bus"]]
            bus.add_endpoint("inverter" if self.external_deye else INVERTER)
        for bus in self.buses.values():
            bus.start()
        for device in self.serial_devices:
            device.start()
        self._start_ble()
        if self.dut_mode in DUT_KINDS[:2]:
            self._start_vbms()
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
        self._clock_thread = threading.Thread(
            target=battery_clock, args=(self, self._stop), name="battery-clock", daemon=True
        )
        self._clock_thread.start()
        if self.control_port is not None:
            from .bench_control import BenchControl

            self.control = BenchControl(self, self.control_port).start()
        return self

    def _start_ble(self) -> None:
        jk_ble = [spec for spec in self.bench.batteries if spec.type == "jk_ble"]
        if not jk_ble or not self.use_ble:
            return
        from simulators.jk.ble import JkBlePeripheral, PeripheralHost

        from .wires.ble import BleEnvironment

        addresses = [cast(str, spec.address) for spec in jk_ble] + [self.bench.dut["ble_address"]]  # their MACs
        self.ble = BleEnvironment(adapters=addresses).start()
        self._ble_host = PeripheralHost()
        self.peripherals = self._ble_host.peripherals
        for index, spec in enumerate(jk_ble):
            peripheral = JkBlePeripheral(
                cast("JkBms", self.devices[spec.slot]),
                adapter="hci%d" % index,
                name=spec.name,
                gatt_layout=spec.gatt,
                chunking=spec.chunking,
            )
            self._ble_host.add(spec.slot, peripheral)

    # --- the device under test: vbms run ----------------------------------------------

    def vbms_config(self) -> dict[str, Any]:
        return vbms_config(self.bench, self.dut_token, self.mqtt_server)

    def _start_vbms(self) -> None:
        bms_buses = sorted({spec.bus for spec in self.bench.batteries if spec.bus})
        if len(bms_buses) > 1:
            raise BenchError("the VBMS has one BMS port; this bench puts batteries on buses %s" % ", ".join(bms_buses))
        self.dut_token = secrets.token_urlsafe(12)
        self.dut_dir = tempfile.mkdtemp(prefix="vbms-dut-")
        config_path = os.path.join(self.dut_dir, "config.json")
        with open(config_path, "w", encoding="utf-8") as handle:
            json.dump(self.vbms_config(), handle, indent=1)
        if self.http_port is None:
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                self.http_port = probe.getsockname()[1]
        bms_port = self.buses[bms_buses[0]].endpoint(DUT).path if bms_buses else None
        inv_port = self.buses[self.bench.inverter["bus"]].endpoint(DUT).path if self.bench.inverter else None
        self.dut_log = os.path.join(self.dut_dir, "vbms.log")
        if self.dut_mode == "micropython":
            self._start_firmware(config_path, bms_port, inv_port)
            return
        command = [sys.executable, "-m", "hil.cli", "run", "--config", config_path, "--http-port", str(self.http_port)]
        if bms_port:
            command += ["--bms-port", bms_port]
        if inv_port:
            command += ["--inv-port", inv_port]
        env = dict(os.environ)
        if self.ble is not None:
            command += ["--ble-adapter", self.ble.adapters[-1]]
            env["DBUS_SYSTEM_BUS_ADDRESS"] = cast(str, self.ble.address)  # known once started
        with open(self.dut_log, "w") as log:
            self.dut_process = start_tied(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.dut_process.poll() is not None:
                raise RuntimeError("vbms run exited at start:\n" + open(self.dut_log).read()[-2000:])
            try:
                self.rpc("Sys.GetInfo")
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("vbms run did not answer RPC within 20 s:\n" + open(self.dut_log).read()[-2000:])

    def _start_firmware(self, config_path: str, bms_port: str | None, inv_port: str | None) -> None:
        """The firmware on the MicroPython unix port in place of vbms run (hil/firmware.py)."""
        from .firmware import FirmwareError, start_host

        try:
            handle = start_host(
                config_path, bms_port=bms_port, inv_port=inv_port, http_port=self.http_port,
                dbus_address=self.ble.address if self.ble is not None else None,
                ble_adapter=self.ble.adapters[-1] if self.ble is not None else None, log_path=self.dut_log,
            )  # fmt: skip
        except FirmwareError as error:
            raise RuntimeError("the firmware did not start: %s" % error) from None
        self.dut_process = handle.process

    @property
    def http_url(self) -> str | None:
        return None if self.dut_process is None else "http://127.0.0.1:%d" % self.http_port  # type: ignore[str-format]

    def rpc(
        self, method: str, params: dict[str, Any] | None = None, token: str | None = None, timeout_s: float = 10
    ) -> tuple[int, Any]:
        """Call the device under test over HTTP; returns (status, decoded JSON)."""
        # http_port: set by now (given, or the free one _start_vbms found)
        return rpc_client.call("http://127.0.0.1:%d" % self.http_port, method, params, token, timeout_s)  # type: ignore[str-format]

    def _stop_vbms(self) -> None:
        if self.dut_process is not None:
            stop_group(self.dut_process)

    def _trace_notification(self, name: str, payload: bytes) -> None:
        t0 = next(iter(self.buses.values())).t0 if self.buses else self.started_s or 0.0
        self.trace.ble(time.monotonic() - t0, name, payload)

    def stop(self) -> None:
        if self.control is not None:
            self.control.stop()
        self._stop.set()
        if self.inverter is not None:
            self.inverter.stop()
        self._stop_vbms()
        for device in self.serial_devices:
            device.stop()
        if self._ble_host is not None:
            self._ble_host.stop()
            self._ble_host = None
        if self.ble is not None:
            self.ble.stop()
        for bus in self.buses.values():
            bus.stop()
        self.trace.close()
        if self.dut_dir is not None and not self.keep_dut_files:
            shutil.rmtree(self.dut_dir, ignore_errors=True)
            self.dut_dir = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- what a device under test, or a person, needs to know ---------------------

    def endpoints(self) -> dict[str, Any]:
        result: dict[str, Any] = {"event": "started", "bench": self.bench.name, "buses": {}}
        if self.dut_process is not None:
            result["dut"] = {
                "kind": DUT_NAMES[self.dut_mode],
                "pid": self.dut_process.pid,
                "http": self.http_url,
                "token": self.dut_token,
                "log": self.dut_log,
            }
        else:
            result["dut"] = "open"
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
        if self.control is not None:
            result["control"] = {"http": self.control.url}
        result["slots"] = [
            {"slot": spec.slot, "type": spec.type, "address": spec.address, "bus": spec.bus, "name": spec.name}
            for spec in self.bench.batteries
        ]
        return result

    def status(self) -> dict[str, Any]:
        status: dict[str, Any] = {
            "event": "status",
            "t_s": round(time.monotonic() - self.started_s, 1),  # type: ignore[operator]  # after start()
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


def say(line: str) -> None:
    """A line on stdout; a terminal that was closed (or a pipe whose reader left) ends the
    output, not the bench: its stop must still run to the end."""
    try:
        print(line, flush=True)
    except OSError:
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - for the rest of the process


# --- what a person sees on a terminal (the JSON line stays with --json, --headless or a pipe) -------


def summary_lines(endpoints: dict[str, Any], description: str = "") -> list[str]:
    """The endpoints a person needs, a few short lines: the device under test's dashboard and token,
    the bench control, the ports a device under test attaches to, the BLE environment."""
    lines = ["vbms sim: bench %s%s" % (endpoints["bench"], ": " + description if description else "")]
    dut = endpoints["dut"]
    if dut == "open":
        lines.append("  device           none started: attach one to the dut ports below")
    else:
        lines.append("  dashboard        %s/   token %s" % (dut["http"], dut["token"]))
    if "control" in endpoints:
        lines.append("  bench control    %s/" % endpoints["control"]["http"])
    if dut != "open":
        lines.append("  device           %s, pid %d, log %s" % (dut["kind"], dut["pid"], dut["log"]))
    for name, bus in endpoints["buses"].items():
        others = ", ".join("%s %s" % (who, path) for who, path in bus["endpoints"].items() if who != DUT)
        lines.append(
            "  bus %-12s dut %s; %d baud %s; %s"
            % (name, bus["endpoints"].get(DUT, "-"), bus["baud"], bus["protocol"] or "", others)
        )
    ble = endpoints.get("ble")
    if ble:
        lines.append(
            "  BLE              dut adapter %s (%s); DBUS_SYSTEM_BUS_ADDRESS=%s"
            % (ble["dut_adapter"], ble["dut_address"], ble["dbus_system_bus_address"])
        )
    lines.append("  Ctrl-C stops the bench; --json prints these endpoints as one JSON line.")
    return lines


def status_text(simulation: Simulation) -> Text:
    """The lines under the Li-BMS table: time and each bus's counters; the inverter's warnings."""
    from rich.text import Text

    text = Text()
    text.append("%ds" % (time.monotonic() - simulation.started_s), style="bold")  # type: ignore[operator]  # started
    for name, bus in simulation.buses.items():
        faults = len(bus.faults)
        text.append("  %s: %d frames, %d collisions, " % (name, bus.frames, len(bus.collisions)))
        text.append("%d fault%s" % (faults, "" if faults == 1 else "s"), style="yellow" if faults else None)
    if simulation.inverter is not None:
        warnings = simulation.inverter.warnings()
        text.append("\ninverter warnings: ")
        text.append("; ".join(warnings) if warnings else "none", style="bold red" if warnings else "green")
    return text


def live_view(simulation: Simulation) -> Group:
    from rich.console import Group

    parts = [] if simulation.inverter is None else [render_table(simulation.inverter)]
    return Group(*parts, status_text(simulation))


def run(args: argparse.Namespace) -> int:
    try:
        bench = load(args.bench) if args.bench else load_default()
    except BenchError as error:
        sys.stderr.write("vbms sim: %s\n" % error)
        return 2
    if args.duration is not None and args.duration <= 0:
        sys.stderr.write("vbms sim: --duration must be positive\n")
        return 2
    actions = None
    if args.replay:
        from .bench_control import read_actions

        try:
            actions = read_actions(args.replay)
        except (OSError, ValueError) as error:
            sys.stderr.write("vbms sim: cannot replay %s: %s\n" % (args.replay, getattr(error, "strerror", error)))
            return 2
        if not actions:
            sys.stderr.write("vbms sim: %s holds no operator actions to replay\n" % args.replay)
            return 2
    stop = threading.Event()
    for signal_number in STOP_SIGNALS:  # SIGHUP too: closing the terminal stops the bench cleanly
        signal.signal(signal_number, lambda *_: stop.set())
    simulation = Simulation(
        bench,
        trace_path=args.trace,
        external_deye=args.external == "deye",
        ble=not args.no_ble,
        dut=args.dut,
        control_port=args.control_port,
        keep_dut_files=True,  # the summary names the device's log: it is there after the run
    )
    try:
        simulation.start()
    except Exception as error:  # noqa: BLE001 - report, clean up, fail
        sys.stderr.write("vbms sim: the bench did not start: %s\n" % error)
        simulation.stop()
        return 1
    try:
        terminal = sys.stdout.isatty()
        as_json = args.json or args.headless or not terminal
        if as_json:
            say(json.dumps(simulation.endpoints()))
        else:
            for line in summary_lines(simulation.endpoints(), bench.description):
                say(line)
        if actions:
            from .bench_control import replay

            replaying = threading.Thread(target=replay, args=(actions, simulation.control, stop), daemon=True)
            replaying.start()
        deadline = None if args.duration is None else time.monotonic() + args.duration
        if args.headless or not terminal:
            next_status = time.monotonic() + args.status_every
            while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
                stop.wait(0.2)
                if time.monotonic() >= next_status:
                    say(json.dumps(simulation.status()))
                    next_status += args.status_every
        else:
            from rich.live import Live

            try:
                with Live(live_view(simulation), refresh_per_second=2) as live:
                    while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
                        stop.wait(0.5)
                        live.update(live_view(simulation))
            except OSError:  # the terminal went away (its SIGHUP has set stop)
                sys.stdout = open(os.devnull, "w")  # noqa: SIM115
        final = simulation.status()
        final["event"] = "stopped"
        say(json.dumps(final) if as_json else "vbms sim: stopped after %.0f s" % final["t_s"])
    finally:
        simulation.stop()
    return 0
