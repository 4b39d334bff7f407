"""The driver's MQTT side (paho-mqtt, its own thread)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import LogFunction

if TYPE_CHECKING:
    from paho.mqtt.client import Client, ConnectFlags, MQTTMessage
    from paho.mqtt.properties import Properties
    from paho.mqtt.reasoncodes import ReasonCode


class MqttLink:
    """The MQTT side: telemetry and discovery out, RPC frames in (paho-mqtt, its own thread).

    RPC over MQTT, as Mongoose OS does it: a frame {"id", "src", "method",
    "params", "auth": {"token"}} on <prefix>/<device id>/rpc; the answer goes
    to <src>/rpc, or to <prefix>/<device id>/rpc/response without a src.
    """

    def __init__(
        self,
        server: str,
        client_id: str,
        status_topic: str,
        rpc_topic: str,
        on_connected: Callable[[], None],
        on_frame: Callable[[bytes | bytearray], None],
        log: LogFunction,
    ) -> None:
        import paho.mqtt.client as mqtt

        host, _, port = server.partition(":")
        self.log = log
        self.rpc_topic = rpc_topic
        self.status_topic = status_topic
        self.loop = asyncio.get_running_loop()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
        self.client.will_set(status_topic, "offline", retain=True)

        def connected(
            client: Client, userdata: Any, flags: ConnectFlags, reason: ReasonCode, properties: Properties | None
        ) -> None:
            if reason.is_failure:
                log("mqtt_refused", level="warning", reason=str(reason))
                return
            client.subscribe(rpc_topic)
            log("mqtt_connected", server=server)
            self.loop.call_soon_threadsafe(on_connected)

        def message(client: Client, userdata: Any, received: MQTTMessage) -> None:
            self.loop.call_soon_threadsafe(on_frame, received.payload)

        self.client.on_connect = connected
        self.client.on_message = message
        self.client.reconnect_delay_set(1, 30)
        self.client.connect_async(host, int(port or 1883))
        self.client.loop_start()

    def publish(self, topic: str, text: str, retain: bool = False) -> None:
        self.client.publish(topic, text, qos=0, retain=retain)

    def close(self) -> None:
        self.client.publish(self.status_topic, "offline", qos=0, retain=True)
        self.client.disconnect()
        self.client.loop_stop()
