"""JK-BMS over BLE end to end: bless peripheral, BlueZoo, a bleak central."""

import asyncio
import subprocess

import pytest
from bleak import BleakClient

from hil.host.ble import find_device
from hil.wires.ble import BleEnvironment
from simulators.battery import BatteryModel
from simulators.jk.ble import CHARACTERISTIC_UUID, JkBlePeripheral
from simulators.jk.device import JkBms
from vbms_core import jk_ble
from vbms_core.dissect import dissect
from vbms_core.modbus import NEED_DATA

pytestmark = pytest.mark.ble


@pytest.fixture
def ble(ble_environment):
    """The vbms pytest plugin's BLE environment (hci0: peripheral, hci1: central)."""
    return ble_environment


class Central:
    """A minimal JK client: finds, connects, subscribes, asks, reassembles."""

    def __init__(self, name):
        self.name = name
        self.device = None
        self.client = None
        self.frames = []
        self.disconnected = asyncio.Event()
        self._reassembler = jk_ble.JkReassembler()

    async def connect(self):
        if self.device is None:
            self.device = await find_device(name=self.name, adapter="hci1")
            assert self.device is not None, "peripheral %s not discovered" % self.name
        self.disconnected = asyncio.Event()
        self._reassembler = jk_ble.JkReassembler()
        self.client = BleakClient(
            self.device, bluez={"adapter": "hci1"}, disconnected_callback=lambda _: self.disconnected.set()
        )
        await self.client.connect()
        chars = [c for s in self.client.services for c in s.characteristics if c.uuid == CHARACTERISTIC_UUID]
        self.writer = next(c for c in chars if {"write", "write-without-response"} & set(c.properties))
        notifier = next(c for c in chars if "notify" in c.properties)
        await self.client.start_notify(notifier, self._on_notification)
        return [c.handle for c in chars]

    def _on_notification(self, _, data):
        self._reassembler.feed(bytes(data))
        while (event := self._reassembler.next_event()) is not NEED_DATA:
            if isinstance(event, jk_ble.JkFrame):
                self.frames.append(dissect("jk-ble", event.raw))

    async def ask(self, command, wait_s=0.3):
        await self.client.write_gatt_char(self.writer, jk_ble.encode_command(command), response=False)
        await asyncio.sleep(wait_s)

    def types(self):
        return [frame["frame_type"] for frame in self.frames]


@pytest.mark.parametrize(
    "layout, gatt_layout, chunking",
    [("JK02_24S", "single", "mtu23"), ("JK02_32S", "split", "mtu131"), ("JK04", "single", "mtu247")],
)
def test_session_streams_cell_info_in_every_layout(ble, layout, gatt_layout, chunking):
    battery = BatteryModel(seed=5, soc_permille=640)
    device = JkBms(battery, layout=layout, name="JK-%s" % layout)

    async def scenario():
        peripheral = await JkBlePeripheral(device, gatt_layout=gatt_layout, chunking=chunking).start()
        central = Central(device.name)
        try:
            handles = await central.connect()
            assert len(handles) == (2 if gatt_layout == "split" else 1)
            await central.ask(jk_ble.GET_DEVICE_INFO)
            await central.ask(jk_ble.GET_SETTINGS, wait_s=1.4)
        finally:
            await central.client.disconnect()
            await peripheral.stop()
        return central

    central = asyncio.run(scenario())
    assert central.types()[:2] == ["device_info", "settings"]
    cells = [f for f in central.frames if f["frame_type"] == "cell_info"]
    assert len(cells) >= 2
    assert all(f["layout"] == layout for f in cells)
    assert cells[-1]["pack_voltage_mv"] == battery.pack_voltage_mv
    if layout != "JK04":
        assert cells[-1]["soc_pct"] == 64


def test_link_loss_and_reconnection(ble):
    device = JkBms(BatteryModel(), name="JK-LOSS")

    async def scenario():
        peripheral = await JkBlePeripheral(device, reconnect_after_s=0.5).start()
        central = Central(device.name)
        try:
            await central.connect()
            await central.ask(jk_ble.GET_SETTINGS, wait_s=0.8)
            before = len(central.frames)
            device.set_failure("disconnect")
            await asyncio.wait_for(central.disconnected.wait(), 5)
            await asyncio.sleep(0.8)
            await central.connect()
            await central.ask(jk_ble.GET_SETTINGS, wait_s=1.2)
        finally:
            await central.client.disconnect()
            await peripheral.stop()
        return before, central

    before, central = asyncio.run(scenario())
    assert before >= 2
    assert central.types()[before:].count("cell_info") >= 2


async def refused_or_dropped(central, within_s=5):
    """True when a new connection fails, or is dropped within_s after it was made."""
    try:
        await central.connect()
    except Exception:  # noqa: BLE001 - a refused connection fails in bleak or on D-Bus, by any name
        return True
    try:
        await asyncio.wait_for(central.disconnected.wait(), within_s)
    except TimeoutError:
        return False  # the link stayed up: not refused
    return True


def test_refuse_reconnect_until_switched_off(ble):
    device = JkBms(BatteryModel(), name="JK-REFUSE")

    async def scenario():
        peripheral = await JkBlePeripheral(device).start()
        central = Central(device.name)
        try:
            await central.connect()
            device.set_failure("refuse_reconnect")
            await asyncio.wait_for(central.disconnected.wait(), 5)
            refused = await refused_or_dropped(central)
            device.set_failure(None)
            await asyncio.sleep(0.3)
            await central.connect()
            await central.ask(jk_ble.GET_SETTINGS, wait_s=1.0)
        finally:
            await central.client.disconnect()
            await peripheral.stop()
        return refused, central

    refused, central = asyncio.run(scenario())
    assert refused
    assert "cell_info" in central.types()


def test_stop_streaming_sends_settings_but_no_cells(ble):
    device = JkBms(BatteryModel(), name="JK-STOP")
    device.set_failure("stop_streaming")

    async def scenario():
        peripheral = await JkBlePeripheral(device).start()
        central = Central(device.name)
        try:
            await central.connect()
            await central.ask(jk_ble.GET_SETTINGS, wait_s=1.2)
        finally:
            await central.client.disconnect()
            await peripheral.stop()
        return central

    assert asyncio.run(scenario()).types() == ["settings"]


def gone(pid):
    """True when the process no longer runs (a zombie awaiting its parent counts as gone)."""
    try:
        with open("/proc/%d/stat" % pid) as handle:
            return handle.read().split(")")[-1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_environment_leaves_no_process_behind():
    environment = BleEnvironment().start()
    pids = environment.pids
    address = environment.address
    assert len(pids) == 2 and not any(gone(pid) for pid in pids)
    environment.stop()
    assert all(gone(pid) for pid in pids)
    assert address.startswith("unix:")


def test_vbms_ble_env_command_line():
    import json
    import sys

    completed = subprocess.run(
        [sys.executable, "-m", "hil.cli", "ble", "env", "--address", "C8:47:8C:00:00:01", "--duration", "1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert completed.returncode == 0, completed.stderr
    started, stopped = (json.loads(line) for line in completed.stdout.splitlines())
    assert started["adapters"] == [{"name": "hci0", "address": "C8:47:8C:00:00:01"}]
    assert started["shell"].startswith("export DBUS_SYSTEM_BUS_ADDRESS=")
    assert stopped["event"] == "stopped"
    assert started["pids"] and all(gone(pid) for pid in started["pids"])
