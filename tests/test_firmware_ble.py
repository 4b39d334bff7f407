"""The firmware's own BLE central (vbms_fw/ble.py, MicroPython's raw `bluetooth` API) against
bless JK peripherals over BlueZoo, through the bleak bridge: both GATT layouts, frames
reassembled into readings, a scan, and a link lost and found again."""

import asyncio
import json
import threading

import pytest
from conftest import needs_micropython, wait_for

from hil import firmware
from hil.wires.ble import BleEnvironment
from simulators.battery import BatteryModel
from simulators.jk.ble import JkBlePeripheral
from simulators.jk.device import JkBms

pytestmark = pytest.mark.ble
MODULES = (("single", "JK02_32S", "JK-SINGLE"), ("split", "JK02_24S", "JK-SPLIT"))


@pytest.fixture
def bench(tmp_path):
    needs_micropython()
    environment = BleEnvironment(adapters=("C8:47:8C:10:00:01", "C8:47:8C:10:00:02", "00:AA:BB:CC:DD:EE")).start()
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    peripherals = []
    try:
        for index, (layout, frames, name) in enumerate(MODULES):
            device = JkBms(BatteryModel(seed=index + 3), layout=frames, name=name)
            peripheral = JkBlePeripheral(device, adapter="hci%d" % index, name=name, gatt_layout=layout)
            peripherals.append(asyncio.run_coroutine_threadsafe(peripheral.start(), loop).result(30))
        config = {"rpc": {"auth_token": "ble"}, "bms4": {"type": 2, "addr": environment.adapter_addresses[0]},
                  "bms5": {"type": 2, "addr": environment.adapter_addresses[1]}}  # fmt: skip
        (tmp_path / "config.json").write_text(json.dumps(config))
        dut = firmware.start_host(str(tmp_path / "config.json"), dbus_address=environment.address,
                                  ble_adapter="hci2", timeout_s=30)  # fmt: skip
        yield dut, peripherals, loop, environment
        dut.stop()
    finally:
        for peripheral in peripherals:
            asyncio.run_coroutine_threadsafe(peripheral.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        environment.stop()


def rows(dut):
    return {row["slot"]: row for row in dut.rpc("VBMS.GetSummary")[1]["bms"]}


def test_both_gatt_layouts_reach_the_inverter_side_and_a_lost_link_comes_back(bench):
    dut, peripherals, loop, environment = bench
    assert wait_for(lambda: all(rows(dut)[slot]["status"] == "online" for slot in (4, 5)), 40), rows(dut)
    for slot, peripheral in zip((4, 5), peripherals, strict=True):
        row = rows(dut)[slot]
        battery = peripheral.device.battery
        assert len(row["cells"]) == battery.cells
        assert abs(row["pack_voltage"] * 10 - battery.pack_voltage_mv) <= 100  # 10 mV units; the model is idle
    status, found = dut.rpc("VBMS.ScanBLE", {"seconds": 2}, timeout_s=40)
    assert status == 200
    assert {d["address"] for d in found["devices"] if d["connected"]} >= set(environment.adapter_addresses[:2])
    peripherals[0].device.set_failure("disconnect")  # the module drops the link, then takes connections again
    assert wait_for(lambda: any(r["event"] == "ble_disconnected" for r in dut.log_records()), 15)
    peripherals[0].device.set_failure(None)
    connected = lambda: len([r for r in dut.log_records() if r["event"] == "ble_connected" and r["slot"] == 4])  # noqa: E731
    assert wait_for(lambda: connected() >= 2, 40), open(dut.log).read()[-3000:]
    assert wait_for(lambda: rows(dut)[4]["status"] == "online", 20)
    assert dut.de_violations() == []
