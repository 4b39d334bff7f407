"""The scenarios must fail, readably, against a deliberately broken proxy (des target)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_scenarios(breaker, selection):
    env = dict(os.environ, PYTHONPATH=str(ROOT / "tests" / "broken") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run(
        [sys.executable, "-m", "pytest", "features", "--target", "des", "-p", breaker, "-k", selection, "-q",
         "-p", "no:cacheprovider", "--no-header"],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=300,
    )  # fmt: skip


@pytest.mark.parametrize(
    "breaker, selection, expected",
    [
        ("break_scale", "reach_the_inverter", "pack_voltage_mv"),
        ("break_staleness", "silent_byd_module", "communication warning"),
    ],
)
def test_a_broken_proxy_fails_with_the_bus_trace(breaker, selection, expected):
    completed = run_scenarios(breaker, selection)
    output = completed.stdout + completed.stderr
    assert completed.returncode == 1, output[-3000:]
    assert "failed" in output.splitlines()[-1]
    assert "bus trace (last" in output  # the user sees what went over the wire
    assert "read_input_registers" in output and "direction=response" in output
    assert expected in output or "comm_warning" in output


def test_the_same_scenarios_pass_on_the_real_proxy():
    completed = run_scenarios("no:vbms_nothing", "reach_the_inverter or silent_byd_module")
    assert completed.returncode == 0, (completed.stdout + completed.stderr)[-3000:]
