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

import os
import time

from vbms_core import modbus

from . import operations

TARGETS = ("des", "sim", "micropython", "esp32")
FIDELITIES = ("full", "fast")  # Target.set_fidelity


class TargetUnavailable(Exception):
    """The target cannot run here: the message says why (a skip, not a failure)."""


class Target:
    """The vocabulary.  Subclasses implement what differs; the rest is here, on world.devices and
    world.batteries (the simulated devices and their battery models, on every target)."""

    name = None
    simulated_time = False

    def __init__(self, bench):
        self.bench = bench
        self.world = None
        self.token = None
        self._initial_config = None

    # --- life -----------------------------------------------------------------------
    def stop(self):
        pass

    def reset(self):
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

    def remember_config(self):
        self._initial_config = self.rpc("Config.Get")[0]

    def set_fidelity(self, fidelity):
        """How much of the world a simulated target models: "full" (every BLE chunk and frame,
        the battery models stepped every second; the default) or "fast" (what the inverter can
        see, and the rest only when somebody reads it: hil/des.py says what that leaves out).
        A scenario that looks only at the inverter may ask for "fast"; one that looks at BLE or
        at what a device's stream does between the inverter's polls keeps "full".  A real-time
        target always models the world in full and takes either."""
        if fidelity not in FIDELITIES:
            raise ValueError("unknown fidelity %r; choose one of %s" % (fidelity, ", ".join(FIDELITIES)))

    def _restore_config(self):
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
    def advance(self, seconds):
        raise NotImplementedError

    def now_s(self):
        raise NotImplementedError

    # --- the inverter -------------------------------------------------------------------
    def unit(self, unit):
        """The unit as the inverter sees it: {"values", "identity", "comm_warning", "misses", ...}."""
        return self.world.inverter.units[unit].snapshot()

    def warnings(self):
        return self.world.inverter.warnings()

    def inverter_read(self, unit, address, count, function=modbus.READ_INPUT):
        """("registers", [...]), ("exception", code), ("garbage", bytes) or ("silent", None)."""
        raise NotImplementedError

    def set_power(self, watts):
        """The inverter's power profile becomes a constant (positive: charging the batteries)."""
        operations.set_power(self.world, watts)

    # --- the batteries ---------------------------------------------------------------------
    def battery(self, slot):
        """The battery model behind a slot: what the inverter should end up seeing."""
        return self.world.batteries[slot]

    def configured_units(self):
        return sorted(spec.slot for spec in self.bench.batteries)

    def bms_wire_time_s(self):
        """Every RS485 battery polled once: its request out and its reply back, at the bus's baud
        rate, from the real frame sizes of the bench's devices."""
        from vbms_core import byd, jk_4e57, jk_pb

        total_s = 0.0
        for spec in self.bench.batteries:
            device = self.world.devices[spec.slot]
            if spec.type == "byd_pro":
                request = byd.encode_request(spec.address)
                reply = device.handle(request)[0]
            elif spec.type == "jk_rs485":
                request = jk_pb.encode_trigger(spec.address, "status")
                reply = device.handle_modbus(request)[0]
            elif spec.type == "jk_4e57":
                request = jk_4e57.encode_read_all_request()
                reply = device.handle_4e57(request)[0]
            else:
                continue
            total_s += (len(request) + len(reply)) * 10 / self.bench.buses[spec.bus].baud
        return total_s

    def device_failure(self, slot, failure):
        """A device fails (silent, garbage, bad_checksum, slow, stuck, ...), or recovers with None."""
        operations.device_failure(self.world, slot, failure)

    def raise_alarm(self, slot, word, bit):
        """A BMS raises a bit of one of its alarm words (BYD: alarm, protect, fail; JK: error)."""
        operations.raise_alarm(self.world, slot, word, bit)

    def clear_alarms(self, slot):
        operations.clear_alarms(self.world, slot)

    # --- the wires ------------------------------------------------------------------------
    def bus_fault(self, bus, kind, source=None, count=None):
        """A fault on a bus (hil/wires/faults.py: drop, corrupt, noise, delay, disconnect), the same on every target."""
        operations.bus_fault(self.world, bus, kind, source=source, count=count)

    def drop_ble(self, slot, refuse=False):
        """The radio link to a JK module is lost (refuse: the module refuses to reconnect)."""
        raise NotImplementedError

    def allow_ble(self, slot):
        raise NotImplementedError

    # --- the device under test ---------------------------------------------------------------
    def rpc(self, method, params=None, authenticated=True):
        """(result, None) or (None, error)."""
        raise NotImplementedError

    def restart_dut(self):
        raise NotImplementedError

    def rs485_cycle_s(self):
        """The last poll round of the BMS bus, as the device under test reports it (Sys.GetInfo)."""
        info, error = self.rpc("Sys.GetInfo")
        assert error is None, error
        return None if info["last_bms_cycle_ms"] is None else info["last_bms_cycle_ms"] / 1000

    def dashboard_url(self):
        """Where the device under test serves its dashboard, or None."""
        return None

    # --- what went over the wire -----------------------------------------------------------------
    def trace_tail(self, count=40):
        return self.world.trace.tail(count)

    def dut_log_tail(self, lines=30):
        return []


class DesTarget(Target):
    name = "des"
    simulated_time = True

    def __init__(self, bench):
        from .des import TOKEN, DesBench

        super().__init__(bench)
        self.world = DesBench(bench)
        self.token = TOKEN

    def advance(self, seconds):
        self.world.run_for(seconds)

    def now_s(self):
        return self.world.env.now

    def set_fidelity(self, fidelity):
        super().set_fidelity(fidelity)
        self.world.set_fidelity(fidelity)

    # a device's state changes at the scenario's time: what its stream sent before goes out first
    def device_failure(self, slot, failure):
        self.world.device_changes(slot)
        super().device_failure(slot, failure)

    def raise_alarm(self, slot, word, bit):
        self.world.device_changes(slot)
        super().raise_alarm(slot, word, bit)

    def clear_alarms(self, slot):
        self.world.device_changes(slot)
        super().clear_alarms(slot)

    def inverter_read(self, unit, address, count, function=modbus.READ_INPUT):
        world = self.world
        process = world.env.process(world.inverter.ask(_read_request(unit, function, address, count)))
        world.env.run(until=process)
        return _classify(process.value)

    def drop_ble(self, slot, refuse=False):
        self.world.drop_ble(slot, refuse)

    def allow_ble(self, slot):
        self.world.ble_refused.discard(slot)

    def rpc(self, method, params=None, authenticated=True):
        return self.world.rpc(method, params, self.token if authenticated else None)

    def restart_dut(self):
        self.world.restart()
        self.world.run_for(1.0)

    def dut_log_tail(self, lines=30):
        return ["%10.3f %s %s %s" % entry for entry in list(self.world.dut_log)[-lines:]]

    def trace_tail(self, count=40):
        """Four JK modules stream a few dozen BLE chunks a second: a quarter of the tail at most, so the
        RS485 frames of the last seconds stay in a failure report."""
        return self.world.trace.tail(count, ble=count // 4)


class SimTarget(Target):
    name = "sim"
    dut = "vbms"

    def __init__(self, bench):
        from .sim import Simulation

        super().__init__(bench)
        self.world = Simulation(bench, dut=self.dut).start()
        self.token = self.world.dut_token
        self._started = time.monotonic()

    def advance(self, seconds):
        time.sleep(seconds)

    def now_s(self):
        return time.monotonic() - self._started

    def inverter_read(self, unit, address, count, function=modbus.READ_INPUT):
        return _classify(self.world.inverter.raw_exchange(_read_request(unit, function, address, count)))

    def drop_ble(self, slot, refuse=False):
        operations.drop_ble(self.world, slot, refuse)

    def allow_ble(self, slot):
        operations.allow_ble(self.world, slot)

    def rpc(self, method, params=None, authenticated=True):
        token = self.token if authenticated else None
        status, body = self.world.rpc(method, params if params is not None else {}, token)
        return (body, None) if status == 200 else (None, body["error"])

    def restart_dut(self):
        self.world.rpc("Sys.Reboot", {}, self.token)
        time.sleep(1.5)

    def dashboard_url(self):
        return self.world.http_url

    def dut_log_tail(self, lines=30):
        log = getattr(self.world, "dut_log", None)
        if not log or not os.path.exists(log):
            return []
        with open(log, encoding="utf-8", errors="replace") as handle:
            return [line.rstrip("\n") for line in handle.readlines()[-lines:]]

    def stop(self):
        self.world.stop()


class MicropythonTarget(SimTarget):
    """The firmware on the MicroPython unix port between the simulated devices."""

    name = "micropython"
    dut = "micropython"


class Esp32Target(Target):
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

    def __init__(self, bench, bench_path=None, deploy_tree=None):
        from .board import Board, check_bench, check_echo
        from .shared_port import AdapterBench

        super().__init__(bench)
        self.bench_path = bench_path
        check_bench(bench)
        esp32 = bench.esp32
        self.board = None
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
            self.world.start_inverter()
        except BaseException:
            self.stop()
            raise
        self._started = time.monotonic()

    def advance(self, seconds):
        time.sleep(seconds)

    def now_s(self):
        return time.monotonic() - self._started

    def inverter_read(self, unit, address, count, function=modbus.READ_INPUT):
        return _classify(self.world.inverter.raw_exchange(_read_request(unit, function, address, count)))

    def drop_ble(self, slot, refuse=False):
        self.device_failure(slot, "refuse_reconnect" if refuse else "disconnect")

    def allow_ble(self, slot):
        device = self.world.devices[slot]
        if getattr(device, "failure", None) in ("refuse_reconnect", "disconnect"):
            device.set_failure(None)

    def rpc(self, method, params=None, authenticated=True):
        status, body = self.board.rpc(method, params if params is not None else {}, authenticated)
        return (body, None) if status == 200 else (None, body["error"])

    def restart_dut(self):
        self.board.restart()

    def dashboard_url(self):
        return self.board.url()

    def dut_log_tail(self, lines=30):
        return [] if self.board is None else self.board.tail(lines)

    def stop(self):
        self.world.stop()
        if self.board is not None:
            self.board.close()


def _read_request(unit, function, address, count):
    return modbus.with_crc(bytes((unit, function, address >> 8, address & 0xFF, count >> 8, count & 0xFF)))


def _classify(reply):
    if reply is None:
        return ("silent", None)
    try:
        event = modbus.decode_response(reply)
    except modbus.RemoteProtocolError:
        return ("garbage", reply)
    if isinstance(event, modbus.ExceptionResponse):
        return ("exception", event.code)
    return ("registers", list(event.registers))


def make_target(name, bench, bench_path=None):
    if name == "des":
        return DesTarget(bench)
    if name == "sim":
        return SimTarget(bench)
    if name == "micropython":
        return MicropythonTarget(bench)
    if name == "esp32":
        return Esp32Target(bench, bench_path)  # deploying a build first: Esp32Target(..., deploy_tree=...)
    raise ValueError("unknown target %r; choose one of %s" % (name, ", ".join(TARGETS)))
