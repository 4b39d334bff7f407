"""The executor conformance agent (MicroPython, never shipped): the firmware's executor on its
real I/O, driven by the shared suite (tests/test_executors.py) over the unix socket
$VBMS_CONTROL.  The firmware starts as on a board, except that its proxy is not ticked
and what its I/O would feed the proxy is recorded instead, as the suite's other
harnesses record it.

Lines in (JSON): {"op": "execute", "actions": [events.describe(action), ...]}
                 {"op": "expect", "call_id": n}     {"op": "state"}
Lines out: {"hello": <start count>} once, then one answer per line in.
$VBMS_MQTT ("host:port") connects the firmware's MQTT client as the suite's broker expects.
"""

import asyncio
import json
import os
import socket
import struct
from binascii import hexlify, unhexlify

from vbms_fw.app import Firmware
from vbms_fw.driver import Waiter

from vbms_core import events as ev

ACTIONS = {}
for _kind in ev.ACTIONS:
    ACTIONS[_kind.method] = _kind
BYTES_FIELDS = ("data",)
_previous = []  # the control socket of the start before a reset


def action_from(description):
    """The action events.describe() wrote out (bytes as hex)."""
    kind = ACTIONS[description[0]]
    values = list(description[1:])
    for index, name in enumerate(kind.__slots__):
        if name in BYTES_FIELDS:
            values[index] = unhexlify(values[index])
    return kind(*values)


def describe_input(event):
    values = [type(event).__name__]
    for name in type(event).__slots__:
        value = getattr(event, name)
        if isinstance(value, (bytes, bytearray, memoryview)):
            value = hexlify(bytes(value)).decode()
        values.append(value)
    return values


class Agent:
    def __init__(self, firmware, starts):
        self.firmware = firmware
        self.starts = starts
        self.fed = []
        self.expected = {}

    def record(self, event, wake=True):
        if not isinstance(event, ev.Tick):
            self.fed.append(describe_input(event))

    def answer(self, request):
        op = request["op"]
        driver = self.firmware.driver
        if op == "execute":
            ev.execute(driver.executor, [action_from(item) for item in request["actions"]])
            return {"ok": True}
        if op == "expect":
            waiter = driver.waiters[request["call_id"]] = Waiter()
            self.expected[request["call_id"]] = waiter
            return {"ok": True}
        if op == "state":
            fed, self.fed = self.fed, []
            answers = {}
            for call_id in self.expected:
                if self.expected[call_id].answer is not None:
                    answers[str(call_id)] = list(self.expected[call_id].answer)
            mqtt = self.firmware.mqtt
            return {"starts": self.starts, "config": driver.proxy.config, "fed": fed, "answers": answers,
                    "mqtt": mqtt is not None and mqtt.connected}  # fmt: skip
        return {"error": "unknown op %s" % op}


async def main(starts):
    import gc

    gc.disable()
    while _previous:
        _previous.pop().close()
    firmware = Firmware()
    await firmware.start(run_core=False)
    agent = Agent(firmware, starts)
    firmware.driver.feed = agent.record
    firmware.driver.post = agent.record
    broker = os.getenv("VBMS_MQTT")
    if broker:
        firmware.start_mqtt(broker, "conformance", "conformance/status", "conformance/rpc")
    control = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    control.connect(struct.pack("H", socket.AF_UNIX) + os.getenv("VBMS_CONTROL").encode() + b"\0")
    _previous.append(control)
    reader = asyncio.StreamReader(control)
    writer = asyncio.StreamWriter(control, {})
    writer.write(json.dumps({"hello": starts}).encode() + b"\n")
    await writer.drain()
    while True:
        line = await reader.readline()
        if not line:
            break
        writer.write(json.dumps(agent.answer(json.loads(line))).encode() + b"\n")
        await writer.drain()
    await firmware.close()
