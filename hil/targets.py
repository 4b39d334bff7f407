"""One scenario, three worlds: the targets scenarios run against (ARCHITECTURE.md, "Targets").

Every target offers the same vocabulary to the steps: advance time, read what
the inverter sees, inject device failures and bus faults, drop BLE links, call
the device under test's RPC, and show the bus trace when something fails.

  des    DesBench: everything in one process under simpy, simulated time.
  sim    Simulation with `vbms run` between the devices, PTY buses, BlueZoo, real time.
  esp32  a real ESP32 running firmware/: the simulators drive the USB-RS485 adapters
         named in the bench file.  Validates the bench file and opens the ports; the
         firmware itself is not built yet (see firmware/), so scenarios skip with that reason.
"""

import os
import time

from vbms_core import modbus

TARGETS = ("des", "sim", "esp32")


class TargetUnavailable(Exception):
    """The target cannot run here: the message says why (a skip, not a failure)."""


class Target:
    name = None
    token = None

    # the vocabulary ------------------------------------------------------------------
    def advance(self, seconds):
        raise NotImplementedError

    def unit(self, unit):
        """{"values", "identity", "comm_warning"} as the inverter sees the unit."""
        raise NotImplementedError

    def device(self, slot):
        return self.world.devices[slot]

    def battery(self, slot):
        return self.world.batteries[slot]

    def trace_tail(self, count=40):
        return self.world.trace.tail(count)

    def stop(self):
        pass


class DesTarget(Target):
    name = "des"

    def __init__(self, bench):
        from .des import TOKEN, DesBench

        self.world = DesBench(bench)
        self.token = TOKEN

    def advance(self, seconds):
        self.world.run_for(seconds)

    def unit(self, unit):
        return self.world.inverter.units[unit]

    def warnings(self):
        return self.world.inverter.warnings()

    def bus_fault(self, bus, kind, source=None, count=None):
        self.world.buses[bus].faults.append({"kind": kind, "source": source, "count": count})

    def drop_ble(self, slot, refuse=False):
        self.world.drop_ble(slot, refuse)

    def allow_ble(self, slot):
        self.world.ble_refused.discard(slot)

    def rpc(self, method, params=None, authenticated=True):
        return self.world.rpc(method, params, self.token if authenticated else None)

    def restart_dut(self):
        self.world.env.process(self.world._reboot())
        self.world.run_for(1.0)

    def inverter_read(self, unit, address, count, function=modbus.READ_INPUT):
        world = self.world
        request = modbus.with_crc(bytes((unit, function, address >> 8, address & 0xFF, count >> 8, count & 0xFF)))
        process = world.env.process(world.inverter.ask(request))
        world.env.run(until=process)
        return _classify(process.value)

    def rs485_cycle_s(self):
        cycle_us = self.world.proxy.rs485.last_cycle_us
        return None if cycle_us is None else cycle_us / 1e6


class SimTarget(Target):
    name = "sim"

    def __init__(self, bench):
        from .sim import Simulation

        self.world = Simulation(bench).start()
        self.token = self.world.dut_token
        self.initial_config = None

    def remember_config(self):
        self.initial_config = self.world.rpc("Config.Get")[1]

    def restore_config(self):
        """Put the VBMS's configuration back as it was (a scenario may have saved changes)."""
        if self.initial_config is None:
            return
        from vbms_core import config as config_module

        current = config_module.flatten(self.world.rpc("Config.Get")[1])
        wanted = config_module.flatten(self.initial_config)
        changes = {k: v for k, v in wanted.items() if current.get(k) != v and k != "rpc.auth_token"}
        if changes:
            self.world.rpc("Config.Set", {"config": changes}, self.token)
            self.world.rpc("Config.Save", {}, self.token)

    def advance(self, seconds):
        time.sleep(seconds)

    def unit(self, unit):
        state = self.world.inverter.units[unit]
        return {"values": state.values, "identity": state.identity, "comm_warning": state.comm_warning}

    def warnings(self):
        return self.world.inverter.warnings()

    def bus_fault(self, bus, kind, source=None, count=None):
        from .wires.rs485 import Fault

        self.world.buses[bus].add_fault(Fault(kind, source=source, count=count))

    def drop_ble(self, slot, refuse=False):
        self.device(slot).set_failure("refuse_reconnect" if refuse else "disconnect")

    def allow_ble(self, slot):
        self.device(slot).set_failure(None)

    def rpc(self, method, params=None, authenticated=True):
        status, body = self.world.rpc(
            method, params if params is not None else {}, self.token if authenticated else None
        )
        return (body, None) if status == 200 else (None, body["error"])

    def restart_dut(self):
        self.world.rpc("Sys.Reboot", {}, self.token)
        time.sleep(1.5)

    def inverter_read(self, unit, address, count, function=modbus.READ_INPUT):
        request = modbus.with_crc(bytes((unit, function, address >> 8, address & 0xFF, count >> 8, count & 0xFF)))
        return _classify(self.world.inverter.raw_exchange(request))

    def rs485_cycle_s(self):
        status, info = self.world.rpc("Sys.GetInfo")
        return None if info.get("last_bms_cycle_ms") is None else info["last_bms_cycle_ms"] / 1000

    def stop(self):
        self.world.stop()


class Esp32Target(Target):
    """A real board: needs a bench file naming its ports (see hil/benches/esp32-example.toml)."""

    name = "esp32"

    def __init__(self, bench, bench_path):
        ports = getattr(bench, "esp32", None) or {}
        missing = [key for key in ("inverter_port", "bms_port", "console_port") if key not in ports]
        if missing:
            raise TargetUnavailable(
                "the esp32 target needs a bench file with [esp32] %s (see hil/benches/esp32-example.toml)"
                % ", ".join(missing)
            )
        absent = [ports[key] for key in ("inverter_port", "bms_port", "console_port") if not os.path.exists(ports[key])]
        if absent:
            raise TargetUnavailable("ESP32 bench hardware is absent: %s not found" % ", ".join(absent))
        import serial

        self.ports = {key: serial.Serial(ports[key], 9600, timeout=0.5) for key in ("inverter_port", "bms_port")}
        for port in self.ports.values():
            port.close()
        raise TargetUnavailable(
            "the ports of %s open; the ESP32 firmware is not built yet (firmware/), so there is no board to test"
            % bench_path
        )


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
    if name == "esp32":
        return Esp32Target(bench, bench_path)
    raise ValueError("unknown target %r; choose one of %s" % (name, ", ".join(TARGETS)))
