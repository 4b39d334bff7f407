"""One conformance suite for every driver of the proxy (vbms_core.events.Executor).

The same action sequences go through each executor, and the same effects must be
seen on its I/O: bytes on the BMS and inverter wires, a BLE connection answered
with BleConnected or BleConnectFailed, notifications that reassemble into the
frame a command asked for, a scan answered with BleScanResult, a publication at
the broker, a saved configuration, a reboot into it, an RPC answer reaching its
caller, a log line.  (python-can runs one back-to-back suite against every
interface in the same way.)

Harnesses: `vbms run`'s HostExecutor on PTYs, a bless JK peripheral over BlueZoo
and a real mosquitto; the `des` target's DesBench in simulated time.  The
firmware's executor on the MicroPython unix port (tests/test_firmware_harness.py).
"""

import asyncio
import json
import os
import queue
import threading

import paho.mqtt.client as mqtt
import pytest
from peers import PtyEnds
from test_firmware_harness import FirmwareHarness, PtyWires

from hil.benchfile import load_default
from hil.des import DesBench
from hil.host.ble import BleCentral
from hil.host.config_store import load_config
from hil.host.mqtt import MqttLink
from hil.host.runtime import Runtime
from hil.host.transport import PortLink, SerialTransport
from hil.wires.ble import BleEnvironment
from simulators.battery import BatteryModel
from simulators.jk.ble import JkBlePeripheral
from simulators.jk.device import JkBms
from vbms_core import app, config, jk_ble, jk_frames
from vbms_core import events as ev
from vbms_core.modbus import NEED_DATA

CONFIG = {"rpc.auth_token": "conformance-token", "bms0.type": 1, "bms0.addr": "1", "bms0.name": "Rack A"}
ABSENT_ADDRESS = "C8:47:8C:AA:BB:CC"


class Harness:
    """A driver's executor and what can be seen of its I/O.  Subclasses fill in the world."""

    name = None
    present_address = None  # a JK module the driver's BLE can reach, and its slot
    present_slot = None

    def __init__(self):
        self.fed = []  # inputs the driver fed back to the core (ticks left out)
        self.calls = {}

    def record(self, event):
        if not isinstance(event, ev.Tick):
            self.fed.append(event)

    def fed_of(self, kind):
        return [event for event in self.fed if isinstance(event, kind)]

    # each harness: execute(actions), wait(condition, seconds), bms_wire(), inv_wire(), saved(),
    # proxy(), logged(), published(), expect_call(call_id), answer(call_id)


class RuntimeHarness(PtyWires, Harness):
    """`vbms run`'s executor with its real I/O: PTY ports, bleak over BlueZoo, paho-mqtt."""

    name = "vbms run"
    present_slot = 4

    def __init__(self, tmp_path, broker):
        super().__init__()
        self.broker = broker
        self.ble_env = BleEnvironment().start()  # hci0: the JK module, hci1: the driver
        self.present_address = self.ble_env.adapter_addresses[0]
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.ends = PtyEnds()
        self.log_lines = []
        self.messages = queue.Queue()
        self.config_path = str(tmp_path / "vbms.json")
        self.runtime = Runtime(self.config_path, log=self._log)
        self.runtime.feed = self.record  # what the executor feeds back is recorded, not run
        self.subscriber = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        self.subscriber.on_message = lambda client, userdata, message: self.messages.put(
            (message.topic, message.payload.decode(), message.retain)
        )
        host, port = broker.split(":")
        self.subscriber.connect(host, int(port))
        self.subscriber.subscribe("conformance/#")
        self.subscriber.loop_start()
        self.mqtt_up = threading.Event()
        self.call(self._start())
        assert self.mqtt_up.wait(10), "the MQTT link did not connect"

    def _log(self, event, level="info", **fields):
        self.log_lines.append((level, event, fields))

    def call(self, coroutine, timeout_s=30):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout_s)

    async def _start(self):
        runtime = self.runtime
        runtime.wake = asyncio.Event()
        runtime.proxy = app.Proxy(CONFIG, 0)
        for role in ("bms", "inv"):
            transport = SerialTransport(self.ends.name(role), 9600)
            runtime.links[role] = PortLink(role, transport, lambda data: None, self._log).start()
        self.peripheral = await JkBlePeripheral(JkBms(BatteryModel(seed=1), name="JK-CONFORM"), adapter="hci0").start()
        runtime.ble = BleCentral("hci1", self.record, self._log)
        runtime.mqtt = MqttLink(self.broker, "conformance", "conformance/status", "conformance/rpc",
                                self.mqtt_up.set, lambda payload: None, self._log)  # fmt: skip

    def execute(self, actions):
        async def run():
            ev.execute(self.runtime.executor, actions)

        self.call(run())

    def saved(self):
        return load_config(self.config_path, self._log) if os.path.exists(self.config_path) else None

    def proxy(self):
        return self.runtime.proxy

    def logged(self):
        return self.log_lines

    def published(self):
        found = []
        while not self.messages.empty():
            found.append(self.messages.get())
        return found

    def expect_call(self, call_id):
        async def register():
            self.calls[call_id] = self.loop.create_future()
            self.runtime.rpc_waiters[call_id] = self.calls[call_id]

        self.call(register())

    def answer(self, call_id):
        future = self.calls[call_id]
        return future.result() if future.done() else None

    def close(self):
        async def stop():
            await self.runtime.ble.close()
            await self.peripheral.stop()
            self.runtime.mqtt.close()
            for link in self.runtime.links.values():
                link.close()

        try:
            self.call(stop())
        finally:
            self.subscriber.loop_stop()
            self.subscriber.disconnect()
            self.ends.close()
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=10)
            self.ble_env.stop()


class DesHarness(Harness):
    """The des target's executor: the default bench's models in simulated time."""

    name = "des"
    present_slot = 4

    def __init__(self):
        super().__init__()
        bench = load_default()
        self.world = DesBench(bench)
        # Nothing configured: the proxy's own traffic stays out of the way, and its ticker sleeps.
        self.world.proxy = app.Proxy({}, 0)
        feed = self.world.feed

        def record(event):
            """What the executor feeds back is recorded, not run; the ticker's ticks still reach the proxy."""
            if isinstance(event, ev.Tick):
                feed(event)
            else:
                self.record(event)

        self.world.feed = record
        self.present_address = bench.battery(self.present_slot).address

    def execute(self, actions):
        ev.execute(self.world, actions)

    def wait(self, condition, seconds):
        waited = 0.0
        while not condition() and waited < seconds:
            self.world.run_for(0.05)
            waited += 0.05
        return condition()

    def _sent(self, bus):
        records = self.world.trace.records
        return b"".join(bytes.fromhex(r["hex"]) for r in records if r["bus"] == bus and r["from"] == "dut")

    def bms_wire(self):
        return self._sent("bms")

    def inv_wire(self):
        return self._sent("inverter")

    def saved(self):
        return self.world.saved_config

    def proxy(self):
        return self.world.proxy

    def logged(self):
        return [(level, event, fields) for _, level, event, fields in self.world.dut_log]

    def published(self):
        return [(topic, payload, retain) for _, topic, payload, retain in self.world.published]

    def expect_call(self, call_id):
        pass

    def answer(self, call_id):
        return self.world.rpc_replies.get(call_id)

    def close(self):
        pass


@pytest.fixture(params=["vbms run", "des", "firmware"])
def harness(request, tmp_path):
    if request.param == "des":
        made = DesHarness()
    elif request.param == "firmware":
        made = FirmwareHarness(tmp_path, request.getfixturevalue("mqtt_broker"), CONFIG)
    else:
        made = RuntimeHarness(tmp_path, request.getfixturevalue("mqtt_broker"))
    yield made
    made.close()


def frames_in(notifications):
    reassembler = jk_ble.JkReassembler()
    found = []
    for event in notifications:
        reassembler.feed(event.data)
        while True:
            item = reassembler.next_event()
            if item is NEED_DATA:
                break
            if isinstance(item, jk_ble.JkFrame):
                found.append(jk_frames.decode_frame(item.raw)["frame_type"])
    return found


def test_bytes_go_out_on_their_wire_unchanged_and_in_order(harness):
    bms_before, inv_before = len(harness.bms_wire()), len(harness.inv_wire())
    harness.execute([ev.BmsWrite(b"\x01\x02\x03"), ev.InvWrite(b"\x00\x04\x02\xaa\xbb"), ev.BmsWrite(b"\x04\x05")])
    arrived = lambda: len(harness.bms_wire()) >= bms_before + 5 and len(harness.inv_wire()) >= inv_before + 5  # noqa: E731
    assert harness.wait(arrived, 5)
    assert harness.bms_wire()[bms_before:] == b"\x01\x02\x03\x04\x05"
    assert harness.inv_wire()[inv_before:] == b"\x00\x04\x02\xaa\xbb"


def test_a_saved_configuration_is_the_one_a_reboot_starts_from(harness):
    wanted = config.validate(dict(CONFIG, **{"bms0.name": "Saved", "bms0.voltage": 56.0}))
    harness.execute([ev.SaveConfig(wanted)])
    assert harness.wait(lambda: harness.saved() == wanted, 5), harness.saved()
    before = harness.proxy()
    harness.execute([ev.Reboot()])
    assert harness.wait(lambda: harness.proxy() is not before, 10)
    assert harness.proxy().config["bms0.name"] == "Saved" and harness.proxy().config["bms0.voltage"] == 56.0


def test_an_rpc_answer_reaches_its_caller_and_a_log_line_is_written(harness):
    harness.expect_call(41)
    harness.execute([ev.RpcReply(41, {"ok": True}, None), ev.Log("warning", "conformance_check", {"slot": 3})])
    assert harness.wait(lambda: harness.answer(41) is not None, 5)
    assert harness.answer(41) == ({"ok": True}, None)
    assert ("warning", "conformance_check", {"slot": 3}) in harness.logged()


def test_a_publication_reaches_the_broker(harness):
    harness.execute([ev.Publish("conformance/state", '{"soc": 51.0}', False), ev.Publish("conformance/x", "on", True)])
    seen = []
    assert harness.wait(lambda: seen.extend(harness.published()) or len(seen) >= 2, 10), seen
    assert ("conformance/state", '{"soc": 51.0}', False) in seen
    assert any(topic == "conformance/x" and payload == "on" for topic, payload, _ in seen)


@pytest.mark.ble
def test_ble_connect_write_and_disconnect(harness):
    slot = harness.present_slot
    harness.execute([ev.BleConnect(slot, harness.present_address)])
    assert harness.wait(lambda: harness.fed_of(ev.BleConnected), 30), harness.fed
    assert [event.slot for event in harness.fed_of(ev.BleConnected)] == [slot]
    harness.execute([ev.BleWrite(slot, jk_ble.encode_command(jk_ble.GET_DEVICE_INFO))])
    assert harness.wait(lambda: "device_info" in frames_in(harness.fed_of(ev.BleNotify)), 10)
    assert {event.slot for event in harness.fed_of(ev.BleNotify)} == {slot}
    harness.execute([ev.BleDisconnect(slot)])
    harness.wait(lambda: False, 1.0)  # notifications already under way arrive
    settled = len(harness.fed_of(ev.BleNotify))
    harness.wait(lambda: False, 1.5)  # a connected module streams every 0.5 s: a disconnected one does not
    assert len(harness.fed_of(ev.BleNotify)) == settled
    assert not harness.fed_of(ev.BleDisconnected)  # the core asked for it: nothing to report back


@pytest.mark.ble
def test_ble_connect_to_a_module_that_is_not_there_fails(harness):
    harness.execute([ev.BleConnect(2, ABSENT_ADDRESS)])
    assert harness.wait(lambda: harness.fed_of(ev.BleConnectFailed), 30), harness.fed
    failed = harness.fed_of(ev.BleConnectFailed)
    assert [event.slot for event in failed] == [2] and failed[0].reason
    assert not harness.fed_of(ev.BleConnected)


@pytest.mark.ble
def test_ble_scan_is_answered_with_the_modules_around(harness):
    harness.execute([ev.BleScan(2)])
    assert harness.wait(lambda: harness.fed_of(ev.BleScanResult), 30), harness.fed
    (result,) = harness.fed_of(ev.BleScanResult)
    addresses = [row[0] for row in result.devices]
    assert harness.present_address in addresses
    for row in result.devices:
        address, name, rssi, connected = row
        assert isinstance(name, str) and isinstance(connected, bool) and (rssi is None or isinstance(rssi, int))


def test_every_action_has_its_method_on_every_executor():
    for action in ev.ACTIONS:
        assert callable(getattr(ev.Executor, action.method)), action
    for executor in (DesBench, type(Runtime("unused").executor)):
        for action in ev.ACTIONS:
            assert getattr(executor, action.method) is not getattr(ev.Executor, action.method), (executor, action)


def test_payload_shapes_survive_json(harness):
    """The answer an executor hands to a caller is the core's, whatever it holds."""
    result = {"devices": [{"address": "C8:47:8C:10:00:01", "name": "JK", "rssi": None, "connected": True}]}
    harness.expect_call(7)
    harness.execute([ev.RpcReply(7, result, None)])
    assert harness.wait(lambda: harness.answer(7) is not None, 5)
    assert json.dumps(harness.answer(7)[0], sort_keys=True) == json.dumps(result, sort_keys=True)
