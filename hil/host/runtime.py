"""`vbms run`: the host driver's main loop (see hil/host/__init__.py).

Inputs reach the core as they come (serial bytes, BLE events, RPC calls, MQTT), and the
core is ticked at its next deadline, never on a fixed poll.  Logs are JSON lines on
stderr.  SIGINT, SIGTERM and SIGHUP (a closed terminal) stop it cleanly; a serial port
that vanishes is reopened with backoff.  No fixed default password: without
rpc.auth_token a random one is generated, saved, and printed once on the console.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import signal
import sys
import time
from collections.abc import Awaitable, Coroutine
from typing import TYPE_CHECKING, Any, TextIO

from vbms_core import app as app_module
from vbms_core import config as config_module
from vbms_core import events as ev
from vbms_core import telemetry

from . import CoreInput, LogFunction
from .ble import BleCentral
from .config_store import load_config, remove_leftovers, save_config_atomically
from .mqtt import MqttLink
from .transport import PortLink, SerialTransport, TransportError
from .web import RpcAnswer, Server, make_app, parse_frame

if TYPE_CHECKING:
    import argparse

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def now_us() -> int:
    return int(time.monotonic() * 1_000_000)


class Log:
    def __init__(self, stream: TextIO = sys.stderr) -> None:
        self.stream = stream

    def __call__(self, event: str, level: str = "info", **fields: Any) -> None:
        record = {"t": round(time.time(), 3), "level": level, "event": event}
        record.update(fields)
        self.stream.write(json.dumps(record, default=str) + "\n")
        self.stream.flush()


class HostExecutor(ev.Executor):
    """`vbms run`'s side of the driver contract: each action against the host's I/O.

    Answers that come back later (a BLE connection, a scan) are fed from tasks, never
    from inside an action's method (vbms_core.events).
    """

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def bms_write(self, action: ev.BmsWrite) -> None:
        link = self.runtime.links.get("bms")
        if link is not None:
            link.write(action.data)

    def inv_write(self, action: ev.InvWrite) -> None:
        link = self.runtime.links.get("inv")
        if link is not None:
            link.write(action.data)

    def ble_connect(self, action: ev.BleConnect) -> None:
        runtime = self.runtime
        if runtime.ble is None:
            runtime.feed_soon(ev.BleConnectFailed(action.slot, "no BLE adapter configured (--ble-adapter)", 0))
        else:
            runtime.spawn(runtime.ble.connect(action.slot, action.address))

    def ble_write(self, action: ev.BleWrite) -> None:
        if self.runtime.ble is not None:
            self.runtime.spawn(self.runtime.ble.write(action.slot, action.data))

    def ble_disconnect(self, action: ev.BleDisconnect) -> None:
        if self.runtime.ble is not None:
            self.runtime.spawn(self.runtime.ble.disconnect(action.slot))

    def ble_scan(self, action: ev.BleScan) -> None:
        runtime = self.runtime
        if runtime.ble is None:
            runtime.feed_soon(ev.BleScanResult([], 0))
        else:
            runtime.spawn(runtime.ble.scan(action.seconds))

    def publish(self, action: ev.Publish) -> None:
        if self.runtime.mqtt is not None:
            self.runtime.mqtt.publish(action.topic, action.payload, action.retain)

    def save_config(self, action: ev.SaveConfig) -> None:
        runtime = self.runtime
        try:
            save_config_atomically(runtime.config_path, action.config)
        except OSError as error:
            runtime.log("config_save_failed", level="error", path=runtime.config_path, error=str(error))
            return
        runtime.log("config_saved", path=runtime.config_path)

    def reboot(self, action: ev.Reboot) -> None:
        self.runtime.spawn(self.runtime.reboot())

    def rpc_reply(self, action: ev.RpcReply) -> None:
        waiter = self.runtime.rpc_waiters.pop(action.call_id, None)
        if waiter is not None and not waiter.done():
            waiter.set_result((action.result, action.error))

    def log(self, action: ev.Log) -> None:
        self.runtime.log(action.event, level=action.level, **action.fields)


class Runtime:
    RPC_TIMEOUT_S = 60  # no call waits longer (a scan is at most 30 s plus the core's grace)
    CLOSE_TIMEOUT_S = 5  # each part of a stop gets this long

    def __init__(
        self,
        config_path: str,
        bms_port: str | None = None,
        inv_port: str | None = None,
        ble_adapter: str | None = None,
        http_host: str = "127.0.0.1",
        http_port: int = 8080,
        log: LogFunction | None = None,
        http_timeout_s: float = 10.0,
    ) -> None:
        self.config_path = config_path
        self.bms_port = bms_port
        self.inv_port = inv_port
        self.ble_adapter = ble_adapter
        self.http_host = http_host
        self.http_port = http_port
        self.http_timeout_s = http_timeout_s
        self.log: LogFunction = log or Log()
        # proxy and wake are set by run(), before any input is fed
        self.proxy: app_module.Proxy = None  # type: ignore[assignment]
        self.executor = HostExecutor(self)
        self.links: dict[str, PortLink] = {}  # role ("bms", "inv") -> PortLink
        self.ble: BleCentral | None = None
        self.web: Server | None = None
        self.stop_event: asyncio.Event | None = None
        self.wake: asyncio.Event = None  # type: ignore[assignment]
        self.tasks: list[asyncio.Task[None]] = []
        self.background: set[asyncio.Future[None]] = set()
        self.rpc_waiters: dict[int, asyncio.Future[RpcAnswer]] = {}
        self.calls = 0
        self.mqtt: MqttLink | None = None

    # --- start and stop ------------------------------------------------------------

    def prepare_config(self) -> dict[str, Any]:
        config = load_config(self.config_path, self.log)
        if not config["rpc.auth_token"]:
            config["rpc.auth_token"] = secrets.token_urlsafe(18)
            save_config_atomically(self.config_path, config)
            sys.stderr.write(
                "vbms run: generated an RPC token for state-changing calls (saved in %s):\n  %s\n"
                % (self.config_path, config["rpc.auth_token"])
            )
        return config

    async def run(self, stop_event: asyncio.Event | None = None, config: dict[str, Any] | None = None) -> None:
        self.stop_event = stop_event or asyncio.Event()
        self.wake = asyncio.Event()
        if config is None:
            config = self.prepare_config()
        self.proxy = app_module.Proxy(config, now_us())
        for role, path, baud, kind in (
            ("bms", self.bms_port, config["app.bms_baud"], ev.BmsBytes),
            ("inv", self.inv_port, config["app.inv_baud"], ev.InvBytes),
        ):
            if path is None:
                continue
            on_data = lambda data, kind=kind: self.feed(kind(data, 0))  # noqa: E731
            self.links[role] = PortLink(role, SerialTransport(path, baud), on_data, self.log).start()
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
        self.web = make_app(self, self.http_timeout_s)
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

    async def close(self) -> None:
        if self.mqtt is not None:
            self.mqtt.close()
        if getattr(self.web, "server", None) is not None:  # a stop right at start: no server yet
            self.web.shutdown()  # type: ignore[union-attr]  # it has a server: it is there
        for task in self.tasks + list(self.background):
            task.cancel()
        await self._within("tasks", asyncio.gather(*self.tasks, *self.background, return_exceptions=True))
        for link in self.links.values():
            link.close()
        if self.ble is not None:
            # BlueZ may be gone already (a bench that died): a stop is a stop all the same
            await self._within("ble", self.ble.close())
        self.log("stopped")

    async def _within(self, what: str, awaitable: Awaitable[Any]) -> None:
        try:
            await asyncio.wait_for(awaitable, self.CLOSE_TIMEOUT_S)
        except TimeoutError:
            self.log("close_timeout", level="warning", part=what, seconds=self.CLOSE_TIMEOUT_S)

    # --- the driver: inputs in, actions out ---------------------------------------------

    def feed(self, event: CoreInput) -> None:
        """One input into the core, now; its actions carried out in order."""
        event.now_us = now_us()
        ev.execute(self.executor, self.proxy.feed(event))
        self.wake.set()  # the next deadline may have moved

    def feed_soon(self, event: CoreInput) -> None:
        asyncio.get_running_loop().call_soon(self.feed, event)

    def spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    async def _ticker(self) -> None:
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

    def _mqtt_frame(self, payload: bytes | bytearray) -> None:
        self.spawn(self._answer_mqtt(payload))

    async def _answer_mqtt(self, payload: bytes | bytearray) -> None:
        # (type: ignore[union-attr] below: a frame comes from the MQTT link, so there is one)
        try:
            frame = parse_frame(payload)
        except ValueError as error:
            self.mqtt.publish(  # type: ignore[union-attr]
                self.proxy_topic("rpc", "response"),
                json.dumps({"id": None, "error": {"code": -32700, "message": str(error)}}),
            )
            return
        token = frame["auth"].get("token") if isinstance(frame.get("auth"), dict) else None
        # mypy: `error` named the except's ValueError above; that block returned
        result, error = await self.call(frame["method"], frame.get("params") or {}, token)  # type: ignore[misc]
        reply = {"id": frame.get("id"), "src": self.proxy.config["device.id"]}
        if error is None:
            reply["result"] = result
        else:
            reply["error"] = error
        source = frame.get("src")
        topic = source + "/rpc" if isinstance(source, str) and source else self.proxy_topic("rpc", "response")
        self.mqtt.publish(topic, json.dumps(reply))  # type: ignore[union-attr]

    def proxy_topic(self, *parts: str) -> str:
        return telemetry.topic(self.proxy.config, *parts)

    async def reboot(self) -> None:
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

    async def call(self, method: str, params: Any, token: str | None) -> RpcAnswer:
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


def run(args: argparse.Namespace) -> int:
    # Signals are caught from the first moment: a stop asked for during start-up is a clean stop too.
    stop_requested: list[bool] = []
    for signal_number in STOP_SIGNALS:
        signal.signal(signal_number, lambda *_: stop_requested.append(True))
    log = Log()
    runtime = Runtime(
        args.config,
        bms_port=args.bms_port,
        inv_port=args.inv_port,
        ble_adapter=args.ble_adapter,
        http_host=args.http_host,
        http_port=args.http_port,
        http_timeout_s=args.http_timeout,
        log=log,
    )
    try:
        config = runtime.prepare_config()
    except (config_module.ConfigError, ValueError, OSError) as error:
        sys.stderr.write("vbms run: bad configuration: %s\n" % error)
        return 2
    for name in remove_leftovers(args.config):
        log("config_leftover_removed", file=name)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signal_number in STOP_SIGNALS:
            loop.add_signal_handler(signal_number, stop.set)
        if stop_requested:
            stop.set()
        await runtime.run(stop, config)

    try:
        asyncio.run(main())
    except (TransportError, OSError, ImportError) as error:
        sys.stderr.write("vbms run: %s\n" % error)
        return 1
    return 0
