"""The `des` target: a whole bench in one process under simpy, in simulated time.

The proxy state machine (vbms_core.app.Proxy), the same device models as the
real-time bench (simulators/), and a frame-level model of each bus: a frame
takes 10 bit times per byte at the bus's baud rate, devices turn the line
around after their reply delay, two frames that overlap on a bus collide and
arrive garbled.  The DEYE master is modelled here too (polls, timeouts,
identity, W31), with the same power profile as the real-time inverter.
Deterministic for a given seed; simulated hours run in seconds.

Time is simpy's float seconds; the proxy is given integer microseconds.  Everything
runs on simpy timeouts with callbacks; the proxy is ticked at Proxy.next_deadline_us()
and at no other time.

Fidelity (set_fidelity): FULL models every BLE chunk and keep-alive, streams each JK
frame every 0.5 s, steps the battery models every second and lets every drop of a bus
hear every frame.  FAST keeps what the inverter can see and drops what no observer of
a scenario that looks only at the inverter needs:
- a JK frame is one notification, and only the frames that tell the proxy something new
  reach it: the first of a stream on time (the handshake waits for it); when the module
  changed (its battery model stepped, a scenario changed the device) and somebody reads it
  (the inverter asks for its unit, an RPC call comes) or it is about to change again, the
  newest frame made since; and one every FAST_BLE_REFRESH_S, so the link and the reading
  stay fresh.  A frame made between two changes is the same as the one before, but for
  the module's frame counter and uptime, which the inverter never sees.  In FAST, a
  device model is changed through the target (DesTarget), which tells the bench first
  (device_changes);
- a battery model is stepped when the current asked of it moves (current_step_ma), and
  FAST_BATTERY_STEP_S after its last step at the latest (see there for the tolerance);
- a device model hears the proxy's requests only, not the other devices' replies (it
  answers requests only);
- the buses stay frame-level: timing, faults and collisions are the same in both.
tests/test_des_speed.py shows both give the inverter the same answers.
"""

import collections
import math
import random
from collections.abc import Callable
from typing import Any

import simpy

from simulators.deye.profile import PowerProfile
from simulators.jk.device import STREAM_INTERVAL_S, JkBleSession, JkBms
from vbms_core import app
from vbms_core import events as ev

from .benchfile import BatterySpec, Bench
from .builder import build_devices, vbms_config
from .des_inverter import InverterModel
from .trace import Trace
from .wires.faults import Fault
from .wires.frame_bus import Deliver, FrameBus, call_later

TOKEN = "des-token"
DUT = "dut"
INVERTER = "deye"

FULL = "full"
FAST = "fast"
FIDELITIES = (FULL, FAST)

BLE_POLL_S = 0.1  # FULL: how often a JK module whose failure is a lost link is looked for
# FAST: a battery model is stepped at once when the current the inverter asks of it moves by
# current_step_ma() or changes direction, and FAST_BATTERY_STEP_S after its last step at the latest
# (each battery has its own clock: one whose current keeps moving needs no other).  The current is sampled
# at whole seconds as in full fidelity, and a step's charge and heat come from the mean of those
# samples, so no charge is lost between steps.  What the inverter can see then differs from full
# fidelity only by the state a step has not caught up with yet: tests/test_des_speed.py states that
# tolerance and holds both fidelities to it.  A step costs about 25 us per battery: at 10 s it is a
# few percent of a simulated second's work, and a longer step saves nothing that shows in
# `vbms bench des` while the lag it allows grows with it (at the 50 A a BYD module takes, a 10 s
# step is 2.8 permille of its SOC).
FAST_BATTERY_STEP_S = 10
# The current a BMS reports may lag the one flowing by 2 % of it, a tenth of an amp at least (the charge
# counted is exact either way, see _Flow).  Under a day of sun the inverter's split moves each battery's
# current a little at every cycle: those steps are about a fifth of `vbms bench des`'s work.
FAST_CURRENT_STEP_MA = 100
FAST_CURRENT_STEP_PERMILLE = 20


def current_step_ma(current_ma: int) -> int:
    """FAST: how far the current flowing may move from the one a battery model reports before it is stepped."""
    return max(FAST_CURRENT_STEP_MA, abs(current_ma) * FAST_CURRENT_STEP_PERMILLE // 1000)


# FAST: the longest a streaming JK module goes without a frame reaching the proxy; less with a short
# app.ble_timeout_s or app.stale_s (a second before either would run out)
FAST_BLE_REFRESH_S = 4.0
FAST_BLE_LOOK_S = 0.5  # fast: how often the streams are looked at for that (and for lost links)
TRACE_KEPT = 20_000  # frames kept in memory for failure reports (a ring: a week does not fit)

# what the proxy takes in (vbms_core.events, "Inputs"); each carries the driver's clock in now_us
Input = (
    ev.BmsBytes
    | ev.InvBytes
    | ev.Tick
    | ev.BleConnected
    | ev.BleConnectFailed
    | ev.BleDisconnected
    | ev.BleNotify
    | ev.BleScanResult
    | ev.RpcCall
    | ev.MqttConnected
)


class _Flow:
    """FAST: the current the inverter asks of one battery, between two steps of its model.

    Whole seconds, as full fidelity's clock samples them: sample_ma has held since second
    counted_s; charge_mas is what flowed from the last step (stepped_s) to counted_s;
    reported_ma is the current the model took at that step (what its BMS reports)."""

    __slots__ = ("sample_ma", "reported_ma", "charge_mas", "counted_s", "stepped_s")

    def __init__(self, current_ma: int, now_s: float) -> None:
        self.sample_ma = current_ma
        self.reported_ma = current_ma
        self.charge_mas: float = 0
        self.counted_s = now_s
        self.stepped_s = now_s


class DesBench(ev.Executor):
    """The bench in simulated time, and the `des` driver of the proxy (an events.Executor)."""

    def __init__(
        self,
        bench: Bench,
        seed: int | None = None,
        config_overrides: dict[str, Any] | None = None,
        fidelity: str = FULL,
    ) -> None:
        self.bench = bench
        self.env = simpy.Environment()
        self.seed = bench.seed if seed is None else seed
        self.random = random.Random(self.seed)
        self.trace = Trace(
            protocols={name: b.protocol for name, b in bench.buses.items()}, decode=False, keep=TRACE_KEPT
        )
        self.batteries, self.devices = build_devices(bench)
        self.config = vbms_config(bench, TOKEN)
        self.config.update(config_overrides or {})
        self.saved_config: dict[str, Any] | None = None
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
        self.inverter_bus.add_endpoint(DUT, self._inverter_request)
        self.inverter_bus.add_endpoint(INVERTER, self.inverter.reply_arrived)
        if self.bms_bus is not None:
            self.bms_bus.add_endpoint(DUT, lambda data, now_s: self.feed(ev.BmsBytes(data, 0)))
        self.ble_sessions: dict[int, JkBleSession] = {}
        self.ble_refused: set[int] = set()
        self.ble_peripherals = {spec.slot: spec for spec in bench.batteries if spec.type == "jk_ble"}
        # (t_s, topic, payload, retain) of the proxy's Publish actions
        self.published: collections.deque[tuple[float, str, str, bool]] = collections.deque(maxlen=1000)
        # the proxy's Log actions, for failure reports: (t_s, level, event, fields)
        self.dut_log: collections.deque[tuple[float, str, str, dict[str, Any]]] = collections.deque(maxlen=200)
        self.rpc_replies: dict[int, tuple[Any, dict[str, Any] | None]] = {}  # call_id -> (result, error)
        self.calls = 0
        self.ticks = 0
        self.fidelity: str | None = None
        self.battery_step_s: float = 1.0
        self._tick_at_us: int | None = None  # when the proxy's next tick is planned
        self._tick_token = 0  # the planned tick; older timeouts are stale
        self._ble_token = 0  # the running BLE stream loop; older ones stop
        self._battery_stepped_s: float = 0  # the whole second the battery models were last stepped to
        self._clock_token = 0  # the running battery clock; older ones stop
        self._flows: dict[int, _Flow] = {}  # FAST: slot -> _Flow
        self._sample_due_s: int | None = None  # FAST: the whole second the currents are next sampled at
        self.inverter.on_cycle = self._currents_changed
        self._ble_made_s: dict[int, float] = {}  # FAST: slot -> when the frame the proxy has of it was made
        self._ble_made_version: dict[int, int] = {}  # FAST: slot -> the module's version that frame was made of
        self._ble_version: dict[int, int] = {}  # FAST: slot -> how often the module (device or battery model) changed
        self._ble_changed_s: dict[int, float] = {}  # FAST: slot -> when it last changed
        self._stream_tokens: dict[int, int] = {}  # slot -> its latest planned stream frame; older ones are stale
        self.set_fidelity(fidelity)
        self._after(0.0, self.inverter.start)  # when time starts to run: what a driver does first goes first
        self._plan_tick()

    # --- fidelity -----------------------------------------------------------------------

    def set_fidelity(self, fidelity: str) -> None:
        """FULL or FAST (the module's docstring says what FAST leaves out); at any time."""
        if fidelity not in FIDELITIES:
            raise ValueError("unknown fidelity %r; choose one of %s" % (fidelity, ", ".join(FIDELITIES)))
        if fidelity == self.fidelity:
            return
        fast = fidelity == FAST
        if fast:
            currents = self.inverter.battery_current_ma
            for slot in self.batteries:
                self._flows[slot] = _Flow(currents.get(slot, 0), self._battery_stepped_s)
        elif self.fidelity == FAST:
            stepped_s = max(math.floor(self.env.now), self._battery_stepped_s)
            for slot in self.batteries:
                self._step_fast(slot, stepped_s)  # what the last fast step has not caught up with
            self._battery_stepped_s = stepped_s
        self.fidelity = fidelity
        self.battery_step_s = FAST_BATTERY_STEP_S if fast else 1
        self._clock_token += 1
        at_s = (self._battery_stepped_s // self.battery_step_s + 1) * self.battery_step_s
        if fast:  # each battery's own clock: FAST_BATTERY_STEP_S after its last step, whatever made it
            for slot in self.batteries:
                due_s = self._flows[slot].stepped_s + FAST_BATTERY_STEP_S
                self._after(max(due_s - self.env.now, 0.0), self._battery_due, slot, due_s, self._clock_token)
        else:
            self._after(at_s - self.env.now, self._clock, self._clock_token, at_s)
        if self.bms_bus is not None:
            for spec in self.bench.batteries:
                if spec.bus is not None:
                    self.bms_bus.add_endpoint(spec.name, self._device_hears(spec), hears=(DUT,) if fast else None)
        for slot, session in self.ble_sessions.items():
            session.whole_frames = fast
            if not fast:
                self._plan_stream(slot, session)
        self._ble_token += 1
        self._after(FAST_BLE_LOOK_S if fast else BLE_POLL_S, self._ble_stream, self._ble_token)

    # --- the driver: inputs in, actions out ------------------------------------------------

    def now_us(self) -> int:
        return int(self.env.now * 1_000_000 + 0.5)

    def feed(self, event: Input) -> None:
        event.now_us = self.now_us()
        ev.execute(self, self.proxy.feed(event))
        self._plan_tick()  # the proxy's next deadline may have moved

    def _plan_tick(self) -> None:
        """A tick at the proxy's next deadline, unless one is planned by then already."""
        deadline_us = self.proxy.next_deadline_us()
        if deadline_us is None:
            return
        now_us = self.now_us()
        # at least a microsecond on: a deadline that does not move on cannot stall simulated time
        at_us = max(deadline_us, now_us + 1)
        if self._tick_at_us is not None and self._tick_at_us <= at_us:
            return
        self._tick_at_us = at_us
        self._tick_token += 1
        token = self._tick_token
        call_later(self.env, (at_us - now_us) / 1e6, self._tick, token)

    def _tick(self, token: int) -> None:
        if token != self._tick_token:
            return  # an earlier tick was planned after this one
        self._tick_at_us = None
        deadline_us = self.proxy.next_deadline_us()
        if deadline_us is None or deadline_us > self.now_us():
            self._plan_tick()  # the deadline moved on without a tick: wait for it
            return
        self.ticks += 1
        self.feed(ev.Tick(0))
        if self._tick_at_us is None and "feed" in self.__dict__:
            self._plan_tick()  # a test that replaced feed (to record inputs) plans no tick

    def _after(self, delay_s: float, function: Callable[..., object], *args: Any) -> None:
        """function(*args) delay_s from now, on a simpy timeout's callback."""
        call_later(self.env, delay_s, function, *args)

    # --- the executor --------------------------------------------------------------------

    def bms_write(self, action: ev.BmsWrite) -> None:
        if self.bms_bus is not None:
            self.bms_bus.send(DUT, action.data)

    def inv_write(self, action: ev.InvWrite) -> None:
        self.inverter_bus.send(DUT, action.data)

    def ble_connect(self, action: ev.BleConnect) -> None:
        self._after(0.3, self._ble_connect, action.slot)

    def ble_write(self, action: ev.BleWrite) -> None:
        session = self.ble_sessions.get(action.slot)
        if session is not None:
            stream_s = session.next_frame_s
            for chunk in session.on_write(action.data, self.env.now):
                self._after(0.005, self._notify, action.slot, chunk)
            if session.streaming and session.next_frame_s != stream_s:
                self._plan_stream(action.slot, session)  # the stream (re)starts

    def ble_disconnect(self, action: ev.BleDisconnect) -> None:
        self.ble_sessions.pop(action.slot, None)

    def ble_scan(self, action: ev.BleScan) -> None:
        """The modules advertising, and the ones connected, after the scan's time."""
        devices = [
            [spec.address, spec.name, -60, slot in self.ble_sessions] for slot, spec in self.ble_peripherals.items()
        ]
        self._after(action.seconds, self.feed, ev.BleScanResult(sorted(devices), 0))

    def publish(self, action: ev.Publish) -> None:
        self.published.append((self.env.now, action.topic, action.payload, action.retain))

    def save_config(self, action: ev.SaveConfig) -> None:
        self.saved_config = dict(action.config)

    def reboot(self, action: ev.Reboot) -> None:
        self.restart()

    def rpc_reply(self, action: ev.RpcReply) -> None:
        self.rpc_replies[action.call_id] = (action.result, action.error)

    def log(self, action: ev.Log) -> None:
        self.dut_log.append((self.env.now, action.level, action.event, action.fields))

    # --- the world's side ----------------------------------------------------------------

    def _inverter_request(self, data: bytes, now_s: float) -> None:
        """The inverter's bytes reach the device under test; in FAST the JK module behind the
        unit asked for first gets its newest frame to the proxy, as a full stream would have."""
        if self.fidelity == FAST and data and data[0] in self.ble_sessions:
            self._ble_read(data[0])
        self.feed(ev.InvBytes(data, 0))

    def _device_hears(self, spec: BatterySpec) -> Deliver:
        """A BMS on the bus: it answers, after its turnaround, what it takes for a request to it."""
        device = self.devices[spec.slot]
        # (the ignore: a byd_pro battery's device is a BydModule, and each type's key names its handler)
        handle: Callable[[bytes], tuple[bytes, float] | None]
        handle = {"byd_pro": device.handle if spec.type == "byd_pro" else None,  # type: ignore[union-attr, assignment]
                  "jk_rs485": getattr(device, "handle_modbus", None),
                  "jk_4e57": getattr(device, "handle_4e57", None)}[spec.type]  # fmt: skip

        def hears(frame: bytes, now_s: float) -> None:
            answer = handle(frame)
            if answer is not None:
                reply, delay_s = answer
                # (the ignore: only a bench with a BMS bus has devices on it that hear)
                self._after(delay_s, self.bms_bus.send, spec.name, reply)  # type: ignore[union-attr]

        return hears

    def _ble_connect(self, slot: int) -> None:
        device = self.devices.get(slot)
        if slot in self.ble_refused or not isinstance(device, JkBms) or device.failure == "refuse_reconnect":
            self._after(2.7, self.feed, ev.BleConnectFailed(slot, "not found", 0))
        else:
            self.ble_sessions[slot] = JkBleSession(
                device, self.ble_peripherals[slot].chunking, whole_frames=self.fidelity == FAST
            )
            self.feed(ev.BleConnected(slot, 0))

    def _notify(self, slot: int, chunk: bytes) -> None:
        if slot in self.ble_sessions:
            self.trace.ble(self.env.now, self.ble_peripherals[slot].name, chunk)
            self.feed(ev.BleNotify(slot, chunk, 0))

    def device_changes(self, slot: int) -> None:
        """A scenario is about to change a device model (a failure, an alarm): in FAST, the frame
        its stream has due goes to the proxy first, made before the change, as a full stream sent it."""
        if self.fidelity == FAST and slot in self.ble_sessions:
            self._ble_change(slot)

    def drop_ble(self, slot: int, refuse: bool = False) -> None:
        """The radio link to a JK module is lost (and, with refuse, stays refused)."""
        if refuse:
            self.ble_refused.add(slot)
        if self.ble_sessions.pop(slot, None) is not None:
            self.feed(ev.BleDisconnected(slot, "link lost", 0))

    def _link_failed(self, slot: int) -> bool:
        """A module whose failure is a lost link loses it; True if it did."""
        device = self.devices[slot]
        if device.failure not in ("disconnect", "refuse_reconnect"):
            return False
        self.drop_ble(slot, refuse=device.failure == "refuse_reconnect")
        if device.failure == "disconnect":
            device.failure = None
        return True

    def _ble_stream(self, token: int) -> None:
        """Every BLE_POLL_S (FAST: FAST_BLE_LOOK_S), a module whose failure is a lost link loses
        it; FAST: a stream none of whose frames reached the proxy for FAST_BLE_REFRESH_S sends
        its newest one, so the link and the reading stay fresh."""
        if token != self._ble_token:
            return  # the fidelity changed: a new loop runs
        now_s = self.env.now
        fast = self.fidelity == FAST
        config = self.proxy.config
        shortest_s = min(config["app.ble_timeout_s"], config["app.stale_s"])
        refresh_s = min(FAST_BLE_REFRESH_S, shortest_s - 2 * FAST_BLE_LOOK_S)
        for slot in list(self.ble_sessions):
            if not self._link_failed(slot) and fast and now_s - self._ble_made_s.get(slot, 0.0) >= refresh_s:
                self._ble_deliver(slot)
        self._after(FAST_BLE_LOOK_S if fast else BLE_POLL_S, self._ble_stream, token)

    def _plan_stream(self, slot: int, session: JkBleSession, at_s: float | None = None) -> None:
        """The stream's next frame at the time it is due (FULL: each frame; FAST: the first one,
        for the handshake that waits for it; the others when somebody reads them)."""
        token = self._stream_tokens.get(slot, 0) + 1
        self._stream_tokens[slot] = token
        due_s = session.next_frame_s if at_s is None else at_s
        self._after(max(due_s - self.env.now, 0.0), self._frame_due, slot, session, token, due_s)

    def _frame_due(self, slot: int, session: JkBleSession, token: int, due_s: float) -> None:
        if self._stream_tokens.get(slot) != token or self.ble_sessions.get(slot) is not session:
            return  # the stream restarted, or the link is gone
        now_s = max(self.env.now, due_s)  # (float rounding may put the timeout a hair before it)
        if self.fidelity == FAST:
            self._ble_deliver(slot, now_s)
            return
        if self._link_failed(slot):
            return
        for chunk in session.poll(now_s):
            self.trace.ble(self.env.now, self.ble_peripherals[slot].name, chunk)
            self.feed(ev.BleNotify(slot, chunk, 0))
        if session.next_frame_s > due_s:
            self._plan_stream(slot, session)
        else:  # a stream that sent nothing (a failure): look again a frame later
            self._plan_stream(slot, session, due_s + STREAM_INTERVAL_S)

    def _ble_read(self, slot: int) -> None:
        """FAST: somebody is about to read what the proxy has of a JK module: if the module changed
        since the frame the proxy has was made, and its stream has a frame due since, that one goes first."""
        session = self.ble_sessions.get(slot)
        if session is None or self._ble_made_version.get(slot) == self._ble_version.get(slot, 0):
            return  # the proxy has the module as it is
        due_s = session.due_s(self.env.now)
        if due_s is not None and due_s >= self._ble_changed_s.get(slot, 0.0):
            self._ble_deliver(slot)

    def _ble_change(self, slot: int) -> None:
        """FAST: a JK module is about to change: what its stream made since its last change reaches
        the proxy first (a full stream would have sent it)."""
        self._ble_read(slot)
        self._ble_version[slot] = self._ble_version.get(slot, 0) + 1
        self._ble_changed_s[slot] = self.env.now

    def _ble_deliver(self, slot: int, now_s: float | None = None) -> None:
        """FAST: the newest frame due of a JK module's stream reaches the proxy (if it has not)."""
        session = self.ble_sessions.get(slot)
        if session is None or self._link_failed(slot):
            return
        now_s = self.env.now if now_s is None else now_s
        for chunk in session.latest(now_s):
            self._ble_made_s[slot] = now_s
            self._ble_made_version[slot] = self._ble_version.get(slot, 0)
            self.trace.ble(self.env.now, self.ble_peripherals[slot].name, chunk)
            self.feed(ev.BleNotify(slot, chunk, 0))

    def _clock(self, token: int, at_s: float) -> None:
        """FULL: at every whole second at_s, each battery model steps by a second with the current
        the inverter asks of it now."""
        if token != self._clock_token:
            return  # the fidelity changed: a new clock runs
        currents = self.inverter.battery_current_ma
        for slot, battery in self.batteries.items():
            battery.advance(at_s - self._battery_stepped_s, currents.get(slot, 0))
            self._uptime(slot, at_s)
        self._battery_stepped_s = at_s
        self._after(at_s + self.battery_step_s - self.env.now, self._clock, token, at_s + self.battery_step_s)

    def _battery_due(self, slot: int, at_s: float, token: int) -> None:
        """FAST: at whole second at_s, a battery model not stepped for FAST_BATTERY_STEP_S steps by the
        time since, with the mean of the currents sampled meanwhile (one that a change of its current
        stepped meanwhile has a later clock)."""
        if token != self._clock_token or self._flows[slot].stepped_s + FAST_BATTERY_STEP_S > at_s:
            return
        self._sample_currents(at_s)
        if self._flows[slot].stepped_s < at_s:  # (unless the sample stepped it just now)
            self._step_fast(slot, at_s)

    def _uptime(self, slot: int, now_s: float) -> None:
        device = self.devices[slot]
        if isinstance(device, JkBms):
            device.uptime_s = int(now_s)

    def _currents_changed(self, now_s: float) -> None:
        """FAST: the inverter split its power anew; full fidelity's clock takes the new currents at
        the next whole second, and so does the sample."""
        if self.fidelity != FAST:
            return
        sample_s = math.floor(now_s) + 1
        if self._sample_due_s != sample_s:
            self._sample_due_s = sample_s
            self._after(sample_s - now_s, self._sample_currents, sample_s)

    def _sample_currents(self, sample_s: float) -> None:
        """FAST: the currents at whole second sample_s; a battery whose current moved far or turned is stepped now."""
        if self.fidelity != FAST:
            return
        currents = self.inverter.battery_current_ma
        for slot, flow in self._flows.items():
            current_ma = currents.get(slot, 0)
            if current_ma == flow.sample_ma:
                continue
            counted_s = max(sample_s - 1, flow.counted_s)  # the seconds before sample_s had the old current
            flow.charge_mas += flow.sample_ma * (counted_s - flow.counted_s)
            flow.counted_s = counted_s
            flow.sample_ma = current_ma
            reported_ma = flow.reported_ma
            if (
                abs(current_ma - reported_ma) >= current_step_ma(reported_ma)
                or (current_ma > 0) != (reported_ma > 0)
                or (current_ma < 0) != (reported_ma < 0)
            ):
                self._step_fast(slot, sample_s)

    def _step_fast(self, slot: int, now_s: float) -> None:
        if slot in self.ble_sessions:
            self._ble_change(slot)
        flow = self._flows[slot]
        flow.charge_mas += flow.sample_ma * (now_s - flow.counted_s)
        flow.counted_s = now_s
        dt_s = now_s - flow.stepped_s
        battery = self.batteries[slot]
        if dt_s > 0:
            battery.advance(dt_s, flow.sample_ma, mean_current_ma=flow.charge_mas / dt_s)
        else:
            battery.advance(0, flow.sample_ma)
        flow.reported_ma = flow.sample_ma
        flow.charge_mas = 0
        flow.stepped_s = now_s
        self._uptime(slot, now_s)
        at_s = now_s + FAST_BATTERY_STEP_S
        self._after(at_s - self.env.now, self._battery_due, slot, at_s, self._clock_token)

    def restart(self) -> None:
        """The device under test restarts from its saved configuration, half a second from now."""
        self._after(0.5, self._reboot)

    def _reboot(self) -> None:
        self.ble_sessions.clear()
        self.proxy = app.Proxy(self.saved_config or self.config, self.now_us())
        self._tick_at_us = None
        self._tick_token += 1
        self._plan_tick()

    # --- what scenarios use --------------------------------------------------------------

    def run_for(self, seconds: float) -> None:
        self.env.run(until=self.env.now + seconds)

    def rpc(
        self, method: str, params: dict[str, Any] | None = None, token: str | None = None, timeout_s: float = 60
    ) -> tuple[Any, dict[str, Any] | None]:
        """Call the proxy; an answer that comes later (a BLE scan) is waited for in simulated time."""
        if self.fidelity == FAST:
            for slot in list(self.ble_sessions):
                self._ble_read(slot)  # the call reads what a full stream would have delivered
        self.calls += 1
        call_id = self.calls
        self.feed(ev.RpcCall(call_id, method, params or {}, 0, token, int(self.env.now)))
        waited = 0.0
        while call_id not in self.rpc_replies and waited < timeout_s:
            self.run_for(0.1)
            waited += 0.1
        return self.rpc_replies.pop(call_id, (None, {"code": -32000, "message": "no answer in %d s" % timeout_s}))
