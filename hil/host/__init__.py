"""The host driver: `vbms run`, the VBMS on Linux (a virtual ESP32 in simulation, or a
gateway on a Raspberry Pi with USB-RS485 adapters and a Bluetooth dongle).

It runs vbms_core's proxy on asyncio and carries out its actions (HostExecutor) on real
I/O: serial ports (transport), bleak (ble), microdot HTTP and WebSocket RPC (web), paho
MQTT (mqtt), the configuration file (config_store).  It imports vbms_core and its own
modules only, never the harness.
"""

from typing import Any, Protocol


class LogFunction(Protocol):
    """How the driver's parts log: log(event, level="info", **fields), one JSON line each (runtime.Log)."""

    def __call__(self, event: str, level: str = ..., **fields: Any) -> None: ...


class CoreInput(Protocol):
    """An input for vbms_core's Proxy.feed (a vbms_core.events input class); the driver fills in now_us."""

    now_us: int
