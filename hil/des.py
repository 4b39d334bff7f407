"""The `des` target: a whole bench in one process under simpy, in simulated time.

The proxy state machine (vbms_core.app.Proxy), the same device models as the
real-time bench (simulators/), and a frame-level model of each bus: a frame
takes 10 bit times per byte at the bus's baud rate, devices turn the line
around after their reply delay, two frames that overlap on a bus collide and
arrive garbled.  The DEYE master is modelled here too (polls, timeouts,
identity, W31), with the same power profile as the real-time inverter.
Deterministic for a given seed; simulated hours run in seconds.

Time is simpy's float seconds; the proxy is given integer microseconds.
"""

import collections
import random

import simpy

from simulators.deye.profile import PowerProfile
from simulators.jk.device import JkBleSession, JkBms
from vbms_core import app
from vbms_core import events as ev

from .builder import build_devices, vbms_config
from .des_inverter import InverterModel
from .trace import Trace
from .wires.faults import Fault
from .wires.frame_bus import FrameBus

TOKEN = "des-token"
DUT = "dut"
INVERTER = "deye"


class DesBench(ev.Executor):
    """The bench in simulated time, and the `des` driver of the proxy (an events.Executor)."""

    def __init__(self, bench, seed=None, config_overrides=None):
        self.bench = bench
        self.env = simpy.Environment()
        self.seed = bench.seed if seed is None else seed
        self.random = random.Random(self.seed)
        self.trace = Trace(protocols={name: b.protocol for name, b in bench.buses.items()}, decode=False)
        self.batteries, self.devices = build_devices(bench)
        self.config = vbms_config(bench, TOKEN)
        self.config.update(config_overrides or {})
        self.saved_config = None
        self.proxy = app.Proxy(self.config, 0)
        self.buses = {
            name: FrameBus(self.env, name, spec.baud, spec.protocol, trace=self.trace, seed=self.seed)
            for name, spec in bench.buses.items()
        }
        for spec in bench.faults:
            self.buses[spec.bus].add_fault(Fault.from_spec(spec))
        bms = sorted({spec.bus for spec in bench.batteries if spec.bus})
        self.bms_bus = self.buses[bms[0]] if bms else None
        self.inverter_bus = self.buses[bench.inverter["bus"]]
        self.inverter = InverterModel(
            self, bench.inverter["units"], bench.inverter["poll_period_s"], bench.inverter["timeout_s"],
            bench.inverter["warn_after"], PowerProfile(**bench.profile),
            identity_interval_s=bench.inverter["identity_interval_s"],
        )  # fmt: skip
        # every drop of each bus hears every other's frames, as on the real bench (hil/sim.py)
        self.inverter_bus.add_endpoint(DUT, lambda data, now_s: self.feed(ev.InvBytes(data, 0)))
        self.inverter_bus.add_endpoint(INVERTER, self.inverter.reply_arrived)
        if self.bms_bus is not None:
            self.bms_bus.add_endpoint(DUT, lambda data, now_s: self.feed(ev.BmsBytes(data, 0)))
            for spec in bench.batteries:
                if spec.bus is not None:
                    self.bms_bus.add_endpoint(spec.name, self._device_hears(spec))
        self.ble_sessions = {}
        self.ble_refused = set()
        self.ble_peripherals = {spec.slot: spec for spec in bench.batteries if spec.type == "jk_ble"}
        self.published = collections.deque(maxlen=1000)
        self.dut_log = collections.deque(maxlen=200)  # the proxy's Log actions, for failure reports
        self.rpc_replies = {}
        self.calls = 0
        self.ticks = 0
        self._wake = self.env.event()
        self.env.process(self.inverter.run())
        self.env.process(self._ticker())
        self.env.process(self._ble_stream())
        self.env.process(self._clock())

    # --- the driver: inputs in, actions out ------------------------------------------------

    def now_us(self):
        return int(self.env.now * 1_000_000 + 0.5)

    def feed(self, event):
        event.now_us = self.now_us()
        ev.execute(self, self.proxy.feed(event))
        if not self._wake.triggered:
            self._wake.succeed()  # the proxy's next deadline may have moved: the ticker looks again

    def _ticker(self):
        """Tick the proxy at its next deadline, and only then (or when an input moved it)."""
        while True:
            deadline = self.proxy.next_deadline_us()
            self._wake = self.env.event()
            if deadline is None:
                yield self._wake
            else:
                # at least a microsecond on: a deadline that does not move on cannot stall simulated time
                yield self.env.timeout(max(deadline - self.now_us(), 1) / 1e6) | self._wake
            self.ticks += 1
            self.feed(ev.Tick(0))

    def _later(self, delay_s, function, *args):
        yield self.env.timeout(delay_s)
        function(*args)

    # --- the executor --------------------------------------------------------------------

    def bms_write(self, action):
        if self.bms_bus is not None:
            self.bms_bus.send(DUT, action.data)

    def inv_write(self, action):
        self.inverter_bus.send(DUT, action.data)

    def ble_connect(self, action):
        self.env.process(self._ble_connect(action.slot))

    def ble_write(self, action):
        session = self.ble_sessions.get(action.slot)
        if session is not None:
            for chunk in session.on_write(action.data, self.env.now):
                self.env.process(self._notify(action.slot, chunk, 0.005))

    def ble_disconnect(self, action):
        self.ble_sessions.pop(action.slot, None)

    def ble_scan(self, action):
        """The modules advertising, and the ones connected, after the scan's time."""
        devices = [
            [spec.address, spec.name, -60, slot in self.ble_sessions] for slot, spec in self.ble_peripherals.items()
        ]
        self.env.process(self._later(action.seconds, self.feed, ev.BleScanResult(sorted(devices), 0)))

    def publish(self, action):
        self.published.append((self.env.now, action.topic, action.payload, action.retain))

    def save_config(self, action):
        self.saved_config = dict(action.config)

    def reboot(self, action):
        self.env.process(self._reboot())

    def rpc_reply(self, action):
        self.rpc_replies[action.call_id] = (action.result, action.error)

    def log(self, action):
        self.dut_log.append((self.env.now, action.level, action.event, action.fields))

    # --- the world's side ----------------------------------------------------------------

    def _device_hears(self, spec):
        """A BMS on the bus: it answers, after its turnaround, what it takes for a request to it."""
        device = self.devices[spec.slot]
        handle = {"byd_pro": device.handle if spec.type == "byd_pro" else None,
                  "jk_rs485": getattr(device, "handle_modbus", None),
                  "jk_4e57": getattr(device, "handle_4e57", None)}[spec.type]  # fmt: skip

        def hears(frame, now_s):
            answer = handle(frame)
            if answer is not None:
                reply, delay_s = answer
                self.env.process(self._later(delay_s, self.bms_bus.send, spec.name, reply))

        return hears

    def _ble_connect(self, slot):
        yield self.env.timeout(0.3)
        device = self.devices.get(slot)
        if slot in self.ble_refused or not isinstance(device, JkBms) or device.failure == "refuse_reconnect":
            yield self.env.timeout(2.7)
            self.feed(ev.BleConnectFailed(slot, "not found", 0))
        else:
            self.ble_sessions[slot] = JkBleSession(device, self.ble_peripherals[slot].chunking)
            self.feed(ev.BleConnected(slot, 0))

    def _notify(self, slot, chunk, delay_s):
        yield self.env.timeout(delay_s)
        if slot in self.ble_sessions:
            self.trace.ble(self.env.now, self.ble_peripherals[slot].name, chunk)
            self.feed(ev.BleNotify(slot, chunk, 0))

    def drop_ble(self, slot, refuse=False):
        """The radio link to a JK module is lost (and, with refuse, stays refused)."""
        if refuse:
            self.ble_refused.add(slot)
        if self.ble_sessions.pop(slot, None) is not None:
            self.feed(ev.BleDisconnected(slot, "link lost", 0))

    def _ble_stream(self):
        while True:
            yield self.env.timeout(0.1)
            for slot, session in list(self.ble_sessions.items()):
                device = self.devices[slot]
                if device.failure in ("disconnect", "refuse_reconnect"):
                    self.drop_ble(slot, refuse=device.failure == "refuse_reconnect")
                    if device.failure == "disconnect":
                        device.failure = None
                    continue
                for chunk in session.poll(self.env.now):
                    self.trace.ble(self.env.now, self.ble_peripherals[slot].name, chunk)
                    self.feed(ev.BleNotify(slot, chunk, 0))

    def _clock(self):
        while True:
            yield self.env.timeout(1.0)
            currents = self.inverter.battery_current_ma
            for slot, battery in self.batteries.items():
                battery.advance(1.0, currents.get(slot, 0))
                device = self.devices[slot]
                if isinstance(device, JkBms):
                    device.uptime_s = int(self.env.now)

    def _reboot(self):
        yield self.env.timeout(0.5)
        self.ble_sessions.clear()
        self.proxy = app.Proxy(self.saved_config or self.config, self.now_us())
        if not self._wake.triggered:
            self._wake.succeed()

    # --- what scenarios use --------------------------------------------------------------

    def run_for(self, seconds):
        self.env.run(until=self.env.now + seconds)

    def rpc(self, method, params=None, token=None, timeout_s=60):
        """Call the proxy; an answer that comes later (a BLE scan) is waited for in simulated time."""
        self.calls += 1
        call_id = self.calls
        self.feed(ev.RpcCall(call_id, method, params or {}, 0, token, int(self.env.now)))
        waited = 0.0
        while call_id not in self.rpc_replies and waited < timeout_s:
            self.run_for(0.1)
            waited += 0.1
        return self.rpc_replies.pop(call_id, (None, {"code": -32000, "message": "no answer in %d s" % timeout_s}))
