"""The firmware's executor on the MicroPython unix port, as a harness of the shared executor
conformance suite (tests/test_executors.py), and the checks of the harness itself.

The firmware starts as on a board (flash, UARTs on PTYs, its own BLE central through the
bleak bridge to BlueZoo, its own MQTT client), with firmware/host/agent.py in place of
main.py: the suite's actions go to the firmware's executor over a control socket, and what
the firmware's I/O would feed its proxy comes back recorded.
"""

import asyncio
import json
import os
import queue
import shutil
import socket
import tempfile
import threading
import time

import paho.mqtt.client as mqtt
import pytest
from conftest import needs_micropython, wait_for
from peers import PtyEnds

from hil import firmware
from hil.host.config_store import load_config
from hil.procs import start_tied, stop_group
from hil.wires.ble import BleEnvironment
from simulators.battery import BatteryModel
from simulators.jk.ble import JkBlePeripheral
from simulators.jk.device import JkBms
from vbms_core import events as ev


class ProxyView:
    """What the suite reads of the firmware's proxy: its configuration, one object per start."""

    def __init__(self, starts, config):
        self.starts = starts
        self.config = config


class PtyWires:
    """The test's ends of a driver's two serial lines (self.ends, a PtyEnds for "bms" and "inv")."""

    def wait(self, condition, seconds):
        return wait_for(condition, seconds)

    def bms_wire(self):
        return self.ends.drain("bms")

    def inv_wire(self):
        return self.ends.drain("inv")


class FirmwareHarness(PtyWires):
    """The firmware's executor on the unix port: PTY UARTs, BLE over BlueZoo, its MQTT client."""

    name = "firmware"
    present_slot = 4

    def __init__(self, tmp_path, broker, config):
        self.fed = []
        self.answers = {}
        self.views = {}
        self.state = None
        self.ends = PtyEnds()
        self.messages = queue.Queue()
        self.process = self.bridge = self.peripheral = None
        self.connection = None
        self.connected = threading.Event()
        self.lock = threading.Lock()
        command = [needs_micropython(), str(firmware.HOST / "start.py"), "agent"]
        self.ble_env = BleEnvironment().start()  # hci0: the JK module, hci1: the firmware
        self.present_address = self.ble_env.adapter_addresses[0]
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        peripheral = JkBlePeripheral(JkBms(BatteryModel(seed=1), name="JK-CONFORM"), adapter="hci0")
        self.peripheral = asyncio.run_coroutine_threadsafe(peripheral.start(), self.loop).result(30)
        self.sockets = sockets = tempfile.mkdtemp(prefix="vbms-fw-")  # short: a socket's path has 107 bytes at most
        self.bridge = firmware.start_bridge("hci1", os.path.join(sockets, "ble.sock"))
        self.control = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.control.bind(os.path.join(sockets, "control.sock"))
        self.control.listen(4)
        threading.Thread(target=self._accept, daemon=True).start()
        self.flash = tmp_path / "flash"
        self.flash.mkdir()
        (self.flash / "config.json").write_text(json.dumps(config))
        firmware.prepare_flash(self.flash, "127.0.0.1", firmware.free_port())
        env = firmware.host_environment(self.flash, firmware.stage(tmp_path / "tree"), self.ends.name("bms"),
                                        self.ends.name("inv"), self.bridge.path)  # fmt: skip
        env.update(VBMS_CONTROL=os.path.join(sockets, "control.sock"), VBMS_MQTT=broker)
        self.log_path = str(tmp_path / "firmware.log")
        with open(self.log_path, "w") as log:
            self.process = start_tied(command, env=env, stdout=log, stderr=log)
        self.subscriber = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        self.subscriber.on_message = lambda client, userdata, message: self.messages.put(
            (message.topic, message.payload.decode(), message.retain)
        )
        host, port = broker.split(":")
        self.subscriber.connect(host, int(port))
        self.subscriber.subscribe("conformance/#")
        self.subscriber.loop_start()
        assert self.connected.wait(20), "the firmware agent did not start:\n" + self.log_tail()
        assert wait_for(lambda: self._state()["mqtt"], 10), "the MQTT client did not connect:\n" + self.log_tail()

    # --- the control socket -----------------------------------------------------------

    def _accept(self):
        while True:
            try:
                connection, _ = self.control.accept()
            except OSError:
                return
            stream = connection.makefile("rwb")
            hello = json.loads(stream.readline())
            with self.lock:
                self.connection = stream
                self.starts = hello["hello"]
            self.connected.set()

    def _ask(self, request, timeout_s=10):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self.lock:
                stream = self.connection
                if stream is not None:
                    try:
                        stream.write(json.dumps(request).encode() + b"\n")
                        stream.flush()
                        line = stream.readline()
                    except OSError:
                        line = b""
                    if line:
                        return json.loads(line)
                    self.connection = None  # the firmware restarted: its next start connects again
            time.sleep(0.05)
        raise AssertionError("the firmware agent did not answer %s:\n%s" % (request, self.log_tail()))

    def _state(self):
        state = self._ask({"op": "state"})
        for item in state["fed"]:
            kind = getattr(ev, item[0])
            values = list(item[1:])
            if "data" in kind.__slots__:
                at = kind.__slots__.index("data")
                values[at] = bytes.fromhex(values[at])
            self.fed.append(kind(*values))
        for call_id, answer in state["answers"].items():
            self.answers[int(call_id)] = tuple(answer)
        self.state = state
        return state

    def log_tail(self, characters=3000):
        with open(self.log_path, errors="replace") as handle:
            return handle.read()[-characters:]

    # --- the suite's interface --------------------------------------------------------

    def fed_of(self, kind):
        self._state()
        return [event for event in self.fed if isinstance(event, kind)]

    def execute(self, actions):
        assert self._ask({"op": "execute", "actions": [ev.describe(action) for action in actions]}) == {"ok": True}

    def saved(self):
        path = str(self.flash / "config.json")
        return load_config(path, lambda *args, **kwargs: None) if os.path.exists(path) else None

    def proxy(self):
        state = self._state()
        if state["starts"] not in self.views:
            self.views[state["starts"]] = ProxyView(state["starts"], state["config"])
        return self.views[state["starts"]]

    def logged(self):
        found = []
        for line in self.log_tail(10**6).splitlines():
            if line.startswith("{"):
                record = json.loads(line)
                level, event = record.pop("level", None), record.pop("event", None)
                record.pop("t", None)
                found.append((level, event, record))
        return found

    def published(self):
        found = []
        while not self.messages.empty():
            found.append(self.messages.get())
        return found

    def expect_call(self, call_id):
        assert self._ask({"op": "expect", "call_id": call_id}) == {"ok": True}

    def answer(self, call_id):
        self._state()
        return self.answers.get(call_id)

    def de_violations(self):
        return [fields for level, event, fields in self.logged() if event == "rs485_de_violation"]

    def close(self):
        try:
            if self.process is not None:
                stop_group(self.process)
            self.subscriber.loop_stop()
            self.subscriber.disconnect()
            if self.bridge is not None:
                self.bridge.stop()
            if self.peripheral is not None:
                asyncio.run_coroutine_threadsafe(self.peripheral.stop(), self.loop).result(10)
        finally:
            self.control.close()
            shutil.rmtree(self.sockets, ignore_errors=True)
            self.ends.close()
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=10)
            self.ble_env.stop()


@pytest.fixture
def firmware_harness(tmp_path, mqtt_broker):
    made = FirmwareHarness(tmp_path, mqtt_broker, {"rpc.auth_token": "t", "bms0.type": 1, "bms0.addr": "1"})
    yield made
    made.close()


def test_driver_enable_is_high_exactly_while_the_firmware_transmits(firmware_harness):
    """Writes through the firmware's RS485 ports raise DE first and drop it after the wire time:
    the stand-in UART, which checks every write and every drop, reports nothing."""
    harness = firmware_harness
    frames = [ev.BmsWrite(bytes(range(40))), ev.InvWrite(bytes(55)), ev.BmsWrite(b"\x01\x04\x00\x00\x00\x01")]
    harness.execute(frames)
    assert harness.wait(lambda: len(harness.bms_wire()) >= 46 and len(harness.inv_wire()) >= 55, 5)
    time.sleep(0.2)  # every line dropped
    assert harness.de_violations() == []
    lines = [fields for _, event, fields in harness.logged() if event == "started"]
    assert lines, harness.log_tail()
