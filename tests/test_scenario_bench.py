"""The vbms pytest plugin's shared bench (hil/pytest_plugin.py BenchPool): reset between scenarios
that pass, stopped and built anew after one that fails, so a broken bench costs one scenario.

A real pytest run of a small project whose targets are stand-ins that write what happens to
them (made, reset, stopped) to a file; the plugin itself is the installed one."""

import json
import subprocess
import sys

CONFTEST = """\
import json

from hil import pytest_plugin

EVENTS = %r
made = []


class StandIn:
    def __init__(self):
        made.append(self)
        self.number = len(made)
        self.record("made")

    def record(self, what):
        with open(EVENTS, "a") as out:
            out.write(json.dumps([self.number, what]) + "\\n")

    def remember_config(self):
        pass

    def reset(self):
        self.record("reset")

    def stop(self):
        self.record("stopped")

    def trace_tail(self, count):
        return []

    def dut_log_tail(self, count):
        return []


pytest_plugin.BenchPool._make = lambda self, bench: StandIn()
"""

TESTS = """\
import pytest


def test_first_passes(scenario_bench):
    scenario_bench.target.record("first")


def test_second_fails(scenario_bench):
    scenario_bench.target.record("second")
    assert False, "the bench broke"


def test_third_passes(scenario_bench):
    scenario_bench.target.record("third")


@pytest.fixture
def broken_before(scenario_bench):
    scenario_bench.target.record("fourth")
    raise RuntimeError("a Given step failed")


def test_fourth_fails_in_set_up(broken_before):
    pass


def test_fifth_passes(scenario_bench):
    scenario_bench.target.record("fifth")
"""


def test_a_failed_scenario_stops_the_shared_bench_and_the_next_gets_a_new_one(tmp_path):
    events = tmp_path / "events.jsonl"
    project = tmp_path / "project"
    project.mkdir()
    (project / "conftest.py").write_text(CONFTEST % (str(events),))
    (project / "test_shared.py").write_text(TESTS)
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(project), str(project),
         "--target", "sim"],
        capture_output=True, text=True, timeout=120, cwd=project,
    )  # fmt: skip
    assert run.returncode == 1, run.stdout + run.stderr
    assert "1 failed, 3 passed, 1 error" in run.stdout, run.stdout
    happened = [tuple(json.loads(line)) for line in events.read_text().splitlines()]
    assert happened == [
        (1, "made"), (1, "first"), (1, "reset"),  # a scenario that passed: the bench is reset for the next
        (1, "second"), (1, "stopped"),  # one that failed: stopped, not reset
        (2, "made"), (2, "third"), (2, "reset"),  # the next scenario gets a new bench
        (2, "fourth"), (2, "stopped"),  # a failure while setting up counts the same
        (3, "made"), (3, "fifth"), (3, "reset"), (3, "stopped"),  # the session's end stops the last
    ]  # fmt: skip
