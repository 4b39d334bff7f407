"""A JK-BMS BLE peripheral on bless: advertising, GATT FFE0/FFE1, the JK session.

GATT layouts real modules have (jk-protocols.md 1.1):
  "single": one FFE1 characteristic for write and notify (most modules);
  "split":  two FFE1 characteristics, write on the first, notify on the second.
bless finds only one of two same-UUID characteristics by UUID, so the
characteristic objects are kept and notifications go through the notify one.

bless reports Notifying=true before anyone subscribed, which makes BlueZoo
call AcquireNotify (unimplemented): Notifying is held false until StartNotify.

Failures acted on here: "disconnect" (drop the link, refuse connections for
reconnect_after_s, then accept again), "refuse_reconnect" (drop every link
at once, for as long as the failure is set).
"""

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any, Self

# bless's __init__ is "# type: ignore" (it picks a backend per platform): mypy sees none of its names
from bless import (  # type: ignore[attr-defined]
    BlessGATTCharacteristic,
    BlessServer,
    GATTAttributePermissions,
    GATTCharacteristicProperties,
)

from .device import JkBleSession, JkBms

SERVICE_UUID = "0000ffe0-0000-1000-8000-00805f9b34fb"
CHARACTERISTIC_UUID = "0000ffe1-0000-1000-8000-00805f9b34fb"
GATT_LAYOUTS = ("single", "split")

_WRITE = GATTCharacteristicProperties.write | GATTCharacteristicProperties.write_without_response
_NOTIFY = GATTCharacteristicProperties.read | GATTCharacteristicProperties.notify
_PERMISSIONS = GATTAttributePermissions.readable | GATTAttributePermissions.writeable


class JkBlePeripheral:
    def __init__(
        self,
        device: JkBms,
        adapter: str = "hci0",
        name: str | None = None,
        gatt_layout: str = "single",
        chunking: str = "mtu131",
        reconnect_after_s: float = 3.0,
        on_notify: Callable[[str, bytes], object] | None = None,
    ) -> None:
        if gatt_layout not in GATT_LAYOUTS:
            raise ValueError("unknown GATT layout %r; choose single or split" % (gatt_layout,))
        self.device = device
        self.adapter = adapter
        self.name = name or device.name
        self.gatt_layout = gatt_layout
        self.chunking = chunking
        self.reconnect_after_s = reconnect_after_s
        self.on_notify = on_notify  # on_notify(name, payload): e.g. a bench trace
        self.session: JkBleSession | None = None
        self.notifications = 0
        # (monotonic time the frame was generated, counter) for latency measurements
        self.frames_sent: list[tuple[float, int]] = []
        self.running = False
        self._server: BlessServer | None = None
        self._notify_char: BlessGATTCharacteristic | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> Self:
        await self._open_server()
        self.running = True
        self._task = asyncio.get_running_loop().create_task(self._stream())
        return self

    async def stop(self) -> None:
        self.running = False
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        await self._close_server()

    async def _open_server(self) -> None:
        self._server = BlessServer(name=self.name, adapter=self.adapter)
        self._server.read_request_func = lambda characteristic, **_: characteristic.value
        self._server.write_request_func = self._on_write
        await self._server.add_new_service(SERVICE_UUID)
        service = self._server.services[SERVICE_UUID]
        if self.gatt_layout == "single":
            await self._server.add_new_characteristic(
                SERVICE_UUID, CHARACTERISTIC_UUID, _WRITE | _NOTIFY, None, _PERMISSIONS
            )
        else:
            await self._server.add_new_characteristic(SERVICE_UUID, CHARACTERISTIC_UUID, _WRITE, None, _PERMISSIONS)
            await self._server.add_new_characteristic(SERVICE_UUID, CHARACTERISTIC_UUID, _NOTIFY, None, _PERMISSIONS)
        self._notify_char = service.characteristics[-1]
        gatt = self._notify_char.gatt
        gatt._notifying = False  # see the module docstring

        def start_notify(_: object) -> None:
            gatt._notifying = True

        def stop_notify(_: object) -> None:
            gatt._notifying = False

        self._server.app.StartNotify = start_notify
        self._server.app.StopNotify = stop_notify
        self.session = JkBleSession(self.device, self.chunking)
        await self._server.start()
        await make_discoverable(self.adapter, alias=self.name)

    async def _close_server(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            try:
                await server.stop()
            except Exception:  # noqa: BLE001 - the bus may already be gone at shutdown
                pass

    def _send(self, payloads: list[bytes]) -> None:
        gatt = self._notify_char.gatt  # type: ignore[union-attr]  # _open_server made it before any send
        if not gatt._notifying:
            return
        for payload in payloads:
            gatt.Value = bytes(payload)
            self.notifications += 1
            if self.on_notify is not None:
                self.on_notify(self.name, payload)

    def _on_write(self, characteristic: BlessGATTCharacteristic, value: bytearray, **_: Any) -> None:
        self._send(self.session.on_write(bytes(value), time.monotonic()))  # type: ignore[union-attr]  # see _send

    async def _stream(self) -> None:
        refuse_until = 0.0
        while self.running:
            now = time.monotonic()
            failure = self.device.failure
            if failure == "disconnect":
                self.device.failure = None
                refuse_until = now + self.reconnect_after_s
                failure = "refuse_reconnect"
            if failure == "refuse_reconnect" or now < refuse_until:
                if await disconnect_peers(self.adapter):
                    self.session = JkBleSession(self.device, self.chunking)
                await asyncio.sleep(0.1)
                continue
            payloads = self.session.poll(now)  # type: ignore[union-attr]  # start() opened the server first
            if payloads:
                self.frames_sent.append((now, self.device.counter))
                self._send(payloads)
            await asyncio.sleep(0.02)


# --- BlueZ from the peripheral's side (dbus-fast) -----------------------------------------


async def make_discoverable(adapter: str, alias: str | None = None) -> None:
    """Make an adapter visible as a peripheral.

    BlueZoo reports LE advertisements only while the advertiser's adapter is
    discoverable, and a central's device object may keep the adapter's name
    instead of the advertised local name: alias sets the adapter's name so
    both agree.  Each simulated module has an adapter (and so a MAC) of its own.
    """
    from dbus_fast import BusType, Variant
    from dbus_fast.aio import MessageBus

    bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
    try:
        path = "/org/bluez/" + adapter
        introspection = await bus.introspect("org.bluez", path)
        # Any: dbus-fast makes an interface's call_* methods at run time, from the introspection
        properties: Any = bus.get_proxy_object("org.bluez", path, introspection).get_interface(
            "org.freedesktop.DBus.Properties"
        )
        if alias is not None:
            await properties.call_set("org.bluez.Adapter1", "Alias", Variant("s", alias))
        await properties.call_set("org.bluez.Adapter1", "DiscoverableTimeout", Variant("u", 0))
        await properties.call_set("org.bluez.Adapter1", "Discoverable", Variant("b", True))
    finally:
        bus.disconnect()


async def disconnect_peers(adapter: str) -> int:
    """Drop every link to an adapter, as when its radio link is lost.

    Two views of a link are cut: BlueZ on a real radio publishes the central as a
    connected device object under this adapter (/org/bluez/<adapter>/dev_...);
    BlueZoo does not publish the peripheral side's view, so there the link is cut
    from the other end: a connected device object, on any adapter, whose address
    is this adapter's.  Either gets Device1.Disconnect.  Returns how many links were cut.
    """
    from dbus_fast import BusType
    from dbus_fast.aio import MessageBus

    bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
    dropped = 0
    try:
        introspection = await bus.introspect("org.bluez", "/")
        # Any: dbus-fast makes an interface's call_* methods at run time, from the introspection
        manager: Any = bus.get_proxy_object("org.bluez", "/", introspection).get_interface(
            "org.freedesktop.DBus.ObjectManager"
        )
        objects = await manager.call_get_managed_objects()
        own = objects.get("/org/bluez/" + adapter, {}).get("org.bluez.Adapter1")
        if own is None:
            return 0
        address = own["Address"].value
        under_adapter = "/org/bluez/%s/" % adapter
        for path, interfaces in objects.items():
            device = interfaces.get("org.bluez.Device1")
            if device is None or not device["Connected"].value:
                continue
            if device["Address"].value != address and not path.startswith(under_adapter):
                continue
            node = await bus.introspect("org.bluez", path)
            # (the ignore: call_disconnect is made at run time, as above)
            await bus.get_proxy_object("org.bluez", path, node).get_interface("org.bluez.Device1").call_disconnect()  # type: ignore[attr-defined]
            dropped += 1
    finally:
        bus.disconnect()
    return dropped


class PeripheralHost:
    """JK BLE peripherals and the asyncio loop they run on, in a thread of its own (bless needs a
    running loop; the benches that host them are threads, not coroutines).  peripherals: slot ->
    JkBlePeripheral."""

    def __init__(self) -> None:
        self.peripherals: dict[int, JkBlePeripheral] = {}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="ble-loop", daemon=True)
        self._thread.start()

    def add(self, slot: int, peripheral: JkBlePeripheral, timeout_s: float = 30.0) -> JkBlePeripheral:
        """Start a peripheral (advertising, its GATT server, its stream) and keep it under slot."""
        asyncio.run_coroutine_threadsafe(peripheral.start(), self._loop).result(timeout=timeout_s)
        self.peripherals[slot] = peripheral
        return peripheral

    def stop(self) -> None:
        """Stop every peripheral (whatever one of them raises), then the loop and its thread; again:
        nothing (the loop is gone, waiting on it would take 10 s a peripheral)."""
        if not self._thread.is_alive():
            return
        for peripheral in self.peripherals.values():
            try:
                asyncio.run_coroutine_threadsafe(peripheral.stop(), self._loop).result(timeout=10)
            except Exception:  # noqa: BLE001 - shutting down anyway
                pass
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
