"""`vbms report`: the series, warnings and failing scenarios it shows, from traces built with the project's
own DEYE encoders (vbms_core.deye, vbms_core.modbus) and from reports written by a real pytest run."""

import json
import re
import subprocess
import sys
from types import SimpleNamespace

import pytest
from chromium import DESKTOP, launched, screenshot

from hil import report
from hil.cli import main
from hil.trace import Trace, format_record
from vbms_core import deye, modbus

INVERTER_BUS = SimpleNamespace(name="inverter", protocol="deye")
POLL_PERIOD_S = 1.0
REPLY_DELAY_S = 0.05


def registers(pack_voltage_10mv, current_10ma, soc_permille):
    """The 25 DEYE registers with the three plotted ones set (deye-byd-modbus.md 1.3: 0x1000, 0x1001, 0x1008)."""
    values = [0] * deye.REGISTER_COUNT
    values[0x1000 - deye.FIRST_REGISTER] = pack_voltage_10mv
    values[0x1001 - deye.FIRST_REGISTER] = current_10ma & 0xFFFF  # signed, two's complement
    values[0x1008 - deye.FIRST_REGISTER] = soc_permille
    return values


def poll(trace, t_s, unit, reply):
    request = modbus.encode_read_request(unit, modbus.READ_INPUT, deye.FIRST_REGISTER, deye.REGISTER_COUNT)
    trace.record(INVERTER_BUS, t_s, "deye", request)
    if reply is not None:
        trace.record(INVERTER_BUS, t_s + REPLY_DELAY_S, "dut", reply)


@pytest.fixture
def synthetic_trace(tmp_path):
    """Ten poll cycles of units 0 and 1.  Unit 0 answers every poll but the sixth (an exception); unit 1
    answers polls 0-3, is silent for 4-8 (W31 from its third miss, poll 6) and answers poll 9 again."""
    path = tmp_path / "run.jsonl"
    trace = Trace(str(path), {"inverter": "deye"})
    identity = deye.encode_identity("BYD PRO 2.5", "SERIAL-0")
    trace.record(INVERTER_BUS, 0.0, "deye", modbus.encode_report_id_request(0))
    trace.record(INVERTER_BUS, 0.02, "dut", modbus.encode_report_id_response(0, identity))
    for cycle in range(10):
        t_s = 1.0 + cycle * POLL_PERIOD_S
        if cycle == 5:
            reply = modbus.encode_exception(0, modbus.READ_INPUT, modbus.DEVICE_FAILURE)
        else:
            reply = modbus.encode_read_response(0, modbus.READ_INPUT, registers(5330 + cycle, -283, 820 - cycle))
        poll(trace, t_s, 0, reply)
        answering = cycle < 4 or cycle == 9
        reply = modbus.encode_read_response(1, modbus.READ_INPUT, registers(5200, 150, 500)) if answering else None
        poll(trace, t_s + 0.5, 1, reply)
    trace.close()
    return path


def test_series_are_the_register_values_the_inverter_read(synthetic_trace):
    records, bad = report.read_trace(str(synthetic_trace))
    analysis = report.analyze(records)
    assert bad == 0
    assert sorted(analysis.units) == [0, 1]
    unit0 = analysis.units[0]
    answered = [cycle for cycle in range(10) if cycle != 5]
    reply_times = [pytest.approx(1.0 + cycle + REPLY_DELAY_S) for cycle in answered]
    assert unit0.series("soc") == list(zip(reply_times, [820 - cycle for cycle in answered], strict=True))
    assert unit0.series("voltage") == list(zip(reply_times, [53300 + 10 * cycle for cycle in answered], strict=True))
    assert [value for _, value in unit0.series("current")] == [-2830] * 9
    assert unit0.identity["model"] == "BYD PRO 2.5" and unit0.identity["serial"] == "SERIAL-0"
    assert (unit0.polls, unit0.answers, unit0.misses) == (10, 9, 1)
    assert [code for _, code in unit0.exceptions] == [modbus.DEVICE_FAILURE]
    assert unit0.warnings == []  # one miss is not a warning

    unit1 = analysis.units[1]
    # data age at each poll after the first: seconds since the last reply (1.5 + cycle + 0.05 for cycles 0-3)
    ages = [age for _, age in unit1.series("age")]
    assert ages == pytest.approx([0.95, 0.95, 0.95, 0.95, 1.95, 2.95, 3.95, 4.95, 5.95])
    # silent at cycles 4..8: the third miss (cycle 6, t = 7.5) raises W31; the reply at cycle 9 clears it
    assert unit1.warnings == [[pytest.approx(7.5), pytest.approx(10.55)]]


def chart_points(page_html, unit, series):
    section = re.search(r'<section class="battery" data-unit="%d">(.*?)</section>' % unit, page_html, re.S).group(1)
    chart = re.search(r'<svg class="chart" data-series="%s".*?</svg>' % series, section, re.S).group(0)
    polyline = re.search(r'<polyline points="([^"]*)"', chart)
    return [tuple(map(float, pair.split(","))) for pair in polyline.group(1).split()] if polyline else [], chart


def test_the_page_plots_every_reply_and_shades_the_warning(synthetic_trace, tmp_path, capsys):
    out = tmp_path / "run.html"
    assert main(["report", str(synthetic_trace), "--out", str(out)]) == 0
    assert "wrote %s" % out in capsys.readouterr().out
    page = out.read_text()
    points, chart = chart_points(page, 0, "soc")
    assert len(points) == 9
    ys = [y for _, y in points]
    assert ys == sorted(ys) and ys[0] < ys[-1]  # SOC falls 82.0 -> 81.1 %: the line goes down the chart
    xs = [x for x, _ in points]
    assert xs == sorted(xs)
    assert "SOC: 81.1 %" in chart
    points, chart = chart_points(page, 0, "current")
    assert "Current: -2.83 A" in chart and len(points) == 9
    points, chart = chart_points(page, 1, "voltage")
    assert len(points) == 5 and 'class="warn"' in chart
    assert "W31 Battery_comm_warn: battery 2, 0:08 to 0:11" in page  # 7.5 s to 10.55 s
    assert "BYD PRO 2.5 \u00b7 serial SERIAL-0" in page


FEATURE = """\
Feature: The report's own check
  Scenario: a battery that answers
    Given a battery
    Then it answers

  Scenario: a battery that never answers
    Given a battery
    Then it answers with 1 as its unit
"""

STEPS = """\
from pytest_bdd import given, parsers, scenarios, then

scenarios("demo.feature")


@given("a battery", target_fixture="unit")
def a_battery():
    return 0


@then("it answers")
def it_answers(unit):
    assert unit == 0


@then(parsers.parse("it answers with {expected:d} as its unit"))
def it_answers_with(unit, expected):
    assert unit == expected, "battery %d stayed silent" % (expected + 1)
"""

# What the vbms pytest plugin attaches to a failure (hil/pytest_plugin.py): the decoded bus trace, as a
# section of the failure text so that JUnit XML and Cucumber JSON carry it.
CONFTEST = """\
import pytest

TRACE = %r


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed and call.when == "call":
        report.longrepr.addsection("bus trace (last %%d frames, decoded)" %% len(TRACE), "\\n".join(TRACE))
"""


@pytest.fixture
def scenario_reports(tmp_path, synthetic_trace):
    """JUnit XML and Cucumber JSON from a real pytest-bdd run with one passing and one failing scenario."""
    records, _ = report.read_trace(str(synthetic_trace))
    trace_lines = [format_record(record) for record in records[-4:]]
    project = tmp_path / "scenarios"
    project.mkdir()
    (project / "demo.feature").write_text(FEATURE)
    (project / "test_demo.py").write_text(STEPS)
    (project / "conftest.py").write_text(CONFTEST % (trace_lines,))
    reports = tmp_path / "reports"
    reports.mkdir()  # pytest-bdd does not create the folder of --cucumberjson
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(project), str(project),
         "--junitxml", str(reports / "demo.xml"), "--cucumberjson", str(reports / "demo.json")],
        capture_output=True, text=True, timeout=120, cwd=project,
    )  # fmt: skip
    assert run.returncode == 1, run.stdout + run.stderr  # one scenario fails, as intended
    assert "1 failed, 1 passed" in run.stdout
    return reports, trace_lines


def test_a_failing_scenario_is_listed_with_its_decoded_trace(scenario_reports, synthetic_trace, tmp_path):
    reports, trace_lines = scenario_reports
    out = tmp_path / "report.html"
    assert main(["report", str(synthetic_trace), str(reports), "--out", str(out)]) == 0
    page = out.read_text()
    failing = page.split('<h2 id="failing">', 1)[1]
    assert failing.startswith("Failing scenarios (1)")
    assert "a battery that never answers" in failing
    assert "a battery that answers</" not in failing  # the passing one is not listed
    assert "it answers with 1 as its unit" in failing and 'class="failed">(failed)' in failing
    assert "<h4>Failure</h4><pre>AssertionError: battery 2 stayed silent\nassert 0 == 1</pre>" in failing
    assert "<summary>Traceback</summary>" in failing
    for line in trace_lines:
        assert line.replace("'", "&#x27;").replace('"', "&quot;") in failing
    assert "<td>demo.xml</td><td>2</td><td>1</td>" in page
    with launched() as browser:
        view = browser.new_page(viewport=DESKTOP)
        view.goto(out.as_uri())
        assert view.locator("section.battery").count() == 2
        assert view.locator("details.scenario").count() == 1
        screenshot(view, "report.png")


def test_only_reports_without_a_trace(scenario_reports, tmp_path):
    reports, _ = scenario_reports
    assert main(["report", str(reports)]) == 0
    page = (reports / "report.html").read_text()
    assert "Failing scenarios (1)" in page and "data-unit" not in page


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "does not exist"),
        ("", "is empty"),
        ("\n\n", "is empty"),
        ("hello\nworld\n", "is not a bus trace"),
        ('{"t": 1, "bus": "inverter", "hex": "zz"}\n', "is not a bus trace"),
        ("[1, 2]\n", "is not a bus trace"),
    ],
)
def test_bad_input_is_a_clear_error(tmp_path, capsys, content, message):
    path = tmp_path / "run.jsonl"
    if content is not None:
        path.write_text(content)
    assert main(["report", str(path), "--out", str(tmp_path / "out.html")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("vbms report: %s" % path) and message in err and "Traceback" not in err
    assert not (tmp_path / "out.html").exists()


def test_bad_reports_are_clear_errors(tmp_path, capsys):
    (tmp_path / "broken.xml").write_text("<testsuites><testcase")
    assert main(["report", str(tmp_path)]) == 2
    assert "broken.xml is not a JUnit XML report" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["report", str(empty)]) == 2
    assert "holds no trace" in capsys.readouterr().err


def test_a_truncated_last_line_is_skipped_and_said(synthetic_trace, tmp_path):
    lines = synthetic_trace.read_text().splitlines()
    synthetic_trace.write_text("\n".join(lines) + "\n" + lines[-1][:20])
    out = tmp_path / "run.html"
    assert main(["report", str(synthetic_trace), "--out", str(out)]) == 0
    assert "1 unreadable lines were skipped" in out.read_text()


def test_long_series_are_thinned_but_keep_their_extremes():
    from hil.svgplot import MAX_POINTS, decimate

    points = [(float(t), 50.0) for t in range(10000)]
    points[1234] = (1234.0, 100.0)  # one spike and one dip must survive the thinning
    points[4321] = (4321.0, -50.0)
    kept = decimate(points)
    assert len(kept) <= MAX_POINTS
    assert (1234.0, 100.0) in kept and (4321.0, -50.0) in kept
    assert [t for t, _ in kept] == sorted(t for t, _ in kept)
    assert decimate(points[:10]) == points[:10]


def test_operator_actions_are_on_the_time_axis(tmp_path, capsys):
    """What a person did on the bench control (hil/bench_control.py) shows on the warnings' time axis."""
    from hil.bench_control import OPERATOR, OPERATOR_CHANNEL

    path = tmp_path / "run.jsonl"
    trace = Trace(str(path), {"inverter": "deye"})
    for cycle in range(4):
        reply = modbus.encode_read_response(0, modbus.READ_INPUT, registers(5330, 0, 800))
        poll(trace, 1.0 + cycle, 0, reply)
    action = {"op": "set_soc", "params": {"slot": 0, "soc_pct": 40}, "result": None}
    trace.record(OPERATOR_CHANNEL, 2.5, OPERATOR, json.dumps(action).encode())
    trace.close()
    out = tmp_path / "run.html"
    assert main(["report", str(path), "--out", str(out)]) == 0
    page = out.read_text()
    assert "set_soc slot=0 soc_pct=40 at 0:02" in page  # 1.5 s after the first record, in whole seconds
    assert page.count('class="op"') == 1
