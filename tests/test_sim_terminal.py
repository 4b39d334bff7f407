"""`vbms sim` on a terminal (a PTY, as a person's): a short summary of the endpoints instead of the JSON line,
then the inverter's Li-BMS table and a status line with the bus counters and the inverter's warnings.

What the summary says is checked against the things it names: the dashboard answers at its URL and takes the
token, the bench control answers at its URL, the device under test is the process named and holds the bus
ports named open.  The table's values come from the bench file (80 % SOC; BYD PRO reports whole percent).
"""

import fcntl
import json
import os
import pty
import re
import select
import signal
import struct
import sys
import termios
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import bench_toml
from test_no_leftovers import alive, command_of, descendants

ROOT = Path(__file__).resolve().parents[1]
BENCH = bench_toml(
    "small",
    [{"type": kind, "address": address, "soc_permille": 800}
     for kind, address in (("byd_pro", 1), ("byd_pro", 2), ("jk_rs485", 3))],
    description="two BYD PRO modules and a JK-PB",
    timeout_s=0.2,
    poll_period_s=0.5,
)  # fmt: skip
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
STATUS = re.compile(
    r"(\d+)s  bms: (\d+) frames, (\d+) collisions, (\d+) faults?  inverter: (\d+) frames, (\d+) collisions, "
    r"(\d+) faults?\ninverter warnings: (\S+(?: \S+)*)"
)


class Terminal:
    """`vbms sim` in a pseudo-terminal of its own, 120 x 50, and what it has written so far (plain text)."""

    def __init__(self, options):
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: vbms sim on the terminal
            os.chdir(ROOT)
            # the size is the terminal's: leave out the COLUMNS and LINES something under pytest exports
            environment = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
            os.execve(sys.executable, [sys.executable, "-m", "hil.cli", "sim"] + options, environment)
        fcntl.ioctl(self.fd, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 120, 0, 0))  # rows, columns
        self.raw = b""

    def read_until(self, condition, timeout_s):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if condition(self.text):
                return True
            ready, _, _ = select.select([self.fd], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(self.fd, 65536)
                except OSError:
                    break
                if not chunk:
                    break
                self.raw += chunk
        return condition(self.text)

    @property
    def text(self):
        return ANSI.sub("", self.raw.decode(errors="replace")).replace("\r", "")

    def last_table(self):
        """The rows of the Li-BMS table drawn last: {battery number: [cells]}."""
        frame = self.text.rsplit("DEYE Li-BMS (cycle", 1)[-1]
        rows = {}
        for line in frame.splitlines():
            cells = [cell.strip() for cell in line.split("\u2502")[1:-1]]
            if cells and cells[0].isdigit():
                rows[int(cells[0])] = cells
        return rows

    def statuses(self):
        return STATUS.findall(self.text)

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def wait(self, timeout_s):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            ended, status = os.waitpid(self.pid, os.WNOHANG)
            if ended:
                return status
            time.sleep(0.2)
        return None

    def kill(self):
        self.close()
        if alive(self.pid):
            os.kill(self.pid, signal.SIGKILL)
        try:
            os.waitpid(self.pid, 0)
        except ChildProcessError:
            pass


def http(url, body=None, token=None):
    request = urllib.request.Request(url, data=None if body is None else json.dumps(body).encode())
    if token:
        request.add_header("Authorization", "Bearer " + token)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


@pytest.fixture
def bench_file(tmp_path):
    path = tmp_path / "small.toml"
    path.write_text(BENCH)
    return str(path)


def test_a_terminal_shows_the_endpoints_the_table_and_the_bus_counters(bench_file):
    terminal = Terminal(["--bench", bench_file, "--duration", "600"])
    try:
        assert terminal.read_until(lambda text: "DEYE Li-BMS" in text, 60), terminal.text[-3000:]
        summary = terminal.text.split("DEYE Li-BMS", 1)[0]
        assert not any(line.startswith("{") for line in summary.splitlines())  # no JSON blob to scroll past
        lines = {line.split()[0] + (" " + line.split()[1] if line.startswith("  bus") else ""): line
                 for line in summary.splitlines() if line.strip()}  # fmt: skip
        assert lines["vbms"] == "vbms sim: bench small: two BYD PRO modules and a JK-PB"

        dashboard, token = re.fullmatch(
            r"  dashboard +(http://127\.0\.0\.1:\d+)/ +token (\S+)", lines["dashboard"]
        ).groups()
        status, page = http(dashboard + "/")
        assert status == 200 and b"<title>VBMS</title>" in page
        unchanged = {"config": {"app.stale_s": 2}}  # a silent battery dropped after 2 s, for the warning below
        assert http(dashboard + "/rpc/Config.Set", unchanged, token="wrong")[0] == 401
        assert http(dashboard + "/rpc/Config.Set", unchanged, token=token)[0] == 200

        control = re.fullmatch(r"  bench control +(http://127\.0\.0\.1:\d+)/", lines["bench"]).group(1)
        status, state = http(control + "/api/state")
        assert status == 200 and json.loads(state)["bench"] == "small"

        pid, log = re.fullmatch(r"  device +vbms run, pid (\d+), log (\S+)", lines["device"]).groups()
        assert int(pid) in descendants(terminal.pid) and "hil.cli run" in command_of(int(pid))
        assert os.path.exists(log)
        held = {os.readlink("/proc/%s/fd/%s" % (pid, fd)) for fd in os.listdir("/proc/%s/fd" % pid)}
        for bus in ("bms", "inverter"):
            port = re.match(r"  bus %s +dut (\S+);" % bus, lines["bus " + bus]).group(1)
            assert port in held, (bus, port, held)  # the device under test is on the port the summary names

        # the table: one row per polled unit, each at the bench file's 80 %
        at_80 = lambda _: [row[4] for _, row in sorted(terminal.last_table().items())] == ["80.0%"] * 3  # noqa: E731
        assert terminal.read_until(at_80, 30), terminal.last_table()
        assert sorted(terminal.last_table()) == [1, 2, 3]
        assert terminal.read_until(lambda _: terminal.statuses(), 5), terminal.text[-2000:]
        first = terminal.statuses()[-1]
        assert first[-1] == "none" and int(first[1]) > 0 and int(first[4]) > 0

        # the status line follows the bench: a silent battery, a fault rule on the BMS bus
        for path, body in (
            ("device_failure", {"slot": 1, "failure": "silent"}),
            ("bus_fault", {"bus": "bms", "kind": "corrupt", "source": "BYD-1", "probability": 0.1}),
        ):
            assert http(control + "/api/" + path, body)[0] == 200  # fmt: skip
        warned = lambda _: terminal.statuses()[-1][-1] == "W31 Battery_comm_warn: battery 2"  # noqa: E731
        assert terminal.read_until(warned, 20), terminal.text[-1500:]
        last = terminal.statuses()[-1]
        assert last[3] == "1" and last[6] == "0"  # one fault rule on bms, none on the inverter bus
        assert int(last[1]) > int(first[1]) and int(last[4]) > int(first[4])  # frames counted as they pass
        assert "W31" in terminal.last_table()[2][-1]

        # closing the terminal stops the bench cleanly, though its output has nowhere to go
        bench = descendants(terminal.pid)
        commands = {child: command_of(child) for child in bench}
        terminal.close()
        status = terminal.wait(60)
        assert status is not None and os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(alive(child) for child in bench):
            time.sleep(0.2)
        assert not {child: commands[child] for child in bench if alive(child)}
    finally:
        terminal.kill()


def test_json_keeps_the_endpoints_line_on_a_terminal(bench_file):
    terminal = Terminal(["--bench", bench_file, "--duration", "4", "--json"])
    try:
        assert terminal.read_until(lambda text: "stopped" in text, 60), terminal.text[-3000:]
        status = terminal.wait(30)
        assert status is not None and os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
        lines = [line for line in terminal.text.splitlines() if line.strip()]
        started = json.loads(lines[0])
        # the keys users' scripts read stay; the bench control is added
        assert {"event", "bench", "buses", "dut", "slots"} <= set(started) and started["event"] == "started"
        assert started["dut"]["kind"] == "vbms run" and set(started["buses"]["bms"]["endpoints"]) >= {"dut", "BYD-1"}
        assert started["control"]["http"].startswith("http://127.0.0.1:")
        assert "DEYE Li-BMS" in terminal.text  # the live table follows
        stopped = json.loads(lines[-1])
        assert stopped["event"] == "stopped" and stopped["inverter"]["answering"] == [0, 1, 2]
    finally:
        terminal.kill()
