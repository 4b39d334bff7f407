"""One scenario, several worlds: the targets scenarios run against (ARCHITECTURE.md, "Targets").

A Target is the only surface a step uses.  Every target offers the same vocabulary:
time, what the inverter sees, the batteries and their failures, faults on the wires,
BLE links, the device under test's RPC and dashboard, and what went over the wire when
something fails.  A new target is a subclass, not a fork of the steps.

  des    DesBench: everything in one process under simpy, simulated time.
  sim    Simulation with `vbms run` between the devices: PTY buses, BlueZoo, real time.
  micropython  the same bench with the firmware (firmware/) on the MicroPython unix port as the
         device under test, stand-ins only at the hardware boundary.
  esp32  a board running firmware/ that the harness did not start: a real ESP32 or, in CI, the
         virtual board (see Esp32Target).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol, cast

from simulators.byd.device import BydModule
from simulators.jk.device import JkBms
from vbms_core import modbus

from . import operations

if TYPE_CHECKING:
    from simulators.battery import BatteryModel
    from simulators.deye.inverter import DeyeInverter
    from simulators.deye.master import MasterView

    from .benchfile import Bench
    from .board import Board
    from .des import DesBench
    from .shared_port import AdapterBench
    from .sim import Simulation
    from .trace import Trace

TARGETS = ("des", "sim", "micropython", "esp32")
FIDELITIES = ("full", "fast")  # Target.set_fidelity

# What Target.inverter_read answers: ("registers", [...]), ("exception", code), ("garbage", bytes), ("silent", None)
InverterReply = tuple[str, list[int] | int | bytes | None]
# What Target.rpc answers: (result, None) or (None, the JSON-RPC error object)
RpcAnswer = tuple[Any, dict[str, Any] | None]


class TargetUnavailable(Exception):
    """The target cannot run here: the message says why (a skip, not a failure)."""


class World(Protocol):
    """What Target's own methods use of a target's world: DesBench, Simulation or AdapterBench
    (each target narrows `world` to its own)."""

    @property
    def buses(self) -> Mapping[str, operations.FaultBus]: ...

    @property
    def devices(self) -> Mapping[int, BydModule | JkBms]: ...

    @property
    def batteries(self) -> Mapping[int, BatteryModel]: ...

    @property
    def inverter(self) -> MasterView | None: ...

    @property
    def trace(self) -> Trace: ...


class Target:
    """The vocabulary.  Subclasses implement what differs; the rest is here, on world.devices and
    world.batteries (the simulated devices and their battery models, on every target)."""

    name: str | None = None
    simulated_time = False
    world: World

    def __init__(self, bench: Bench) -> None:
        self.bench = bench
        self.world = None  # type: ignore[assignment]  # each target's __init__ sets its world
        self.token: str | None = None
        self._initial_config: dict[str, Any] | None = None

    # --- life -----------------------------------------------------------------------
    def stop(self) -> None:
        pass

    def reset(self) -> None:
        """Back to a healthy bench, as the next scenario expects it: the device under test's saved
        configuration, the inverter's power profile, no faults, failures, forced alarms or refusals."""
        self._restore_config()
        operations.set_profile(self.world, **self.bench.profile)
        for bus in self.world.buses:
            operations.clear_bus_faults(self.world, bus)
        for slot in self.world.devices:
            self.device_failure(slot, None)
            self.clear_alarms(slot)
            self.world.batteries[slot].forced = set()
            self.allow_ble(slot)

    def remember_config(self) -> None:
        self._initial_config = self.rpc("Config.Get")[0]

    def set_fidelity(self, fidelity: str) -> None:
        """How much of the world a simulated target models: "full" (every BLE chunk and frame,
        the battery models stepped every second; the default) or "fast" (what the inverter can
        see, and the rest only when somebody reads it: hil/des.py says what that leaves out).
        A scenario that looks only at the inverter may ask for "fast"; one that looks at BLE or
        at what a device's stream does between the inverter's polls keeps "full".  A real-time
        target always models the world in full and takes either."""
        if fidelity not in FIDELITIES:
            raise ValueError("unknown fidelity %r; choose one of %s" % (fidelity, ", ".join(FIDELITIES)))

    def _restore_config(self) -> None:
        """Put the configuration back as it was (a scenario may have saved changes)."""
        if self._initial_config is None:
            return
        from vbms_core import config as config_module

        current = config_module.flatten(self.rpc("Config.Get")[0])
        wanted = config_module.flatten(self._initial_config)
        changes = {k: v for k, v in wanted.items() if current.get(k) != v and k != "rpc.auth_token"}
        if changes:
            self.rpc("Config.Set", {"config": changes})
            self.rpc("Config.Save", {})

    # --- time -------------------------------------------------------------------------
    def advance(self, seconds: float) -> None:
        raise NotImplementedError

    def now_s(self) -> float:
        raise NotImplementedError

    # --- the inverter -------------------------------------------------------------------
    def inverter(self) -> MasterView:
        """The simulated inverter, or an error that says why there is none."""
        inverter = self.world.inverter
        if inverter is None:
            raise RuntimeError(
                "bench %r has no simulated inverter (no [inverter] section, or the DEYE side is external): "
                "a step that reads what the inverter sees needs one" % self.bench.name
            )
        return inverter

    def unit(self, unit: int) -> dict[str, Any]:
        """The unit as the inverter sees it: {"values", "identity", "comm_warning", "misses", ...}."""
        return self.inverter().units[unit].snapshot()

    def warnings(self) -> list[str]:
        return self.inverter().warnings()

    def inverter_read(self, unit: int, address: int, count: int, function: int = modbus.READ_INPUT) -> InverterReply:
        """("registers", [...]), ("exception", code), ("garbage", bytes) or ("silent", None)."""
        raise NotImplementedError

    def set_power(self, watts: float) -> None:
        """The inverter's power profile becomes a constant (positive: charging the batteries)."""
        operations.set_power(self.world, watts)

    # --- the batteries ---------------------------------------------------------------------
    def battery(self, slot: int) -> BatteryModel:
        """The battery model behind a slot: what the inverter should end up seeing."""
        return self.world.batteries[slot]

    def configured_units(self) -> list[int]:
        return sorted(spec.slot for spec in self.bench.batteries)

    def bms_wire_time_s(self) -> float:
        """Every RS485 battery polled once: its request out and its reply back, at the bus's baud
        rate, from the frame sizes a healthy device of the bench sends (whatever its failure now;
        the devices are not asked, so their counters stay as they are)."""
        from vbms_core import byd, jk_4e57, jk_frames, jk_pb

        total_s = 0.0
        for spec in self.bench.batteries:
            if spec.type == "byd_pro":
                size = len(byd.encode_request(spec.address)) + byd.RESPONSE_LENGTH
            elif spec.type == "jk_rs485":
                size = len(jk_pb.encode_trigger(spec.address, "status")) + jk_frames.FRAME_LENGTH + jk_pb.ACK_LENGTH
            elif spec.type == "jk_4e57":
                device = cast(JkBms, self.world.devices[spec.slot])
                size = len(jk_4e57.encode_read_all_request()) + len(device.read_all_reply())
            else:
                continue
            total_s += size * 10 / self.bench.buses[cast(str, spec.bus)].baud  # 10 bits a byte on a bus
        return total_s

    def device_failure(self, slot: int, failure: str | None) -> None:
        """A device fails (silent, garbage, bad_checksum, slow, stuck, ...), or recovers with None."""
        operations.device_failure(self.world, slot, failure)

    def raise_alarm(self, slot: int, word: str, bit: int) -> None:
        """A BMS raises a bit of one of its alarm words (BYD: alarm, protect, fail; JK: error)."""
        operations.raise_alarm(self.world, slot, word, bit)

    def clear_alarms(self, slot: int) -> None:
        operations.clear_alarms(self.world, slot)

    # --- the wires ------------------------------------------------------------------------
    def bus_fault(self, bus: str, kind: str, source: str | None = None, count: int | None = None) -> None:
        """A fault on a bus (hil/wires/faults.py: drop, corrupt, noise, delay, disconnect), the same on every target."""
        operations.bus_fault(self.world, bus, kind, source=source, count=count)

    def drop_ble(self, slot: int, refuse: bool = False) -> None:
        """The radio link to a JK module is lost (refuse: the module refuses to reconnect)."""
        raise NotImplementedError

    def allow_ble(self, slot: int) -> None:
        raise NotImplementedError

    # --- the device under test ---------------------------------------------------------------
    def rpc(self, method: str, params: dict[str, Any] | None = None, authenticated: bool = True) -> RpcAnswer:
        """(result, None) or (None, error)."""
        raise NotImplementedError

    def restart_dut(self) -> None:
        raise NotImplementedError

    def rs485_cycle_s(self) -> float | None:
        """The last poll round of the BMS bus, as the device under test reports it (Sys.GetInfo)."""
        info, error = self.rpc("Sys.GetInfo")
        assert error is None, error
        return None if info["last_bms_cycle_ms"] is None else info["last_bms_cycle_ms"] / 1000

    def dashboard_url(self) -> str | None:
        """Where the device under test serves its dashboard, or None."""
        return None

    # --- what went over the wire -----------------------------------------------------------------
    def trace_tail(self, count: int = 40) -> list[dict[str, Any]]:
        return self.world.trace.tail(count)

    def dut_log_tail(self, lines: int = 30) -> list[str]:
        return []


class DesTarget(Target):
    name = "des"
    simulated_time = True
    world: DesBench

    def __init__(self, bench: Bench) -> None:
        from .des import TOKEN, DesBench

        super().__init__(bench)
        if not bench.inverter:
            raise ValueError("the des target simulates the inverter: bench %r needs an [inverter] section" % bench.name)
        self.world = DesBench(bench)
        self.token = TOKEN

    def advance(self, seconds: float) -> None:
        self.world.run_for(seconds)

    def now_s(self) -> float:
        return self.world.env.now

    def set_fidelity(self, fidelity: str) -> None:
        super().set_fidelity(fidelity)
        self.world.set_fidelity(fidelity)

    # a device's state changes at the scenario's time: what its stream sent before goes out first
    def device_failure(self, slot: int, failure: str | None) -> None:
        self.world.device_changes(slot)
        super().device_failure(slot, failure)

    def raise_alarm(self, slot: int, word: str, bit: int) -> None:
        self.world.device_changes(slot)
        super().raise_alarm(slot, word, bit)

    def clear_alarms(self, slot: int) -> None:
        self.world.device_changes(slot)
        super().clear_alarms(slot)

    def inverter_read(self, unit: int, address: int, count: int, function: int = modbus.READ_INPUT) -> InverterReply:
        world = self.world
        process = world.env.process(world.inverter.ask(_read_request(unit, function, address, count)))
        world.env.run(until=process)
        return _classify(process.value)

    def drop_ble(self, slot: int, refuse: bool = False) -> None:
        self.world.drop_ble(slot, refuse)

    def allow_ble(self, slot: int) -> None:
        self.world.ble_refused.discard(slot)

    def rpc(self, method: str, params: dict[str, Any] | None = None, authenticated: bool = True) -> RpcAnswer:
        return self.world.rpc(method, params, self.token if authenticated else None)

    def restart_dut(self) -> None:
        self.world.restart()
        self.world.run_for(1.0)

    def dut_log_tail(self, lines: int = 30) -> list[str]:
        return ["%10.3f %s %s %s" % entry for entry in list(self.world.dut_log)[-lines:]]

    def trace_tail(self, count: int = 40) -> list[dict[str, Any]]:
        """Four JK modules stream a few dozen BLE chunks a second: a quarter of the tail at most, so the
        RS485 frames of the last seconds stay in a failure report."""
        return self.world.trace.tail(count, ble=count // 4)


class RealTimeTarget(Target):
    """A target whose time is the wall clock and whose inverter is the pymodbus DEYE simulator on a
    serial line (sim, micropython, esp32); a subclass sets _started when its world is up."""

    _started = 0.0

    def advance(self, seconds: float) -> None:
        time.sleep(seconds)

    def now_s(self) -> float:
        return time.monotonic() - self._started

    def inverter_read(self, unit: int, address: int, count: int, function: int = modbus.READ_INPUT) -> InverterReply:
        inverter = cast("DeyeInverter", self.inverter())  # this target's world has the pymodbus inverter
        return _classify(inverter.raw_exchange(_read_request(unit, function, address, count)))


class SimTarget(RealTimeTarget):
    name = "sim"
    dut = "vbms"
    world: Simulation

    def __init__(self, bench: Bench) -> None:
        from .sim import Simulation

        super().__init__(bench)
        self.world = Simulation(bench, dut=self.dut).start()
        self.token = self.world.dut_token
        self._started = time.monotonic()

    def drop_ble(self, slot: int, refuse: bool = False) -> None:
        operations.drop_ble(self.world, slot, refuse)

    def allow_ble(self, slot: int) -> None:
        operations.allow_ble(self.world, slot)

    def rpc(self, method: str, params: dict[str, Any] | None = None, authenticated: bool = True) -> RpcAnswer:
        token = self.token if authenticated else None
        status, body = self.world.rpc(method, params if params is not None else {}, token)
        return (body, None) if status == 200 else (None, body["error"])

    def restart_dut(self) -> None:
        self.world.rpc("Sys.Reboot", {}, self.token)
        time.sleep(1.5)

    def dashboard_url(self) -> str | None:
        return self.world.http_url

    def dut_log_tail(self, lines: int = 30) -> list[str]:
        log = getattr(self.world, "dut_log", None)
        if not log or not os.path.exists(log):
            return []
        with open(log, encoding="utf-8", errors="replace") as handle:
            return [line.rstrip("\n") for line in handle.readlines()[-lines:]]

    def stop(self) -> None:
        self.world.stop()


class MicropythonTarget(SimTarget):
    """The firmware on the MicroPython unix port between the simulated devices."""

    name = "micropython"
    dut = "micropython"


class Esp32Target(RealTimeTarget):
    """A board the harness did not start, named by the bench's [esp32] section: a real ESP32, or the
    virtual board (hil/board.py VirtualBoard) that stands in for one in CI.

    Start: the bench is checked against the machine (ports, Bluetooth adapters), the RS485 adapters are
    probed for echo, the simulated modules answer on the battery adapter and the JK modules advertise on
    their Bluetooth adapters (hil/shared_port.py), the board is reset (and, with deploy_tree, the build
    copied onto it first), its ready line awaited, the bench's configuration put on it over RPC, and the
    DEYE simulator starts on the inverter adapter.  A mistake in the bench or a board that does not come
    up is a hil.board.BoardError saying how to fix it.  stop() leaves the board running.
    """

    name = "esp32"
    world: AdapterBench

    def __init__(
        self, bench: Bench, bench_path: str | None = None, deploy_tree: str | None = None, inverter: bool = True
    ) -> None:
        """inverter=False: no DEYE simulator on the inverter adapter (a wire campaign is the inverter there)."""
        from .board import Board, check_bench, check_echo
        from .shared_port import AdapterBench

        super().__init__(bench)
        self.bench_path = bench_path
        check_bench(bench)
        esp32 = bench.esp32
        self.board: Board = None  # type: ignore[assignment]  # a Board once __init__ is through; stop() may come first
        self.world = AdapterBench(bench)
        try:
            for key, bus in (("inverter_port", self.world.inverter_bus), ("bms_port", self.world.bms_bus)):
                check_echo(esp32[key], bench.buses[bus].baud if bus else 9600, key)
            self.board = Board(esp32).open()
            self.world.start()
            if deploy_tree is not None:
                self.board.deploy(deploy_tree, frozen=esp32["deploy_frozen"])
            self.board.wait_ready(self.board.reset())
            self.board.configure(bench)
            self.token = self.board.token
            if inverter:
                self.world.start_inverter()
        except BaseException:
            self.stop()
            raise
        self._started = time.monotonic()

    def drop_ble(self, slot: int, refuse: bool = False) -> None:
        self.device_failure(slot, "refuse_reconnect" if refuse else "disconnect")

    def allow_ble(self, slot: int) -> None:
        device = self.world.devices[slot]
        if getattr(device, "failure", None) in ("refuse_reconnect", "disconnect"):
            device.set_failure(None)

    def rpc(self, method: str, params: dict[str, Any] | None = None, authenticated: bool = True) -> RpcAnswer:
        status, body = self.board.rpc(method, params if params is not None else {}, authenticated)
        return (body, None) if status == 200 else (None, body["error"])

    def restart_dut(self) -> None:
        self.board.restart()

    def dashboard_url(self) -> str | None:
        return self.board.url()

    def dut_log_tail(self, lines: int = 30) -> list[str]:
        return [] if self.board is None else self.board.tail(lines)

    def stop(self) -> None:
        self.world.stop()
        if self.board is not None:
            self.board.close()


def _read_request(unit: int, function: int, address: int, count: int) -> bytes:
    return modbus.with_crc(bytes((unit, function, address >> 8, address & 0xFF, count >> 8, count & 0xFF)))


def _classify(reply: bytes | None) -> InverterReply:
    if reply is None:
        return ("silent", None)
    try:
        event = modbus.decode_response(reply)
    except modbus.RemoteProtocolError:
        return ("garbage", reply)
    if isinstance(event, modbus.ExceptionResponse):
        return ("exception", event.code)
    return ("registers", list(event.registers))


def make_target(name: str, bench: Bench, bench_path: str | None = None) -> Target:
    if name == "des":
        return DesTarget(bench)
    if name == "sim":
        return SimTarget(bench)
    if name == "micropython":
        return MicropythonTarget(bench)
    if name == "esp32":
        return Esp32Target(bench, bench_path)  # deploying a build first: Esp32Target(..., deploy_tree=...)
    raise ValueError("unknown target %r; choose one of %s" % (name, ", ".join(TARGETS)))
