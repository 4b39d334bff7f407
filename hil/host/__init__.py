"""The host driver: `vbms run`, the VBMS on Linux (a virtual ESP32 in simulation, or a
gateway on a Raspberry Pi with USB-RS485 adapters and a Bluetooth dongle).

It runs vbms_core's proxy on asyncio and carries out its actions (HostExecutor) on real
I/O: serial ports (transport), bleak (ble), microdot HTTP and WebSocket RPC (web), paho
MQTT (mqtt), the configuration file (config_store).  It imports vbms_core and its own
modules only, never the harness.
"""
