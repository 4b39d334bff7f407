"""The firmware's own MQTT client (firmware/vbms_fw/mqtt.py) against a real mosquitto, beside
`vbms run` (paho-mqtt) on the same broker: the same topics, retained flags and payloads, the
same RPC over MQTT, and a last will that says offline when the device is gone."""

import json
import os
import queue
import signal
import subprocess
import sys
import time

import paho.mqtt.client as mqtt
import pytest
from conftest import needs_micropython, wait_for
from peers import PtyEnds

from hil import firmware
from hil.procs import start_tied, stop_group

TOKEN = "mqtt-token"


def config_for(device_id, broker):
    return {"rpc": {"auth_token": TOKEN}, "device": {"id": device_id}, "mqtt": {"enable": True, "server": broker},
            "app": {"refresh_ms": 1000}, "bms0": {"type": 1, "addr": "1", "name": "Rack A"},
            "bms4": {"type": 2, "addr": "C8:47:8C:10:00:01", "name": "JK"}}  # fmt: skip


class Listener:
    def __init__(self, broker):
        self.messages = queue.Queue()
        self.seen = []
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        self.client.on_message = lambda client, userdata, message: self.messages.put(
            (message.topic, message.payload.decode(), bool(message.retain))
        )
        host, port = broker.split(":")
        self.client.connect(host, int(port))
        self.client.subscribe("#")
        self.client.loop_start()

    def drain(self):
        while not self.messages.empty():
            self.seen.append(self.messages.get())
        return self.seen

    def of(self, device_id):
        """{topic with the id as ID: (payload, retained)} of one device, last message per topic."""
        found = {}
        for topic, payload, retained in self.drain():
            if device_id in topic:
                found[topic.replace(device_id, "ID")] = (payload.replace(device_id, "ID"), retained)
        return found

    def close(self):
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def listener(mqtt_broker):
    made = Listener(mqtt_broker)
    yield made
    made.close()


def test_telemetry_discovery_and_rpc_as_vbms_run_publishes_them(tmp_path, mqtt_broker, listener):
    needs_micropython()
    ends = PtyEnds(("fw-bms", "fw-inv", "run-bms", "run-inv"))
    (tmp_path / "fw").mkdir()
    (tmp_path / "fw" / "config.json").write_text(json.dumps(config_for("fwdev", mqtt_broker)))
    (tmp_path / "run.json").write_text(json.dumps(config_for("rundev", mqtt_broker)))
    device = firmware.start_host(str(tmp_path / "fw" / "config.json"), ends.name("fw-bms"), ends.name("fw-inv"))
    command = [sys.executable, "-m", "hil.cli", "run", "--config", str(tmp_path / "run.json"),
               "--bms-port", ends.name("run-bms"), "--inv-port", ends.name("run-inv"),
               "--http-port", str(firmware.free_port())]  # fmt: skip
    with open(tmp_path / "run.log", "w") as log:
        reference = start_tied(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        enough = lambda name: len([t for t in listener.of(name) if "/slot/" in t]) >= 2  # noqa: E731
        assert wait_for(lambda: enough("fwdev") and enough("rundev"), 15), listener.drain()
        time.sleep(1.5)  # one more round of telemetry from both
        ours, theirs = listener.of("fwdev"), listener.of("rundev")
        assert sorted(ours) == sorted(theirs)
        assert ours["vbms/ID/status"][0] == "online"
        for topic in ours:
            if topic.startswith("homeassistant/") or "/state" in topic:
                assert json.loads(ours[topic][0]) == json.loads(theirs[topic][0]), topic
        late = Listener(mqtt_broker)  # a subscriber that comes later gets what was retained
        try:
            assert wait_for(lambda: len(late.of("fwdev")) >= 2 and len(late.of("rundev")) >= 2, 5)
            time.sleep(0.5)
            kept = {name: {t for t, (_, retained) in late.of(name).items() if retained} for name in ("fwdev", "rundev")}
        finally:
            late.close()
        assert kept["fwdev"] == kept["rundev"] and "vbms/ID/status" in kept["fwdev"]
        assert any(topic.startswith("homeassistant/sensor/") for topic in kept["fwdev"])

        for name in ("fwdev", "rundev"):
            caller = "tester-" + name
            change = {"config": {"bms0.name": "X"}}
            frames = (
                {"id": 7, "src": caller, "method": "Sys.GetInfo"},
                {"id": 8, "method": "Config.Set", "params": change, "auth": {"token": TOKEN}},
            )
            for frame in frames:
                listener.client.publish("vbms/%s/rpc" % name, json.dumps(frame))
            listener.client.publish("vbms/%s/rpc" % name, "not json")
            answers = {}

            def answered(name=name, caller=caller, answers=answers):
                for topic, payload, _ in listener.drain():
                    if topic in (caller + "/rpc", "vbms/%s/rpc/response" % name):
                        reply = json.loads(payload)
                        answers[reply.get("id")] = (topic, reply)
                return len(answers) == 3

            assert wait_for(answered, 10), (name, answers)
            topic, info = answers[7]
            assert topic == caller + "/rpc" and info["src"] == name and info["result"]["app"] == "vbms"
            topic, applied = answers[8]
            assert topic == "vbms/%s/rpc/response" % name and applied["result"] == {
                "applied": ["bms0.name"],
                "saved": False,
            }
            assert answers[None][1]["error"]["code"] == -32700

        os.kill(device.process.pid, signal.SIGKILL)  # the supervisor
        os.killpg(device.process.pid, signal.SIGKILL)  # and the firmware: gone without a word
        assert wait_for(lambda: listener.of("fwdev").get("vbms/ID/status") == ("offline", False), 10)
    finally:
        device.stop()
        stop_group(reference)
        ends.close()
