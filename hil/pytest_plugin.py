"""The vbms pytest plugin (registered as a pytest11 entry point).

Fixtures:
  ble_environment  a private dbus-daemon and BlueZoo with two adapters (hci0
                   for a peripheral, hci1 for a central); nothing is left
                   running afterwards.  Tests using it are marked `ble`.
"""

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
