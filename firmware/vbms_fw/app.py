"""The firmware: what main.py starts.  Reads the flash, brings up the hardware, runs the
proxy, and restarts the board when the core asks for a reboot.

Hardware objects are made here and handed to the parts (nothing opens a UART, a
radio or a socket at import time).  On the unix port the same code runs with
stand-ins for machine, network and bluetooth (firmware/host/).
"""

import asyncio
import gc
import json

import machine

from vbms_core import app as core_app
from vbms_core import events as ev
from vbms_core import telemetry

from . import store
from .clock import Clock
from .driver import Driver, parse_frame
from .executor import FirmwareExecutor
from .log import Console
from .rs485 import Rs485Port, open_uart

WATCHDOG_MS = 30000  # the original's sys.wdt_timeout
REBOOT_DELAY_MS = 100  # the RPC answer that asked for it goes out first


class Firmware:
    def __init__(self, log=None, say=print):
        self.log = log or Console()
        self.say = say
        self.device = None
        self.config = None
        self.clock = None
        self.driver = None
        self.bms_port = None
        self.inv_port = None
        self.ble = None
        self.mqtt = None
        self.wifi = None
        self.web = None
        self.led = None
        self.tasks = []
        self.stopped = asyncio.Event()
        # one input object per port, reused: the core copies the bytes it keeps, never the event
        self._bms_event = ev.BmsBytes(b"", 0)
        self._inv_event = ev.InvBytes(b"", 0)

    # --- start ------------------------------------------------------------------------

    async def start(self, run_core=True):
        """Everything up; with run_core=False the proxy is made but not ticked (the
        executor conformance suite drives the executor itself)."""
        self.device = store.load_device(self.log)
        self.config = config = store.prepare_config(self.log, self.say)
        self.clock = Clock()
        watchdog = machine.WDT(timeout=WATCHDOG_MS) if run_core else None
        self.driver = Driver(core_app.Proxy(config, self.clock.now_us()), self.clock, FirmwareExecutor(self), watchdog)
        self._open_ports(config)
        self._start_ble()
        self._start_wifi()
        self._start_web()
        if config["mqtt.enable"] and config["mqtt.server"]:
            self.start_mqtt(config["mqtt.server"], config["device.id"], telemetry.topic(config, "status"),
                            telemetry.topic(config, "rpc"))  # fmt: skip
        self._start_panel(config)
        if run_core:
            self.spawn(self.driver.run())
        self.log("started", slots=[s.index for s in self.driver.proxy.slots if s.kind],
                 bms_uart=config["app.bms_uart_no"], inv_uart=config["app.inv_uart_no"],
                 http="http://%s:%d" % (self.wifi.address or self.device["http"]["host"], self.device["http"]["port"]),
                 ble=self.ble is not None, heap_free=gc.mem_free())  # fmt: skip

    def spawn(self, coroutine):
        """A task the firmware cancels when it closes; finished ones are let go."""
        self.tasks = [task for task in self.tasks if not task.done()]
        task = asyncio.create_task(coroutine)
        self.tasks.append(task)
        return task

    def _open_ports(self, config):
        if config["app.bms_uart_no"] == config["app.inv_uart_no"]:
            self.log("port_error", level="error", error="app.bms_uart_no and app.inv_uart_no name the same UART %d"
                     % config["app.bms_uart_no"])  # fmt: skip
            return
        for role, number, baud in (
            ("bms", config["app.bms_uart_no"], config["app.bms_baud"]),
            ("inv", config["app.inv_uart_no"], config["app.inv_baud"]),
        ):
            pins = self.device["uart"].get(str(number))
            if pins is None:
                self.log("port_error", level="error", port=role, error="device.json has no pins for UART %d" % number)
                continue
            try:
                uart = open_uart(number, baud, pins)
            except (OSError, ValueError) as error:
                self.log("port_error", level="error", port=role, uart=number, error=str(error))
                continue
            de = machine.Pin(pins["de"], machine.Pin.OUT, value=0) if pins.get("de", -1) >= 0 else None
            port = Rs485Port(uart, de, baud, role)
            if role == "bms":
                self.bms_port = port
                self.spawn(port.run_reader(self._bms_bytes))
            else:
                self.inv_port = port
                self.spawn(port.run_reader(self._inv_bytes))
            self.spawn(port.run_line())

    def _bms_bytes(self, view):
        event = self._bms_event
        event.data = view
        self.driver.feed(event)

    def _inv_bytes(self, view):
        event = self._inv_event
        event.data = view
        self.driver.feed(event, False)

    def _start_ble(self):
        try:
            from .ble import BleCentral
        except ImportError:
            self.log("ble_unavailable", level="warning", error="no bluetooth module on this board")
            return
        try:
            central = BleCentral(lambda event: self.driver.post(event), self.log)
            central.start()
        except OSError as error:
            self.log("ble_unavailable", level="warning", error=str(error))
            return
        self.ble = central
        self.spawn(central.run())

    def _start_wifi(self):
        from .wifi import Wifi

        self.wifi = Wifi(self.device, self.log, self.say)
        try:
            self.wifi.start()
        except OSError as error:
            self.log("wifi_error", level="error", error=str(error))
        self.spawn(self.wifi.run())

    def _start_web(self):
        from .web import make_app

        self.web = make_app(self.driver)
        http = self.device["http"]
        self.spawn(self.web.start_server(host=http["host"], port=http["port"]))

    def start_mqtt(self, server, client_id, status_topic, rpc_topic):
        from .mqtt import MqttClient

        self.mqtt = MqttClient(server, client_id, status_topic, rpc_topic,
                               lambda: self.driver.post(ev.MqttConnected(0)), self._mqtt_message, self.log)  # fmt: skip
        self.spawn(self.mqtt.run())

    def _start_panel(self, config):
        from .panel import ResetButton, StatusLed

        if config["pins.led"] >= 0:
            self.led = StatusLed(config["pins.led"])
            self.spawn(self.led.run(self.wifi.state))
        if config["pins.button"] >= 0:
            self.spawn(ResetButton(config["pins.button"], config["pins.button_hold_ms"], self.factory_reset).run())

    # --- RPC over MQTT ---------------------------------------------------------------

    def _mqtt_message(self, topic, payload):
        self.spawn(self._answer_mqtt(payload))

    async def _answer_mqtt(self, payload):
        """A frame on <prefix>/<id>/rpc; the answer goes to <src>/rpc, or to .../rpc/response."""
        config = self.driver.proxy.config
        response_topic = telemetry.topic(config, "rpc", "response")
        try:
            frame = parse_frame(payload)
        except ValueError as error:
            self.mqtt.publish(
                response_topic, json.dumps({"id": None, "error": {"code": -32700, "message": str(error)}})
            )
            return
        reply = await self.driver.answer_parsed(frame)
        reply["src"] = config["device.id"]
        source = frame.get("src")
        self.mqtt.publish(source + "/rpc" if isinstance(source, str) and source else response_topic, json.dumps(reply))

    # --- stop and restart ---------------------------------------------------------------

    async def close(self):
        if self.mqtt is not None:
            await self.mqtt.close()
        if self.web is not None and getattr(self.web, "server", None) is not None:
            self.web.shutdown()
        current = asyncio.current_task()
        for task in self.tasks:
            if task is not current:
                task.cancel()
        await asyncio.sleep_ms(0)
        for port in (self.bms_port, self.inv_port):
            if port is not None:
                await port.drain()  # a reply on its way finishes before the line is let go
                port.close()
        if self.ble is not None:
            self.ble.close()
        if self.wifi is not None:
            self.wifi.close()
        self.driver.abandon_calls("the device rebooted")

    async def reboot(self):
        await asyncio.sleep_ms(REBOOT_DELAY_MS)
        self.log("rebooting")
        await self.close()
        machine.reset()

    async def factory_reset(self):
        self.log("factory_reset", level="warning", source="button")
        if self.led is not None:
            self.led.on()
        store.factory_reset()
        await asyncio.sleep_ms(1000)
        await self.close()
        machine.reset()


async def main():
    firmware = Firmware()
    await firmware.start()
    await firmware.stopped.wait()


def run():
    asyncio.run(main())
