"""The esp32 target checks its bench file and the machine before it touches a board: a mistake is the
user's, an error that says what to fix, never a skip (tests/test_esp32_target.py has the board)."""

from types import SimpleNamespace

import pytest

from hil.benchfile import BenchError, load, parse
from hil.board import BoardError
from hil.targets import Esp32Target, Target, make_target

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


# --- the vocabulary on a world without an inverter, and the wire time of a poll ---------------------------------

MIXED = dict(
    BASE,
    buses={"inverter": {"baud": 9600}, "bms": {"baud": 9600}},
    inverter={"bus": "inverter", "units": [0, 1, 2]},
    batteries=[
        {"slot": 0, "type": "byd_pro", "bus": "bms", "address": 1},
        {"slot": 1, "type": "jk_rs485", "bus": "bms", "address": 2},
        {"slot": 2, "type": "jk_4e57", "bus": "bms", "address": 3},
    ],
)


def test_the_des_target_on_a_bench_without_an_inverter_says_it_needs_one():
    with pytest.raises(ValueError, match=r"the des target simulates the inverter: bench 'b' needs an \[inverter\]"):
        make_target("des", parse({"name": "b", "buses": {"bms": {"baud": 9600}}}))


def test_reading_the_inverter_of_a_world_without_one_says_so():
    target = Target(parse(BASE))
    target.world = SimpleNamespace(inverter=None)  # a bench whose DEYE side is external (vbms sim --external deye)
    for read in (lambda: target.unit(0), target.warnings):
        with pytest.raises(RuntimeError, match="bench 'b' has no simulated inverter"):
            read()


def test_the_wire_time_of_a_poll_is_that_of_healthy_devices_and_asks_none_of_them():
    from vbms_core import jk_4e57

    target = make_target("des", parse(MIXED))
    devices = target.world.devices
    reply_4e57 = len(devices[2].handle_4e57(jk_4e57.encode_read_all_request())[0])
    # BYD: 8 + 105 bytes; JK-PB: the 11-byte status trigger, the 300-byte frame and the 8-byte ACK; 4E57: read all
    expected_s = (8 + 105 + 11 + 300 + 8 + len(jk_4e57.encode_read_all_request()) + reply_4e57) * 10 / 9600
    asked = (devices[0].requests, devices[1].counter)
    assert target.bms_wire_time_s() == pytest.approx(expected_s)
    for slot in devices:
        target.device_failure(slot, "silent")
    assert target.bms_wire_time_s() == pytest.approx(expected_s)  # silent devices: the same poll would take as long
    assert (devices[0].requests, devices[1].counter) == asked
