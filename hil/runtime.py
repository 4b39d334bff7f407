"""`vbms run`: the VBMS on Linux, a virtual ESP32 (simulation, or a gateway on a
Raspberry Pi with USB-RS485 adapters and a Bluetooth dongle).

An asyncio driver for vbms_core.app.Proxy: pyserial for the BMS and inverter
ports, bleak for the JK modules, microdot for RPC over HTTP (GET|POST
/rpc/<Method>) and a WebSocket at /rpc (Mongoose-OS-style frames), the
configuration as JSON saved atomically.  Logs are JSON lines on stderr.
SIGINT/SIGTERM stop it cleanly.

No fixed default password: when the configuration has no rpc.auth_token, a
random one is generated, saved, and printed once on the console.
"""

import asyncio
import json
import os
import secrets
import signal
import sys
import tempfile
import time

from vbms_core import app as app_module
from vbms_core import config as config_module
from vbms_core import events as ev
from vbms_core import telemetry


def now_us():
    return int(time.monotonic() * 1_000_000)


class Log:
    def __init__(self, stream=sys.stderr):
        self.stream = stream

    def __call__(self, event, level="info", **fields):
        record = {"t": round(time.time(), 3), "level": level, "event": event}
        record.update(fields)
        self.stream.write(json.dumps(record, default=str) + "\n")
        self.stream.flush()


def save_config_atomically(path, flat_config):
    """Write, sync, rename: a power cut leaves the old file or the new one, never half of one."""
    directory = os.path.dirname(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(prefix=".vbms-config-", dir=directory)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            json.dump(config_module.nest(flat_config), stream, indent=1, sort_keys=True)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
        directory_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(directory_fd)
        finally:
            os.close(directory_fd)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


def load_config(path, log):
    """The validated config; a missing file gives the defaults.  Raises ConfigError / ValueError."""
    if not os.path.exists(path):
        log("config_missing", path=path, note="starting from the defaults")
        return config_module.defaults()
    with open(path, "rb") as stream:
        try:
            data = parse_json(stream.read())
        except ValueError as error:
            raise ValueError("%s is not valid JSON: %s" % (path, error)) from None
    return config_module.validate(data)


class BleCentral:
    """The BLE side of the driver: one bleak client per JK slot."""

    def __init__(self, adapter, deliver, log):
        self.adapter = adapter
        self.deliver = deliver  # deliver(event): a vbms_core.events BLE input, its now_us filled in
        self.log = log
        self.clients = {}
        self.writers = {}
        self.names = {}  # slot -> (address, advertised name) of the connected modules
        # One discovery at a time: parallel scans on one adapter step on each other
        # (each forgets devices the other just found).  Connections themselves overlap.
        self.discovery = asyncio.Lock()

    async def connect(self, slot, address):
        from bleak import BleakClient

        from .wires.ble import find_device

        try:
            async with self.discovery:
                device = await find_device(address=address, adapter=self.adapter, timeout_s=10)
            if device is None:
                raise ConnectionError("%s not found" % address)
            client = BleakClient(
                device, bluez={"adapter": self.adapter}, disconnected_callback=lambda _: self._lost(slot)
            )
            await client.connect()
            characteristics = [c for s in client.services for c in s.characteristics if c.uuid.startswith("0000ffe1")]
            writer = next(c for c in characteristics if {"write", "write-without-response"} & set(c.properties))
            notifier = next(c for c in characteristics if "notify" in c.properties)
            self.clients[slot] = client
            self.writers[slot] = writer
            self.names[slot] = (device.address, device.name or "")
            await client.start_notify(notifier, lambda _, data: self.deliver(ev.BleNotify(slot, bytes(data), 0)))
        except Exception as error:  # noqa: BLE001 - every failure is a failed connection to the core
            self.log("ble_connect_failed", level="warning", slot=slot, address=address, error=str(error))
            self.deliver(ev.BleConnectFailed(slot, str(error), 0))
            return
        self.log("ble_connected", slot=slot, address=address)
        self.deliver(ev.BleConnected(slot, 0))

    def _lost(self, slot):
        if self.clients.pop(slot, None) is not None:
            self.writers.pop(slot, None)
            self.log("ble_disconnected", level="warning", slot=slot)
            self.deliver(ev.BleDisconnected(slot, "link lost", 0))

    async def write(self, slot, data):
        client = self.clients.get(slot)
        if client is None:
            return
        try:
            await client.write_gatt_char(self.writers[slot], data, response=False)
        except Exception as error:  # noqa: BLE001
            self.log("ble_write_failed", level="warning", slot=slot, error=str(error))

    async def disconnect(self, slot):
        client = self.clients.pop(slot, None)
        self.writers.pop(slot, None)
        if client is not None:
            try:
                await client.disconnect()
            except Exception:  # noqa: BLE001 - gone already
                pass

    async def scan(self, seconds):
        from bleak import BleakScanner

        from .wires.ble import forget_devices

        try:
            async with self.discovery:
                await forget_devices(self.adapter)
                found = await BleakScanner.discover(timeout=seconds, adapter=self.adapter, return_adv=True)
            results = [[d.address, a.local_name or d.name or "", a.rssi, False] for d, a in found.values()]
            # Modules we are connected to do not advertise: list them too.
            seen = {row[0] for row in results}
            for slot in self.clients:
                address, name = self.names.get(slot, ("", ""))
                if address and address not in seen:
                    results.append([address, name, None, True])
        except Exception as error:  # noqa: BLE001
            self.log("ble_scan_failed", level="warning", error=str(error))
            results = []
        self.deliver(ev.BleScanResult(sorted(results, key=lambda row: row[0]), 0))

    async def close(self):
        for slot in list(self.clients):
            await self.disconnect(slot)


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


class HostExecutor(ev.Executor):
    """`vbms run`'s side of the driver contract: each action against the host's I/O.

    Answers that come back later (a BLE connection, a scan) are fed from tasks, never
    from inside an action's method (vbms_core.events).
    """

    def __init__(self, runtime):
        self.runtime = runtime

    def bms_write(self, action):
        port = self.runtime.ports.get("bms")
        if port is not None:
            port.write(action.data)

    def inv_write(self, action):
        port = self.runtime.ports.get("inv")
        if port is not None:
            port.write(action.data)

    def ble_connect(self, action):
        runtime = self.runtime
        if runtime.ble is None:
            runtime.feed_soon(ev.BleConnectFailed(action.slot, "no BLE adapter configured (--ble-adapter)", 0))
        else:
            runtime.spawn(runtime.ble.connect(action.slot, action.address))

    def ble_write(self, action):
        if self.runtime.ble is not None:
            self.runtime.spawn(self.runtime.ble.write(action.slot, action.data))

    def ble_disconnect(self, action):
        if self.runtime.ble is not None:
            self.runtime.spawn(self.runtime.ble.disconnect(action.slot))

    def ble_scan(self, action):
        runtime = self.runtime
        if runtime.ble is None:
            runtime.feed_soon(ev.BleScanResult([], 0))
        else:
            runtime.spawn(runtime.ble.scan(action.seconds))

    def publish(self, action):
        if self.runtime.mqtt is not None:
            self.runtime.mqtt.publish(action.topic, action.payload, action.retain)

    def save_config(self, action):
        runtime = self.runtime
        try:
            save_config_atomically(runtime.config_path, action.config)
        except OSError as error:
            runtime.log("config_save_failed", level="error", path=runtime.config_path, error=str(error))
            return
        runtime.log("config_saved", path=runtime.config_path)

    def reboot(self, action):
        self.runtime.spawn(self.runtime.reboot())

    def rpc_reply(self, action):
        waiter = self.runtime.rpc_waiters.pop(action.call_id, None)
        if waiter is not None and not waiter.done():
            waiter.set_result((action.result, action.error))

    def log(self, action):
        self.runtime.log(action.event, level=action.level, **action.fields)


class Runtime:
    RPC_TIMEOUT_S = 60  # no call waits longer (a scan is at most 30 s plus the core's grace)

    def __init__(
        self,
        config_path,
        bms_port=None,
        inv_port=None,
        ble_adapter=None,
        http_host="127.0.0.1",
        http_port=8080,
        log=None,
    ):
        self.config_path = config_path
        self.bms_port = bms_port
        self.inv_port = inv_port
        self.ble_adapter = ble_adapter
        self.http_host = http_host
        self.http_port = http_port
        self.log = log or Log()
        self.proxy = None
        self.executor = HostExecutor(self)
        self.ports = {}
        self.ble = None
        self.web = None
        self.stop_event = None
        self.wake = None
        self.tasks = []
        self.background = set()
        self.rpc_waiters = {}
        self.calls = 0
        self.mqtt = None

    # --- start and stop ------------------------------------------------------------

    def prepare_config(self):
        config = load_config(self.config_path, self.log)
        if not config["rpc.auth_token"]:
            config["rpc.auth_token"] = secrets.token_urlsafe(18)
            save_config_atomically(self.config_path, config)
            sys.stderr.write(
                "vbms run: generated an RPC token for state-changing calls (saved in %s):\n  %s\n"
                % (self.config_path, config["rpc.auth_token"])
            )
        return config

    async def run(self, stop_event=None, config=None):
        import serial

        self.stop_event = stop_event or asyncio.Event()
        self.wake = asyncio.Event()
        if config is None:
            config = self.prepare_config()
        self.proxy = app_module.Proxy(config, now_us())
        loop = asyncio.get_running_loop()
        for role, path, baud in (
            ("bms", self.bms_port, config["app.bms_baud"]),
            ("inv", self.inv_port, config["app.inv_baud"]),
        ):
            if path is None:
                continue
            port = serial.Serial(path, baud, timeout=0)
            self.ports[role] = port
            loop.add_reader(port.fileno(), self._readable, role)
        if self.ble_adapter is not None:
            self.ble = BleCentral(self.ble_adapter, self.feed, self.log)
        if config["mqtt.enable"] and config["mqtt.server"]:
            self.mqtt = MqttLink(
                config["mqtt.server"],
                config["device.id"],
                telemetry.topic(config, "status"),
                telemetry.topic(config, "rpc"),
                lambda: self.feed(ev.MqttConnected(0)),
                self._mqtt_frame,
                self.log,
            )
        self.web = self._web_app()
        self.tasks = [
            asyncio.create_task(self._ticker()),
            asyncio.create_task(self.web.start_server(host=self.http_host, port=self.http_port)),
        ]
        self.log(
            "started",
            config=self.config_path,
            bms_port=self.bms_port,
            inv_port=self.inv_port,
            ble_adapter=self.ble_adapter,
            http="http://%s:%d" % (self.http_host, self.http_port),
            slots=[s.index for s in self.proxy.slots if s.kind],
        )
        await self.stop_event.wait()
        await self.close()

    async def close(self):
        if self.mqtt is not None:
            self.mqtt.close()
        if getattr(self.web, "server", None) is not None:  # a stop right at start: no server yet
            self.web.shutdown()
        for task in self.tasks + list(self.background):
            task.cancel()
        await asyncio.gather(*self.tasks, *self.background, return_exceptions=True)
        loop = asyncio.get_running_loop()
        for port in self.ports.values():
            loop.remove_reader(port.fileno())
            port.close()
        if self.ble is not None:
            await self.ble.close()
        self.log("stopped")

    # --- the driver: inputs in, actions out ---------------------------------------------

    def feed(self, event):
        """One input into the core, now; its actions carried out in order."""
        event.now_us = now_us()
        ev.execute(self.executor, self.proxy.feed(event))
        self.wake.set()  # the next deadline may have moved

    def feed_soon(self, event):
        asyncio.get_running_loop().call_soon(self.feed, event)

    def spawn(self, coroutine):
        task = asyncio.ensure_future(coroutine)
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    def _readable(self, role):
        try:
            data = self.ports[role].read(4096)
        except OSError as error:
            self.log("port_error", level="error", port=role, error=str(error))
            return
        if data:
            self.feed(ev.BmsBytes(data, 0) if role == "bms" else ev.InvBytes(data, 0))

    async def _ticker(self):
        """Tick at the core's next deadline; an input that moves the deadline wakes it."""
        while True:
            self.feed(ev.Tick(0))
            deadline = self.proxy.next_deadline_us()
            self.wake.clear()
            # at most a second (nothing is lost: inputs wake it), at least half a millisecond (a
            # deadline that does not move on cannot make this loop spin)
            wait_s = 1.0 if deadline is None else min(max(deadline - now_us(), 500) / 1e6, 1.0)
            try:
                await asyncio.wait_for(self.wake.wait(), wait_s)
            except TimeoutError:
                pass

    def _mqtt_frame(self, payload):
        self.spawn(self._answer_mqtt(payload))

    async def _answer_mqtt(self, payload):
        try:
            frame = parse_frame(payload)
        except ValueError as error:
            self.mqtt.publish(
                self.proxy_topic("rpc", "response"),
                json.dumps({"id": None, "error": {"code": -32700, "message": str(error)}}),
            )
            return
        token = frame["auth"].get("token") if isinstance(frame.get("auth"), dict) else None
        result, error = await self.call(frame["method"], frame.get("params") or {}, token)
        reply = {"id": frame.get("id"), "src": self.proxy.config["device.id"]}
        if error is None:
            reply["result"] = result
        else:
            reply["error"] = error
        source = frame.get("src")
        topic = source + "/rpc" if isinstance(source, str) and source else self.proxy_topic("rpc", "response")
        self.mqtt.publish(topic, json.dumps(reply))

    def proxy_topic(self, *parts):
        return telemetry.topic(self.proxy.config, *parts)

    async def reboot(self):
        """A virtual reboot: the core starts again from the saved configuration."""
        await asyncio.sleep(0.1)
        if self.ble is not None:
            await self.ble.close()
        for waiter in self.rpc_waiters.values():
            if not waiter.done():
                waiter.set_result((None, {"code": -32000, "message": "the device rebooted"}))
        self.rpc_waiters = {}
        self.proxy = app_module.Proxy(self.prepare_config(), now_us())  # a reset config gets a new token
        self.wake.set()
        self.log("rebooted")

    # --- RPC ---------------------------------------------------------------------------

    async def call(self, method, params, token):
        """An RPC call through the core; (result, error) when its RpcReply comes."""
        self.calls += 1
        call_id = self.calls
        waiter = asyncio.get_running_loop().create_future()
        self.rpc_waiters[call_id] = waiter
        self.feed(ev.RpcCall(call_id, method, params, 0, token, int(time.time())))
        try:
            return await asyncio.wait_for(waiter, self.RPC_TIMEOUT_S)
        except TimeoutError:
            self.rpc_waiters.pop(call_id, None)
            return None, {"code": -32000, "message": "%s got no answer within %d s" % (method, self.RPC_TIMEOUT_S)}

    def _web_app(self):
        from microdot import Microdot
        from microdot.websocket import with_websocket

        web = Microdot()
        runtime = self

        def token_of(request, frame=None):
            header = request.headers.get("Authorization", "")
            if header.startswith("Bearer "):
                return header[7:]
            if frame and isinstance(frame.get("auth"), dict):
                return frame["auth"].get("token")
            return None

        from importlib import resources

        static = resources.files("hil").joinpath("web")
        content_types = {"html": "text/html; charset=utf-8", "js": "text/javascript", "css": "text/css"}

        # read once at start, not on every request
        files = {name: static.joinpath(name).read_bytes() for name in ("index.html", "app.js", "style.css")}

        def page(name):
            headers = {"Content-Type": content_types[name.rsplit(".", 1)[1]], "Cache-Control": "no-cache"}
            return files[name], 200, headers

        @web.route("/")
        async def index(request):
            return page("index.html")

        @web.route("/static/<name>")
        async def asset(request, name):
            if name not in files or name == "index.html":
                return {"error": {"code": 404, "message": "no such file"}}, 404
            return page(name)

        @web.route("/rpc/<method>", methods=["GET", "POST"])
        async def http_rpc(request, method):
            if request.method == "POST" and request.body:
                try:
                    params = parse_json(request.body)
                except ValueError as error:
                    return {"error": {"code": -32700, "message": "the request body is not JSON: %s" % error}}, 400
            else:
                params = {key: request.args.get(key) for key in request.args}
            result, error = await runtime.call(method, params, token_of(request))
            if error is not None:
                status = {401: 401, -32601: 404, -32000: 503}.get(error["code"], 400)
                return {"error": error}, status
            return result

        @web.route("/rpc")
        @with_websocket
        async def websocket_rpc(request, socket):
            while True:
                text = await socket.receive()
                try:
                    frame = parse_frame(text)
                except ValueError as error:
                    await socket.send(json.dumps({"id": None, "error": {"code": -32700, "message": str(error)}}))
                    continue
                result, error = await runtime.call(frame["method"], frame.get("params") or {}, token_of(request, frame))
                reply = {"id": frame.get("id")}
                if error is None:
                    reply["result"] = result
                else:
                    reply["error"] = error
                await socket.send(json.dumps(reply))

        return web


def parse_json(text):
    """JSON from a request body, frame or file; ValueError with a reason for anything unusable
    (not JSON, not UTF-8, nested too deep for the parser)."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("nested too deeply") from None
    except UnicodeDecodeError as error:
        raise ValueError("not UTF-8 text (%s)" % error.reason) from None


def parse_frame(text):
    """An RPC frame (WebSocket, MQTT): a JSON object with a method name."""
    frame = parse_json(text)
    if not isinstance(frame, dict) or not isinstance(frame.get("method"), str):
        raise ValueError("a frame is a JSON object with a method")
    return frame


def run(args):
    # Signals are caught from the first moment: a stop asked for during start-up is a clean stop too.
    stop_requested = []
    for signal_number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signal_number, lambda *_: stop_requested.append(True))
    log = Log()
    runtime = Runtime(
        args.config,
        bms_port=args.bms_port,
        inv_port=args.inv_port,
        ble_adapter=args.ble_adapter,
        http_host=args.http_host,
        http_port=args.http_port,
        log=log,
    )
    try:
        config = runtime.prepare_config()
    except (config_module.ConfigError, ValueError, OSError) as error:
        sys.stderr.write("vbms run: bad configuration: %s\n" % error)
        return 2

    async def main():
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signal_number in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signal_number, stop.set)
        if stop_requested:
            stop.set()
        await runtime.run(stop, config)

    try:
        asyncio.run(main())
    except (OSError, ImportError) as error:
        sys.stderr.write("vbms run: %s\n" % error)
        return 1
    except Exception as error:  # noqa: BLE001 - pyserial's SerialException is not an OSError
        if type(error).__name__ == "SerialException":
            sys.stderr.write("vbms run: %s\n" % error)
            return 1
        raise
    return 0
