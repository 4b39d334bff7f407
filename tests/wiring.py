"""Test support: the proxy wired to sans-I/O device models in simulated time.

An event queue in integer microseconds: the proxy's bus writes reach the
device models after the bytes' transfer time and the model's reply delay;
BLE actions reach JkBleSession objects.  No I/O, no wall clock: deterministic.
"""

import heapq

from simulators.jk.device import JkBleSession
from vbms_core import app, modbus


def transfer_us(data, baud=9600):
    return len(data) * 10 * 1_000_000 // baud


class Wiring:
    def __init__(self, config, rs485_devices=(), ble_devices=None):
        self.proxy = app.Proxy(config, 0)
        self.now_us = 0
        self.rs485 = list(rs485_devices)  # objects with handle(frame) -> (reply, delay_s) | None
        self.ble_devices = ble_devices or {}  # slot -> JkBms
        self.sessions = {}
        self.inverter_replies = []
        self.bms_log = []
        self._queue = []
        self._sequence = 0
        self.refused = set()

    def at(self, when_us, function, *args):
        self._sequence += 1
        heapq.heappush(self._queue, (when_us, self._sequence, function, args))

    def _act(self):
        for action in self.proxy.take_actions():
            kind = action[0]
            if kind == "bms_write":
                request = action[1]
                self.bms_log.append(("request", self.now_us, request))
                done_us = self.now_us + transfer_us(request)
                for device in self.rs485:
                    answer = device.handle(request)
                    if answer is not None:
                        reply, delay_s = answer
                        arrival = done_us + int(delay_s * 1e6) + transfer_us(reply)
                        self.at(arrival, self.proxy.bms_bytes, reply)
            elif kind == "inv_write":
                self.inverter_replies.append((self.now_us, action[1]))
            elif kind == "ble_connect":
                slot = action[1]
                if slot in self.ble_devices and slot not in self.refused:
                    self.sessions[slot] = JkBleSession(self.ble_devices[slot], "mtu131")
                    self.at(self.now_us + 50_000, self.proxy.ble_event, "connected", slot, None)
                else:
                    self.at(self.now_us + 3_000_000, self.proxy.ble_event, "connect_failed", slot, "not found")
            elif kind == "ble_write":
                session = self.sessions.get(action[1])
                if session is not None:
                    for chunk in session.on_write(action[2], self.now_us / 1e6):
                        self.at(self.now_us + 5_000, self.proxy.ble_event, "notify", action[1], chunk)
            elif kind == "ble_disconnect":
                self.sessions.pop(action[1], None)

    def disconnect(self, slot):
        self.sessions.pop(slot, None)
        self.proxy.ble_event("disconnected", slot, "link lost", self.now_us)

    def run_until(self, end_us, step_us=1_000):
        while self.now_us < end_us:
            self.now_us = min(self.now_us + step_us, end_us)
            while self._queue and self._queue[0][0] <= self.now_us:
                _, _, function, args = heapq.heappop(self._queue)
                function(*args, self.now_us)
                self._act()
            for slot, session in list(self.sessions.items()):
                for chunk in session.poll(self.now_us / 1e6):
                    self.proxy.ble_event("notify", slot, chunk, self.now_us)
            self.proxy.tick(self.now_us)
            self._act()

    def ask_inverter(self, request):
        """Send a DEYE request and return the reply bytes or None."""
        before = len(self.inverter_replies)
        self.proxy.inv_bytes(request, self.now_us)
        self.run_until(self.now_us + 10_000)
        replies = self.inverter_replies[before:]
        return replies[0][1] if replies else None

    def read_unit(self, unit):
        reply = self.ask_inverter(modbus.encode_read_request(unit, modbus.READ_INPUT, 0x1000, 25))
        return None if reply is None else modbus.decode_response(reply).registers
