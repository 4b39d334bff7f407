"""The firmware's BLE central (vbms_fw/ble.py) on the MicroPython unix port against a stand-in stack:
the races a stack's connection reports can run with the central's own give-ups.

A connection attempt the central gave up (it cancelled it) may come up all the same, when the
stack had connected before it saw the cancel.  That report is the cancelled attempt's only one:
the link is let go (kept, nobody would use it and the module, held, could not be found again),
and the next attempt's failure is still reported.  Before, the stray link was kept and the
central went on waiting for a report of the cancel that never came, swallowing the next one."""

import json
import subprocess

from hil import firmware

SCRIPT = r"""
import json
import time

from vbms_fw import ble as central_module

ADDRESS = "C8:47:8C:10:00:01"
OTHER = "C8:47:8C:10:00:02"


class Stack:
    def __init__(self):
        self.calls = []

    def active(self, *args):
        pass

    def config(self, **settings):
        pass

    def irq(self, handler):
        pass

    def gap_connect(self, addr_type, addr=None, *rest):
        self.calls.append(["connect", None if addr_type is None else central_module.address_text(addr)])

    def gap_disconnect(self, conn):
        self.calls.append(["disconnect", conn])

    def gattc_discover_services(self, conn, uuid=None):
        self.calls.append(["services", conn])


stack = Stack()
posted = []
logged = []
central = central_module.BleCentral(posted.append, lambda event, level="info", **fields: logged.append(event), stack)
out = {}


def reports():
    return [[type(event).__name__, getattr(event, "reason", None)] for event in posted]


def give_up():
    central.setup.started_ms = time.ticks_add(time.ticks_ms(), -central_module.SETUP_MS - 1000)
    central.pump()


# an attempt given up, whose connection comes up after all
central.connect(4, ADDRESS)
central.pump()
give_up()
out["given_up"] = [stack.calls[:], reports(), central.cancelled]
central._irq(7, (5, 0, central_module.address_bytes(ADDRESS)))
central.pump()
out["stray"] = [stack.calls[2:], central.cancelled, "ble_stray_connection" in logged]

# the next attempt: the module is not found, and that is reported
posted.clear()
central.connect(4, ADDRESS)
central.pump()
central._irq(8, (0xFFFF, 0xFF, bytes(6)))
central.pump()
out["next"] = reports()

# a connection to another module while one is awaited: let go, the awaited one still comes
posted.clear()
del stack.calls[:]
central.connect(5, OTHER)
central.pump()
central._irq(7, (6, 0, central_module.address_bytes(ADDRESS)))
central.pump()
central._irq(7, (7, 0, central_module.address_bytes(OTHER)))
central.pump()
out["other"] = [stack.calls[:], central.setup.conn if central.setup else None, reports()]
print(json.dumps(out))
"""


def test_a_connection_that_comes_up_after_its_attempt_was_given_up_is_let_go(unix_port, tmp_path):
    tree = firmware.stage(tmp_path / "tree")
    (tmp_path / "script.py").write_text(SCRIPT)
    done = subprocess.run(
        [unix_port, str(tmp_path / "script.py")],
        env={"MICROPYPATH": firmware.micropython_path(tree), "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    out = json.loads(done.stdout.splitlines()[-1])
    calls, reports, cancelled = out["given_up"]
    assert calls == [["connect", "C8:47:8C:10:00:01"], ["connect", None]]  # asked, then cancelled
    assert reports == [["BleConnectFailed", "connect timed out"]] and cancelled == 1
    assert out["stray"] == [[["disconnect", 5]], 0, True]  # the late link let go; the cancel accounted for
    assert out["next"] == [["BleConnectFailed", "C8:47:8C:10:00:01 not found"]]
    calls, setup_conn, reports = out["other"]
    assert calls == [["connect", "C8:47:8C:10:00:02"], ["disconnect", 6], ["services", 7]]
    assert setup_conn == 7 and reports == []
