"""`vbms report RUN...`: one self-contained HTML page from a run's bus trace and its scenario reports.

RUN is a trace file (JSON lines from hil/trace.py: `vbms sim --trace`), a scenario report (JUnit XML from
pytest --junitxml, Cucumber JSON from --cucumberjson; see tox.ini), or a directory holding any of them
(*.jsonl, *.xml, *.json).

Everything about the batteries is what the inverter saw: the DEYE side of the trace, decoded with
vbms_core.dissect.  Per battery (DEYE unit), over time:
- SOC, current and pack voltage from its 0x04 replies (registers 0x1008, 0x1001, 0x1000);
- the data age at the inverter: at each poll, the seconds since the unit last answered;
- the communication warning (W31): raised when a unit that has answered misses WARN_AFTER polls in a row
  (no reply, or an exception), cleared by its next reply; the rule of simulators/deye/inverter.py.
The failing scenarios come with the decoded bus trace the pytest plugin attaches to a failure.

The plots are SVG written by hil/svgplot.py rather than by matplotlib: docs/dashboard.md says why.
"""

import argparse
import html
import json
import os
import re
import sys
import tempfile
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterable, Sequence
from typing import Any

from vbms_core import modbus
from vbms_core.dissect import dissect
from vbms_core.errors import RemoteProtocolError

from .bench_control import operator_action
from .svgplot import clock, lane_chart, line_chart

WARN_AFTER = 3  # misses in a row before W31, as the simulated inverter (simulators/deye/inverter.py)
# (key, title, unit, factor from the decoded value, digits)
SERIES = (
    ("soc", "SOC", "%", 0.1, 1),
    ("current", "Current", "A", 0.001, 2),
    ("voltage", "Pack voltage", "V", 0.001, 2),
    ("age", "Data age at the inverter", "s", 1.0, 1),
)
_VALUE_KEYS = {"soc": "soc_permille", "current": "pack_current_ma", "voltage": "pack_voltage_mv"}

Record = dict[str, Any]  # a trace record (hil/trace.py), with "frame" (bytes) added by read_trace
ScenarioKey = tuple[str, str]  # (the report's file stem, the test or scenario)
Counts = dict[str, int]  # tests, failures, errors, skipped of one report


class ReportError(Exception):
    """Input the report cannot use; the message says what and where."""


# --- reading the inputs ------------------------------------------------------------------------


def read_trace(path: str) -> tuple[list[Record], int]:
    """The records of a trace file, in time order, and the number of lines that are not records."""
    try:
        with open(path, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise ReportError("cannot read %s: %s" % (path, getattr(error, "strerror", None) or error)) from None
    records: list[Record]
    first_problem: str | None
    records, bad, first_problem = [], 0, None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if not isinstance(record, dict) or not isinstance(record.get("bus"), str):
                raise ValueError("no bus")
            record["t"] = float(record["t"])
            record["frame"] = bytes.fromhex(record["hex"])
        except (ValueError, KeyError, TypeError) as error:
            bad += 1
            first_problem = first_problem or "line %d: %s" % (number, error)
            continue
        records.append(record)
    if not records:
        if bad:
            raise ReportError(
                "%s is not a bus trace: no line is a trace record (%s); write one with `vbms sim --trace FILE`"
                % (path, first_problem)
            )
        raise ReportError("%s is empty: the trace holds no frames" % path)
    records.sort(key=lambda record: record["t"])
    return records, bad


def _stem(path: str) -> str:
    """features-des.xml and features-des.json describe the same run: one key for both."""
    return os.path.splitext(os.path.basename(path))[0]


class Scenario:
    """One test or scenario, merged from the JUnit and Cucumber reports of one run (same file stem)."""

    __slots__ = ("key", "name", "where", "status", "steps", "message", "traceback", "trace", "log")

    def __init__(self, key: ScenarioKey, name: str, where: str) -> None:
        self.key = key
        self.name = name
        self.where = where
        self.status = "passed"
        self.steps: list[tuple[str, str, str]] = []  # (keyword, text, status)
        self.message = ""  # pytest's "E" lines: what went wrong
        self.traceback = ""
        self.trace: list[str] = []  # decoded trace lines, as hil.trace.format_record wrote them
        self.log = ""


_SECTION = re.compile(r"^-{3,} (.+?) -{3,}$", re.MULTILINE)


def _split_failure(scenario: Scenario, text: str | None) -> None:
    """pytest's failure text; the sections the plugin adds ('bus trace ...', '... log ...') taken apart."""
    parts = _SECTION.split(text or "")
    scenario.traceback = parts[0].strip("\n")
    errors = [line[1:].strip() for line in scenario.traceback.splitlines() if line.startswith("E ")]
    scenario.message = "\n".join(errors) or scenario.message or scenario.traceback
    for title, body in zip(parts[1::2], parts[2::2], strict=True):
        if title.startswith("bus trace"):
            scenario.trace = [line for line in body.strip("\n").splitlines() if line.strip()]
        elif "log" in title:
            scenario.log = body.strip("\n")


def read_junit(path: str, scenarios: dict[ScenarioKey, Scenario]) -> Counts:
    try:
        root = ElementTree.parse(path).getroot()
    except (OSError, ElementTree.ParseError) as error:
        raise ReportError("%s is not a JUnit XML report: %s" % (path, error)) from None
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for case in root.iter("testcase"):
        counts["tests"] += 1
        name = case.get("name", "?")
        key = (_stem(path), name)
        scenario = scenarios.setdefault(key, Scenario(key, name, case.get("classname", "")))
        for kind, status in (("failure", "failed"), ("error", "error"), ("skipped", "skipped")):
            element = case.find(kind)
            if element is None:
                continue
            counts[kind if kind == "skipped" else kind + "s"] += 1
            if status != "skipped":
                scenario.status = status
                scenario.message = element.get("message", "")
                _split_failure(scenario, element.text)
            elif scenario.status == "passed":
                scenario.status = "skipped"
    return counts


def read_cucumber(path: str, scenarios: dict[ScenarioKey, Scenario]) -> Counts:
    try:
        with open(path, encoding="utf-8") as handle:
            features = json.load(handle)
        elements = [(feature, element) for feature in features for element in feature["elements"]]
    except (OSError, ValueError, TypeError, KeyError) as error:
        raise ReportError("%s is not a Cucumber JSON report: %s" % (path, error)) from None
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for feature, element in elements:
        counts["tests"] += 1
        key = (_stem(path), element.get("id", element.get("name", "?")))
        scenario = scenarios.setdefault(key, Scenario(key, key[1], ""))
        scenario.name = element.get("name", scenario.name)
        scenario.where = feature.get("uri", "")
        scenario.steps = []
        for step in element.get("steps", ()):
            result = step.get("result", {})
            status = result.get("status", "?")
            scenario.steps.append((step.get("keyword", ""), step.get("name", ""), status))
            if status == "failed":
                scenario.status = "failed"
                counts["failures"] += 1
                _split_failure(scenario, result.get("error_message", ""))
    return counts


def read_inputs(
    paths: Sequence[str],
) -> tuple[list[Record], int, dict[ScenarioKey, Scenario], list[tuple[str, Counts]], list[str]]:
    """(trace records, unreadable lines, scenarios by key, report summaries, notes) from RUN paths."""
    records: list[Record]
    scenarios: dict[ScenarioKey, Scenario]
    reports: list[tuple[str, Counts]]
    notes: list[str]
    records, bad, scenarios, reports, notes = [], 0, {}, [], []
    for path in paths:
        if not os.path.exists(path):
            raise ReportError("%s does not exist; give a trace (vbms sim --trace FILE) or a reports directory" % path)
        if os.path.isdir(path):
            names = sorted(os.listdir(path))
            files = [os.path.join(path, name) for name in names if name.endswith((".jsonl", ".xml", ".json"))]
            if not files:
                raise ReportError("%s holds no trace (*.jsonl) and no scenario report (*.xml, *.json)" % path)
        else:
            files = [path]
        for name in files:
            if name.endswith(".xml"):
                reports.append((name, read_junit(name, scenarios)))
            elif name.endswith(".json") and _is_cucumber(name):
                reports.append((name, read_cucumber(name, scenarios)))
            elif name.endswith(".json") and os.path.isdir(path):
                notes.append("%s skipped: not a Cucumber report" % name)
            else:
                more, unreadable = read_trace(name)
                records.extend(more)
                bad += unreadable
    if not records and not reports:
        raise ReportError("nothing to report in %s: no trace and no scenario report" % ", ".join(paths))
    records.sort(key=lambda record: record["t"])
    return records, bad, scenarios, reports, notes


def _is_cucumber(path: str) -> bool:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read(1) == "["
    except OSError:
        return False


# --- what the inverter saw -------------------------------------------------------------------------


class UnitHistory:
    """One DEYE unit (battery) as the inverter saw it."""

    __slots__ = (
        "unit",
        "polls",
        "answers",
        "misses",
        "exceptions",
        "identity",
        "samples",
        "ages",
        "warnings",
        "_last_ok_s",
        "_misses_in_row",
    )

    def __init__(self, unit: int) -> None:
        self.unit = unit
        self.polls = 0
        self.answers = 0
        self.misses = 0
        self.exceptions: list[tuple[float, int | None]] = []  # (t, code)
        self.identity: dict[str, Any] | None = None
        # (t, {"soc": permille, "current": mA, "voltage": mV}), each value as decoded (None: absent)
        self.samples: list[tuple[float, dict[str, Any]]] = []
        self.ages: list[tuple[float, float]] = []  # (t, seconds since the last reply)
        # [start, end or None]: a pair changed in place, its start a float (a list type cannot say which item)
        self.warnings: list[list[Any]] = []
        self._last_ok_s: float | None = None
        self._misses_in_row = 0

    def poll(self, t_s: float, reply: Record | None) -> None:
        """A 0x04 poll at t_s and its reply (a dissected response, an exception, or None for silence)."""
        self.polls += 1
        if self._last_ok_s is not None:
            self.ages.append((t_s, t_s - self._last_ok_s))
        if reply is not None and reply["direction"] == "response":
            values = reply.get("values", {})
            self.samples.append((reply["t"], {key: values.get(name) for key, name in _VALUE_KEYS.items()}))
            self.answers += 1
            self._last_ok_s = reply["t"]
            self._misses_in_row = 0
            if self.warnings and self.warnings[-1][1] is None:
                self.warnings[-1][1] = reply["t"]
            return
        if reply is not None:
            self.exceptions.append((reply["t"], reply.get("exception_code")))
        self.misses += 1
        self._misses_in_row += 1
        warned = self.warnings and self.warnings[-1][1] is None
        if self.answers and self._misses_in_row >= WARN_AFTER and not warned:
            self.warnings.append([t_s, None])

    def series(self, key: str) -> list[tuple[float, float]]:
        if key == "age":
            return list(self.ages)
        return [(t, values[key]) for t, values in self.samples if values[key] is not None]


class Analysis:
    __slots__ = ("t0", "t1", "units", "inverter_bus", "buses", "events", "operator", "unmatched")

    def __init__(self) -> None:
        self.t0 = 0.0
        self.t1 = 0.0
        self.units: dict[int, UnitHistory] = {}
        self.inverter_bus: str | None = None
        self.buses: dict[str, dict[str, int]] = {}  # name -> {"frames", "faults", "collisions", "undecodable"}
        self.events: list[tuple[float, str, str]] = []  # (t, bus, text): injected faults and collisions
        # (t, text): what a person did on the bench control (hil/bench_control.py)
        self.operator: list[tuple[float, str]] = []
        self.unmatched = 0  # replies to no pending request


def _is_inverter_record(record: Record) -> bool:
    decoded = record.get("decoded")
    return record.get("protocol") == "deye" or (isinstance(decoded, dict) and "battery" in decoded)


def analyze(records: Sequence[Record]) -> Analysis:
    analysis = Analysis()
    analysis.t0 = records[0]["t"]
    analysis.t1 = records[-1]["t"]
    for record in records:
        action = operator_action(record)
        if action is not None:
            analysis.operator.append((record["t"], _operator_text(action)))
            continue
        stats = analysis.buses.setdefault(record["bus"], {"frames": 0, "faults": 0, "collisions": 0, "undecodable": 0})
        stats["frames"] += 1
        if record.get("faults") or record.get("collision"):
            stats["faults"] += len(record.get("faults") or ())
            stats["collisions"] += 1 if record.get("collision") else 0
            what = list(record.get("faults") or ()) + (["collision"] if record.get("collision") else [])
            analysis.events.append((record["t"], record["bus"], ", ".join(what)))
        if analysis.inverter_bus is None and _is_inverter_record(record):
            analysis.inverter_bus = record["bus"]
    if analysis.inverter_bus is None:
        return analysis
    pending: tuple[float, int, int] | None = None  # (t, unit, function) of the request waiting for its reply
    for record in records:
        if record["bus"] != analysis.inverter_bus:
            continue
        try:
            frame = dissect("deye", record["frame"])
        except RemoteProtocolError:
            analysis.buses[record["bus"]]["undecodable"] += 1  # noise, a collision, a bad CRC: no reply
            continue
        frame["t"] = record["t"]
        if frame["direction"] == "request":
            _close(analysis, pending, None)
            pending = (record["t"], frame["unit"], frame["function"])
        elif pending is not None and frame["unit"] == pending[1] and frame["function"] & 0x7F == pending[2]:
            _close(analysis, pending, frame)
            pending = None
        else:
            analysis.unmatched += 1
    return analysis  # a request still pending when the trace ends is left out: its answer is unknown


def _operator_text(action: dict[str, Any]) -> str:
    params = " ".join("%s=%s" % (key, value) for key, value in action["params"].items() if value is not None)
    return "%s %s%s" % (action["op"], params, " (replayed)" if action.get("replayed") else "")


def _close(analysis: Analysis, pending: tuple[float, int, int] | None, reply: Record | None) -> None:
    if pending is None:
        return
    t_s, unit, function = pending
    history = analysis.units.get(unit)
    if history is None:
        history = analysis.units[unit] = UnitHistory(unit)
    if function == modbus.READ_INPUT:
        history.poll(t_s, reply)
    elif function == modbus.REPORT_ID and reply is not None and "identity" in reply:
        history.identity = reply["identity"]


# --- the page ------------------------------------------------------------------------------------------

LEGEND = (
    "Green: the unit answers; red: the W31 communication warning (%d polls missed in a row); purple: an exception "
    "reply; orange: an injected bus fault or a collision; blue: an operator action on the bench control. Hover "
    "for details. Time is from the start of the trace." % WARN_AFTER
)


def warning_lanes(analysis: Analysis) -> str:
    """The timeline: one lane per unit (answering, W31, exceptions) and one for the bus events."""
    t0, t1 = analysis.t0, analysis.t1
    lanes: list[tuple[str, list[tuple[str, float, float, str]]]] = []
    for history in sorted(analysis.units.values(), key=lambda h: h.unit):
        if history.samples:
            spans = [("ok", history.samples[0][0], t1, "answering")]
        else:
            spans = [("never", t0, t1, "never answered (%d polls)" % history.polls)]
        for start, end in history.warnings:
            end = t1 if end is None else end
            when = "%s to %s" % (clock(start - t0), clock(end - t0))
            spans.append(("warn", start, end, "W31 Battery_comm_warn: battery %d, %s" % (history.unit + 1, when)))
        for t_s, code in history.exceptions:
            spans.append(("exc", t_s, t_s, "exception %s at %s" % (code, clock(t_s - t0))))
        lanes.append(("battery %d" % (history.unit + 1), spans))
    events = [("event", t_s, t_s, "%s: %s at %s" % (bus, what, clock(t_s - t0))) for t_s, bus, what in analysis.events]
    lanes.append(("bus events", events))
    if analysis.operator:
        lanes.append(
            ("operator", [("op", t_s, t_s, "%s at %s" % (text, clock(t_s - t0))) for t_s, text in analysis.operator])
        )
    return lane_chart(lanes, t0, t1)


STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:0 auto;max-width:1560px;padding:0 1em 2em;color:#1f2328;background:#fff}
h1{font-size:1.5em}h2{margin-top:1.6em;border-bottom:1px solid #d9dce0}h3{margin:.2em 0;font-size:1.05em}
table{border-collapse:collapse}td,th{padding:.2em .8em;text-align:left;border-bottom:1px solid #eee}
.muted{color:#626a73}.battery{margin:1em 0 1.5em}
.charts{display:grid;grid-template-columns:repeat(auto-fill,minmax(290px,1fr));gap:.5em}
svg{width:100%;display:block;font-size:11px;fill:#626a73;background:#f8f9fa;border-radius:4px}
svg .title{fill:#1f2328;font-weight:600;font-size:12px}svg .grid{stroke:#e2e5e9}
svg polyline{fill:none;stroke:#1f9d74;stroke-width:1.6;stroke-linejoin:round}svg circle{fill:#1f9d74}
svg .warn{fill:#d0402f;opacity:.25}.lanes .warn{opacity:.9}svg .ok{fill:#3aa866;opacity:.55}
svg .never{fill:#c9cdd2}svg .exc{fill:#7a3e9d}svg .event{fill:#d08a16}svg .op{fill:#2f6fd6}
.failed,.error{color:#d0402f;font-weight:600}.passed{color:#3aa866}.skipped{color:#626a73}
details{margin:.6em 0;padding:.4em .8em;border:1px solid #e6c3bf;border-radius:4px}summary{cursor:pointer}
pre{background:#f6f8fa;padding:.6em;overflow-x:auto;font-size:12px}pre .bad{color:#d0402f;font-weight:600}
ol.steps li.failed{font-weight:600}
"""


def _battery_title(history: UnitHistory) -> str:
    title = "Battery %d (DEYE unit 0x%02X)" % (history.unit + 1, history.unit)
    identity = history.identity
    if identity:
        title += " \u00b7 %s \u00b7 serial %s" % (identity.get("model", "?"), identity.get("serial", "?"))
    return title


def _battery_section(history: UnitHistory, analysis: Analysis) -> str:
    stats = "%d polls, %d answered, %d missed, %d exceptions, %d W31 warnings" % (
        history.polls,
        history.answers,
        history.misses,
        len(history.exceptions),
        len(history.warnings),
    )
    charts = "".join(
        line_chart(
            [(t, value * factor) for t, value in history.series(key)],
            analysis.t0,
            analysis.t1,
            title,
            unit,
            digits,
            [(start, end, "W31 from %s" % clock(start - analysis.t0)) for start, end in history.warnings],
            key,
        )
        for key, title, unit, factor, digits in SERIES
    )
    title = html.escape(_battery_title(history))
    return (
        '<section class="battery" data-unit="%d"><h3>%s</h3><p class="muted">%s</p><div class="charts">%s</div>'
        "</section>" % (history.unit, title, stats, charts)
    )


def _trace_block(lines: Iterable[str]) -> str:
    marked = []
    for line in lines:
        bad = "!!" in line or "FAULT" in line or "COLLISION" in line
        marked.append('<span class="bad">%s</span>' % html.escape(line) if bad else html.escape(line))
    return "<pre>%s</pre>" % "\n".join(marked)


def _scenario_block(scenario: Scenario) -> str:
    where = "%s \u00b7 %s" % (scenario.key[0], scenario.where) if scenario.where else scenario.key[0]
    parts = [
        '<details class="scenario" open><summary><span class="%s">%s</span> %s <span class="muted">%s</span>'
        "</summary>" % (scenario.status, scenario.status.upper(), html.escape(scenario.name), html.escape(where))
    ]
    if scenario.steps:
        parts.append('<ol class="steps">')
        for keyword, text, status in scenario.steps:
            parts.append(
                '<li class="%s">%s %s <span class="%s">(%s)</span></li>'
                % (status, html.escape(keyword), html.escape(text), status, status)
            )
        parts.append("</ol>")
    if scenario.message:
        parts.append("<h4>Failure</h4><pre>%s</pre>" % html.escape(scenario.message))
    if scenario.traceback and scenario.traceback != scenario.message:
        parts.append("<details><summary>Traceback</summary><pre>%s</pre></details>" % html.escape(scenario.traceback))
    if scenario.trace:
        count = len(scenario.trace)
        parts.append("<h4>Decoded bus trace (last %d frames)</h4>%s" % (count, _trace_block(scenario.trace)))
    else:
        parts.append('<p class="muted">No bus trace was attached to this failure.</p>')
    if scenario.log:
        parts.append("<h4>Device under test log</h4><pre>%s</pre>" % html.escape(scenario.log))
    parts.append("</details>")
    return "".join(parts)


def render(
    sources: Sequence[str],
    records: Sequence[Record],
    bad_lines: int,
    scenarios: dict[ScenarioKey, Scenario],
    reports: Iterable[tuple[str, Counts]],
    notes: Iterable[str],
) -> str:
    out = [
        '<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" '
        'content="width=device-width, initial-scale=1"><title>vbms report</title><style>%s</style></head><body>'
        % STYLE,
        "<h1>vbms run report</h1>",
        '<p class="muted">From %s</p>' % html.escape(", ".join(sources)),
    ]
    for note in notes:
        out.append('<p class="muted">%s</p>' % html.escape(note))
    failing = [s for s in scenarios.values() if s.status in ("failed", "error")]
    if records:
        analysis = analyze(records)
        out.append(_trace_summary(analysis, records, bad_lines))
        answered = [h for h in sorted(analysis.units.values(), key=lambda h: h.unit) if h.answers or h.warnings]
        if analysis.inverter_bus is None:
            out.append("<p>The trace holds no DEYE inverter traffic: no battery to plot.</p>")
        else:
            out.append(
                '<h2 id="warnings">The inverter\'s warnings</h2><p class="muted">%s</p>%s'
                % (LEGEND, warning_lanes(analysis))
            )
            out.append('<h2 id="batteries">Batteries as the inverter saw them</h2>')
            out.extend(_battery_section(history, analysis) for history in answered)
            silent = [h.unit + 1 for h in analysis.units.values() if not h.answers]
            if silent:
                out.append('<p class="muted">Never answered: battery %s.</p>' % ", ".join(map(str, sorted(silent))))
    if reports:
        out.append(
            '<h2 id="scenarios">Scenarios</h2><table><tr><th>report</th><th>tests</th><th>failures</th>'
            "<th>errors</th><th>skipped</th></tr>"
        )
        for path, counts in reports:
            out.append(
                "<tr><td>%s</td><td>%d</td><td>%d</td><td>%d</td><td>%d</td></tr>"
                % (
                    html.escape(os.path.basename(path)),
                    counts["tests"],
                    counts["failures"],
                    counts["errors"],
                    counts["skipped"],
                )
            )
        out.append("</table>")
        out.append('<h2 id="failing">Failing scenarios (%d)</h2>' % len(failing))
        out.extend(_scenario_block(scenario) for scenario in failing)
        if not failing:
            out.append('<p class="passed">No scenario failed.</p>')
    out.append("</body></html>")
    return "\n".join(out)


def _trace_summary(analysis: Analysis, records: Sequence[Record], bad_lines: int) -> str:
    rows = "".join(
        "<tr><td>%s</td><td>%d</td><td>%d</td><td>%d</td><td>%d</td></tr>"
        % (html.escape(name), s["frames"], s["faults"], s["collisions"], s["undecodable"])
        for name, s in sorted(analysis.buses.items())
    )
    note = " %d unreadable lines were skipped." % bad_lines if bad_lines else ""
    return (
        "<p>%d frames over %s (m:ss).%s</p><table><tr><th>bus</th><th>frames</th><th>faults</th><th>collisions</th>"
        "<th>undecodable</th></tr>%s</table>" % (len(records), clock(analysis.t1 - analysis.t0), note, rows)
    )


def write_atomically(path: str, text: str) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(prefix=".vbms-report-", suffix=".html", dir=directory)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


def default_out(path: str) -> str:
    if os.path.isdir(path):
        return os.path.join(path, "report.html")
    return os.path.splitext(path)[0] + ".html"


def run(args: argparse.Namespace) -> int:
    try:
        records, bad, scenarios, reports, notes = read_inputs(args.run)
        page = render(args.run, records, bad, scenarios, reports, notes)
        out = args.out or default_out(args.run[0])
        try:
            write_atomically(out, page)
        except OSError as error:
            raise ReportError("cannot write %s: %s" % (out, error.strerror or error)) from None
    except ReportError as error:
        sys.stderr.write("vbms report: %s\n" % error)
        return 2
    failing = sum(1 for s in scenarios.values() if s.status in ("failed", "error"))
    sys.stdout.write("wrote %s (%d frames, %d failing scenarios)\n" % (out, len(records), failing))
    return 0
