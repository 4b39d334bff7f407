"""Test support: the proxy wired to sans-I/O device models in simulated time.

Wiring is a small driver: an event queue in integer microseconds and an
Executor (vbms_core.events) whose actions reach the device models after the
bytes' transfer time and the model's reply delay; BLE actions reach
JkBleSession objects.  No I/O, no wall clock: deterministic.
"""

import heapq

from simulators.jk.device import JkBleSession
from vbms_core import app, modbus
from vbms_core import events as ev


def transfer_us(data, baud=9600):
    return len(data) * 10 * 1_000_000 // baud


class Wiring(ev.Executor):
    def __init__(self, config, rs485_devices=(), ble_devices=None, scan_devices=()):
        self.proxy = app.Proxy(config, 0)
        self.now_us = 0
        self.rs485 = list(rs485_devices)  # objects with handle(frame) -> (reply, delay_s) | None
        self.ble_devices = ble_devices or {}  # slot -> JkBms
        self.scan_devices = list(scan_devices)  # what a BLE scan finds: [address, name, rssi, connected]
        self.sessions = {}
        self.inverter_replies = []
        self.bms_log = []
        self.logs = []
        self.replies = {}  # call id -> (result, error)
        self.saved = []
        self.reboots = 0
        self.published = []
        self.connect_attempts = []  # (time, slot)
        self.most_connected = 0
        self._queue = []
        self._sequence = 0
        self._calls = 0
        self.refused = set()
        self.bytewise = False  # replies arrive one byte at a time, each at its own wire time

    def at(self, when_us, event):
        """Feed event (its now_us is set then) at when_us."""
        self._sequence += 1
        heapq.heappush(self._queue, (when_us, self._sequence, event))

    def feed(self, event):
        ev.execute(self, self.proxy.feed(event))

    # --- the executor ---------------------------------------------------------------

    def bms_write(self, action):
        request = bytes(action.data)
        self.bms_log.append(("request", self.now_us, request))
        done_us = self.now_us + transfer_us(request)
        for device in self.rs485:
            answer = device.handle(request)
            if answer is None:
                continue
            reply, delay_s = answer
            start_us = done_us + int(delay_s * 1e6)
            if self.bytewise:
                for index in range(len(reply)):
                    self.at(start_us + transfer_us(reply[: index + 1]), ev.BmsBytes(reply[index : index + 1], 0))
            else:
                self.at(start_us + transfer_us(reply), ev.BmsBytes(reply, 0))

    def inv_write(self, action):
        self.inverter_replies.append((self.now_us, bytes(action.data)))

    def ble_connect(self, action):
        slot = action.slot
        self.connect_attempts.append((self.now_us, slot))
        if slot in self.ble_devices and slot not in self.refused:
            self.sessions[slot] = JkBleSession(self.ble_devices[slot], "mtu131")
            self.most_connected = max(self.most_connected, len(self.sessions))
            self.at(self.now_us + 50_000, ev.BleConnected(slot, 0))
        else:
            self.at(self.now_us + 3_000_000, ev.BleConnectFailed(slot, "not found", 0))

    def ble_write(self, action):
        session = self.sessions.get(action.slot)
        if session is not None:
            for chunk in session.on_write(action.data, self.now_us / 1e6):
                self.at(self.now_us + 5_000, ev.BleNotify(action.slot, chunk, 0))

    def ble_disconnect(self, action):
        self.sessions.pop(action.slot, None)

    def ble_scan(self, action):
        self.at(self.now_us + action.seconds * 1_000_000, ev.BleScanResult(self.scan_devices, 0))

    def publish(self, action):
        self.published.append((action.topic, action.payload, action.retain))

    def save_config(self, action):
        self.saved.append(dict(action.config))

    def reboot(self, action):
        self.reboots += 1

    def rpc_reply(self, action):
        self.replies[action.call_id] = (action.result, action.error)

    def log(self, action):
        self.logs.append((action.level, action.event, action.fields))

    # --- driving it ------------------------------------------------------------------

    def disconnect(self, slot):
        self.sessions.pop(slot, None)
        self.feed(ev.BleDisconnected(slot, "link lost", self.now_us))

    def run_until(self, end_us, step_us=1_000):
        while self.now_us < end_us:
            self.now_us = min(self.now_us + step_us, end_us)
            while self._queue and self._queue[0][0] <= self.now_us:
                _, _, event = heapq.heappop(self._queue)
                event.now_us = self.now_us
                self.feed(event)
            for slot, session in list(self.sessions.items()):
                for chunk in session.poll(self.now_us / 1e6):
                    self.feed(ev.BleNotify(slot, chunk, self.now_us))
            self.feed(ev.Tick(self.now_us))

    def rpc(self, method, params=None, token=None, wall_s=None, wait_us=0):
        """Call a method; returns (result, error), running wait_us of time for an answer given later."""
        self._calls += 1
        call_id = self._calls
        self.feed(ev.RpcCall(call_id, method, params, self.now_us, token, wall_s))
        if call_id not in self.replies and wait_us:
            self.run_until(self.now_us + wait_us)
        return self.replies.pop(call_id, (None, None))

    def ask_inverter(self, request):
        """Send a DEYE request and return the reply bytes or None."""
        before = len(self.inverter_replies)
        self.feed(ev.InvBytes(request, self.now_us))
        self.run_until(self.now_us + 10_000)
        replies = self.inverter_replies[before:]
        return replies[0][1] if replies else None

    def read_unit(self, unit):
        reply = self.ask_inverter(modbus.encode_read_request(unit, modbus.READ_INPUT, 0x1000, 25))
        return None if reply is None else modbus.decode_response(reply).registers
