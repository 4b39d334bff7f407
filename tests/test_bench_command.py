"""`vbms bench`'s arguments and its report when a run gives nothing to measure: a clear message and an
exit status, never a traceback (the measurements themselves are the benchmarks' job, not a test's)."""

import argparse

import pytest

from hil import benchmarks
from hil.cli import main


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["codecs", "--seconds", "0"], "--seconds must be positive, not 0"),
        (["wires", "--requests", "-1"], "--requests must be 0 or more, not -1"),
        (["wires", "--requests", "many"], "--requests must be a whole number, not 'many'"),
        (["des", "--seconds", "-600"], "--seconds must be positive, not -600"),
        (["des", "--repeat", "0"], "--repeat must be positive, not 0"),
        (["des", "--repeat", "1.5"], "--repeat must be a whole number, not '1.5'"),
        (["proxy", "--seconds", "nan"], "--seconds must be positive, not nan"),
    ],
)
def test_invalid_bench_arguments_exit_2_with_a_clear_message(arguments, message, capsys):
    with pytest.raises(SystemExit) as exit:
        main(["bench"] + arguments)
    assert exit.value.code == 2
    assert message in capsys.readouterr().err


def test_a_proxy_run_without_a_single_answer_says_so_instead_of_failing(monkeypatch, capsys):
    def silent_run(batteries, seconds):
        return {"batteries": batteries, "replies": 0, "latency_ms": None, "data_age_ms": None,
                "wire_bound_ms": 100.0, "oldest_over_bound": None}  # fmt: skip

    monkeypatch.setattr(benchmarks, "proxy_bench", silent_run)
    status = benchmarks.run_proxy(argparse.Namespace(seconds=0.1, json=False))
    assert status == 1
    assert "with 4 batteries no inverter read was answered in 0.1 s" in capsys.readouterr().err


def test_a_proxy_run_whose_answers_carry_no_battery_data_says_so(monkeypatch, capsys):
    def answers_without_data(batteries, seconds):
        return {"batteries": batteries, "replies": 12, "latency_ms": {"p50": 1.0, "p99": 2.0, "max": 3.0},
                "data_age_ms": None, "wire_bound_ms": 100.0, "oldest_over_bound": None}  # fmt: skip

    monkeypatch.setattr(benchmarks, "proxy_bench", answers_without_data)
    assert benchmarks.run_proxy(argparse.Namespace(seconds=2.0, json=True)) == 1
    assert "with 4 batteries no answer carried a battery's data in 2 s" in capsys.readouterr().err
