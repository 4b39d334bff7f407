"""The BLE central for JK-BMS modules, on MicroPython's `bluetooth` module (raw API, no aioble).

For each slot the core asks for (events.BleConnect): connect by address, find
service FFE0, its FFE1 characteristics in either layout (one FFE1 that writes
and notifies, or two FFE1s: one to write, one to notify), subscribe through
the notifying one's CCCD, then report BleConnected; notifications become
BleNotify.  A connection that fails at any step is BleConnectFailed with the
step in the reason; a link lost later is BleDisconnected.  A disconnect the
core asked for is reported to no one (events.py).

The stack calls irq() between bytecodes of whatever runs (a scheduled
callback).  irq() therefore only copies the event (its memoryviews are valid
only during the call) into a queue; run() works through the queue in the
loop's own context, where the core's inputs are posted.  NimBLE sets up one
connection at a time and cannot scan meanwhile: one procedure (a connection's
setup or a scan) runs at a time, the others wait their turn.
"""

import asyncio
import time

import bluetooth
from micropython import const

from vbms_core import events as ev

_IRQ_SCAN_RESULT = const(5)
_IRQ_SCAN_DONE = const(6)
_IRQ_PERIPHERAL_CONNECT = const(7)
_IRQ_PERIPHERAL_DISCONNECT = const(8)
_IRQ_GATTC_SERVICE_RESULT = const(9)
_IRQ_GATTC_SERVICE_DONE = const(10)
_IRQ_GATTC_CHARACTERISTIC_RESULT = const(11)
_IRQ_GATTC_CHARACTERISTIC_DONE = const(12)
_IRQ_GATTC_DESCRIPTOR_RESULT = const(13)
_IRQ_GATTC_DESCRIPTOR_DONE = const(14)
_IRQ_GATTC_WRITE_DONE = const(17)
_IRQ_GATTC_NOTIFY = const(18)
_FLAG_WRITE_NO_RESPONSE = const(0x04)
_FLAG_WRITE = const(0x08)
_FLAG_NOTIFY = const(0x10)
_NO_CONNECTION = const(0xFFFF)  # the handle of a connection that never came up

SERVICE = bluetooth.UUID(0xFFE0)
CHARACTERISTIC = bluetooth.UUID(0xFFE1)
CCCD = bluetooth.UUID(0x2902)
SUBSCRIBE = b"\x01\x00"

MAX_LINKS = 4  # MicroPython's ESP32 build lets NimBLE hold this many connections
FIND_MS = 10000  # how long gap_connect looks for the module (vbms run: 10 s)
SETUP_MS = 20000  # connect, discover and subscribe, all of it
MTU = 247

# setup steps
CONNECTING, SERVICES, CHARACTERISTICS, DESCRIPTORS, SUBSCRIBING, READY = 0, 1, 2, 3, 4, 5
STEP_NAMES = ("connect", "service discovery", "characteristic discovery", "descriptor discovery", "subscribe", "")


def address_bytes(text):
    return bytes(int(part, 16) for part in text.split(":"))


def address_text(raw):
    return ":".join("%02X" % byte for byte in raw)


def advertised_name(adv_data):
    """The complete or shortened local name in advertising data (AD types 0x09, 0x08)."""
    index = 0
    while index + 1 < len(adv_data):
        length = adv_data[index]
        if length == 0:
            break
        if adv_data[index + 1] in (0x08, 0x09):
            return bytes(adv_data[index + 2 : index + 1 + length]).decode()
        index += 1 + length
    return None


class Link:
    """One module: where its setup stands and the handles it found."""

    __slots__ = ("slot", "address", "conn", "step", "started_ms", "start", "end", "chars", "write", "write_mode",
                 "notify", "cccd")  # fmt: skip

    def __init__(self, slot, address):
        self.slot = slot
        self.address = address
        self.conn = None
        self.step = CONNECTING
        self.started_ms = time.ticks_ms()
        self.start = self.end = None
        self.chars = []  # (def_handle, value_handle, properties) of FFE1 and the others, for the boundaries
        self.write = self.notify = self.cccd = None
        self.write_mode = 0


class BleCentral:
    """post(event) hands an input to the driver; log(event, level, **fields) writes a line."""

    def __init__(self, post, log, ble=None):
        self.post = post
        self.log = log
        self.ble = ble or bluetooth.BLE()
        self.queue = []  # (event code, copied data) from irq()
        self.flag = asyncio.ThreadSafeFlag()
        self.waiting = []  # Links waiting for their turn
        self.setup = None  # the Link being set up
        self.links = {}  # conn handle -> ready Link
        self.names = {}  # address -> advertised name, as last seen
        self.scan_seconds = []  # scans asked for, waiting for their turn
        self.scanning = None  # address -> [name, rssi] while a scan runs
        self.cancelled = 0  # cancelled connection attempts whose failure report is still to come

    def start(self):
        self.ble.active(True)
        try:
            self.ble.config(mtu=MTU)
        except (OSError, ValueError):
            pass
        self.ble.irq(self._irq)

    def close(self):
        for link in list(self.links.values()):
            self.ble.gap_disconnect(link.conn)
        self.links = {}
        self.ble.active(False)

    # --- what the executor asks -------------------------------------------------------

    def connect(self, slot, address):
        self.disconnect(slot)
        self.waiting.append(Link(slot, address))
        self.flag.set()

    def write(self, slot, data):
        link = self._ready(slot)
        if link is not None:
            self.ble.gattc_write(link.conn, link.write, data, link.write_mode)

    def disconnect(self, slot):
        self.waiting = [link for link in self.waiting if link.slot != slot]
        link = self._ready(slot)
        if link is not None:
            del self.links[link.conn]
            self.ble.gap_disconnect(link.conn)
        if self.setup is not None and self.setup.slot == slot:
            self._abandon(self.setup)
            self.setup = None

    def scan(self, seconds):
        self.scan_seconds.append(seconds)
        self.flag.set()

    def _ready(self, slot):
        for link in self.links.values():
            if link.slot == slot:
                return link
        return None

    # --- the stack's side ---------------------------------------------------------------

    def _irq(self, event, data):
        # copy now: the memoryviews die with this call
        if event == _IRQ_GATTC_NOTIFY:
            copied = (data[0], data[1], bytes(data[2]))
        elif event == _IRQ_SCAN_RESULT:
            copied = (data[0], bytes(data[1]), data[2], data[3], bytes(data[4]))
        elif event in (_IRQ_PERIPHERAL_CONNECT, _IRQ_PERIPHERAL_DISCONNECT):
            copied = (data[0], data[1], bytes(data[2]))
        elif event == _IRQ_GATTC_SERVICE_RESULT:
            copied = (data[0], data[1], data[2], bluetooth.UUID(data[3]))
        elif event == _IRQ_GATTC_CHARACTERISTIC_RESULT:
            copied = (data[0], data[1], data[2], data[3], bluetooth.UUID(data[4]))
        elif event == _IRQ_GATTC_DESCRIPTOR_RESULT:
            copied = (data[0], data[1], bluetooth.UUID(data[2]))
        else:
            copied = tuple(data)
        self.queue.append((event, copied))
        self.flag.set()

    async def run(self):
        while True:
            try:
                await asyncio.wait_for_ms(self.flag.wait(), 500)
            except asyncio.TimeoutError:  # noqa: UP041 - MicroPython has no builtin TimeoutError
                pass
            self.pump()

    def pump(self):
        """Works through what irq() queued, gives up setups that took too long, starts the next procedure."""
        while self.queue:
            event, data = self.queue.pop(0)
            self._handle(event, data)
        self._check_setup_time()
        self._next_procedure()

    def _handle(self, event, data):
        if event == _IRQ_GATTC_NOTIFY:
            link = self.links.get(data[0])
            if link is not None and data[1] == link.notify:
                self.post(ev.BleNotify(link.slot, data[2], 0))
        elif event == _IRQ_SCAN_RESULT:
            self._scan_result(data)
        elif event == _IRQ_SCAN_DONE:
            self._scan_done()
        elif event == _IRQ_PERIPHERAL_DISCONNECT:
            self._disconnected(data[0])
        elif event == _IRQ_PERIPHERAL_CONNECT:
            link = self.setup
            if link is not None and link.step == CONNECTING and data[2] == address_bytes(link.address):
                self._setup_step(link, event, data)
            else:
                self._stray(data[0], data[2])
        else:
            link = self.setup
            if link is not None and data[0] == link.conn:
                self._setup_step(link, event, data)

    # --- one procedure at a time ----------------------------------------------------------

    def _next_procedure(self):
        if self.setup is not None or self.scanning is not None:
            return
        if self.scan_seconds:
            seconds = max(self.scan_seconds)
            self.scan_seconds = []
            self.scanning = {}
            self.ble.gap_scan(seconds * 1000, 30000, 30000, True)
            return
        if not self.waiting:
            return
        link = self.waiting.pop(0)
        if len(self.links) >= MAX_LINKS:
            self.post(ev.BleConnectFailed(link.slot, "no free BLE connection (this board holds %d)" % MAX_LINKS, 0))
            return
        link.started_ms = time.ticks_ms()
        self.setup = link
        try:
            self.ble.gap_connect(0, address_bytes(link.address), FIND_MS)
        except OSError as error:
            self._failed(link, "connect refused by the stack (%s)" % error)

    def _check_setup_time(self):
        link = self.setup
        if link is not None and time.ticks_diff(time.ticks_ms(), link.started_ms) > SETUP_MS:
            self._abandon(link)
            self._failed(link, "%s timed out" % STEP_NAMES[link.step])

    def _abandon(self, link):
        try:
            if link.conn is None:
                self.ble.gap_connect(None)
                self.cancelled += 1
            else:
                self.ble.gap_disconnect(link.conn)
        except OSError:
            pass

    def _failed(self, link, reason):
        if self.setup is link:
            self.setup = None
        self.log("ble_connect_failed", level="warning", slot=link.slot, address=link.address, error=reason)
        self.post(ev.BleConnectFailed(link.slot, reason, 0))
        self.flag.set()

    def _stray(self, conn, address):
        """A connection nobody waits for: an attempt given up came up before the stack saw the cancel.
        It is that attempt's report (no other will come), and the link is let go: kept, it would hold
        the module, which could then not be found again."""
        if self.cancelled:
            self.cancelled -= 1
        self.log("ble_stray_connection", level="warning", address=address_text(address), conn=conn)
        try:
            self.ble.gap_disconnect(conn)
        except OSError:
            pass

    def _disconnected(self, conn):
        link = self.links.pop(conn, None)
        if link is not None:
            self.log("ble_disconnected", level="warning", slot=link.slot)
            self.post(ev.BleDisconnected(link.slot, "link lost", 0))
            return
        if conn == _NO_CONNECTION and self.cancelled:
            self.cancelled -= 1  # the report of an attempt given up already
            return
        setup = self.setup
        if setup is not None and (conn == setup.conn or (setup.conn is None and conn == _NO_CONNECTION)):
            self._failed(setup, "%s not found" % setup.address if setup.conn is None else "link lost during setup")

    def _setup_step(self, link, event, data):
        ble = self.ble
        if event == _IRQ_PERIPHERAL_CONNECT and link.step == CONNECTING:
            link.conn = data[0]
            link.step = SERVICES
            ble.gattc_discover_services(link.conn, SERVICE)
        elif event == _IRQ_GATTC_SERVICE_RESULT and data[3] == SERVICE:
            link.start, link.end = data[1], data[2]
        elif event == _IRQ_GATTC_SERVICE_DONE and link.step == SERVICES:
            if link.start is None:
                return self._give_up(link, "no FFE0 service")
            link.step = CHARACTERISTICS
            ble.gattc_discover_characteristics(link.conn, link.start, link.end)
        elif event == _IRQ_GATTC_CHARACTERISTIC_RESULT:
            link.chars.append((data[1], data[2], data[3] if data[4] == CHARACTERISTIC else 0))
        elif event == _IRQ_GATTC_CHARACTERISTIC_DONE and link.step == CHARACTERISTICS:
            self._choose_handles(link)
            if link.write is None or link.notify is None:
                return self._give_up(link, "no FFE1 characteristic to write and to notify")
            link.step = DESCRIPTORS
            ble.gattc_discover_descriptors(link.conn, link.notify + 1, self._char_end(link, link.notify))
        elif event == _IRQ_GATTC_DESCRIPTOR_RESULT and data[2] == CCCD and link.cccd is None:
            link.cccd = data[1]
        elif event == _IRQ_GATTC_DESCRIPTOR_DONE and link.step == DESCRIPTORS:
            if link.cccd is None:
                return self._give_up(link, "no CCCD on the notifying FFE1")
            link.step = SUBSCRIBING
            ble.gattc_write(link.conn, link.cccd, SUBSCRIBE, 1)
        elif event == _IRQ_GATTC_WRITE_DONE and link.step == SUBSCRIBING and data[1] == link.cccd:
            if data[2] != 0:
                return self._give_up(link, "subscribe refused (status %d)" % data[2])
            link.step = READY
            self.setup = None
            self.links[link.conn] = link
            self.log("ble_connected", slot=link.slot, address=link.address)
            self.post(ev.BleConnected(link.slot, 0))
            self.flag.set()

    def _give_up(self, link, reason):
        self._abandon(link)
        self._failed(link, reason)

    @staticmethod
    def _choose_handles(link):
        """Either layout: one FFE1 with write and notify, or a writing and a notifying FFE1."""
        for _, value_handle, properties in link.chars:
            if properties & _FLAG_NOTIFY and link.notify is None:
                link.notify = value_handle
            if properties & (_FLAG_WRITE | _FLAG_WRITE_NO_RESPONSE) and link.write is None:
                link.write = value_handle
                link.write_mode = 0 if properties & _FLAG_WRITE_NO_RESPONSE else 1

    @staticmethod
    def _char_end(link, value_handle):
        """The last handle of a characteristic: before the next one's declaration, or the service's end."""
        end = link.end
        for def_handle, _, _ in link.chars:
            if value_handle < def_handle <= end:
                end = def_handle - 1
        return end

    # --- scans ------------------------------------------------------------------------------

    def _scan_result(self, data):
        if self.scanning is None:
            return
        address = address_text(data[1])
        name = advertised_name(data[4])
        row = self.scanning.get(address)
        if row is None:
            row = self.scanning[address] = [self.names.get(address, ""), data[3]]
        if name:
            row[0] = self.names[address] = name
        row[1] = data[3]

    def _scan_done(self):
        found = self.scanning or {}
        self.scanning = None
        devices = [[address, found[address][0], found[address][1], False] for address in found]
        seen = set(found)
        for link in self.links.values():  # connected modules do not advertise: list them too
            if link.address not in seen:
                devices.append([link.address, self.names.get(link.address, ""), None, True])
        devices.sort(key=lambda row: row[0])
        self.post(ev.BleScanResult(devices, 0))
        self.flag.set()
