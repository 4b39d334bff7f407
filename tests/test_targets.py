"""The esp32 target checks its bench file and the machine before it touches a board: a mistake is the
user's, an error that says what to fix, never a skip (tests/test_esp32_target.py has the board)."""

import pytest

from hil.benchfile import BenchError, load, parse
from hil.board import BoardError
from hil.targets import Esp32Target, make_target

BASE = {"name": "b", "buses": {"inverter": {"baud": 9600}}, "inverter": {"bus": "inverter", "units": [0]}}
PORTS = {"inverter_port": "/dev/nope0", "bms_port": "/dev/nope1", "console_port": "/dev/nope2"}


def test_esp32_without_an_esp32_section_says_how_to_name_a_board():
    with pytest.raises(BoardError, match=r"\[esp32\] section names .*pass --bench FILE"):
        make_target("esp32", parse(BASE))


def test_an_esp32_section_missing_ports_names_them():
    with pytest.raises(BenchError, match="esp32: missing console_port, bms_port: name the board's console"):
        parse(dict(BASE, esp32={"inverter_port": "/dev/x"}))


def test_esp32_with_absent_hardware_says_what_is_missing_and_how_to_look():
    bench = parse(dict(BASE, esp32=PORTS))
    with pytest.raises(BoardError) as caught:
        Esp32Target(bench, "bench.toml")
    message = str(caught.value)
    assert "console_port /dev/nope2; inverter_port /dev/nope0; bms_port /dev/nope1: no such port" in message
    assert "ls -l /dev/serial/by-id/" in message


@pytest.mark.parametrize(
    ("esp32", "complaint"),
    [
        ({"flash_port": "/dev/x"}, "esp32: unknown key"),
        ({"ble_adapter": "hci0"}, 'use ble_adapters = \\["hci0", ...\\], one Bluetooth adapter per JK BLE battery'),
        ({"reset": "command"}, 'esp32.reset_command: reset = "command" needs the command'),
        ({"reset": "jtag"}, "esp32.reset: must be one of dtr_rts, soft, command"),
        ({"rpc_url": "192.168.1.50"}, "esp32.rpc_url: must be the board's address as a URL"),
        ({"ble_adapters": ["bluetooth0"]}, "esp32.ble_adapters: must be a list of Bluetooth adapter names"),
        ({"console_baud": 0}, "esp32.console_baud: must be within 300..4000000"),
    ],
)
def test_esp32_section_is_validated(esp32, complaint):
    with pytest.raises(BenchError, match=complaint):
        parse(dict(BASE, esp32=dict(PORTS, **esp32)))


def test_each_jk_ble_battery_needs_a_bluetooth_adapter_of_its_own():
    jk = [{"slot": slot, "type": "jk_ble", "address": "C8:47:8C:10:00:0%d" % (slot + 1)} for slot in (0, 1)]
    bench = dict(BASE, inverter={"bus": "inverter", "units": [0, 1]}, batteries=jk)
    with pytest.raises(BenchError, match="2 JK BLE batteries \\(slots 0, 1\\) but names 1 Bluetooth adapters"):
        parse(dict(bench, esp32=dict(PORTS, ble_adapters=["hci0"])))
    two = parse(dict(bench, esp32=dict(PORTS, ble_adapters=["hci0", "hci1"])))
    assert two.esp32["ble_adapters"] == ["hci0", "hci1"]


def test_example_bench_parses():
    bench = load("hil/benches/esp32-example.toml")
    assert bench.esp32["ble_adapters"] == ["hci0"] and len(bench.batteries) == 5
    assert bench.esp32["reset"] == "dtr_rts" and bench.esp32["console_baud"] == 115200
