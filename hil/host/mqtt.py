"""The driver's MQTT side (paho-mqtt, its own thread)."""

import asyncio


class MqttLink:
    """The MQTT side: telemetry and discovery out, RPC frames in (paho-mqtt, its own thread).

    RPC over MQTT, as Mongoose OS does it: a frame {"id", "src", "method",
    "params", "auth": {"token"}} on <prefix>/<device id>/rpc; the answer goes
    to <src>/rpc, or to <prefix>/<device id>/rpc/response without a src.
    """

    def __init__(self, server, client_id, status_topic, rpc_topic, on_connected, on_frame, log):
        import paho.mqtt.client as mqtt

        host, _, port = server.partition(":")
        self.log = log
        self.rpc_topic = rpc_topic
        self.status_topic = status_topic
        self.loop = asyncio.get_running_loop()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
        self.client.will_set(status_topic, "offline", retain=True)

        def connected(client, userdata, flags, reason, properties):
            if reason.is_failure:
                log("mqtt_refused", level="warning", reason=str(reason))
                return
            client.subscribe(rpc_topic)
            log("mqtt_connected", server=server)
            self.loop.call_soon_threadsafe(on_connected)

        def message(client, userdata, received):
            self.loop.call_soon_threadsafe(on_frame, received.payload)

        self.client.on_connect = connected
        self.client.on_message = message
        self.client.reconnect_delay_set(1, 30)
        self.client.connect_async(host, int(port or 1883))
        self.client.loop_start()

    def publish(self, topic, text, retain=False):
        self.client.publish(topic, text, qos=0, retain=retain)

    def close(self):
        self.client.publish(self.status_topic, "offline", qos=0, retain=True)
        self.client.disconnect()
        self.client.loop_stop()
