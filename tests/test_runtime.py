"""`vbms run` as a process: configuration handling, atomic saves, clean shutdown."""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from hil.host.config_store import save_config_atomically
from vbms_core import config


def start(config_path, *extra):
    return subprocess.Popen(
        [sys.executable, "-m", "hil.cli", "run", "--config", str(config_path), "--http-port", "0", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_first_start_generates_a_token_and_never_a_default_one(tmp_path):
    path = tmp_path / "vbms.json"
    process = start(path)
    try:
        deadline = time.monotonic() + 20
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        saved = json.loads(path.read_text())
        token = saved["rpc"]["auth_token"]
        assert len(token) >= 20
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=20)
    assert process.returncode == 0, err
    assert token in err  # printed once on the console
    assert '"event": "stopped"' in err
    second = start(path)
    second.send_signal(signal.SIGTERM)
    second.communicate(timeout=20)
    assert json.loads(path.read_text())["rpc"]["auth_token"] == token  # kept, not regenerated

    other = tmp_path / "other.json"
    third = start(other)
    deadline = time.monotonic() + 20
    while not other.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    third.send_signal(signal.SIGTERM)
    third.communicate(timeout=20)
    assert json.loads(other.read_text())["rpc"]["auth_token"] != token  # every device its own


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "is not valid JSON"),
        (json.dumps({"bms0": {"type": 7}}), "bms0.type: must be within 0..4"),
        (json.dumps({"app": {"stale_s": "ten"}}), "app.stale_s: must be a whole number"),
        (json.dumps({"bms0": {"type": 2, "addr": "nope"}}), "bms0.addr: a JK BLE slot needs a MAC address"),
        (json.dumps([1, 2]), "config: must be an object"),
        pytest.param("[" * 100000 + "]" * 100000, "nested too deeply", id="nested-100000-deep"),
        ('{"bms0": {"serial": "\\u00c4\\u00d6\\u00dc"}}', "bms0.serial: may hold only printable ASCII"),
        (json.dumps({"bms0": {"name": {"a": {"b": 1}}}}), "nested deeper than 3 levels"),
    ],
)
def test_a_bad_configuration_is_refused_with_the_key(tmp_path, content, message):
    path = tmp_path / "vbms.json"
    path.write_text(content)
    completed = subprocess.run(
        [sys.executable, "-m", "hil.cli", "run", "--config", str(path)], capture_output=True, text=True, timeout=30
    )
    assert completed.returncode == 2
    assert message in completed.stderr
    assert path.read_text() == content  # nothing was rewritten


def test_missing_serial_port_is_a_clear_error(tmp_path):
    path = tmp_path / "vbms.json"
    path.write_text(json.dumps({"rpc": {"auth_token": "t" * 20}}))
    completed = subprocess.run(
        [sys.executable, "-m", "hil.cli", "run", "--config", str(path), "--bms-port", "/dev/no-such-port"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert completed.returncode == 1 and "/dev/no-such-port" in completed.stderr


def test_saves_are_atomic(tmp_path):
    path = tmp_path / "vbms.json"
    good = config.validate({"bms0.type": 1, "bms0.addr": "1"})
    save_config_atomically(str(path), good)
    before = path.read_text()
    broken = dict(good)
    broken["bms0.name"] = object()  # cannot be written: the save must fail whole
    with pytest.raises(TypeError):
        save_config_atomically(str(path), broken)
    assert path.read_text() == before
    assert sorted(os.listdir(tmp_path)) == ["vbms.json"]
    assert config.validate(json.loads(before))["bms0.type"] == 1


def test_http_rpc_reports_bad_json_bodies(tmp_path):
    path = tmp_path / "vbms.json"
    path.write_text(json.dumps({"rpc": {"auth_token": "t" * 20}}))
    process = subprocess.Popen(
        [sys.executable, "-m", "hil.cli", "run", "--config", str(path), "--http-port", "18931"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen("http://127.0.0.1:18931/rpc/Sys.GetInfo", timeout=1).read()
                break
            except OSError:
                time.sleep(0.1)
        token = {"Authorization": "Bearer " + "t" * 20}
        deep = ('{"config": ' + '{"a": ' * 1500 + "1" + "}" * 1500 + "}").encode()
        for body, message in (
            (b"{oops", "not JSON"),
            (b'{"config": "\xc3\x28"}', "not UTF-8"),
            (b"[" * 5000 + b"]" * 5000, "nested too deeply"),
            (deep, "nested too deeply"),
            (json.dumps({"config": {"bms0.serial": "\u00c4\u00d6\u00dc\u00e4\u00f6\u00fc"}}).encode(), "bms0.serial"),
            (json.dumps({"config": {"bms0.name": "\ud800"}}).encode(), "bms0.name"),
            (json.dumps({"config": {"bms\u00b2.name": "x"}}).encode(), "unknown setting"),
        ):
            request = urllib.request.Request(
                "http://127.0.0.1:18931/rpc/Config.Set", data=body, method="POST", headers=token
            )
            with pytest.raises(urllib.error.HTTPError) as error:
                urllib.request.urlopen(request, timeout=5)
            assert error.value.code == 400, (body[:40], error.value.code)
            assert message in json.loads(error.value.read())["error"]["message"], body[:40]
        # and the device still answers
        assert json.loads(urllib.request.urlopen("http://127.0.0.1:18931/rpc/Sys.GetInfo", timeout=5).read())["app"]
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=20)


def cpu_seconds(pid):
    fields = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def read_for(fd, seconds):
    got = bytearray()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            got.extend(os.read(fd, 4096))
        except BlockingIOError:
            time.sleep(0.02)
    return bytes(got)


def log_events(path):
    return [json.loads(line)["event"] for line in open(path) if line.startswith("{")]


def test_a_vanished_port_is_reopened_without_spinning(tmp_path):
    """An unplugged USB-RS485 adapter (here: the other end of a PTY closed) is one log line and a
    reopen loop with backoff, never a busy loop; plugged back in, the polling goes on."""
    path = tmp_path / "vbms.json"
    path.write_text(json.dumps({"rpc": {"auth_token": "t" * 20}, "bms0": {"type": 1, "addr": "1"}}))
    master, slave = os.openpty()
    os.set_blocking(master, False)
    port = tmp_path / "ttyBMS"
    port.symlink_to(os.ttyname(slave))
    log = tmp_path / "vbms.log"
    with open(log, "w") as stream:
        process = subprocess.Popen(
            [sys.executable, "-m", "hil.cli", "run", "--config", str(path), "--http-port", "0",
             "--bms-port", str(port)],
            stdout=stream, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        assert b"\x01\x00\x04\x01\x03\x55\xaa" in read_for(master, 3)  # BYD status requests to address 1
        os.close(master)
        os.close(slave)
        port.unlink()  # unplugged: the device node is gone (a closed PTY's number may be reused by others)
        port.symlink_to(tmp_path / "absent")
        time.sleep(1.0)
        before = cpu_seconds(process.pid)
        time.sleep(3.0)
        assert cpu_seconds(process.pid) - before < 0.5  # a busy loop would burn ~3 s of CPU here
        assert process.poll() is None
        master, slave = os.openpty()  # plugged in again (under the same name)
        os.set_blocking(master, False)
        port.unlink()
        port.symlink_to(os.ttyname(slave))
        assert b"\x01\x00\x04\x01\x03\x55\xaa" in read_for(master, 20)  # at most one 16 s backoff away
        events = log_events(log)
        assert events.count("port_lost") == 1 and events.count("port_back") == 1, events
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=20)
        os.close(master)
        os.close(slave)


def test_sighup_stops_vbms_run_cleanly(tmp_path):
    """A closed terminal (SIGHUP) is a stop like SIGTERM: everything closed, exit status 0."""
    path = tmp_path / "vbms.json"
    path.write_text(json.dumps({"rpc": {"auth_token": "t" * 20}}))
    process = start(path)
    deadline = time.monotonic() + 20
    line = ""
    while '"started"' not in line and time.monotonic() < deadline:
        line = process.stderr.readline()
    process.send_signal(signal.SIGHUP)
    out, err = process.communicate(timeout=20)
    assert process.returncode == 0, err
    assert '"event": "stopped"' in err


def test_leftovers_of_an_interrupted_save_are_removed_at_start(tmp_path):
    path = tmp_path / "vbms.json"
    path.write_text(json.dumps({"rpc": {"auth_token": "t" * 20}}))
    leftover = tmp_path / ".vbms-config-abc123"
    leftover.write_text('{"rpc": {"auth_token": "a copy of the secret"}}')  # a save killed before its rename
    process = start(path)
    deadline = time.monotonic() + 20
    while leftover.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=20)
    assert not leftover.exists()
    assert "config_leftover_removed" in err


def test_a_request_shorter_than_it_announces_is_cut_off(tmp_path):
    """Content-Length larger than the body: a 400 after the read timeout, never a connection held forever."""
    import socket

    path = tmp_path / "vbms.json"
    path.write_text(json.dumps({"rpc": {"auth_token": "t" * 20}}))
    process = subprocess.Popen(
        [sys.executable, "-m", "hil.cli", "run", "--config", str(path), "--http-port", "18932", "--http-timeout", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen("http://127.0.0.1:18932/rpc/Sys.GetInfo", timeout=1).read()
                break
            except OSError:
                time.sleep(0.1)
        with socket.create_connection(("127.0.0.1", 18932), timeout=10) as client:
            client.sendall(b'POST /rpc/Config.Set HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"config":')
            answer = client.recv(4096)  # the socket's own 10 s timeout fails the test if nothing comes
        assert answer.split(b" ")[1] == b"400", answer
        # and the device is fine
        assert json.loads(urllib.request.urlopen("http://127.0.0.1:18932/rpc/Sys.GetInfo", timeout=5).read())["app"]
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=20)


def test_a_pseudo_terminal_that_closed_is_not_reopened_by_its_number(tmp_path):
    """/dev/pts/N of a closed PTY goes to the next PTY anybody opens: reading it would steal their bytes."""
    path = tmp_path / "vbms.json"
    path.write_text(json.dumps({"rpc": {"auth_token": "t" * 20}, "bms0": {"type": 1, "addr": "1"}}))
    master, slave = os.openpty()
    name = os.ttyname(slave)
    log = tmp_path / "vbms.log"
    with open(log, "w") as stream:
        process = subprocess.Popen(
            [sys.executable, "-m", "hil.cli", "run", "--config", str(path), "--http-port", "0", "--bms-port", name],
            stdout=stream, stderr=subprocess.STDOUT,
        )  # fmt: skip
    others = []
    try:
        os.set_blocking(master, False)
        assert read_for(master, 3)  # it polls
        os.close(master)
        os.close(slave)
        time.sleep(1.0)
        for _ in range(8):  # other programs open PTYs: one of them may get the same number
            others.append(os.openpty())
        reused = [pair for pair in others if os.ttyname(pair[1]) == name]
        time.sleep(2.0)
        for other_master, _ in reused:
            os.set_blocking(other_master, False)
            assert read_for(other_master, 1) == b""  # nobody writes to a PTY that is not theirs
        events = log_events(log)
        assert events.count("port_lost") == 1 and "port_back" not in events, events
        assert process.poll() is None
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=20)
        for pair in others:
            for fd in pair:
                os.close(fd)
