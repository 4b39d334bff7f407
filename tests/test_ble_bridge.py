"""The BLE bridge (firmware/host/ble_bridge.py) on its own: the firmware's side of the socket is this
test, the links' bleak clients are stand-ins that answer, or never do.

What is guarded: a GATT procedure that never ends must not hold up the calls after it (a link cut
while a write was under way once left the bridge waiting for ever, and the firmware's next
connection with it: a scenario's module never came back); a connection attempt cancelled before
it began is reported like any cancelled attempt, once."""

import asyncio
import json
import tempfile
from pathlib import Path

import pytest

from hil import firmware

bridge_module = firmware._load_bridge()
ADDRESS = "C8:47:8C:10:00:01"
HANDLE = 3


class Client:
    """A bleak client's stand-in: writes are kept; with stuck=True none of them ever ends."""

    def __init__(self, stuck=False):
        self.stuck = stuck
        self.services = []
        self.mtu_size = 247
        self.writes = []

    async def write_gatt_char(self, target, data, response=False):
        self.writes.append(bytes(data))
        if self.stuck:
            await asyncio.Event().wait()

    async def disconnect(self):
        pass


class Firmware:
    """The firmware's end of the bridge's socket: calls out, irq events in."""

    def __init__(self, reader, writer):
        self.reader, self.writer = reader, writer

    def call(self, *calls):
        self.writer.write(b"".join((json.dumps(call) + "\n").encode() for call in calls))

    async def event(self, timeout_s=3.0):
        line = await asyncio.wait_for(self.reader.readline(), timeout_s)
        event = json.loads(line)
        return event["ev"], event["d"]

    async def silence(self, seconds=0.5):
        try:
            return await self.event(seconds)
        except TimeoutError:
            return None


def run(scenario, monkeypatch=None):
    """scenario(bridge, firmware) on a bridge listening on a socket of its own."""

    async def main():
        with tempfile.TemporaryDirectory(prefix="vbms-bridge-") as directory:
            bridge = await bridge_module.BleBridge("hci1", str(Path(directory) / "ble.sock")).start()
            reader, writer = await asyncio.open_unix_connection(bridge.path)
            for _ in range(100):  # the bridge takes the connection as its firmware
                if bridge.writer is not None:
                    break
                await asyncio.sleep(0.01)
            try:
                await scenario(bridge, Firmware(reader, writer))
            finally:
                writer.close()
                await bridge.stop()

    asyncio.run(main())


def add_link(bridge, conn, client):
    link = bridge_module.Link(conn, ADDRESS, client)
    link.by_handle[HANDLE] = "the FFE1 that writes"
    bridge.links[conn] = link
    return link


def test_a_write_on_a_link_that_is_lost_does_not_hold_up_the_calls_after_it():
    async def scenario(bridge, firmware):
        stuck, healthy = Client(stuck=True), Client()
        add_link(bridge, 1, stuck)
        add_link(bridge, 2, healthy)
        firmware.call({"op": "write", "conn": 1, "handle": HANDLE, "data": "aa55", "mode": 0})
        for _ in range(100):
            if stuck.writes:
                break
            await asyncio.sleep(0.01)
        bridge._lost(1)  # what bleak's disconnected callback does when the link is cut
        assert await firmware.event() == (bridge_module.IRQ_PERIPHERAL_DISCONNECT, [1, 0, ADDRESS])
        firmware.call({"op": "write", "conn": 2, "handle": HANDLE, "data": "bb66", "mode": 1})
        assert await firmware.event() == (bridge_module.IRQ_WRITE_DONE, [2, HANDLE, 0])
        assert healthy.writes == [b"\xbb\x66"]

    run(scenario)


def test_a_procedure_that_never_ends_fails_and_the_next_one_runs(monkeypatch):
    monkeypatch.setattr(bridge_module, "PROCEDURE_TIMEOUT_S", 0.3)

    async def scenario(bridge, firmware):
        add_link(bridge, 1, Client(stuck=True))
        firmware.call({"op": "write", "conn": 1, "handle": HANDLE, "data": "aa55", "mode": 1},
                      {"op": "mtu", "conn": 1, "mtu": 247})  # fmt: skip
        assert await firmware.event() == (bridge_module.IRQ_WRITE_DONE, [1, HANDLE, bridge_module.STATUS_FAILED])
        assert await firmware.event() == (bridge_module.IRQ_MTU_EXCHANGED, [1, 247])

    run(scenario)


@pytest.mark.parametrize("when", ["before it began", "while it runs"])
def test_a_cancelled_connection_attempt_is_reported_once(monkeypatch, when):
    started = []

    async def never_connects(self, address, find_ms):
        started.append(address)
        await asyncio.Event().wait()

    monkeypatch.setattr(bridge_module.BleBridge, "_connect", never_connects)

    async def scenario(bridge, firmware):
        connect = {"op": "connect", "addr_type": 0, "addr": ADDRESS, "ms": 2000}
        if when == "before it began":
            firmware.call(connect, {"op": "connect_cancel"})  # one read: the cancel comes before the task runs
        else:
            firmware.call(connect)
            for _ in range(100):
                if started:
                    break
                await asyncio.sleep(0.01)
            assert started
            firmware.call({"op": "connect_cancel"})
        no_connection = [bridge_module.NO_CONNECTION, 0xFF, bridge_module.NO_ADDRESS]
        assert await firmware.event() == (bridge_module.IRQ_PERIPHERAL_DISCONNECT, no_connection)
        assert await firmware.silence() is None
        assert bridge.connecting is None

    run(scenario)
