"""MQTT end to end: vbms run publishes to a real mosquitto; RPC over MQTT."""

import json
import threading

import paho.mqtt.client as mqtt
from conftest import wait_for

from hil.benchfile import load_default
from hil.sim import Simulation


class Subscriber:
    def __init__(self, server, topics):
        host, port = server.split(":")
        self.messages = {}
        self.lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        self.client.on_connect = lambda client, *_: [client.subscribe(topic) for topic in topics]
        self.client.on_message = self._message
        self.client.connect(host, int(port))
        self.client.loop_start()

    def _message(self, client, userdata, message):
        with self.lock:
            self.messages.setdefault(message.topic, []).append((message.payload.decode(), message.retain))

    def last(self, topic):
        with self.lock:
            values = self.messages.get(topic)
            return None if not values else values[-1][0]

    def close(self):
        self.client.loop_stop()
        self.client.disconnect()


def test_telemetry_discovery_and_rpc_over_mqtt(mqtt_broker):
    bench = load_default()
    bench.batteries = [b for b in bench.batteries if b.type == "byd_pro"][:2]
    bench.inverter["units"] = [0, 1]
    subscriber = Subscriber(mqtt_broker, ["homeassistant/#", "vbms/#", "tester/rpc"])
    try:
        with Simulation(bench, ble=False, mqtt_server=mqtt_broker) as simulation:
            assert wait_for(lambda: subscriber.last("vbms/vbms-sim/status") == "online", 15)
            assert wait_for(lambda: subscriber.last("homeassistant/binary_sensor/vbms-sim_slot1_alarm/config"), 5)
            discovery = json.loads(subscriber.last("homeassistant/sensor/vbms-sim_slot0_soc/config"))
            assert discovery["state_topic"] == "vbms/vbms-sim/slot/0/state"
            assert discovery["unit_of_measurement"] == "%" and discovery["device_class"] == "battery"
            assert discovery["device"]["model"] == "BYD PRO 2.5"
            for key in ("voltage", "current", "power", "temperature", "cell_min", "cell_max", "cell_delta"):
                assert subscriber.last("homeassistant/sensor/vbms-sim_slot1_%s/config" % key), key
            assert subscriber.last("homeassistant/binary_sensor/vbms-sim_slot0_alarm/config")
            late = Subscriber(mqtt_broker, ["homeassistant/#"])  # retained: a new subscriber gets them at once
            try:
                assert wait_for(lambda: late.last("homeassistant/sensor/vbms-sim_slot0_soc/config") is not None, 5)
                assert all(retain for values in late.messages.values() for _, retain in values)
            finally:
                late.close()

            def slot0_online():
                text = subscriber.last("vbms/vbms-sim/slot/0/state")
                return text is not None and json.loads(text)["status"] == "online"

            assert wait_for(slot0_online, 15)
            state = json.loads(subscriber.last("vbms/vbms-sim/slot/0/state"))
            model = simulation.batteries[0]
            assert abs(state["voltage"] - model.pack_voltage_mv / 1000) < 0.05
            assert state["soc"] == model.soc_permille // 10 and state["alarm"] == "off"
            assert json.loads(subscriber.last("vbms/vbms-sim/totals/state"))["online"] == 2

            request = {"id": 42, "src": "tester", "method": "VBMS.GetSummary", "params": {}}
            subscriber.client.publish("vbms/vbms-sim/rpc", json.dumps(request))
            assert wait_for(lambda: subscriber.last("tester/rpc") is not None, 10)
            reply = json.loads(subscriber.last("tester/rpc"))
            assert reply["id"] == 42 and [row["slot"] for row in reply["result"]["bms"]] == [0, 1]

            refused = {"id": 43, "src": "tester", "method": "Sys.Reboot", "params": {}}
            subscriber.client.publish("vbms/vbms-sim/rpc", json.dumps(refused))
            assert wait_for(lambda: json.loads(subscriber.last("tester/rpc"))["id"] == 43, 10)
            assert json.loads(subscriber.last("tester/rpc"))["error"]["code"] == 401
        assert wait_for(lambda: subscriber.last("vbms/vbms-sim/status") == "offline", 10)
    finally:
        subscriber.close()
