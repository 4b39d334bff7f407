"""The default bench with the firmware on the unix port between its devices, as `vbms sim --dut
micropython` runs it: the bench leaves its device-under-test ports open (dut="open") and
hil.firmware.start_host takes them, as hil/sim.py's _start_vbms starts `vbms run`."""

import json
import os
import time

import pytest
from conftest import needs_micropython

from hil import firmware
from hil.benchfile import load_default
from hil.builder import vbms_config
from hil.sim import DUT, Simulation

pytestmark = pytest.mark.ble


def test_the_inverter_reads_every_battery_of_the_default_bench_through_the_firmware(tmp_path):
    needs_micropython()
    bench = load_default()
    simulation = Simulation(bench, dut="open").start()
    dut = None
    try:
        (tmp_path / "config.json").write_text(json.dumps(vbms_config(bench, "bench-token"), indent=1))
        dut = firmware.start_host(
            str(tmp_path / "config.json"),
            bms_port=simulation.buses["bms"].endpoint(DUT).path,
            inv_port=simulation.buses["inverter"].endpoint(DUT).path,
            dbus_address=simulation.ble.address,
            ble_adapter=simulation.ble.adapters[-1],
            timeout_s=30,
        )
        configured = sorted(spec.slot for spec in bench.batteries)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            answering = simulation.status()["inverter"]["answering"]
            if answering == configured:
                break
            time.sleep(1)
        assert answering == configured, (simulation.status(), open(dut.log).read()[-3000:])
        status, summary = dut.rpc("VBMS.GetSummary")
        online = sorted(row["slot"] for row in summary["bms"] if row["status"] == "online")
        assert status == 200 and online == configured
        assert dut.de_violations() == []
        assert os.path.exists(dut.log)
    finally:
        if dut is not None:
            dut.stop()
        simulation.stop()
