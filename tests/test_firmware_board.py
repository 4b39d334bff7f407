"""The board's own parts, on the MicroPython unix port: the status LED's patterns, the
factory-reset button, the watchdog, and the clock across the ESP32's ticks wrap.

Pins are files here (firmware/host/machine.py): an input reads $VBMS_GPIO_DIR/gpio<n>,
an output appends "<ticks_us> <level>" to gpio<n>.out.  The expected patterns are the
original firmware's (its main.c wifi_timer_cb and reset_btn.c, quoted in vbms_fw/panel.py).
"""

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
from conftest import needs_micropython, wait_for

from hil import firmware
from vbms_core import config as config_module

LED, BUTTON = 2, 0


@pytest.fixture
def micropython():
    return needs_micropython()


def changes(path):
    """[(ticks_us, level)] an output went through."""
    if not path.exists():
        return []
    return [tuple(int(part) for part in line.split()) for line in path.read_text().splitlines() if line.strip()]


def on_off_times_ms(recorded):
    """How long each level was held, in ms, as (level, duration) pairs."""
    return [(level, (recorded[i + 1][0] - at) // 1000) for i, (at, level) in enumerate(recorded[:-1])]


@pytest.fixture
def board(micropython, tmp_path):
    flash = tmp_path / "flash"
    flash.mkdir()
    config = {"rpc": {"auth_token": "board"}, "pins": {"led": LED, "button": BUTTON, "button_hold_ms": 600}}
    (flash / "config.json").write_text(json.dumps(config))
    handle = firmware.start_host(str(flash / "config.json"))
    handle.gpio = flash / ".host" / "gpio"
    yield handle
    handle.stop()


def test_unconfigured_wifi_blinks_500_on_500_off_and_the_watchdog_is_fed(board):
    led = board.gpio / ("gpio%d.out" % LED)
    assert wait_for(lambda: len(changes(led)) >= 8, 8)
    held = on_off_times_ms(changes(led))[2:]  # past the start
    assert {level for level, _ in held} == {0, 1}
    assert all(420 <= duration <= 650 for _, duration in held), held
    timeout_ms, feeds = (int(part) for part in (board.gpio / "wdt").read_text().split())
    assert timeout_ms == 30000
    assert wait_for(lambda: int((board.gpio / "wdt").read_text().split()[1]) > feeds, 3)


def test_holding_the_button_resets_the_device_to_its_defaults(board):
    assert board.rpc("Config.Set", {"config": {"bms0.name": "Kept?"}}, token="board")[0] == 200
    (board.gpio / ("gpio%d" % BUTTON)).write_text("0")  # pressed: the button pulls the pin low
    flash = Path(board.flash)
    assert wait_for(lambda: any(r["event"] == "factory_reset" for r in board.log_records()), 5)
    assert wait_for(lambda: any(r["event"] == "reset" for r in board.log_records()), 5)
    stored = config_module.validate(json.loads((flash / "config.json").read_text()))
    token = stored.pop("rpc.auth_token")
    expected = config_module.defaults()
    expected.pop("rpc.auth_token")
    assert stored == expected and token and token != "board"  # a new token, said on the console
    assert token in Path(board.log).read_text()
    assert json.loads((flash / "device.json").read_text())["wifi"] == {"ssid": "", "password": ""}
    led = changes(board.gpio / ("gpio%d.out" % LED))
    reset_at = next(r["ticks_us"] for r in board.log_records() if r["event"] == "reset")
    lit_at, level = led[-1]
    assert level == 1 and reset_at - lit_at >= 950000, (led, reset_at)  # lit a second, until the restart


def test_a_short_press_resets_nothing(board):
    button = board.gpio / ("gpio%d" % BUTTON)
    button.write_text("0")
    time.sleep(0.3)
    button.write_text("1")
    time.sleep(1.0)
    assert not any(r["event"] == "factory_reset" for r in board.log_records())
    assert json.loads((Path(board.flash) / "config.json").read_text())["rpc"]["auth_token"] == "board"


CLOCK_SCRIPT = """
import time
from vbms_fw.clock import Clock
PERIOD = 1 << 30          # the ESP32's ticks_us period
ticks = [PERIOD - 3000]   # 3 ms before the wrap

def diff(a, b):
    return ((a - b + PERIOD // 2) & (PERIOD - 1)) - PERIOD // 2

clock = Clock(lambda: ticks[0], diff)
seen = []
for step in (1000, 1000, 1000, 1000, 250000, PERIOD // 2 - 1):
    ticks[0] = (ticks[0] + step) & (PERIOD - 1)
    seen.append(clock.now_us())
print(seen)
"""


def test_the_clock_runs_on_through_the_esp32_ticks_wrap(micropython, tmp_path):
    (tmp_path / "clock_check.py").write_text(CLOCK_SCRIPT)
    env = dict(os.environ, MICROPYPATH=firmware.micropython_path(firmware.stage(tmp_path / "tree")))
    done = subprocess.run([micropython, str(tmp_path / "clock_check.py")], env=env, capture_output=True, text=True,
                          timeout=30, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen == [1000, 2000, 3000, 4000, 254000, 254000 + (1 << 29) - 1]
