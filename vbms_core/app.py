"""The VBMS proxy as a state machine (ARCHITECTURE.md, layer 1): the router.

Drivers feed typed inputs and carry out the typed actions that come back
(vbms_core.events: the vocabulary and the Executor contract).  The proxy never
sleeps, reads a clock or does I/O, so the same code runs on asyncio (CPython,
MicroPython) and on simpy.

    proxy = Proxy(config, now_us)
    actions = proxy.feed(events.InvBytes(data, now_us))
    events.execute(executor, actions)
    ... sleep until proxy.next_deadline_us(), then feed events.Tick(now_us)

The parts, each in its own module, and what the router hands each:
  slots.Slot            per slot: configuration, last reading, status
  rs485_master          the BMS bus: BmsBytes, ticks -> BmsWrite, readings
  ble_central           JK over BLE: Ble* inputs, ticks -> BleConnect/Write/Disconnect, readings
  deye.DeyeSlave        the inverter side: InvBytes -> InvWrite (this module frames the requests)
  rpc                   RpcCall, BleScanResult -> RpcReply, SaveConfig, Reboot, BleScan
  telemetry             MqttConnected, ticks -> Publish
  summary               VBMS.GetSummary
"""

from . import config as config_module
from . import deye, modbus, slots, soc, summary
from . import events as ev
from .ble_central import CONNECT_FAILED, CONNECTED, DISCONNECTED, NOTIFY, BleCentral
from .modbus import NEED_DATA
from .rpc import VERSION, Rpc  # noqa: F401 - VERSION is part of this module's interface
from .rs485_master import Rs485Master
from .telemetry import Telemetry

DECISIONS_KEPT = 32

# input type -> the Proxy method that takes it
INPUTS = {
    ev.BmsBytes: "_bms_bytes",
    ev.InvBytes: "_inv_bytes",
    ev.Tick: "_tick",
    ev.BleConnected: "_ble_connected",
    ev.BleConnectFailed: "_ble_connect_failed",
    ev.BleDisconnected: "_ble_disconnected",
    ev.BleNotify: "_ble_notify",
    ev.BleScanResult: "_ble_scan_result",
    ev.RpcCall: "_rpc_call",
    ev.MqttConnected: "_mqtt_connected",
}
NO_ACTIONS = ()


class Proxy:
    def __init__(self, config, now_us=0):
        self.config = config_module.validate(config)
        self.started_us = now_us
        self._actions = []
        self.slots = [slots.Slot(index) for index in range(config_module.SLOTS)]
        self.deye = deye.DeyeSlave(self.config["app.stale_s"] * 1000000)
        self.inv_framer = modbus.RtuFramer(self.config["app.inv_baud"])
        self.inverter_requests = 0
        self.inverter_replies = 0
        self.last_decisions = []  # (unit, reason) of the latest inverter requests
        self.rs485 = Rs485Master(self, now_us)
        self.ble = BleCentral(self)
        self.rpc = Rpc(self)
        self.telemetry = Telemetry(self, now_us)
        self._apply_config(now_us)

    # --- the driver's side ------------------------------------------------------------

    def feed(self, event):
        """Take one input; returns the actions it led to, in order (a list, or an empty tuple)."""
        handler = INPUTS.get(type(event))
        if handler is None:
            raise TypeError("not a proxy input: %r" % (event,))
        getattr(self, handler)(event)
        if not self._actions:
            return NO_ACTIONS
        actions = self._actions
        self._actions = []
        return actions

    def next_deadline_us(self):
        """The earliest time a Tick has something to do; None when only inputs can wake the proxy."""
        soonest = None
        for deadline in (
            self.rs485.next_deadline_us(),
            self.ble.next_deadline_us(),
            self.telemetry.next_deadline_us(),
            self.rpc.next_deadline_us(),
            self.inv_framer.deadline_us(),
        ):
            if deadline is not None and (soonest is None or deadline < soonest):
                soonest = deadline
        return soonest

    # --- what the parts call ------------------------------------------------------------

    def emit(self, action):
        self._actions.append(action)

    def log(self, level, event, fields):
        self._actions.append(ev.Log(level, event, fields))

    def answered(self, slot, reading, now_us):
        """A battery answered; reading is None for an answer that carries none (JK settings)."""
        slot.answers += 1
        if reading is None:
            return
        if reading.soc_permille is None:
            soc.estimate_soc(reading, slot.chemistry)
        slot.reading = reading
        slot.updated_us = now_us
        slot.status = slots.STATUS_ONLINE
        slot.error = None
        self._serve(slot)

    def answered_again(self, slot, now_us):
        """A battery answered with the very bytes of its last answer: the same reading, read now."""
        slot.answers += 1
        slot.updated_us = now_us
        slot.status = slots.STATUS_ONLINE
        slot.error = None
        self.deye.touch(slot.index, now_us)

    def failure(self, slot, message):
        slot.failures += 1
        slot.error = message

    def summary(self, now_us, wall_s=None):
        return summary.summary(self, now_us, wall_s)

    def reconfigure(self, config, now_us):
        """A validated configuration takes effect at once."""
        self.config = config
        self._apply_config(now_us)

    # --- configuration ---------------------------------------------------------------------

    def _apply_config(self, now_us):
        replaced = []
        for slot in self.slots:
            if slot.configure(self.config):
                replaced.append(slot.index)
                self.deye.clear_unit(slot.index)
        self.rs485.configure(self.slots, self.config)
        self.ble.configure(self.slots, replaced)
        self.deye.stale_us = self.config["app.stale_s"] * 1000000
        for slot in self.slots:
            if slot.reading is not None:
                self._serve(slot)  # a new charge voltage or limit reaches the inverter now

    def _serve(self, slot):
        """The slot's reading becomes what the inverter reads for its unit."""
        registers = slots.registers(slot, self.config["app.max_charge_current_a"])
        self.deye.set_unit(slot.index, registers, slots.identity(slot), slot.updated_us)

    # --- inputs ------------------------------------------------------------------------------

    def _inv_bytes(self, event):
        self.inv_framer.feed(event.data, event.now_us)
        # A whole request with a good CRC is answered at once, not after t3.5.
        self.inv_framer.close_if_complete(modbus.request_frame_length)
        self._answer_inverter(event.now_us)

    def _answer_inverter(self, now_us):
        while True:
            frame = self.inv_framer.next_event(now_us)
            if frame is NEED_DATA:
                return
            if not frame.ok:
                continue
            self.inverter_requests += 1
            reply = self.deye.handle(frame.raw, now_us)
            self.last_decisions.append((frame.raw[0] if frame.raw else None, self.deye.reason))
            if len(self.last_decisions) > DECISIONS_KEPT:
                self.last_decisions.pop(0)
            if reply is not None:
                self.inverter_replies += 1
                self.emit(ev.InvWrite(bytes(reply)))

    def _bms_bytes(self, event):
        self.rs485.bytes_in(event.data, event.now_us)

    def _tick(self, event):
        now_us = event.now_us
        self._answer_inverter(now_us)
        self.rs485.tick(now_us)
        self.ble.tick(now_us)
        self.rpc.tick(now_us)
        self.telemetry.tick(now_us)

    def _ble_connected(self, event):
        self.ble.event(event.slot, CONNECTED, event.now_us)

    def _ble_connect_failed(self, event):
        self.ble.event(event.slot, CONNECT_FAILED, event.now_us, event.reason)

    def _ble_disconnected(self, event):
        self.ble.event(event.slot, DISCONNECTED, event.now_us, event.reason)

    def _ble_notify(self, event):
        self.ble.event(event.slot, NOTIFY, event.now_us, event.data)

    def _ble_scan_result(self, event):
        self.rpc.scan_result(event.devices, event.now_us)

    def _rpc_call(self, event):
        self.rpc.call(event)

    def _mqtt_connected(self, event):
        self.telemetry.connected(event.now_us)
