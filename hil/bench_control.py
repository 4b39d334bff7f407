"""Bench control: a running Simulation (`vbms sim`) changed by a person, over HTTP, and replayed.

BenchControl(simulation, port).start() serves, on 127.0.0.1 (the bench's own server, not the device
under test's):

  GET  /                      the bench control page (hil/web/bench.html, bench.js, bench.css)
  GET  /api/state             the bench now: batteries (model and what the inverter sees), buses and
                              their fault rules, the inverter's profile, warnings and Li-BMS rows
  GET  /api/operations        the operations below with their parameters
  GET  /api/traffic           the decoded bus traffic: ?after=N (records after the Nth; default: the
                              last `limit`), ?limit=M (1..500, default 200), ?bus=NAME
  POST /api/<operation>       an operation, its parameters a JSON object: {"slot": 0, "soc_pct": 40}

A parameter that is missing, unknown, of the wrong type or out of range is a 400 whose message says
which and what is allowed; an unknown path is a 404.  The operations are hil/operations.py's, the ones
the scenarios' targets use, so they mean the same thing in both.

Every operation done is recorded in the bench's trace (hil/trace.py) as a record on the "operator"
channel at the trace's time: {"t", "bus": "operator", "from": "operator", "hex": <the action as UTF-8
JSON>}, the action being {"op": NAME, "params": {...}, "result": {...}}.  replay(actions, control)
does the same operations at the same trace times on a fresh bench (`vbms sim --replay TRACE`).
"""

from __future__ import annotations

import json
import math
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import TYPE_CHECKING, Any, Literal, Self, overload

from simulators.deye.profile import PROFILE_KINDS

from . import operations
from .trace import with_summary
from .wires.faults import FAULT_KINDS, BusError, Fault

if TYPE_CHECKING:
    from simulators.deye.inverter import DeyeInverter
    from simulators.deye.profile import PowerProfile

    from .benchfile import BatterySpec
    from .sim import Simulation

OPERATOR = "operator"  # the trace channel of operator records
TRAFFIC_LIMIT = 200  # records per /api/traffic answer, by default
TRAFFIC_MAX = 500  # and at most
HEX_SHOWN = 96  # hex digits of a frame in a traffic record (48 bytes; "bytes" says how long it was)
BODY_MAX = 16 * 1024
# The page's files; style.css is the dashboard's (its look, read only).
STATIC = {"bench.html": "text/html; charset=utf-8", "bench.js": "text/javascript", "bench.css": "text/css",
          "style.css": "text/css"}  # fmt: skip
_REQUIRED = object()


class BadRequest(Exception):
    """A request the bench cannot act on; the message says what was wrong and what to do."""

    status = 400


class NotFound(BadRequest):
    status = 404


class BenchControlError(Exception):
    """The bench control cannot start; the message says why and what to do."""


class _Channel:
    """What Trace.record() wants of a bus: a name and a protocol (none: no frame decoder applies)."""

    __slots__ = ("name", "protocol")

    def __init__(self, name: str) -> None:
        self.name = name
        self.protocol: str | None = None


OPERATOR_CHANNEL = _Channel(OPERATOR)


# --- parameters -------------------------------------------------------------------------------------


class Params:
    """An operation's JSON parameters, read one by one with their checks; done() refuses the rest."""

    def __init__(self, operation: str, body: object, simulation: Simulation) -> None:
        if not isinstance(body, dict):
            raise BadRequest("%s takes a JSON object of parameters, not %s" % (operation, type(body).__name__))
        self.operation = operation
        self.body = body
        self.simulation = simulation
        self.used: list[str] = []

    def _take(self, key: str, default: object) -> Any:  # a JSON value
        self.used.append(key)
        if key in self.body and self.body[key] is not None:
            return self.body[key]
        if default is _REQUIRED:
            raise BadRequest("%s needs %s" % (self.operation, key))
        return default

    # Left out, the default is _REQUIRED: the parameter must be there, and the answer is never None.
    @overload
    def number(self, key: str, low: float, high: float, default: float = ...) -> float: ...
    @overload
    def number(self, key: str, low: float, high: float, default: None) -> float | None: ...
    def number(self, key: str, low: float, high: float, default: object = _REQUIRED) -> float | None:
        value = self._take(key, default)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise BadRequest("%s: %s must be a number, not %s" % (self.operation, key, json.dumps(value)))
        if not low <= value <= high:
            raise BadRequest("%s: %s must be within %g..%g, not %g" % (self.operation, key, low, high, value))
        return value

    @overload
    def integer(self, key: str, low: int, high: int, default: int = ...) -> int: ...
    @overload
    def integer(self, key: str, low: int, high: int, default: None) -> int | None: ...
    def integer(self, key: str, low: int, high: int, default: object = _REQUIRED) -> int | None:
        value = self._take(key, default)
        if value is None:
            return None
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise BadRequest("%s: %s must be a whole number, not %s" % (self.operation, key, json.dumps(value)))
        if not low <= value <= high:
            raise BadRequest("%s: %s must be within %d..%d, not %d" % (self.operation, key, low, high, value))
        return value

    @overload
    def choice(self, key: str, choices: Sequence[str], default: str = ..., none: Literal[False] = False) -> str: ...
    @overload
    def choice(self, key: str, choices: Sequence[str], default: str = ..., *, none: Literal[True]) -> str | None: ...
    def choice(self, key: str, choices: Sequence[str], default: object = _REQUIRED, none: bool = False) -> str | None:
        """One of choices; with none=True a JSON null (or leaving it out) is None."""
        if none:
            self.used.append(key)
            value = self.body.get(key)
            if value is None:
                return None
        else:
            value = self._take(key, default)
        if value not in choices:
            allowed = ", ".join(map(str, choices)) + (" or null" if none else "")
            raise BadRequest("%s: %s must be one of %s, not %s" % (self.operation, key, allowed, json.dumps(value)))
        return value

    def flag(self, key: str, default: bool) -> bool:
        value = self._take(key, default)
        if not isinstance(value, bool):
            raise BadRequest("%s: %s must be true or false, not %s" % (self.operation, key, json.dumps(value)))
        return value

    def text(self, key: str) -> str:
        value = self._take(key, _REQUIRED)
        if not isinstance(value, str) or not value:
            raise BadRequest("%s: %s must be text, not %s" % (self.operation, key, json.dumps(value)))
        return value

    def slot(self) -> int:
        slots = sorted(self.simulation.devices)
        slot = self.integer("slot", 0, 14)
        if slot not in self.simulation.devices:
            raise BadRequest(
                "%s: no battery in slot %d; this bench has slots %s" % (self.operation, slot, _listed(slots))
            )
        return slot

    def bus(self) -> str:
        return self.choice("bus", tuple(self.simulation.buses))

    def done(self) -> None:
        unknown = sorted(set(self.body) - set(self.used))
        if unknown:
            raise BadRequest(
                "%s: unknown parameter %s; it takes %s" % (self.operation, ", ".join(unknown), ", ".join(self.used))
            )


def _listed(values: Iterable[object]) -> str:
    return ", ".join(map(str, values)) or "none"


def _spec(simulation: Simulation, slot: int) -> BatterySpec:
    return simulation.bench.battery(slot)


def _inverter(simulation: Simulation, operation: str) -> DeyeInverter:
    if simulation.inverter is None:
        raise BadRequest("%s: this bench has no simulated inverter (started with --external deye)" % operation)
    return simulation.inverter


# --- the operations: (parameters read and checked, then done) -------------------------------------------
# Each returns (params to record, result); the recorded params given again do the same thing (replay).
Done = tuple[dict[str, Any], dict[str, Any]]
Operation = Callable[["BenchControl", Params], Done]


def op_set_soc(control: BenchControl, p: Params) -> Done:
    slot, soc_pct = p.slot(), p.number("soc_pct", 0, 100)
    p.done()
    operations.set_soc(control.simulation, slot, round(soc_pct * 10))
    return {"slot": slot, "soc_pct": soc_pct}, {}


def op_set_temperature(control: BenchControl, p: Params) -> Done:
    slot, temperature_c = p.slot(), p.number("temperature_c", -40, 100)
    p.done()
    operations.set_temperature(control.simulation, slot, round(temperature_c * 10))
    return {"slot": slot, "temperature_c": temperature_c}, {}


def op_set_cell_spread(control: BenchControl, p: Params) -> Done:
    slot, spread_mv = p.slot(), p.integer("cell_spread_mv", 0, 1000)
    p.done()
    operations.set_cell_spread(control.simulation, slot, spread_mv)
    return {"slot": slot, "cell_spread_mv": spread_mv}, {}


def op_device_failure(control: BenchControl, p: Params) -> Done:
    slot = p.slot()
    kind = _spec(control.simulation, slot).type
    failure = p.choice("failure", operations.FAILURES[kind], none=True)
    p.done()
    operations.device_failure(control.simulation, slot, failure)
    return {"slot": slot, "failure": failure}, {}


def op_raise_alarm(control: BenchControl, p: Params) -> Done:
    slot = p.slot()
    words = tuple(operations.alarm_words(control.simulation.devices[slot]))
    word, bit = p.choice("word", words), p.integer("bit", 0, 31)
    p.done()
    operations.raise_alarm(control.simulation, slot, word, bit)
    return {"slot": slot, "word": word, "bit": bit}, {}


def op_clear_alarms(control: BenchControl, p: Params) -> Done:
    slot = p.slot()
    p.done()
    operations.clear_alarms(control.simulation, slot)
    return {"slot": slot}, {}


def op_force_condition(control: BenchControl, p: Params) -> Done:
    slot, condition, on = p.slot(), p.choice("condition", operations.CONDITIONS), p.flag("on", True)
    p.done()
    operations.force_condition(control.simulation, slot, condition, on)
    return {"slot": slot, "condition": condition, "on": on}, {}


def op_set_profile(control: BenchControl, p: Params) -> Done:
    _inverter(control.simulation, p.operation)
    kind = p.choice("kind", PROFILE_KINDS)
    params: dict[str, float | str]  # PowerProfile's parameters
    if kind == "constant":
        params = {"watts": p.number("watts", -1e6, 1e6)}
    elif kind == "day":
        params = {
            "peak_solar_w": p.number("peak_solar_w", 0, 1e6, 3000.0),
            "base_load_w": p.number("base_load_w", 0, 1e6, 800.0),
            "day_length_s": p.number("day_length_s", 10, 864000, 86400.0),
        }
    else:
        params = {"path": p.text("path")}
    p.done()
    try:
        operations.set_profile(control.simulation, kind, **params)
    except (OSError, ValueError) as error:
        raise BadRequest("set_profile: %s" % (getattr(error, "strerror", None) or error)) from None
    return dict(params, kind=kind), {}


def op_bus_fault(control: BenchControl, p: Params) -> Done:
    bus = p.bus()
    endpoints = tuple(control.simulation.buses[bus].endpoints)
    params: dict[str, Any] = {  # Fault's parameters
        "kind": p.choice("kind", FAULT_KINDS),
        "source": p.choice("source", endpoints, none=True),
        "target": p.choice("target", endpoints, none=True),
        "count": p.integer("count", 1, 1_000_000, None),
        "probability": p.number("probability", 0, 1, 1.0),
        "delay_s": p.number("delay_s", 0, 10, 0.05),
        "noise_bytes": p.integer("noise_bytes", 1, 256, 8),
    }
    p.done()
    try:
        fault = operations.bus_fault(control.simulation, bus, **params)
    except BusError as error:
        raise BadRequest("bus_fault: %s" % error) from None
    return dict(params, bus=bus), {"id": control.number_fault(bus, fault)}


def op_clear_bus_fault(control: BenchControl, p: Params) -> Done:
    bus, number = p.bus(), p.integer("id", 1, 1_000_000)
    p.done()
    fault = control.fault(bus, number)
    if fault is None:
        active = [n for n, _ in control.active_faults(bus)]
        raise BadRequest(
            "clear_bus_fault: bus %s has no active fault %d (spent, cleared or never added); its active faults: %s"
            % (bus, number, _listed(active))
        )
    operations.remove_bus_fault(control.simulation, bus, fault)
    return {"bus": bus, "id": number}, {}


def op_clear_bus_faults(control: BenchControl, p: Params) -> Done:
    bus = p.bus()
    p.done()
    operations.clear_bus_faults(control.simulation, bus)
    return {"bus": bus}, {}


# name: (function, parameters, what it does) -- the parameters as GET /api/operations and docs/bench.md say them
OPERATIONS: dict[str, tuple[Operation, str, str]] = {
    "set_soc": (op_set_soc, "slot, soc_pct (0..100)", "every cell of the pack at this state of charge"),
    "set_temperature": (op_set_temperature, "slot, temperature_c (-40..100)",
                        "the pack and its surroundings at this temperature (protections follow)"),
    "set_cell_spread": (op_set_cell_spread, "slot, cell_spread_mv (0..1000)",
                        "the highest minus the lowest cell at equal charge"),
    "device_failure": (op_device_failure, "slot, failure (one of the battery's failures, or null: recovered)",
                       "the BMS fails: silent, garbage, bad_checksum, slow, stuck; JK BLE also stop_streaming, "
                       "disconnect, refuse_reconnect"),
    "raise_alarm": (op_raise_alarm, "slot, word (BYD: alarm, protect, fail; JK: error), bit (0..31)",
                    "the BMS raises one bit of an alarm word"),
    "clear_alarms": (op_clear_alarms, "slot", "the raised alarm bits cleared"),
    "force_condition": (op_force_condition, "slot, condition (simulators/battery.py FLAGS), on (default true)",
                        "the battery model held in a condition: its BMS reports it, opens the path it blocks"),
    "set_profile": (op_set_profile, "kind: constant (watts) | day (peak_solar_w, base_load_w, day_length_s) | "
                    "csv (path)", "the inverter's power profile; positive watts charge the batteries"),
    "bus_fault": (op_bus_fault, "bus, kind (%s), source, target, count, probability, delay_s, noise_bytes"
                  % ", ".join(FAULT_KINDS), "a fault rule on a bus (hil/wires/faults.py); answers its id"),
    "clear_bus_fault": (op_clear_bus_fault, "bus, id", "one fault rule removed"),
    "clear_bus_faults": (op_clear_bus_faults, "bus", "every fault rule of a bus removed"),
}  # fmt: skip


# --- the control ---------------------------------------------------------------------------------------


class BenchControl:
    """The operations on one Simulation, recorded in its trace, and the HTTP server that offers them."""

    def __init__(self, simulation: Simulation, port: int = 0, host: str = "127.0.0.1") -> None:
        self.simulation = simulation
        self.host = host
        self.port = port
        self.log: list[dict[str, Any]] = []  # the actions done, as recorded
        self._lock = threading.Lock()  # one operation at a time: the trace's order is the order done
        self._faults: dict[int, tuple[str, Fault]] = {}  # id -> (bus, Fault)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        for name, bus in simulation.buses.items():  # the bench file's faults first: the same ids every run
            for fault in list(bus.faults):
                self.number_fault(name, fault)

    # --- time and the trace ---------------------------------------------------------------------------

    def now_s(self) -> float:
        """The trace's clock: seconds since the bench's buses started (what a record's "t" counts)."""
        buses = self.simulation.buses
        t0 = next(iter(buses.values())).t0 if buses else self.simulation.started_s or 0.0
        return time.monotonic() - t0

    def apply(self, operation: str, params: object, replayed: bool = False) -> dict[str, Any]:
        """Do an operation (BadRequest if it or its parameters are wrong) and record it; the action."""
        entry = OPERATIONS.get(operation)
        if entry is None:
            raise NotFound("no operation %r; the operations are %s" % (operation, ", ".join(OPERATIONS)))
        with self._lock:
            try:
                done, result = entry[0](self, Params(operation, params, self.simulation))
            except (ValueError, BusError) as error:  # what a device model or a bus refused
                raise BadRequest("%s: %s" % (operation, error)) from None
            t_s = self.now_s()
            action: dict[str, Any] = {"op": operation, "params": done, "result": result}
            if replayed:
                action["replayed"] = True
            self.simulation.trace.record(OPERATOR_CHANNEL, t_s, OPERATOR, json.dumps(action).encode())
            action = dict(action, t=round(t_s, 6))
            self.log.append(action)
        return action

    # --- fault rules and their ids ------------------------------------------------------------------------

    def number_fault(self, bus: str, fault: Fault) -> int:
        for number, (_, known) in self._faults.items():
            if known is fault:
                return number
        number = len(self._faults) + 1
        self._faults[number] = (bus, fault)
        return number

    def fault(self, bus: str, number: int) -> Fault | None:
        """The active rule with this id on this bus, or None."""
        entry = self._faults.get(number)
        if entry is None or entry[0] != bus or not any(f is entry[1] for f in self.simulation.buses[bus].faults):
            return None
        return entry[1]

    def active_faults(self, bus: str) -> list[tuple[int, Fault]]:
        return [(self.number_fault(bus, fault), fault) for fault in list(self.simulation.buses[bus].faults)]

    # --- what the page shows ----------------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        simulation = self.simulation
        inverter = simulation.inverter
        units = inverter.units if inverter is not None else {}
        batteries = []
        for spec in simulation.bench.batteries:
            battery, device = simulation.batteries[spec.slot], simulation.devices[spec.slot]
            cells = battery.cell_voltages_mv()
            seen = units.get(spec.slot)
            batteries.append({
                "slot": spec.slot, "name": spec.name, "type": spec.type, "bus": spec.bus, "address": spec.address,
                "soc_pct": battery.soc_permille / 10, "current_ma": battery.current_ma,
                "temperature_c": round(battery.temperature_c, 1), "cell_spread_mv": operations.cell_spread_mv(battery),
                "cell_min_mv": min(cells), "cell_max_mv": max(cells), "pack_voltage_mv": sum(cells),
                "charge_enabled": battery.charge_enabled, "discharge_enabled": battery.discharge_enabled,
                "failure": device.failure, "failures": list(operations.FAILURES[spec.type]),
                "alarms": operations.alarm_words(device), "conditions": sorted(battery.forced),
                "inverter": None if seen is None else {
                    "values": seen.values, "comm_warning": seen.comm_warning, "misses": seen.misses,
                },
            })  # fmt: skip
        buses = []
        for name, bus in simulation.buses.items():
            faults = [
                {"id": number, "kind": f.kind, "source": f.source, "target": f.target, "count": f.count,
                 "hits": f.hits, "probability": f.probability, "text": f.describe()}
                for number, f in self.active_faults(name)
            ]  # fmt: skip
            buses.append({
                "name": name, "protocol": bus.protocol, "baud": bus.baud, "frames": bus.frames,
                "collisions": len(bus.collisions), "endpoints": list(bus.endpoints), "faults": faults,
            })  # fmt: skip
        state: dict[str, Any] = {
            "bench": simulation.bench.name, "description": simulation.bench.description, "t_s": round(self.now_s(), 1),
            "dashboard": simulation.http_url, "batteries": batteries, "buses": buses, "inverter": None,
            "operations": {name: entry[1] for name, entry in OPERATIONS.items()},
            "fault_kinds": list(FAULT_KINDS), "conditions": list(operations.CONDITIONS), "log": self.log[-20:],
        }  # fmt: skip
        if inverter is not None:
            profile = inverter.profile
            state["inverter"] = {
                "profile": _profile(profile),
                "watts_now": round(profile.watts_at(time.monotonic() - inverter.t0), 1),
                "cycles": inverter.cycles,
                "warnings": inverter.warnings(),
                "currents_ma": {str(unit): ma for unit, ma in sorted(inverter.battery_current_ma.items())},
                "rows": inverter.rows(),
            }
        return state

    def traffic(self, after: int | None = None, limit: int = TRAFFIC_LIMIT, bus: str | None = None) -> dict[str, Any]:
        """Trace records after the `after`th (None: the last `limit`), at most `limit` (the newest kept:
        "skipped" says how many were left out); "next" is the `after` to ask with next time."""
        records = self.simulation.trace.records  # appended to, never reordered: an index stays valid
        end = len(records)
        start = max(0, end - limit) if after is None else min(max(0, after), end)
        chosen = [r for r in records[start:end] if bus is None or r["bus"] == bus]
        skipped = max(0, len(chosen) - limit)
        return {"next": end, "skipped": skipped, "records": [_shown(r) for r in chosen[skipped:]]}

    # --- the server -----------------------------------------------------------------------------------------------

    @property
    def url(self) -> str | None:
        return None if self._server is None else "http://%s:%d" % (self.host, self._server.server_address[1])

    def start(self) -> Self:
        handler = type("Handler", (_Handler,), {"control": self})
        try:
            self._server = _Server((self.host, self.port), handler)
        except OSError as error:
            raise BenchControlError(
                "the bench control cannot listen on %s:%d: %s; choose another --control-port, or 0 for a free one"
                % (self.host, self.port, error.strerror or error)
            ) from None
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.2}, name="bench-control", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=5)  # type: ignore[union-attr]  # started with the server


def _profile(profile: PowerProfile) -> dict[str, Any]:
    shown: dict[str, Any] = {"kind": profile.kind}
    if profile.kind == "constant":
        shown["watts"] = profile.watts
    elif profile.kind == "day":
        shown.update(peak_solar_w=profile.peak_solar_w, base_load_w=profile.base_load_w,
                     day_length_s=profile.day_length_s)  # fmt: skip
    else:
        shown["samples"] = len(profile.samples)
    return shown


def _shown(record: dict[str, Any]) -> dict[str, Any]:
    """A trace record for the page: decoded, its hex cut short, an operator record's action read."""
    record = with_summary(record)
    shown: dict[str, Any] = {
        key: record[key] for key in ("t", "bus", "from", "decoded", "faults", "collision") if key in record
    }
    shown["bytes"] = len(record["hex"]) // 2
    shown["hex"] = record["hex"][:HEX_SHOWN]
    if record["bus"] == OPERATOR:
        shown["operator"] = operator_action(record)
    return shown


# --- replay ---------------------------------------------------------------------------------------------


def operator_action(record: dict[str, Any]) -> dict[str, Any] | None:
    """The action of an operator record ({"t", "op", "params", ...}), or None for any other record."""
    if record.get("bus") != OPERATOR:
        return None
    decoded = record.get("decoded")
    action = decoded if isinstance(decoded, dict) and "op" in decoded else json.loads(bytes.fromhex(record["hex"]))
    return dict(action, t=record["t"])


def operator_actions(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The operator actions of trace records, in time order."""
    return sorted((a for a in map(operator_action, records) if a is not None), key=lambda action: action["t"])


def read_actions(path: str) -> list[dict[str, Any]]:
    """The operator actions of a trace file (JSON lines); lines that are not records are passed over."""
    records: list[dict[str, Any]] = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and record.get("bus") == OPERATOR and "hex" in record:
                records.append(record)
    return operator_actions(records)


def replay(
    actions: Iterable[dict[str, Any]], control: BenchControl, stop: threading.Event | None = None
) -> list[tuple[dict[str, Any], dict[str, Any] | str]]:
    """Do each action at its trace time on control's bench (at once if that time is past).

    Returns [(action, what was done: the recorded action, or the BadRequest's message)]; an action the
    bench refuses (a fault spent earlier than on the first run, say) is reported and passed over.
    """
    stop = stop or threading.Event()
    done: list[tuple[dict[str, Any], dict[str, Any] | str]] = []
    for action in sorted(actions, key=lambda a: a["t"]):
        while not stop.is_set() and control.now_s() < action["t"]:
            stop.wait(min(0.5, action["t"] - control.now_s()))
        if stop.is_set():
            break
        try:
            done.append((action, control.apply(action["op"], action["params"], replayed=True)))
        except BadRequest as error:
            done.append((action, str(error)))
    return done


# --- HTTP -------------------------------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client that went away mid-answer; the terminal belongs to the live table


class _Handler(BaseHTTPRequestHandler):
    control: BenchControl = None  # type: ignore[assignment]  # the BenchControl, set per server
    timeout = 10  # a request not whole within this time closes its connection
    server_version = "vbms-bench"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - BaseHTTPRequestHandler's name
        pass  # the terminal belongs to the live table

    def _send(self, status: int, body: object, content_type: str = "application/json") -> None:  # body: bytes or JSON
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        self.wfile.write(data)

    def _error(self, error: BadRequest) -> None:
        self._send(error.status, {"error": str(error)})

    def do_GET(self) -> None:  # noqa: N802 - BaseHTTPRequestHandler's name
        url = urllib.parse.urlsplit(self.path)
        try:
            if url.path in ("/", "/index.html"):
                return self._static("bench.html")
            if url.path.startswith("/static/"):
                return self._static(url.path[len("/static/") :])
            if url.path == "/api/state":
                return self._send(200, self.control.state())
            if url.path == "/api/operations":
                return self._send(200, {name: {"params": e[1], "does": e[2]} for name, e in OPERATIONS.items()})
            if url.path == "/api/traffic":
                return self._send(200, self._traffic(urllib.parse.parse_qs(url.query)))
            if url.path.startswith("/api/") and url.path[5:] in OPERATIONS:
                return self._send(405, {"error": "%s is done with POST and a JSON object" % url.path[5:]})
            raise NotFound("no page %s; the bench control is at / and its API under /api/" % url.path)
        except BadRequest as error:
            self._error(error)
        except Exception as error:  # noqa: BLE001 - a fault of the bench itself: said, not a dropped connection
            self._send(500, {"error": "the bench failed: %s: %s" % (type(error).__name__, error)})

    def do_POST(self) -> None:  # noqa: N802
        url = urllib.parse.urlsplit(self.path)
        try:
            if not url.path.startswith("/api/"):
                raise NotFound("no operation at %s; operations are POST /api/<operation>" % url.path)
            length = self.headers.get("Content-Length")
            if length is None or not length.isdigit():
                raise BadRequest("a request needs a Content-Length with its JSON body")
            if int(length) > BODY_MAX:
                raise BadRequest("the body is %s bytes; at most %d" % (length, BODY_MAX))
            raw = self.rfile.read(int(length)) if int(length) else b"{}"
            try:
                params = json.loads(raw)
            except (ValueError, UnicodeDecodeError) as error:
                raise BadRequest("the body is not JSON: %s" % error) from None
            self._send(200, self.control.apply(url.path[len("/api/") :], params))
        except BadRequest as error:
            self._error(error)
        except Exception as error:  # noqa: BLE001
            self._send(500, {"error": "the bench failed: %s: %s" % (type(error).__name__, error)})

    def _traffic(self, query: dict[str, list[str]]) -> dict[str, Any]:
        def one(key: str) -> str | None:
            values = query.get(key)
            return values[-1] if values else None

        try:
            # each int(one(key)) only when one(key) is not None
            after = None if one("after") is None else int(one("after"))  # type: ignore[arg-type]
            limit = TRAFFIC_LIMIT if one("limit") is None else int(one("limit"))  # type: ignore[arg-type]
        except ValueError:
            raise BadRequest("after and limit are whole numbers") from None
        if not 1 <= limit <= TRAFFIC_MAX:
            raise BadRequest("limit must be within 1..%d, not %d" % (TRAFFIC_MAX, limit))
        bus = one("bus")
        if bus is not None and bus not in self.control.simulation.buses and bus not in ("ble", OPERATOR):
            known = list(self.control.simulation.buses) + ["ble", OPERATOR]
            raise BadRequest("no bus %r; the trace has %s" % (bus, ", ".join(known)))
        return self.control.traffic(after, limit, bus)

    def _static(self, name: str) -> None:
        if name not in STATIC:
            raise NotFound("no file %s" % name)
        data = resources.files("hil").joinpath("web", name).read_bytes()
        self._send(200, data, STATIC[name])
