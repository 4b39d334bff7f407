"""Bench files, and `vbms sim` with a stand-in device under test attached.

Until the proxy runtime exists, these tests attach a small stand-in DUT made
of vbms_core parts: it polls the BYD modules on the BMS bus and answers the
inverter with a DeyeSlave.  The point is the bench: the pymodbus inverter must
read every BYD module through it, and a BLE central on the DUT's adapter must
receive every JK module's frames over BlueZoo.
"""

import asyncio
import json
import shutil
import subprocess
import sys
import threading
import time
import tomllib
from pathlib import Path

import pytest
import serial
from bleak import BleakClient
from conftest import bench_toml, wait_for

from hil.benchfile import BenchError, load_default, parse
from hil.host.ble import find_device
from hil.sim import DUT, Simulation
from simulators.jk.ble import CHARACTERISTIC_UUID
from vbms_core import battery, byd, deye, jk_ble, jk_frames
from vbms_core.errors import RemoteProtocolError
from vbms_core.modbus import NEED_DATA, RtuFramer


class StandInDut:
    """Test-only: BYD modules -> DeyeSlave -> inverter, over the bench's PTYs."""

    def __init__(self, simulation):
        self.simulation = simulation
        self.slave = deye.DeyeSlave(stale_us=10_000_000)
        self._stop = threading.Event()
        self.threads = [
            threading.Thread(target=self._poll_bms, daemon=True),
            threading.Thread(target=self._serve_inverter, daemon=True),
        ]

    def start(self):
        for thread in self.threads:
            thread.start()
        return self

    def stop(self):
        self._stop.set()
        for thread in self.threads:
            thread.join(timeout=5)

    def _poll_bms(self):
        bus = self.simulation.buses["bms"]
        with serial.Serial(bus.endpoint(DUT).path, bus.baud, timeout=0.3) as line:
            while not self._stop.is_set():
                for spec in self.simulation.bench.batteries:
                    if spec.type != "byd_pro":
                        continue
                    line.reset_input_buffer()
                    line.write(byd.encode_request(spec.address))
                    raw = line.read(byd.RESPONSE_LENGTH)
                    try:
                        fields = byd.decode_response(raw).fields
                    except RemoteProtocolError:
                        continue
                    registers = deye.registers_from_reading(battery.from_byd(fields), 55_200, 50_000)
                    identity = deye.encode_identity("BYD PRO 2.5", "BYD-%d" % spec.address)
                    self.slave.set_unit(spec.slot, registers, identity, int(time.monotonic() * 1e6))
                    time.sleep(0.01)

    def _serve_inverter(self):
        bus = self.simulation.buses["inverter"]
        framer = RtuFramer(bus.baud)
        with serial.Serial(bus.endpoint(DUT).path, bus.baud, timeout=0.002) as line:
            while not self._stop.is_set():
                data = line.read(256)
                now_us = int(time.monotonic() * 1e6)
                if data:
                    framer.feed(data, now_us)
                while (frame := framer.next_event(now_us)) is not NEED_DATA:
                    reply = self.slave.handle(frame.raw, now_us)
                    if reply is not None:
                        line.write(bytes(reply))


@pytest.mark.ble
def test_default_bench_end_to_end_with_a_device_under_test(tmp_path):
    trace_path = tmp_path / "trace.jsonl"
    bench = load_default()
    bench.profile = {"kind": "constant", "watts": 0.0}  # steady values to compare against the models
    with Simulation(bench, trace_path=str(trace_path), dut="open") as simulation:
        endpoints = simulation.endpoints()
        assert set(endpoints["buses"]) == {"inverter", "bms"}
        assert [d["address"] for d in endpoints["ble"]["devices"]] == [
            "C8:47:8C:10:00:01",
            "C8:47:8C:10:00:02",
            "C8:47:8C:10:00:03",
            "C8:47:8C:10:00:04",
        ]
        dut = StandInDut(simulation).start()
        try:
            inverter = simulation.inverter
            assert wait_for(lambda: all(inverter.units[u].values and inverter.units[u].identity for u in range(4)), 30)
            for unit in range(4):
                values = inverter.units[unit].values
                model = simulation.batteries[unit]
                assert abs(values["pack_voltage_mv"] - model.pack_voltage_mv) <= 50
                assert values["soc_permille"] == model.soc_permille // 10 * 10
                assert inverter.units[unit].identity["model"] == "BYD PRO 2.5"
            frames = asyncio.run(read_every_jk(endpoints["ble"]))
        finally:
            dut.stop()
    for device in endpoints["ble"]["devices"]:
        layout = simulation.bench.battery(device["slot"]).layout
        received = frames[device["address"]]
        assert "device_info" in received and "settings" in received, device
        assert received.count(("cell_info", layout)) >= 1, (device, received)
    trace = [json.loads(line) for line in trace_path.read_text().splitlines()]
    assert any(r["bus"] == "bms" and r["from"] == "BYD-1" and r["decoded"]["direction"] == "response" for r in trace)
    assert any(r["bus"] == "inverter" and r["from"] == DUT for r in trace)


async def read_every_jk(ble):
    frames = {}
    for device in ble["devices"]:
        found = await find_device(address=device["address"], adapter=ble["dut_adapter"])
        assert found is not None, device
        reassembler = jk_ble.JkReassembler()
        received = frames.setdefault(device["address"], [])

        def on_notification(_, data, reassembler=reassembler, received=received):
            reassembler.feed(bytes(data))
            while (event := reassembler.next_event()) is not NEED_DATA:
                if isinstance(event, jk_ble.JkFrame):
                    decoded = jk_frames.decode_frame(event.raw)
                    received.append(
                        decoded["frame_type"]
                        if decoded["frame_type"] != "cell_info"
                        else ("cell_info", decoded["layout"])
                    )

        async with BleakClient(found, bluez={"adapter": ble["dut_adapter"]}) as client:
            chars = [c for s in client.services for c in s.characteristics if c.uuid == CHARACTERISTIC_UUID]
            writer = next(c for c in chars if {"write", "write-without-response"} & set(c.properties))
            notifier = next(c for c in chars if "notify" in c.properties)
            await client.start_notify(notifier, on_notification)
            await client.write_gatt_char(writer, jk_ble.encode_command(jk_ble.GET_DEVICE_INFO), response=False)
            await asyncio.sleep(0.2)
            await client.write_gatt_char(writer, jk_ble.encode_command(jk_ble.GET_SETTINGS), response=False)
            await asyncio.sleep(1.3)
    return frames


def test_a_silent_battery_raises_the_communication_warning():
    bench = load_default()
    bench.batteries = [b for b in bench.batteries if b.type == "byd_pro"]
    bench.inverter["units"] = [0, 1, 2, 3]
    bench.inverter["poll_period_s"] = 0.3
    with Simulation(bench, ble=False, dut="open") as simulation:
        dut = StandInDut(simulation).start()
        try:
            inverter = simulation.inverter
            assert wait_for(lambda: all(inverter.units[u].values for u in range(4)), 20)
            simulation.devices[2].set_failure("silent")
            assert wait_for(lambda: inverter.units[2].comm_warning, 30)
            assert inverter.warnings() == ["W31 Battery_comm_warn: battery 3"]
            assert not inverter.units[1].comm_warning
            simulation.devices[2].set_failure(None)
            assert wait_for(lambda: not inverter.units[2].comm_warning, 30)
        finally:
            dut.stop()


def test_inverter_current_flows_back_into_the_batteries():
    bench = load_default()
    bench.batteries = [b for b in bench.batteries if b.type == "byd_pro"][:2]
    bench.inverter["units"] = [0, 1]
    bench.inverter["poll_period_s"] = 0.2
    bench.profile = {"kind": "constant", "watts": 5000.0}
    with Simulation(bench, ble=False, dut="open") as simulation:
        dut = StandInDut(simulation).start()
        try:
            assert wait_for(lambda: simulation.batteries[0].current_ma > 0, 20)
            # 5 kW at about 53 V over two batteries: some 47 A each, under their 50 A limit
            assert 40_000 < simulation.batteries[0].current_ma < 50_001
            start = simulation.batteries[0].charge_mah[0]
            assert wait_for(lambda: simulation.batteries[0].charge_mah[0] > start, 5)
        finally:
            dut.stop()


def test_default_bench_loads():
    bench = load_default()
    assert [b.slot for b in bench.batteries] == list(range(8))
    assert {b.type for b in bench.batteries} == {"byd_pro", "jk_ble"}
    assert {b.layout for b in bench.batteries if b.type == "jk_ble"} == set(jk_frames.LAYOUTS)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d["batteries"][1].update(slot=0), "slot 0 is used twice"),
        (lambda d: d["batteries"][0].update(address=70), r"batteries\[0\].address: must be within 1..63"),
        (lambda d: d["batteries"][4].update(address="nope"), r"batteries\[4\].address: a JK BLE battery needs a MAC"),
        (lambda d: d["batteries"][4].update(layout="JK05"), r"batteries\[4\].layout: must be one of"),
        (lambda d: d["batteries"][0].update(bus="can"), r"batteries\[0\].bus: must be one of inverter, bms"),
        (lambda d: d["buses"]["bms"].update(baud="fast"), r"buses.bms.baud: must be a whole number"),
        (lambda d: d["inverter"].update(units=[0, 0]), "inverter.units"),
        (lambda d: d.update(extra=1), "unknown key"),
        (lambda d: d["inverter"]["profile"].update(kind="random"), "inverter.profile.kind"),
        (lambda d: d["batteries"][0].update(failure="explode"), r"batteries\[0\].failure"),
    ],
)
def test_bad_bench_files_name_the_key(change, message):
    import tomllib
    from importlib import resources

    data = tomllib.loads(resources.files("hil").joinpath("benches/default.toml").read_text())
    change(data)
    with pytest.raises(BenchError, match=message):
        parse(data)


def test_vbms_sim_command_line(tmp_path):
    bench_file = tmp_path / "small.toml"
    bench_file.write_text(bench_toml("small", [{"type": "byd_pro", "address": 1}], timeout_s=0.1))
    trace_file = tmp_path / "trace.jsonl"
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "hil.cli",
            "sim",
            "--bench",
            str(bench_file),
            "--headless",
            "--duration",
            "2",
            "--trace",
            str(trace_file),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert completed.returncode == 0, completed.stderr
    lines = [json.loads(line) for line in completed.stdout.splitlines()]
    assert lines[0]["event"] == "started" and "dut" in lines[0]["buses"]["bms"]["endpoints"]
    assert lines[0]["dut"]["kind"] == "vbms run"
    assert lines[-1]["event"] == "stopped" and lines[-1]["inverter"]["answering"] == [0]
    log = Path(lines[0]["dut"]["log"])  # the summary names it: vbms sim leaves it for a person to read
    assert log.exists() and log.read_text(), log
    shutil.rmtree(log.parent)
    shown = subprocess.run(
        [sys.executable, "-m", "hil.cli", "trace", "show", str(trace_file)], capture_output=True, text=True
    )
    assert shown.returncode == 0 and "read_input_registers" in shown.stdout


@pytest.mark.parametrize("keep", [False, True], ids=["removed", "kept"])
def test_stop_removes_the_device_under_tests_directory_unless_told_to_keep_it(keep):
    bench = parse(tomllib.loads(bench_toml("one", [{"type": "byd_pro", "address": 1}])))
    simulation = Simulation(bench, ble=False, keep_dut_files=keep)
    try:
        simulation.start()
        directory = Path(simulation.dut_dir)
        assert (directory / "config.json").exists() and (directory / "vbms.log").exists()
    finally:
        simulation.stop()
    assert directory.exists() == keep
    shutil.rmtree(directory, ignore_errors=True)


def test_vbms_sim_rejects_a_bad_bench(tmp_path):
    bench_file = tmp_path / "bad.toml"
    bench_file.write_text('name = "bad"\n[[batteries]]\nslot = 99\ntype = "byd_pro"\n')
    completed = subprocess.run(
        [sys.executable, "-m", "hil.cli", "sim", "--bench", str(bench_file)], capture_output=True, text=True, timeout=30
    )
    assert completed.returncode == 2 and "batteries[0].slot: must be within 0..14" in completed.stderr


def test_external_inverter_leaves_the_inverter_side_open():
    bench = load_default()
    bench.batteries = [b for b in bench.batteries if b.type == "byd_pro"][:1]
    bench.inverter["units"] = [0]
    with Simulation(bench, ble=False, external_deye=True, dut="open") as simulation:
        assert simulation.inverter is None
        endpoints = simulation.endpoints()["buses"]["inverter"]["endpoints"]
        assert set(endpoints) == {"dut", "inverter"}
        dut = StandInDut(simulation).start()
        try:
            assert wait_for(lambda: simulation.devices[0].requests > 0, 10)
            with serial.Serial(endpoints["inverter"], 9600, timeout=1) as external_master:
                assert wait_for(lambda: dut.slave.is_served(0, int(time.monotonic() * 1e6)), 10)
                external_master.write(bytes.fromhex("00041000001934D1"))
                reply = external_master.read(55)
            assert len(reply) == 55 and reply[:3] == bytes.fromhex("000432")
        finally:
            dut.stop()
