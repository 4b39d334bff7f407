"""The driver's Bluetooth LE side: bleak over BlueZ's D-Bus API, one client per JK slot.

find_device and forget_devices work around what a scan does not show: BlueZ (and
BlueZoo) report a device once, when first seen, so an adapter forgets the devices it
holds before looking again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from vbms_core import events as ev

from . import CoreInput, LogFunction

if TYPE_CHECKING:
    from bleak import BleakClient
    from bleak.backends.characteristic import BleakGATTCharacteristic
    from bleak.backends.device import BLEDevice
    from bleak.backends.scanner import AdvertisementData


class BleCentral:
    """The BLE side of the driver: one bleak client per JK slot."""

    def __init__(self, adapter: str, deliver: Callable[[CoreInput], None], log: LogFunction) -> None:
        self.adapter = adapter
        self.deliver = deliver  # deliver(event): a vbms_core.events BLE input, its now_us filled in
        self.log = log
        self.clients: dict[int, BleakClient] = {}
        self.writers: dict[int, BleakGATTCharacteristic] = {}
        self.names: dict[int, tuple[str, str]] = {}  # slot -> (address, advertised name) of the connected modules
        # One discovery at a time: parallel scans on one adapter step on each other
        # (each forgets devices the other just found).  Connections themselves overlap.
        self.discovery = asyncio.Lock()

    async def connect(self, slot: int, address: str) -> None:
        from bleak import BleakClient

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

    def _lost(self, slot: int) -> None:
        if self.clients.pop(slot, None) is not None:
            self.writers.pop(slot, None)
            self.log("ble_disconnected", level="warning", slot=slot)
            self.deliver(ev.BleDisconnected(slot, "link lost", 0))

    async def write(self, slot: int, data: bytes) -> None:
        client = self.clients.get(slot)
        if client is None:
            return
        try:
            await client.write_gatt_char(self.writers[slot], data, response=False)
        except Exception as error:  # noqa: BLE001
            self.log("ble_write_failed", level="warning", slot=slot, error=str(error))

    async def disconnect(self, slot: int) -> None:
        client = self.clients.pop(slot, None)
        self.writers.pop(slot, None)
        if client is not None:
            try:
                await client.disconnect()
            except Exception:  # noqa: BLE001 - gone already
                pass

    async def scan(self, seconds: float) -> None:
        from bleak import BleakScanner

        try:
            async with self.discovery:
                await forget_devices(self.adapter)
                found = await BleakScanner.discover(timeout=seconds, return_adv=True, bluez={"adapter": self.adapter})
            results: list[list[Any]] = [
                [d.address, a.local_name or d.name or "", a.rssi, False] for d, a in found.values()
            ]
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

    async def close(self) -> None:
        for slot in list(self.clients):
            await self.disconnect(slot)


async def find_device(
    address: str | None = None, name: str | None = None, adapter: str = "hci1", timeout_s: float = 10.0
) -> BLEDevice | None:
    """Scan until a device with this address (or name) is seen; its BLEDevice or None.

    BlueZoo reports a device once, when it first sees it (a radio would keep
    advertising): so the adapter first forgets the matching devices that are
    not connected, and the detection callback is registered before scanning
    starts (bleak's find_device_by_* helpers start listening after, and miss
    it now and then).
    """
    from bleak import BleakScanner

    if address is None and name is None:
        raise ValueError("give an address or a name to look for")
    await forget_devices(adapter, address)
    wanted = address.upper() if address else None
    found: dict[str, BLEDevice] = {}
    event = asyncio.Event()

    def on_detection(device: BLEDevice, advertisement: AdvertisementData) -> None:
        if (wanted and device.address.upper() == wanted) or (name and name in (device.name, advertisement.local_name)):
            found.setdefault("device", device)
            event.set()

    async with BleakScanner(detection_callback=on_detection, bluez={"adapter": adapter}):
        try:
            await asyncio.wait_for(event.wait(), timeout_s)
        except TimeoutError:
            return None
    return found["device"]


async def forget_devices(adapter: str, address: str | None = None) -> None:
    """Remove the adapter's disconnected device objects (all, or one address)."""
    from dbus_fast import BusType
    from dbus_fast.aio import MessageBus

    bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
    try:
        introspection = await bus.introspect("org.bluez", "/")
        manager = bus.get_proxy_object("org.bluez", "/", introspection).get_interface(
            "org.freedesktop.DBus.ObjectManager"
        )
        adapter_path = "/org/bluez/" + adapter
        node = await bus.introspect("org.bluez", adapter_path)
        adapter_interface = bus.get_proxy_object("org.bluez", adapter_path, node).get_interface("org.bluez.Adapter1")
        # dbus_fast makes the call_* methods from the introspection, at run time
        for path, interfaces in (await manager.call_get_managed_objects()).items():  # type: ignore[attr-defined]
            device = interfaces.get("org.bluez.Device1")
            if device is None or not path.startswith(adapter_path + "/") or device["Connected"].value:
                continue
            if address is None or device["Address"].value.upper() == address.upper():
                await adapter_interface.call_remove_device(path)  # type: ignore[attr-defined]
    finally:
        bus.disconnect()
