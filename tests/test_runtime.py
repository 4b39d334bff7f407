"""`vbms run` as a process: configuration handling, atomic saves, clean shutdown."""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from hil.runtime import save_config_atomically
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
