"""The esp32 target: a board the harness did not start.

- A bench or a board that cannot be used is the user's mistake, said with how to fix it (never a skip):
  an adapter that echoes, a board that prints no ready line, a reset the port cannot do, a Bluetooth
  adapter that is not there or has another MAC, a bench file missing keys or naming absent ports.
- Several modules answer on one adapter, each at its own address (hil/shared_port.py), with the fault
  rules applied where the harness sits.
- The virtual board (firmware/host/board.py): it starts, resets (hardware and soft), is configured from
  the bench over RPC, runs mpremote's code and a deployed build.

Expected bytes come from the golden vectors (tests/golden/byd_deye_vectors.json) and the Modbus
specification (a CRC written out here), expected configurations from the bench files.
"""

import io
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import tty

import pytest
import serial
from conftest import VECTORS, bench_toml, needs_micropython
from peers import with_crc

from hil import board as board_module
from hil import firmware
from hil.benchfile import load, parse
from hil.board import Board, BoardError, VirtualBoard, check_bench
from hil.builder import build_devices, serial_model
from hil.cli import main
from hil.fuzz import wire
from hil.fuzz.wire import WireCampaign
from hil.pytest_plugin import check_esp32_bench
from hil.shared_port import AdapterEnd, PortTap, SharedPort
from hil.targets import Esp32Target
from hil.wires.faults import BusError, Fault

TWO_BYD = bench_toml("two", [{"type": "byd_pro", "address": 1}, {"type": "byd_pro", "address": 2}])
BENCH = {
    "name": "quiet",
    "buses": {"inverter": {"baud": 9600, "protocol": "deye"}, "bms": {"baud": 9600, "protocol": "byd-pro"}},
    "inverter": {"bus": "inverter", "units": [0]},
    "batteries": [{"slot": 0, "type": "byd_pro", "bus": "bms", "address": 1}],
}


def vector(kind, name):
    return bytes.fromhex(next(entry for entry in VECTORS[kind] if entry["id"] == name)["hex"])


class FarEnd:
    """A PTY: `path` is what the harness opens; the test plays the other end (the board, or an adapter)."""

    def __init__(self, echo=False):
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        self.path = os.ttyname(self.slave)
        self.heard = bytearray()
        self._stop = threading.Event()
        self._thread = None
        if echo:  # an adapter whose receiver stays on while it transmits
            self._thread = threading.Thread(target=self._echo, daemon=True)
            self._thread.start()

    def _echo(self):
        while not self._stop.is_set():
            try:
                data = os.read(self.master, 256)
            except OSError:
                return
            self.heard += data
            os.write(self.master, data)

    def write(self, data):
        os.write(self.master, data)

    def read(self, timeout_s=0.5, quiet_s=0.05):
        """[(arrival time, bytes)] until quiet_s of silence after something came, or timeout_s."""
        os.set_blocking(self.master, False)
        chunks = []
        deadline = time.monotonic() + timeout_s
        last = None
        while time.monotonic() < deadline and (last is None or time.monotonic() - last < quiet_s):
            try:
                data = os.read(self.master, 4096)
            except BlockingIOError:
                time.sleep(0.001)
                continue
            last = time.monotonic()
            chunks.append((last, data))
        return chunks

    def close(self):
        self._stop.set()
        for fd in (self.master, self.slave):
            os.close(fd)
        if self._thread is not None:
            self._thread.join(timeout=2)


@pytest.fixture
def far_ends():
    ends = {}

    def make(role, echo=False):
        ends[role] = FarEnd(echo)
        return ends[role]

    yield make
    for end in ends.values():
        end.close()


def esp32_of(ends, **options):
    section = {"console_port": ends["console"].path, "inverter_port": ends["inverter"].path,
               "bms_port": ends["bms"].path, "reset": "command", "reset_command": ["true"]}  # fmt: skip
    section.update(options)
    return section


def three_ends(far_ends, echo=()):
    return {role: far_ends(role, echo=role in echo) for role in ("console", "inverter", "bms")}


# --- the user's mistakes ------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["inverter", "bms"])
def test_an_adapter_that_echoes_is_refused_with_how_to_turn_it_off(far_ends, role):
    ends = three_ends(far_ends, echo=(role,))
    bench = parse(dict(BENCH, esp32=esp32_of(ends)))
    with pytest.raises(BoardError, match="the RS485 adapter on %s_port .* echoes what it sends" % role) as caught:
        Esp32Target(bench)
    assert "Turn the echo off" in str(caught.value)
    assert bytes(board_module.ECHO_PROBE) in ends[role].heard


def test_a_quiet_adapter_passes_the_echo_probe_and_the_board_hears_it(far_ends):
    end = far_ends("inverter")
    board_module.check_echo(end.path, 9600, "inverter_port")
    assert b"".join(chunk for _, chunk in end.read()) == board_module.ECHO_PROBE


def test_a_board_that_never_prints_its_ready_line_shows_its_console(far_ends, tmp_path):
    ends = three_ends(far_ends)
    reset_done = tmp_path / "reset"
    boot = b"rst:0x1 (POWERON_RESET),boot:0x13\r\nTraceback (most recent call last):\r\n" \
           b"ImportError: no module named 'vbms_fw'\r\nMicroPython v1.27.0\r\n>>> "  # fmt: skip

    def board_boots():  # what a board without the firmware prints after its reset
        deadline = time.monotonic() + 10
        while not reset_done.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        ends["console"].write(boot)

    booting = threading.Thread(target=board_boots, daemon=True)
    booting.start()
    esp32 = esp32_of(ends, reset_command=["touch", str(reset_done)], ready_timeout_s=1.5)
    with pytest.raises(BoardError, match='printed no ready line \\(the JSON log line with "event": "started"\\)') as e:
        Esp32Target(parse(dict(BENCH, esp32=esp32)))
    booting.join()
    message = str(e.value)
    assert "  | ImportError: no module named 'vbms_fw'" in message and "  | >>> " in message
    assert "pytest --deploy" in message
    serial.Serial(ends["bms"].path, exclusive=True).close()  # the target let its adapters go


def test_a_dtr_rts_reset_on_a_port_without_those_lines_says_what_to_use(far_ends):
    ends = three_ends(far_ends)
    board = Board(esp32_of(ends, reset="dtr_rts")).open()
    try:
        with pytest.raises(BoardError, match='no DTR/RTS lines to reset the board with .*reset = "soft"'):
            board.reset()
    finally:
        board.close()


def test_a_soft_reset_of_a_board_that_does_not_stop(far_ends, monkeypatch):
    monkeypatch.setattr(board_module, "SOFT_STOP_S", 0.5)
    ends = three_ends(far_ends)
    board = Board(esp32_of(ends, reset="soft")).open()
    try:
        with pytest.raises(BoardError, match="the board did not stop at Ctrl-C: no REPL prompt"):
            board.reset()
    finally:
        board.close()
    assert b"".join(chunk for _, chunk in ends["console"].read()).startswith(b"\r\x03\x03")


def test_a_failing_reset_command_says_so(far_ends):
    board = Board(esp32_of(three_ends(far_ends), reset_command=["false"])).open()
    try:
        with pytest.raises(BoardError, match="reset_command \\['false'\\] failed \\(exit status 1\\)"):
            board.reset()
    finally:
        board.close()


@pytest.mark.ble
def test_a_bluetooth_adapter_that_is_not_there_or_has_another_mac(far_ends, ble_environment):
    ends = three_ends(far_ends)
    jk = {"slot": 1, "type": "jk_ble", "address": "00:11:22:33:44:55"}  # hci0's MAC (BleEnvironment's default)
    bench = dict(BENCH, inverter={"bus": "inverter", "units": [0, 1]}, batteries=BENCH["batteries"] + [jk])

    def checked(adapter):
        esp32 = esp32_of(ends, ble_adapters=[adapter], ble_dbus_address=ble_environment.address)
        check_bench(parse(dict(bench, esp32=esp32)))

    with pytest.raises(BoardError, match="no Bluetooth adapter hci7 on D-Bus .*bluetoothctl list"):
        checked("hci7")
    with pytest.raises(
        BoardError, match="has the address 00:11:22:33:44:55, but its Bluetooth adapter hci1 has 00:AA:BB:CC:DD:EE"
    ):
        checked("hci1")
    checked("hci0")


def test_a_bench_file_with_a_mistake_stops_pytest_with_what_to_fix(tmp_path, far_ends):
    ends = three_ends(far_ends)
    path = tmp_path / "bench.toml"
    section = '[esp32]\nconsole_port = "%s"\ninverter_port = "%s"\n' % (ends["console"].path, ends["inverter"].path)
    path.write_text(TWO_BYD + section)
    with pytest.raises(pytest.UsageError, match="bench.toml: esp32: missing bms_port"):
        check_esp32_bench(str(path))
    path.write_text(path.read_text() + 'bms_port = "/dev/serial/by-id/unplugged"\n')
    with pytest.raises(pytest.UsageError, match="bms_port /dev/serial/by-id/unplugged: no such port"):
        check_esp32_bench(str(path))


# --- several modules on one adapter --------------------------------------------------------------


class SharedLine:
    """BYD modules at 1, 2, 3 and a JK-PB at 5 answering on one PTY; the test is the board."""

    def __init__(self):
        self.bench = parse({
            "name": "shared", "buses": {"bms": {"baud": 9600, "protocol": "byd-pro"}},
            "batteries": [{"slot": n - 1, "type": "byd_pro", "bus": "bms", "address": n} for n in (1, 2, 3)]
            + [{"slot": 3, "type": "jk_rs485", "bus": "bms", "address": 5}],
        })  # fmt: skip
        _, self.devices = build_devices(self.bench)
        models = {}
        for spec in self.bench.batteries:
            device = self.devices[spec.slot]
            models[spec.name] = serial_model(spec, device)
        from hil.trace import Trace

        self.trace = Trace(None, {"bms": "byd-pro"})
        self.end = AdapterEnd("bms", 9600, "byd-pro", list(models), self.trace)
        self.board = FarEnd()
        self.port = SharedPort(self.board.path, 9600, models, self.end).start()

    def ask(self, request, timeout_s=0.6):
        self.board.write(request)
        return self.board.read(timeout_s=timeout_s, quiet_s=0.06)

    def answer(self, request):
        return b"".join(chunk for _, chunk in self.ask(request))

    def close(self):
        self.port.stop()
        self.board.close()


@pytest.fixture
def shared_line():
    line = SharedLine()
    yield line
    line.close()


def byd_request(address):
    """BYD-Q1 for another DIP address: the golden requests differ only in their first byte (the checksum
    leaves the address out: BYD-Q1..Q4 all end in 07)."""
    return bytes((address,)) + vector("byd_requests", "BYD-Q1")[1:]


def test_each_module_answers_its_own_address_on_one_port(shared_line):
    reply_length = len(vector("byd_responses", "BYD-R1"))
    for address in (1, 2, 3):
        assert vector("byd_requests", "BYD-Q%d" % address) == byd_request(address)
        before = [shared_line.devices[slot].requests for slot in range(3)]
        reply = shared_line.answer(byd_request(address))
        assert len(reply) == reply_length and reply[0] == address, reply.hex()
        after = [shared_line.devices[slot].requests for slot in range(3)]
        assert [b - a for a, b in zip(before, after, strict=True)] == [int(n == address) for n in (1, 2, 3)]
    # the JK-PB at 5: a function it does not serve gets exception 01 (Modbus application protocol, 7)
    assert shared_line.answer(with_crc(b"\x05\x04\x10\x00\x00\x01")) == with_crc(b"\x05\x84\x01")
    assert shared_line.answer(byd_request(9)) == b""  # nobody at 9: silence
    assert shared_line.port.clashes == [] and shared_line.port.errors == []


def test_two_requests_read_as_one_are_answered_by_the_last(shared_line):
    reply = shared_line.answer(byd_request(1) + byd_request(3))
    assert reply[0] == 3 and len(reply) == len(vector("byd_responses", "BYD-R3"))


def test_faults_act_on_what_the_harness_sends_and_hears(shared_line):
    line, end = shared_line, shared_line.end
    clean = line.answer(byd_request(2))
    assert line.answer(byd_request(2)) == clean  # the battery is not advanced here: the same reply
    end.add_fault(Fault("corrupt", source="BYD-2", count=1, bit=0))
    assert line.answer(byd_request(2)) == bytes((clean[0] ^ 1,)) + clean[1:]
    assert line.answer(byd_request(2)) == clean  # count=1: spent

    end.add_fault(Fault("noise", source="BYD-2", count=1, noise_bytes=6))
    chunks = line.ask(byd_request(2))
    received = b"".join(chunk for _, chunk in chunks)
    assert len(received) == 6 + len(clean) and received[6:] == clean
    starts = {offset: at for at, offset in _positions(chunks)}
    assert 6 in starts, chunks  # the noise came alone, then the reply
    assert starts[6] - starts[0] >= 2 * 0.00401 * 0.9, starts  # twice t3.5 (4.01 ms at 9600 baud) between

    end.add_fault(Fault("drop", source="dut", count=1))
    assert line.answer(byd_request(1)) == b""
    assert line.answer(byd_request(1))[0] == 1
    end.add_fault(Fault("corrupt", source="dut", target="BYD-1", count=1, bit=0))  # the modules hear address 0
    assert line.answer(byd_request(1)) == b""

    end.add_fault(Fault("disconnect", source="BYD-3"))
    assert line.answer(byd_request(3)) == b""
    end.clear_faults()
    assert line.answer(byd_request(3))[0] == 3

    with pytest.raises(BusError, match="bus bms has no endpoint 'BYD-9'"):
        end.add_fault(Fault("drop", source="BYD-9"))
    inverter_end = AdapterEnd("inverter", 9600, "deye", ["deye"], hears_board=False)
    with pytest.raises(BusError, match="can fault what it sends, not what the board sends"):
        inverter_end.add_fault(Fault("corrupt", source="dut"))
    inverter_end.add_fault(Fault("noise", count=10))

    froms = [record["from"] for record in line.trace.tail(200)]
    assert froms[:2] == ["dut", "BYD-2"] and "noise" in froms


def _positions(chunks):
    """(arrival time, offset of the chunk's first byte)."""
    offset = 0
    for at, chunk in chunks:
        yield at, offset
        offset += len(chunk)


# --- the virtual board ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def virtual_board(tmp_path_factory):
    needs_micropython()
    board = VirtualBoard(TWO_BYD, tmp_path_factory.mktemp("virtual-board")).start()
    yield board
    board.stop()


def test_the_virtual_board_is_presented_as_a_bench_file_presents_a_board(virtual_board):
    bench = load(virtual_board.bench_path)
    esp32 = bench.esp32
    assert all(os.path.exists(esp32[key]) for key in ("console_port", "inverter_port", "bms_port"))
    assert esp32["reset"] == "command" and esp32["reset_command"][:2] == ["kill", "-USR1"]
    assert esp32["rpc_url"].startswith("http://127.0.0.1:") and esp32["rpc_token"] == virtual_board.token
    check_bench(bench)


def test_it_starts_and_a_hardware_reset_starts_it_again(virtual_board):
    board = Board(load(virtual_board.bench_path).esp32).open()
    try:
        first = board.wait_ready(board.reset())
        uptime = board.call("Sys.GetInfo")["uptime_s"]
        assert first["event"] == "started" and first["http"] == board.url()
        time.sleep(2.5)
        since = board.reset()
        assert board.wait_ready(since)["t"] > first["t"]
        assert board.call("Sys.GetInfo")["uptime_s"] <= uptime + 1  # a fresh start, not 2.5 s older
        assert any("rst:0x1 (POWERON_RESET)" in line for line in board.tail(40))
    finally:
        board.close()


def test_a_soft_reset_interrupts_the_firmware_and_starts_it_again(virtual_board):
    board = Board(load(virtual_board.bench_path).esp32).open()
    try:
        board.wait_ready(board.reset())  # the firmware is up: Ctrl-C interrupts it, not its start
        board.reset_kind = "soft"
        since = board.reset()
        board.wait_ready(since)
        after = board.tail(40)
        assert any(line.startswith("KeyboardInterrupt") for line in after)
        assert ">>> MPY: soft reboot" in after  # Ctrl-D at the prompt
        assert board.call("Sys.GetInfo")["app"] == "vbms"
    finally:
        board.close()


def test_the_esp32_target_configures_the_board_from_the_bench(virtual_board):
    bench = load(virtual_board.bench_path)
    owner = Board(bench.esp32).open()  # the board's owner named it: a setting of the board, not of a bench
    try:
        owner.call("Config.Set", {"config": {"device.id": "board-7"}})
        owner.call("Config.Save", {})
    finally:
        owner.close()
    target = Esp32Target(bench, str(virtual_board.bench_path))
    try:
        config, error = target.rpc("Config.Get")
        assert error is None
        assert [(config["bms%d" % n]["type"], config["bms%d" % n]["addr"]) for n in range(3)] == [
            (1, "1"), (1, "2"), (0, ""),
        ]  # fmt: skip
        assert all(config["bms%d" % n]["type"] == 0 for n in range(2, 15))
        assert config["device"]["id"] == "board-7"  # kept: neither the default nor the bench builder's
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not all(target.unit(u)["values"] for u in (0, 1)):
            time.sleep(0.5)
        assert all(target.unit(u)["values"] for u in (0, 1)), target.dut_log_tail()
        assert target.rpc("Config.Set", {"config": {"bms1.voltage": 56.0}})[1] is None  # the bench's token
        assert target.rpc("Config.Set", {"config": {"bms1.voltage": 56.0}}, authenticated=False)[1]["code"] == 401
    finally:
        target.stop()
    board = Board(bench.esp32).open()
    try:
        assert board.configure(bench) == {"bms1.voltage": 55.2}  # only what differs from the bench
        assert board.configure(bench) == {}  # nothing: no reboot
        one = parse(dict(BENCH, batteries=[{"slot": 0, "type": "byd_pro", "bus": "bms", "address": 2}]))
        changes = board.configure(one)
        assert changes == {"bms0.addr": "2", "bms0.name": "BYD-2", "bms1.type": 0, "bms1.addr": "", "bms1.name": ""}
        assert board.call("Config.Get")["bms1"]["type"] == 0  # at once, without a restart
        # a baud rate is read only at the firmware's start: that change reboots the board
        faster = dict(BENCH["buses"], bms={"baud": 19200, "protocol": "byd-pro"})
        since = board.mark()
        changes = board.configure(parse(dict(BENCH, buses=faster)))
        assert changes == {"app.bms_baud": 19200, "bms0.addr": "1", "bms0.name": "BYD-1"}
        assert board.wait_record(lambda record: record.get("event") == "rebooting", since, 1) is not None
        assert board.wait_record(lambda record: record.get("event") == "started", since, 1) is not None
    finally:
        board.close()


def _campaign_on(virtual_board, tmp_path, frames, port="inverter"):
    path = str(virtual_board.bench_path)
    campaign = WireCampaign(load(path), path, port, "esp32", frames, findings_dir=tmp_path, out=io.StringIO())
    campaign.start()
    return campaign


def test_a_wire_campaign_against_the_board_checks_every_reply(virtual_board, tmp_path):
    campaign = _campaign_on(virtual_board, tmp_path, frames=300)
    try:
        assert campaign.sim.target.world.inverter is None  # the campaign is the inverter on the inverter adapter
        campaign.warm_up()
        campaign.run()
    finally:
        campaign.stop()
    stats = campaign.stats
    assert campaign.findings == [], campaign.findings
    assert stats.frames == 300 and stats.valid > 0 and stats.answered == stats.valid
    assert stats.answerable > 0 and stats.answerable_ok + stats.answerable_repeated == stats.answerable


def test_a_bms_campaign_stands_in_for_a_module_on_the_boards_battery_adapter(virtual_board, tmp_path):
    campaign = _campaign_on(virtual_board, tmp_path, frames=40, port="bms")
    try:
        campaign.warm_up()
        campaign.run()
        status, summary = campaign.sim.rpc("VBMS.GetSummary", {}, campaign.sim.dut_token)
    finally:
        campaign.stop()
    assert campaign.findings == [], campaign.findings
    stand_in = campaign.hand
    (slot,) = stand_in.slots
    assert stand_in.malformed >= 40 and stand_in.answers > stand_in.malformed  # valid answers too
    # the board took the stand-in's valid answers: its reading of that module is fresh at the end
    assert status == 200 and summary["bms"][slot]["age_s"] is not None and summary["bms"][slot]["age_s"] <= 5
    assert campaign.stats.valid > 0 and campaign.stats.answered > 0
    assert stand_in.line.port.tap is None  # the tap is off the battery adapter


def test_a_ble_campaign_on_a_virtual_board_from_the_command_line(tmp_path, capsys):
    needs_micropython()
    before = set(os.listdir(tempfile.gettempdir()))
    arguments = ["fuzz", "wire", "--port", "ble", "--dut", "esp32", "--frames", "30", "--findings", str(tmp_path)]
    assert main(arguments) == 0  # the default bench has no [esp32]: a virtual board of it
    out = capsys.readouterr().out
    assert "device under test esp32" in out and "0 findings" in out, out
    sends = int(re.search(r"malformed frames sent +(\d+)", out).group(1))
    answered = re.search(r"answered +(\d+) +\(100.00 % of those that must be\)", out)
    assert sends >= 30 and answered and int(answered.group(1)) > 0, out
    assert not [name for name in set(os.listdir(tempfile.gettempdir())) - before if name.startswith("vbms-board-")]


def test_a_battery_side_that_goes_quiet_ends_the_campaign_with_a_finding(virtual_board, tmp_path, monkeypatch):
    monkeypatch.setattr(wire, "HAND_IDLE_S", 3.0)
    monkeypatch.setattr(PortTap, "hear", lambda self, frame: None)  # the stand-in hears no poll
    campaign = _campaign_on(virtual_board, tmp_path, frames=40, port="bms")
    try:
        campaign.warm_up()
        campaign.run()
    finally:
        campaign.stop()
    assert [finding["problem"] for finding in campaign.findings] == ["stalled"]
    assert "it polled none of the modules the campaign stands in for" in campaign.findings[0]["detail"]


def test_a_board_that_starts_again_during_a_campaign_is_a_crash(virtual_board, tmp_path, capsys):
    campaign = _campaign_on(virtual_board, tmp_path, frames=200)
    try:
        campaign.warm_up()
        board = campaign.sim.target.board
        since = board.mark()
        subprocess.run(["kill", "-USR1", str(virtual_board.pid)], check=True)  # its EN line: a reset
        board.wait_ready(since)
        campaign.run()
    finally:
        campaign.stop()
    crashes = [finding for finding in campaign.findings if finding["problem"] == "crash"]
    assert crashes and "the board started again during the campaign" in crashes[0]["detail"], campaign.findings
    assert campaign.stats.crashes == 1 and campaign.stats.frames < 200  # it stopped at the crash
    (finding,) = tmp_path.glob("wire-inverter-crash-*.json")
    assert main(["fuzz", "replay", str(finding)]) == 0  # on the board it was found on; nobody resets it now
    assert "on esp32" in capsys.readouterr().out


def test_mpremote_runs_code_on_it_and_a_deployed_build_runs_from_its_flash(tmp_path):
    needs_micropython()
    virtual = VirtualBoard(TWO_BYD, tmp_path / "board").start()
    try:
        esp32 = load(virtual.bench_path).esp32
        mpremote = [sys.executable, "-m", "mpremote", "connect", esp32["console_port"]]
        done = subprocess.run(mpremote + ["exec", "print(6 * 7)"], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0 and done.stdout.strip() == "42", done
        board = Board(esp32).open()
        try:
            board.wait_ready(board.reset())
            assert "vbms virtual board: boot, firmware from the source tree" in board.tail(40)
            firmware.build(tmp_path / "build")
            board.deploy(tmp_path / "build" / "tree")
            assert (virtual.flash / "vbms_fw" / "app.mpy").exists() and (virtual.flash / "main.py").exists()
            since = board.reset()
            board.wait_ready(since)
            assert "vbms virtual board: boot, firmware from the deployed tree in the flash" in board.tail(40)
            assert board.call("Sys.GetInfo")["app"] == "vbms"
        finally:
            board.close()
    finally:
        virtual.stop()
