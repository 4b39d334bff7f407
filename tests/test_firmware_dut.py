"""The firmware as a device under test on the MicroPython unix port (hil.firmware.start_host):
what the outside sees of it is what it sees of `vbms run`.

The ports are PTYs this test plays the other end of; expected bytes and values come from the
golden vectors (tests/golden/byd_deye_vectors.json) and the reference, never from the core.
"""

import gzip
import json
import struct
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import VECTORS, wait_for
from peers import PtyEnds, modbus_crc, websocket_call

from hil import firmware
from vbms_core import config as config_module

TOKEN = "dut-token"
WEB = Path(firmware.__file__).parent / "web"


def vector(kind, name):
    item = next(entry for entry in VECTORS[kind] if entry["id"] == name)
    return bytes.fromhex(item["hex"] if "hex" in item else "".join(part[0] for part in item["parts"]))


@pytest.fixture
def ports():
    made = PtyEnds()
    yield made
    made.close()


def start(tmp_path, ports, config, **options):
    flash = tmp_path / "flash"
    flash.mkdir(exist_ok=True)
    (flash / "config.json").write_text(json.dumps(config))
    return firmware.start_host(str(flash / "config.json"), ports.name("bms"), ports.name("inv"), **options)


@pytest.fixture
def dut(unix_port, tmp_path, ports):
    handle = start(tmp_path, ports, {"rpc": {"auth_token": TOKEN}, "bms0": {"type": 1, "addr": "1", "name": "Rack A"}})
    yield handle
    handle.stop()


def test_the_inverter_reads_a_battery_through_the_firmware(dut, ports):
    assert ports.read("bms", 8) == vector("byd_requests", "BYD-Q1")  # the firmware polls module 1
    ports.write("bms", vector("byd_responses", "BYD-R1"))
    request = vector("deye", "DEYE-Q0")
    reply = b""
    deadline = time.monotonic() + 10
    while len(reply) < 55 and time.monotonic() < deadline:  # until the reading reached the inverter side
        ports.write("inv", request)
        reply = ports.read("inv", 55, timeout_s=0.5)
    assert len(reply) == 55 and reply[:3] == b"\x00\x04\x32", reply.hex()
    assert modbus_crc(reply[:-2]) == reply[-2] | reply[-1] << 8
    assert struct.unpack(">H", reply[3:5])[0] == 5458  # BYD-R1: pack voltage 54580 mV, in 10 mV
    assert dut.de_violations() == []
    assert ports.read("inv", 1, timeout_s=0.3) == b""  # one reply, nothing after it


def test_rpc_over_http_as_vbms_run_answers_it(dut):
    status, info = dut.rpc("Sys.GetInfo")
    assert status == 200
    assert set(info) == {"app", "version", "id", "uptime_s", "slots", "inverter_requests", "inverter_replies",
                         "bms_cycles", "last_bms_cycle_ms"}  # fmt: skip
    assert info["app"] == "vbms" and info["slots"] == 1
    assert dut.rpc("Nope.Nothing")[0] == 404
    status, refused = dut.rpc("Config.Set", {"config": {"bms0.name": "B"}})
    assert status == 401 and refused["error"]["code"] == 401
    status, applied = dut.rpc("Config.Set", {"config": {"bms0.name": "Rack B"}}, token=TOKEN)
    assert status == 200 and applied == {"applied": ["bms0.name"], "saved": False}
    status, shown = dut.rpc("Config.Get")
    assert shown["bms0"]["name"] == "Rack B" and shown["rpc"]["auth_token"] == "***"


def test_a_saved_configuration_is_written_as_vbms_run_writes_it(dut):
    assert dut.rpc("Config.Set", {"config": {"bms0.voltage": 56.4}}, token=TOKEN)[0] == 200
    assert dut.rpc("Config.Save", {}, token=TOKEN) == (200, {"saved": True, "reboot": False})
    path = Path(dut.flash) / "config.json"
    assert wait_for(lambda: json.loads(path.read_text())["bms0"]["voltage"] == 56.4, 5)
    expected = config_module.validate({"rpc.auth_token": TOKEN, "bms0.type": 1, "bms0.addr": "1",
                                       "bms0.name": "Rack A", "bms0.voltage": 56.4})  # fmt: skip
    # hil/host/config_store.py writes json.dump(nest(config), indent=1, sort_keys=True): byte for byte
    assert path.read_text() == json.dumps(config_module.nest(expected), indent=1, sort_keys=True)
    assert not list(Path(dut.flash).glob("*.tmp"))


def test_rpc_over_a_websocket_in_mongoose_os_frames(dut):
    replies = websocket_call(dut.http_port, [
        {"id": 1, "method": "Sys.GetInfo"},
        {"id": 2, "method": "Config.Set", "params": {"config": {"bms0.name": "W"}}},
        {"id": 3, "method": "Config.Set", "params": {"config": {"bms0.name": "W"}}, "auth": {"token": TOKEN}},
        {"id": 4, "params": {}},
    ])  # fmt: skip
    assert replies[0]["id"] == 1 and replies[0]["result"]["app"] == "vbms"
    assert replies[1]["id"] == 2 and replies[1]["error"]["code"] == 401
    assert replies[2] == {"id": 3, "result": {"applied": ["bms0.name"], "saved": False}}
    assert replies[3]["id"] is None and replies[3]["error"]["code"] == -32700


def test_the_dashboard_is_served_gzipped_from_flash(dut):
    for path, name in (("/", "index.html"), ("/static/app.js", "app.js"), ("/static/style.css", "style.css")):
        request = urllib.request.Request(dut.http_url + path, headers={"Accept-Encoding": "gzip"})
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.headers["Content-Encoding"] == "gzip"
            assert gzip.decompress(response.read()) == (WEB / name).read_bytes()
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(dut.http_url + "/static/config.json", timeout=10)
    assert missing.value.code == 404


def test_logs_are_json_lines_on_the_console(dut):
    records = dut.log_records()
    started = [record for record in records if record["event"] == "started"]
    assert started and started[0]["level"] == "info" and started[0]["slots"] == [0]
    assert all(isinstance(record["t"], float) and "level" in record for record in records)


def test_a_first_start_makes_a_token_and_an_access_point_password_and_says_them_once(unix_port, tmp_path, ports):
    handle = start(tmp_path, ports, {"bms0": {"type": 1, "addr": "1"}})
    try:
        stored = json.loads((Path(handle.flash) / "config.json").read_text())
        token = stored["rpc"]["auth_token"]
        password = json.loads((Path(handle.flash) / "device.json").read_text())["ap_password"]
        assert len(token) >= 20 and len(password) >= 12
        console = Path(handle.log).read_text()
        assert console.count(token) == 1 and console.count(password) == 1
        assert dut_rpc_ok(handle, token)
        access_point = next(r for r in handle.log_records() if r["event"] == "wifi_access_point")
        assert access_point["ssid"].startswith("BMU-") and len(access_point["ssid"]) == 8
    finally:
        handle.stop()
    again = firmware.start_host(str(Path(handle.flash) / "config.json"), ports.name("bms"), ports.name("inv"),
                                log_path=str(tmp_path / "second.log"))  # fmt: skip
    try:
        second = Path(again.log).read_text()
        assert token not in second and password not in second  # said once, at the first start
        assert dut_rpc_ok(again, token)
    finally:
        again.stop()


def answers(handle):
    try:
        return handle.rpc("Sys.GetInfo", timeout_s=2)[0] == 200
    except OSError:  # between two starts
        return False


def dut_rpc_ok(handle, token):
    return handle.rpc("Config.Set", {"config": {"bms0.name": "T"}}, token=token)[0] == 200


def test_a_missing_port_is_a_clear_error_not_a_hang(unix_port, tmp_path, ports):
    began = time.monotonic()
    with pytest.raises(firmware.FirmwareError, match="does not exist"):
        firmware.start_host(str(tmp_path / "config.json"), "/dev/pts/no-such-port", ports.name("inv"))
    with pytest.raises(firmware.FirmwareError, match="D-Bus"):
        firmware.start_host(str(tmp_path / "config.json"), ports.name("bms"), ports.name("inv"), ble_adapter="hci0")
    assert time.monotonic() - began < 5


@pytest.mark.ble
def test_a_missing_bluetooth_adapter_is_a_clear_error(unix_port, tmp_path, ports, ble_environment):
    with pytest.raises(firmware.FirmwareError, match="no Bluetooth adapter hci9"):
        firmware.start_host(str(tmp_path / "config.json"), ports.name("bms"), ports.name("inv"),
                            dbus_address=ble_environment.address, ble_adapter="hci9")  # fmt: skip


def test_a_reboot_asked_over_rpc_starts_again_from_the_saved_configuration(dut):
    assert dut.rpc("Config.Set", {"config": {"bms0.name": "After reboot"}}, token=TOKEN)[0] == 200
    assert dut.rpc("Config.Save", {"reboot": True}, token=TOKEN) == (200, {"saved": True, "reboot": True})
    restarted = lambda: any(record["event"] == "reset" for record in dut.log_records())  # noqa: E731
    assert wait_for(restarted, 10)
    assert wait_for(lambda: answers(dut), 10)
    assert dut.rpc("Config.Get")[1]["bms0"]["name"] == "After reboot"
    assert len([record for record in dut.log_records() if record["event"] == "started"]) == 2
    assert dut.de_violations() == []  # a request on its way when the reboot came finished first
