"""Replays a recorded session through the firmware's driver (MicroPython, never shipped).

  micropython replay.py SESSION.jsonl [--measure]

The session's first line is {"config": ...}; then one input per line, [t_us, kind, ...]:
  "inv" / "bms" hex          bytes on the inverter's / the batteries' UART
  "ble_connected" slot       the module of a slot answers the connection asked for
  "ble_lost" slot reason     its link drops
  "ble_notify" slot hex      one notification from it
  "rpc" id method params token wall_s
Each input goes in where the board takes it: bytes through the firmware's UART handlers,
BLE through the stack's irq() into vbms_fw.ble (a scripted stack answers its GATT calls),
RPC as the web server hands it to the driver.  Between inputs the driver is serviced at the
proxy's deadlines, and right after each input, as its loop does; time is the session's.

Out, one JSON line each: ["inv" | "bms", t_us, hex] written, ["ble", t_us, address, hex]
written to a module, ["rpc", id, result, error]; with --measure, ["mem", {...}]: the heap
after import, after start, at 30 s and after the session (gc.mem_alloc after gc.collect), and
the bytes each inverter request allocated from 30 s on.
"""

import gc
import json
import sys
from binascii import hexlify, unhexlify

import micropython
from vbms_fw import app as firmware_app
from vbms_fw.ble import BleCentral, address_bytes, address_text
from vbms_fw.driver import Driver, Waiter
from vbms_fw.executor import FirmwareExecutor
from vbms_fw.rs485 import Rs485Port

from vbms_core import app as core_app
from vbms_core import events as ev

gc.collect()
IMPORTED = gc.mem_alloc()
# every byte asked for, freed or not (MICROPY_MEM_STATS: the unix port has it, a board's build may not)
mem_total = getattr(micropython, "mem_total", gc.mem_alloc)


def emit(item):
    print(json.dumps(item))


class VirtualClock:
    def __init__(self):
        self.t_us = 0

    def now_us(self):
        return self.t_us


class RecordingUart:
    """The UART's far end: what the firmware wrote, with the session's time (or, while
    allocation is measured, only how many bytes: recording would allocate)."""

    def __init__(self, name, clock, out):
        self.name = name
        self.clock = clock
        self.out = out
        self.record = True
        self.written = 0

    def write(self, data):
        self.written += len(data)
        if self.record:
            self.out.append([self.name, self.clock.t_us, hexlify(bytes(data)).decode()])
        return len(data)

    def txdone(self):
        return True

    def deinit(self):
        pass


# a JK module's attribute table, as vbms_fw.ble discovers it: service 1..4, FFE1 (declaration 2,
# value 3: read, write without response, write, notify), its CCCD 4
SERVICE, CHARACTERISTIC, CCCD = 0xFFE0, 0xFFE1, 0x2902


class ScriptedStack:
    """The BLE stack's side for a replay: answers the central's calls with the irq events a
    stack raises, connects a module only once the session says it answered."""

    def __init__(self, clock, out):
        import bluetooth

        self.uuid = bluetooth.UUID
        self.clock = clock
        self.out = out
        self.handler = None
        self.events = []
        self.reachable = set()  # addresses the session said answered
        self.pending = None  # address of the gap_connect under way
        self.conns = {}  # conn -> address
        self.next_conn = 1
        self.buffer = bytearray(512)

    def active(self, on=None):
        return True

    def config(self, *names, **values):
        return None

    def irq(self, handler):
        self.handler = handler

    def raise_irq(self, event, data):
        self.events.append((event, data))

    def deliver(self):
        while self.events:
            event, data = self.events.pop(0)
            self.handler(event, data)
            if event == 18:  # the notification's memoryview dies with the call, as on a board
                for index in range(len(data[2])):
                    self.buffer[index] = 0xEE

    def conn_of(self, address):
        for conn in self.conns:
            if self.conns[conn] == address:
                return conn
        return None

    def answered(self, address):
        self.reachable.add(address)
        self._try_connect()

    def _try_connect(self):
        if self.pending is not None and self.pending in self.reachable:
            address, self.pending = self.pending, None
            self.reachable.discard(address)
            conn = self.next_conn
            self.next_conn += 1
            self.conns[conn] = address
            self.raise_irq(7, (conn, 0, memoryview(address_bytes(address))))

    def lost(self, address):
        conn = self.conn_of(address)
        if conn is not None:
            del self.conns[conn]
            self.raise_irq(8, (conn, 0, memoryview(address_bytes(address))))

    def notify(self, address, data):
        conn = self.conn_of(address)
        if conn is not None:
            self.buffer[: len(data)] = data
            self.raise_irq(18, (conn, 3, memoryview(self.buffer)[: len(data)]))

    # the calls vbms_fw.ble makes
    def gap_connect(self, addr_type, addr=None, scan_duration_ms=2000):
        if addr_type is None:
            self.pending = None
            self.raise_irq(8, (0xFFFF, 0xFF, memoryview(bytes(6))))
            return
        self.pending = address_text(addr)
        self._try_connect()

    def gap_disconnect(self, conn):
        address = self.conns.pop(conn, None)
        if address is not None:
            self.raise_irq(8, (conn, 0, memoryview(address_bytes(address))))
        return address is not None

    def gap_scan(self, duration_ms, interval_us=0, window_us=0, active=False):
        self.raise_irq(6, ())

    def gattc_discover_services(self, conn, uuid=None):
        self.raise_irq(9, (conn, 1, 4, self.uuid(SERVICE)))
        self.raise_irq(10, (conn, 0))

    def gattc_discover_characteristics(self, conn, start, end, uuid=None):
        self.raise_irq(11, (conn, 2, 3, 0x1E, self.uuid(CHARACTERISTIC)))
        self.raise_irq(12, (conn, 0))

    def gattc_discover_descriptors(self, conn, start, end):
        self.raise_irq(13, (conn, 4, self.uuid(CCCD)))
        self.raise_irq(14, (conn, 0))

    def gattc_write(self, conn, handle, data, mode=0):
        if handle == 3:
            self.out.append(["ble", self.clock.t_us, self.conns[conn], hexlify(bytes(data)).decode()])
        if mode == 1:
            self.raise_irq(17, (conn, handle, 0))

    def gattc_exchange_mtu(self, conn):
        pass


class Replay:
    def __init__(self, config):
        self.clock = VirtualClock()
        self.out = []
        self.board = firmware_app.Firmware(log=lambda *args, **fields: None, say=lambda text: None)
        board = self.board
        board.clock = self.clock
        board.driver = Driver(core_app.Proxy(config, 0), self.clock, FirmwareExecutor(board))
        self.inv_uart = RecordingUart("inv", self.clock, self.out)
        board.bms_port = Rs485Port(RecordingUart("bms", self.clock, self.out), None, config["app.bms_baud"], "bms")
        board.inv_port = Rs485Port(self.inv_uart, None, config["app.inv_baud"], "inv")
        self.stack = ScriptedStack(self.clock, self.out)
        board.ble = BleCentral(lambda event: board.driver.post(event), board.log, self.stack)
        board.ble.start()
        self.addresses = {}
        for index in range(15):
            self.addresses[index] = config["bms%d.addr" % index]
        self.waiters = {}
        self.last_tick_us = -1

    def flush(self):
        """What the firmware wrote so far, out; the list is reused."""
        for item in self.out:
            emit(item)
        self.out.clear()

    def service(self):
        """The driver's loop, once: the central's queue, then what it posted, then a Tick."""
        for _ in range(64):
            self.stack.deliver()
            self.board.ble.pump()
            if not self.stack.events:
                break
        self.board.driver.service()
        self.last_tick_us = self.clock.t_us

    def advance(self, t_us):
        """Ticks at every deadline before t_us, then the clock to t_us."""
        proxy = self.board.driver.proxy
        while True:
            deadline = proxy.next_deadline_us()
            if deadline is None or deadline > t_us:
                break
            self.clock.t_us = max(deadline, self.last_tick_us + 1)
            if self.clock.t_us > t_us:
                break
            self.service()
        self.clock.t_us = t_us

    def received(self, port, hex_text):
        """Bytes as the UART's reader hands them on: read into the port's buffer, a view of them."""
        data = unhexlify(hex_text)
        port.buffer[: len(data)] = data
        return len(data)

    def take(self, item):
        kind = item[1]
        board = self.board
        if kind == "inv":
            self.inverter_request(self.received(board.inv_port, item[2]))
            return
        if kind == "bms":
            board._bms_bytes(board.bms_port.view[: self.received(board.bms_port, item[2])])
        elif kind == "ble_connected":
            self.stack.answered(self.addresses[item[2]])
        elif kind == "ble_lost":
            self.stack.lost(self.addresses[item[2]])
        elif kind == "ble_notify":
            self.stack.notify(self.addresses[item[2]], unhexlify(item[3]))
        elif kind == "rpc":
            call_id, method, params, token, wall_s = item[2:7]
            self.waiters[call_id] = board.driver.waiters[call_id] = Waiter()
            board.driver.feed(ev.RpcCall(call_id, method, params, 0, token, wall_s))
        self.service()

    def inverter_request(self, count):
        """What happens on the board from the read on: the driver feeds the bytes and leaves its
        loop asleep (vbms_fw.driver.Driver.feed); the loop comes at the next deadline."""
        self.board._inv_bytes(self.board.inv_port.view[:count])


def main(path, measure, steady_after_us=30000000):
    with open(path) as session:
        replay = Replay(json.loads(session.readline())["config"])
        gc.collect()
        started = gc.mem_alloc()
        steady = None
        requests = held_max = held_sum = total_sum = 0  # running sums: a list of them would grow the heap
        for line in session:
            item = json.loads(line)
            replay.advance(item[0])
            if measure and steady is None and item[0] > steady_after_us:
                gc.collect()
                steady = gc.mem_alloc()
            if measure and item[1] == "inv" and item[0] > steady_after_us:
                count = replay.received(replay.board.inv_port, item[2])
                replay.inv_uart.record = False
                gc.collect()
                gc.disable()
                held, total = gc.mem_alloc(), mem_total()
                replay.inverter_request(count)
                held, total = gc.mem_alloc() - held, mem_total() - total
                requests += 1
                held_sum += held
                total_sum += total
                held_max = max(held_max, held)
                gc.enable()
                replay.inv_uart.record = True
            else:
                replay.take(item)
            replay.flush()
    for call_id in sorted(replay.waiters):
        answer = replay.waiters[call_id].answer
        emit(["rpc", call_id, answer[0] if answer else None, answer[1] if answer else None])
    if measure:
        gc.collect()
        emit(["mem", {
            "imported": IMPORTED,
            "started": started,
            "steady": steady,
            "after_session": gc.mem_alloc(),
            "free": gc.mem_free(),
            "online": sum(1 for slot in replay.board.driver.proxy.slots if slot.status == "online"),
            "requests_measured": requests,
            "per_request_held_max": held_max,
            "per_request_held_mean": held_sum // requests if requests else None,
            "per_request_allocated_mean": total_sum // requests if requests else None,
            "inverter_bytes_written": replay.inv_uart.written,
        }])  # fmt: skip


if __name__ == "__main__":
    main(sys.argv[1], "--measure" in sys.argv)
