"""The two drivers of the one DEYE master model: pymodbus on a serial line, simpy on the des FrameBus.

A scripted slave says, for each unit, what it does at its n-th request of each function
(answer, stay silent, send exception 02, send a reply with a broken CRC).  The same script
is played to the pymodbus adapter over a PTY pair (real time) and to the simpy adapter over
the des FrameBus (simulated time); both must end with the same unit states, raise and clear
the same warnings after each cycle, and send the slave the same requests in the same order.
The expected warnings are worked out from the script and the W31 rule (warn_after = 3, as in
hil/benches/default.toml), not read from either adapter.
"""

import os
import pty
import random
import select
import threading
import tty

import simpy
from test_deye_master import PHOTO_REGISTERS, identity_reply, registers_reply

from hil.benchfile import load_default
from hil.des import DesBench
from hil.des_inverter import InverterModel
from hil.trace import Trace
from hil.wires.frame_bus import FrameBus
from simulators.deye.inverter import DeyeInverter
from simulators.deye.profile import PowerProfile
from vbms_core import modbus
from vbms_core.errors import RemoteProtocolError

UNITS = range(6)
CYCLES = 8
WARN_AFTER = 3
TIMEOUT_S = 0.25
REPLY_DELAY_S = 0.01


def unit_registers(unit):
    registers = list(PHOTO_REGISTERS)
    registers[0] = 5200 + unit  # tell the units apart
    return registers


# unit -> what it does at its n-th request (n from 1) of a function
SCRIPT = {
    0: lambda function, n: "answer",
    1: lambda function, n: "silent" if function == modbus.REPORT_ID and n == 1 else "answer",
    2: lambda function, n: "silent" if function == modbus.READ_INPUT and 3 <= n <= 6 else "answer",
    3: lambda function, n: "exception",
    4: lambda function, n: "silent",
    5: lambda function, n: "garbage" if function == modbus.READ_INPUT and n >= 2 else "answer",
}
# from the script: unit 5 misses polls 2, 3, 4 -> W31 at the end of cycle 4; unit 2 misses polls 3..6 -> W31
# at the end of cycle 5, cleared by its answer in cycle 7; units 3 and 4 never answered: no W31
EXPECTED_WARNINGS = [[], [], [], [6], [3, 6], [3, 6], [6], [6]]


class ScriptedSlave:
    def __init__(self, script):
        self.script = script
        self.counts = {}
        self.requests = []  # (unit, function) in the order heard

    def answer(self, adu):
        try:
            request = modbus.decode_request(adu)
        except RemoteProtocolError:
            return None
        key = (request.unit, request.function)
        self.requests.append(key)
        self.counts[key] = self.counts.get(key, 0) + 1
        action = self.script[request.unit](request.function, self.counts[key])
        if action == "silent":
            return None
        if action == "exception":
            return modbus.with_crc(bytes((request.unit, request.function | 0x80, modbus.ILLEGAL_ADDRESS)))
        if request.function == modbus.REPORT_ID:
            return identity_reply(request.unit)
        reply = registers_reply(request.unit, unit_registers(request.unit))
        if action == "garbage":
            return reply[:-1] + bytes((reply[-1] ^ 0xFF,))
        return reply


def comparable(inverter):
    """The unit states without the time of the last answer (real and simulated clocks differ)."""
    return {unit: {k: v for k, v in s.snapshot().items() if k != "last_ok_s"} for unit, s in inverter.units.items()}


# --- pymodbus on a PTY pair ------------------------------------------------------------


class PtySlave:
    """The scripted slave on the far side of a PTY pair; the inverter opens path."""

    def __init__(self, slave):
        self.slave = slave
        self.master_fd, self._slave_fd = pty.openpty()
        tty.setraw(self._slave_fd)
        self.path = os.ttyname(self._slave_fd)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=5)
        os.close(self.master_fd)
        os.close(self._slave_fd)

    def _serve(self):
        buffer = bytearray()
        while not self._stop.is_set():
            if not select.select([self.master_fd], [], [], 0.05)[0]:
                continue
            buffer += os.read(self.master_fd, 256)
            while len(buffer) >= 2:
                length = modbus.request_frame_length(buffer)
                if length is None:
                    del buffer[0]  # not a request start: resynchronise
                    continue
                if len(buffer) < length:
                    break
                reply = self.slave.answer(bytes(buffer[:length]))
                del buffer[:length]
                if reply is not None:
                    self._stop.wait(REPLY_DELAY_S)
                    os.write(self.master_fd, reply)


def run_pymodbus(script):
    slave = ScriptedSlave(script)
    warnings = []
    with PtySlave(slave) as line:
        inverter = DeyeInverter(
            line.path,
            units=UNITS,
            timeout_s=TIMEOUT_S,
            poll_period_s=0.0,
            identity_interval_s=3600.0,
            warn_after=WARN_AFTER,
        )
        inverter.connect()
        try:
            for _ in range(CYCLES):
                inverter.poll_cycle()
                warnings.append(inverter.warnings())
        finally:
            inverter.close()
    return inverter, slave, warnings


# --- simpy on the des FrameBus -----------------------------------------------------------


class FrameBusWorld:
    """The parts of a DesBench the FrameBus and the inverter adapter use, with the slave as the DUT."""

    def __init__(self, slave):
        self.slave = slave
        self.env = simpy.Environment()
        self.random = random.Random(1)
        self.trace = Trace(protocols={"inverter": "deye"}, decode=False)
        self.inverter_bus = FrameBus(self.env, "inverter", 9600, "deye", trace=self.trace, seed=1)
        self.inverter = InverterModel(
            self, UNITS, 0.0, TIMEOUT_S, WARN_AFTER, PowerProfile(), identity_interval_s=3600.0
        )
        self.inverter_bus.add_endpoint("dut", self.slave_hears)
        self.inverter_bus.add_endpoint("deye", self.inverter.reply_arrived)
        self.env.process(self.inverter.run())

    def slave_hears(self, data, now_s):
        reply = self.slave.answer(data)
        if reply is not None:
            self.env.process(self._reply_later(reply))

    def _reply_later(self, reply):
        yield self.env.timeout(REPLY_DELAY_S)
        self.inverter_bus.send("dut", reply)


def run_simpy(script):
    slave = ScriptedSlave(script)
    world = FrameBusWorld(slave)
    warnings = []
    for cycle in range(1, CYCLES + 1):
        while world.inverter.cycles < cycle:
            world.env.step()
        warnings.append(world.inverter.warnings())
    return world.inverter, slave, warnings


def battery_numbers(warnings):
    return [[int(text.rsplit(" ", 1)[1]) for text in cycle] for cycle in warnings]


def test_pymodbus_adapter_plays_the_script():
    inverter, slave, warnings = run_pymodbus(SCRIPT)
    assert battery_numbers(warnings) == EXPECTED_WARNINGS
    check_final_states(inverter, slave)


def test_simpy_adapter_plays_the_script():
    inverter, slave, warnings = run_simpy(SCRIPT)
    assert battery_numbers(warnings) == EXPECTED_WARNINGS
    check_final_states(inverter, slave)


def check_final_states(inverter, slave):
    units = inverter.units
    assert [units[u].polls for u in UNITS] == [CYCLES] * 6
    assert [units[u].answers for u in UNITS] == [8, 8, 4, 0, 0, 1]
    assert [units[u].misses for u in UNITS] == [0, 0, 0, 8, 8, 7]
    assert [units[u].comm_warning for u in UNITS] == [False, False, False, False, False, True]
    assert units[3].exception == modbus.ILLEGAL_ADDRESS and units[3].values is None
    assert units[2].values["pack_voltage_mv"] == 52_020
    assert units[0].identity["model"] == "BYD PRO 2.5" and units[1].identity["model"] == "BYD PRO 2.5"
    identity_reads = {u: slave.requests.count((u, modbus.REPORT_ID)) for u in UNITS}
    # read at each unit's first answer; unit 1 ignored the first one: read again at its next poll
    assert identity_reads == {0: 1, 1: 2, 2: 1, 3: 0, 4: 0, 5: 1}


def test_both_adapters_give_the_same_units_warnings_and_requests():
    sim_inverter, sim_slave, sim_warnings = run_pymodbus(SCRIPT)
    des_inverter, des_slave, des_warnings = run_simpy(SCRIPT)
    assert sim_warnings == des_warnings
    assert comparable(sim_inverter) == comparable(des_inverter)
    assert sim_slave.requests == des_slave.requests
    assert sim_inverter.rows() == des_inverter.rows()


# --- the simpy adapter in a whole DesBench ------------------------------------------------


def test_des_bench_reads_identity_every_interval_and_raises_and_clears_w31():
    bench = load_default()
    bench.inverter["identity_interval_s"] = 20.0
    world = DesBench(bench)
    world.run_for(55)
    inverter = world.inverter
    for unit in range(8):
        assert inverter.units[unit].values is not None and inverter.units[unit].identity is not None, unit
    assert all(inverter.units[u].values is None for u in range(8, 15))
    assert inverter.warnings() == []
    identity_reads = [r["t"] for r in world.trace.records if r["from"] == "deye" and r["hex"] == "0011C1BC"]
    assert len(identity_reads) == 3, identity_reads
    cycle_s = 3.0  # 8 answering and 7 silent units at timeout_s = 0.2: about 2 s per cycle
    for earlier, later in zip(identity_reads, identity_reads[1:], strict=False):
        assert 20.0 <= later - earlier < 20.0 + cycle_s

    world.devices[2].set_failure("silent")
    world.run_for(40)
    assert inverter.warnings() == ["W31 Battery_comm_warn: battery 3"]
    assert inverter.units[2].misses >= WARN_AFTER
    world.devices[2].set_failure(None)
    world.run_for(20)
    assert inverter.warnings() == [] and inverter.units[2].misses == 0
