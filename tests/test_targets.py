"""The esp32 target validates its bench file and ports before it does anything."""

import pytest

from hil.benchfile import BenchError, parse
from hil.targets import Esp32Target, TargetUnavailable, make_target
from hil.wires.rs485 import Rs485Bus

BASE = {"name": "b", "buses": {"inverter": {"baud": 9600}}, "inverter": {"bus": "inverter", "units": [0]}}


def test_esp32_without_ports_says_which_keys_are_missing():
    with pytest.raises(TargetUnavailable, match="inverter_port, bms_port, console_port"):
        make_target("esp32", parse(BASE))


def test_esp32_with_absent_hardware_says_what_is_missing():
    bench = parse(
        dict(BASE, esp32={"inverter_port": "/dev/nope0", "bms_port": "/dev/nope1", "console_port": "/dev/nope2"})
    )
    with pytest.raises(TargetUnavailable, match="/dev/nope0, /dev/nope1, /dev/nope2 not found"):
        Esp32Target(bench, "bench.toml")


def test_esp32_opens_the_ports_it_is_given():
    bus = Rs485Bus("ports")
    try:
        paths = {name: bus.add_endpoint(name).path for name in ("inverter_port", "bms_port", "console_port")}
        bench = parse(dict(BASE, esp32=paths))
        with pytest.raises(TargetUnavailable, match="open; the ESP32 firmware is not built yet"):
            Esp32Target(bench, "bench.toml")
    finally:
        bus.stop()


def test_esp32_section_is_validated():
    with pytest.raises(BenchError, match="esp32: unknown key"):
        parse(dict(BASE, esp32={"flash_port": "/dev/x"}))


def test_example_bench_parses():
    from hil.benchfile import load

    bench = load("hil/benches/esp32-example.toml")
    assert bench.esp32["ble_adapter"] == "hci0" and len(bench.batteries) == 5
