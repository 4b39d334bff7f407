"""The BLE bridge (CPython, never shipped): the unix port's `bluetooth` stand-in on one side,
bleak on the bench's BlueZoo on the other.  The firmware's own central code (vbms_fw/ble.py)
makes the calls; this process carries them out and sends back the irq events a board's
stack would raise (firmware/host/bluetooth.py has the wire format).

Each connection gets the attribute table a real module has: a service declaration, then
per characteristic a declaration and a value handle, and a CCCD (0x2902) after each one
that notifies.  BlueZ (and BlueZoo) hide declarations and CCCDs, so the table is built
here from bleak's objects; subscribing is writing 01 00 to the CCCD, which becomes
start_notify.  Both JK layouts come out as on the air: one FFE1 that writes and notifies,
or a writing FFE1 and a notifying FFE1.

GATT procedures run one after the other, as on a stack, but none may hold up the ones after
it: a procedure ends when its link is lost (a link cut while a write was under way left
bleak's write waiting for ever, and every call after it, a new connection too, with it) and
fails after PROCEDURE_TIMEOUT_S.  A connection attempt, cancelled at any point, even
before it began, is reported as the stack reports one: a disconnect of no connection.
"""

import asyncio
import json
import os
import shutil
import tempfile
import threading

from hil.host.ble import find_device, forget_devices

IRQ_SCAN_RESULT = 5
IRQ_SCAN_DONE = 6
IRQ_PERIPHERAL_CONNECT = 7
IRQ_PERIPHERAL_DISCONNECT = 8
IRQ_SERVICE_RESULT = 9
IRQ_SERVICE_DONE = 10
IRQ_CHARACTERISTIC_RESULT = 11
IRQ_CHARACTERISTIC_DONE = 12
IRQ_DESCRIPTOR_RESULT = 13
IRQ_DESCRIPTOR_DONE = 14
IRQ_READ_RESULT = 15
IRQ_READ_DONE = 16
IRQ_WRITE_DONE = 17
IRQ_NOTIFY = 18
IRQ_MTU_EXCHANGED = 21
NO_CONNECTION = 0xFFFF
NO_ADDRESS = "00:00:00:00:00:00"
PROPERTY_BITS = {"broadcast": 0x01, "read": 0x02, "write-without-response": 0x04, "write": 0x08, "notify": 0x10,
                 "indicate": 0x20, "authenticated-signed-writes": 0x40}  # fmt: skip
CCCD = "2902"
STATUS_FAILED = 1
PROCEDURE_TIMEOUT_S = 10.0  # one GATT procedure (read, write, subscribe, disconnect) on BlueZoo: far less


def short_uuid(uuid):
    """ "0000ffe0-0000-1000-8000-00805f9b34fb" -> "ffe0"; other UUIDs stay whole."""
    uuid = uuid.lower()
    if uuid.startswith("0000") and uuid.endswith("-0000-1000-8000-00805f9b34fb"):
        return uuid[4:8]
    return uuid


def advertising_data(name, service_uuids, manufacturer_data):
    """AD structures rebuilt from what bleak reports (BlueZ gives no raw advertisement)."""
    out = bytearray(b"\x02\x01\x06")
    for uuid in service_uuids:
        short = short_uuid(uuid)
        if len(short) == 4:
            out += bytes((3, 0x03)) + int(short, 16).to_bytes(2, "little")
    if name:
        raw = name.encode()[:29]
        out += bytes((len(raw) + 1, 0x09)) + raw
    for company, data in manufacturer_data.items():
        out += bytes((len(data) + 3, 0xFF)) + company.to_bytes(2, "little") + data
    return bytes(out)


class Link:
    """One connection: its bleak client and the attribute table made for it."""

    def __init__(self, conn, address, client):
        self.conn = conn
        self.address = address
        self.client = client
        self.services = []  # (start, end, uuid)
        self.characteristics = []  # (def_handle, value_handle, properties, uuid, bleak characteristic)
        self.descriptors = []  # (handle, uuid, characteristic's value handle)
        self.by_handle = {}  # value handle -> bleak characteristic; CCCD handle -> ("cccd", characteristic)
        self.closing = False
        self.procedure = None  # the task of the GATT procedure under way on this link
        handle = 0
        for service in sorted(client.services, key=lambda s: s.handle):
            handle += 1
            start = handle
            for characteristic in sorted(service.characteristics, key=lambda c: c.handle):
                properties = 0
                for name in characteristic.properties:
                    properties |= PROPERTY_BITS.get(name, 0)
                def_handle, value_handle = handle + 1, handle + 2
                handle = value_handle
                self.characteristics.append((def_handle, value_handle, properties, short_uuid(characteristic.uuid),
                                             characteristic))  # fmt: skip
                self.by_handle[value_handle] = characteristic
                if properties & 0x30:
                    handle += 1
                    self.descriptors.append((handle, CCCD, value_handle))
                    self.by_handle[handle] = ("cccd", characteristic, value_handle)
            self.services.append((start, handle, short_uuid(service.uuid)))


class BleBridge:
    def __init__(self, adapter, path):
        self.adapter = adapter
        self.path = path
        self.server = None
        self.writer = None
        self.links = {}  # conn -> Link
        self.next_conn = 1
        self.discovery = asyncio.Lock()  # one scan or device search at a time on the adapter
        self.connecting = None  # the task of the connection under way
        self.tasks = set()

    async def start(self):
        self.server = await asyncio.start_unix_server(self._serve, self.path)
        return self

    async def stop(self):
        if self.server is not None:
            self.server.close()
        await self._drop_links()

    # --- the firmware's side ------------------------------------------------------------

    async def _serve(self, reader, writer):
        """One firmware at a time; a new one (the board restarted) finds no links of the old one,
        nor a connection the old one asked for that would come up after."""
        await self._cancel_connecting()
        await self._drop_links()
        self.writer = writer
        try:
            while True:
                line = await reader.readline()
                if not line:
                    break
                call = json.loads(line)
                op = call["op"]
                if op == "scan":
                    self._spawn(self._scan(call["ms"]))  # long: the next calls go on meanwhile
                elif op == "connect":
                    self._attempt(call["addr"], call["ms"])  # long too: a cancel may come meanwhile
                elif op == "connect_cancel":
                    if self.connecting is not None:
                        self.connecting.cancel()
                else:
                    await self._procedure(call)  # in order, as a stack runs one GATT procedure after the other
        finally:
            if self.writer is writer:
                self.writer = None
            await self._drop_links()

    def emit(self, code, *data):
        if self.writer is not None:
            self.writer.write((json.dumps({"ev": code, "d": list(data)}) + "\n").encode())

    def _spawn(self, coroutine):
        task = asyncio.ensure_future(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    def _attempt(self, address, find_ms):
        """A connection attempt, the one a connect_cancel cancels (set here, before it runs: a cancel
        that comes before it began must find it too)."""
        task = self._spawn(self._connect(address, find_ms))
        asked_by = self.writer
        self.connecting = task

        def ended(task):
            if self.connecting is task:
                self.connecting = None
            if task.cancelled() and self.writer is asked_by:
                self.emit(IRQ_PERIPHERAL_DISCONNECT, NO_CONNECTION, 0xFF, NO_ADDRESS)

        task.add_done_callback(ended)

    async def _procedure(self, call):
        """One GATT procedure on a link, awaited; it ends early when the link is lost (_lost cancels it)."""
        link = self.links.get(call.get("conn"))
        method = getattr(self, "_" + call["op"], None)
        if link is None or method is None:
            return
        task = link.procedure = asyncio.ensure_future(method(link, call))
        await asyncio.wait({task})
        if link.procedure is task:
            link.procedure = None

    async def _cancel_connecting(self):
        task = self.connecting
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _drop_links(self):
        for link in list(self.links.values()):
            link.closing = True
            if link.procedure is not None:
                link.procedure.cancel()
            try:
                await asyncio.wait_for(link.client.disconnect(), PROCEDURE_TIMEOUT_S)
            except Exception:  # noqa: BLE001 - gone already
                pass
        self.links = {}

    # --- calls --------------------------------------------------------------------------

    async def _scan(self, duration_ms):
        from bleak import BleakScanner

        def seen(device, advertisement):
            data = advertising_data(advertisement.local_name or device.name, advertisement.service_uuids,
                                    advertisement.manufacturer_data)  # fmt: skip
            self.emit(IRQ_SCAN_RESULT, 0, device.address.upper(), 0, advertisement.rssi, data.hex())

        async with self.discovery:
            try:
                await forget_devices(self.adapter)
                async with BleakScanner(detection_callback=seen, bluez={"adapter": self.adapter}):
                    await asyncio.sleep((duration_ms or 1000) / 1000)
            except Exception:  # noqa: BLE001 - a scan that failed found nothing
                pass
        self.emit(IRQ_SCAN_DONE)

    async def _connect(self, address, find_ms):
        from bleak import BleakClient

        asked_by = self.writer  # the firmware that asked: if it goes away meanwhile, the link is not its own
        try:
            async with self.discovery:
                device = await find_device(address=address, adapter=self.adapter, timeout_s=(find_ms or 2000) / 1000)
            if device is None:
                raise ConnectionError("not found")
            conn = self.next_conn
            self.next_conn += 1
            client = BleakClient(
                device, bluez={"adapter": self.adapter}, disconnected_callback=lambda _: self._lost(conn)
            )
            await client.connect()
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - the stack reports any failure the same way
            self.emit(IRQ_PERIPHERAL_DISCONNECT, NO_CONNECTION, 0xFF, NO_ADDRESS)
            return
        if self.writer is not asked_by:  # the board restarted while this connection came up: let it go
            try:
                await client.disconnect()
            except Exception:  # noqa: BLE001 - gone already
                pass
            return
        self.links[conn] = Link(conn, address.upper(), client)
        self.emit(IRQ_PERIPHERAL_CONNECT, conn, 0, address.upper())

    def _lost(self, conn):
        link = self.links.pop(conn, None)
        if link is None:
            return
        if link.procedure is not None:
            link.procedure.cancel()  # no reply will come on a lost link
        if not link.closing:
            self.emit(IRQ_PERIPHERAL_DISCONNECT, conn, 0, link.address)

    async def _disconnect(self, link, call):
        link.closing = True
        self.links.pop(link.conn, None)
        try:
            await asyncio.wait_for(link.client.disconnect(), PROCEDURE_TIMEOUT_S)
        except Exception:  # noqa: BLE001 - gone already
            pass
        self.emit(IRQ_PERIPHERAL_DISCONNECT, link.conn, 0, link.address)

    async def _services(self, link, call):
        for start, end, uuid in link.services:
            if call.get("uuid") in (None, uuid):
                self.emit(IRQ_SERVICE_RESULT, link.conn, start, end, uuid)
        self.emit(IRQ_SERVICE_DONE, link.conn, 0)

    async def _chars(self, link, call):
        for def_handle, value_handle, properties, uuid, _ in link.characteristics:
            if call["start"] <= def_handle <= call["end"] and call.get("uuid") in (None, uuid):
                self.emit(IRQ_CHARACTERISTIC_RESULT, link.conn, def_handle, value_handle, properties, uuid)
        self.emit(IRQ_CHARACTERISTIC_DONE, link.conn, 0)

    async def _descs(self, link, call):
        for handle, uuid, _ in link.descriptors:
            if call["start"] <= handle <= call["end"]:
                self.emit(IRQ_DESCRIPTOR_RESULT, link.conn, handle, uuid)
        self.emit(IRQ_DESCRIPTOR_DONE, link.conn, 0)

    async def _write(self, link, call):
        target = link.by_handle.get(call["handle"])
        data = bytes.fromhex(call["data"])
        status = 0
        try:
            if isinstance(target, tuple):  # a CCCD: 01 00 subscribes, 00 00 ends it
                _, characteristic, value_handle = target
                if data[:1] == b"\x01" or data[:1] == b"\x02":
                    conn = link.conn

                    def notified(_, value, conn=conn, value_handle=value_handle):
                        if conn in self.links:
                            self.emit(IRQ_NOTIFY, conn, value_handle, bytes(value).hex())

                    await asyncio.wait_for(link.client.start_notify(characteristic, notified), PROCEDURE_TIMEOUT_S)
                else:
                    await asyncio.wait_for(link.client.stop_notify(characteristic), PROCEDURE_TIMEOUT_S)
            elif target is not None:
                written = link.client.write_gatt_char(target, data, response=call.get("mode") == 1)
                await asyncio.wait_for(written, PROCEDURE_TIMEOUT_S)
            else:
                status = STATUS_FAILED
        except Exception:  # noqa: BLE001 - a failed write is a status, as on a board
            status = STATUS_FAILED
        if call.get("mode") == 1:
            self.emit(IRQ_WRITE_DONE, link.conn, call["handle"], status)

    async def _read(self, link, call):
        target = link.by_handle.get(call["handle"])
        try:
            value = await asyncio.wait_for(link.client.read_gatt_char(target), PROCEDURE_TIMEOUT_S)
            self.emit(IRQ_READ_RESULT, link.conn, call["handle"], bytes(value).hex())
            status = 0
        except Exception:  # noqa: BLE001
            status = STATUS_FAILED
        self.emit(IRQ_READ_DONE, link.conn, call["handle"], status)

    async def _mtu(self, link, call):
        self.emit(IRQ_MTU_EXCHANGED, link.conn, link.client.mtu_size)


class BridgeThread:
    """The bridge on an event loop of a thread of its own, listening on
    path (a unix socket; by default in a directory of its own, removed on stop)."""

    def __init__(self, adapter, path=None):
        self.adapter = adapter
        self.own_directory = None if path else tempfile.mkdtemp(prefix="vbms-ble-")
        self.path = path or os.path.join(self.own_directory, "bridge.sock")
        self.loop = None
        self.thread = None
        self.bridge = None

    def start(self):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="ble-bridge", daemon=True)
        self.thread.start()
        self.bridge = BleBridge(self.adapter, self.path)
        asyncio.run_coroutine_threadsafe(self.bridge.start(), self.loop).result(timeout=30)
        return self

    def stop(self):
        try:
            asyncio.run_coroutine_threadsafe(self.bridge.stop(), self.loop).result(timeout=10)
        except Exception:  # noqa: BLE001 - stopping anyway
            pass
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)
        if self.own_directory is not None:
            shutil.rmtree(self.own_directory, ignore_errors=True)
