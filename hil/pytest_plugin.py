"""The vbms pytest plugin (registered as a pytest11 entry point).

Fixtures:
  ble_environment  a private dbus-daemon and BlueZoo with two adapters (hci0
                   for a peripheral, hci1 for a central); nothing is left
                   running afterwards.  Tests using it are marked `ble`.
  mqtt_broker      a real mosquitto on a free localhost port; "host:port".
"""

import shutil
import socket
import subprocess
import time

import pytest

from hil.wires.ble import BleEnvironment, BleEnvironmentError


def pytest_configure(config):
    config.addinivalue_line("markers", "ble: needs the BLE environment (dbus-daemon + BlueZoo)")


@pytest.fixture
def ble_environment():
    try:
        environment = BleEnvironment().start()
    except BleEnvironmentError as error:
        pytest.fail("the BLE environment did not start: %s" % error)
    try:
        yield environment
    finally:
        environment.stop()


@pytest.fixture
def mqtt_broker(tmp_path):
    if shutil.which("mosquitto") is None:
        pytest.fail("mosquitto is not installed (Debian package mosquitto; ./dev test installs it)")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = tmp_path / "mosquitto.conf"
    config.write_text("listener %d 127.0.0.1\nallow_anonymous true\npersistence false\n" % port)
    broker = subprocess.Popen(["mosquitto", "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if broker.poll() is not None:
                pytest.fail("mosquitto exited: %s" % broker.stderr.read().decode(errors="replace"))
            time.sleep(0.05)
    try:
        yield "127.0.0.1:%d" % port
    finally:
        broker.terminate()
        broker.wait(timeout=10)
