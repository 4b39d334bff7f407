"""A bench leaves nothing running: not when its terminal is closed, not when it is killed."""

import json
import os
import pty
import select
import signal
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.ble


def children_of():
    """{pid: parent pid} of every process."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = open("/proc/%s/stat" % entry).read()
            except OSError:
                continue
            parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    return parents


def descendants(pid):
    parents = children_of()
    found, todo = set(), [pid]
    while todo:
        parent = todo.pop()
        for child, its_parent in parents.items():
            if its_parent == parent and child not in found:
                found.add(child)
                todo.append(child)
    return found


def alive(pid):
    try:
        state = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def command_of(pid):
    try:
        return open("/proc/%d/cmdline" % pid, "rb").read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return "?"


def read_until_started(fd, timeout_s):
    text = b""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            text += chunk
            for line in text.decode(errors="replace").splitlines():
                if line.startswith("{") and '"event": "started"' in line:
                    return json.loads(line)
    raise AssertionError("the bench did not start:\n" + text.decode(errors="replace")[-3000:])


@pytest.mark.parametrize("display", ["live table", "headless"])
def test_closing_the_terminal_of_dev_run_leaves_nothing_running(display):
    options = ["--duration", "600"] + (["--headless"] if display == "headless" else ["--json"])
    pid, terminal = pty.fork()
    if pid == 0:  # the child: ./dev run in a terminal of its own, as a person would start it
        os.chdir(ROOT)
        os.execv(str(ROOT / "dev"), [str(ROOT / "dev"), "run"] + options)
    try:
        started = read_until_started(terminal, 120)
        assert started["dut"]["kind"] == "vbms run"
        bench = descendants(pid)
        commands = {child: command_of(child) for child in bench}
        assert any("hil.cli run" in command for command in commands.values()), commands  # the VBMS
        assert any("bluezoo" in command for command in commands.values()), commands
        assert any("dbus-daemon" in command for command in commands.values()), commands
        os.close(terminal)  # the terminal window is closed: SIGHUP
        terminal = None
        status = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (status is None or any(alive(child) for child in bench)):
            if status is None:
                ended, code = os.waitpid(pid, os.WNOHANG)
                status = code if ended else None
            time.sleep(0.2)
        left = {child: commands[child] for child in bench if alive(child)}
        assert status is not None and not left, left
        # it stopped itself, cleanly (SIGHUP handled like SIGTERM), rather than being killed by it
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
    finally:
        if terminal is not None:
            os.close(terminal)
        if alive(pid):
            os.kill(pid, signal.SIGKILL)
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass


def test_a_killed_bench_takes_its_processes_with_it(tmp_path):
    """SIGKILL leaves no chance to clean up: the children are tied to the bench (hil.procs)."""
    import subprocess
    import sys

    bench = subprocess.Popen(
        [sys.executable, "-m", "hil.cli", "sim", "--headless", "--duration", "600"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        started = read_until_started(bench.stdout.fileno(), 120)
        assert started["dut"]["kind"] == "vbms run"
        children = descendants(bench.pid)
        assert len(children) >= 3, {child: command_of(child) for child in children}
        bench.kill()
        bench.wait()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(alive(child) for child in children):
            time.sleep(0.2)
        assert not [command_of(child) for child in children if alive(child)]
    finally:
        if bench.poll() is None:
            bench.kill()
            bench.wait()
