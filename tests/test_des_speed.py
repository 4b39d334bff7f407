"""The des target's fast fidelity gives the inverter the same answers as full fidelity (hil/des.py).

Each scenario runs twice from the same seed, once per fidelity, through the target's vocabulary
(hil/targets.py DesTarget).  The inverter's polls must happen at the same times, to the same units,
in both.  At each poll, what the inverter learnt must be the same:
- exactly: whether the unit answered, its misses in a row, the W31 warnings, the identity, and every
  register that is no measurement (the warning, protection and fault/status words, the charge limit,
  the float voltage, the design capacity);
- within TOLERANCE: the measurements (voltages, current, SOC, capacities, temperatures, cycles, SOH).

The tolerance is one of time, not of size: fast fidelity steps the battery models every
FAST_BATTERY_STEP_S instead of every second, so the state a BMS reports may be up to one step old.
A value fast fidelity shows at a poll must lie within the range full fidelity showed for the same
unit over the FAST_BATTERY_STEP_S + POLL_SLACK_S before, widened by one unit of the value's
resolution (SLACK: the register's unit, or the whole degree a BYD module reports temperatures in,
reference/deye-byd-modbus.md, BYD status frame "cell_temp ... °C integer"), and the current by
current_lag_ma() of the value, the change of current fast fidelity lets pass before it steps a battery
model (stated here, not taken from hil/des.py: a looser model there must fail here).

No assertion here is about wall-clock time (`vbms bench des` measures that).
"""

import bisect
import collections

import pytest

from hil.benchfile import load_default
from hil.benchmarks import solar_day_bench
from hil.des import FAST, FAST_BATTERY_STEP_S, FULL
from hil.targets import DesTarget
from hil.trace import Trace
from simulators.battery import BatteryModel
from simulators.jk.device import JkBleSession, JkBms
from vbms_core import jk_ble, jk_frames, modbus


def current_lag_ma(current_ma):
    """How far the current fast fidelity reports may lag the one flowing: 2 %, a tenth of an amp at least."""
    return max(100, abs(current_ma) * 2 // 100)


POLL_SLACK_S = 3.0  # a unit is polled at least this often on these benches (8 units, 1 s poll period)
SLACK = {  # measurement register -> what a value may lie outside full fidelity's range by
    "pack_voltage_mv": 10,
    "pack_current_ma": lambda value: 10 + current_lag_ma(value),
    "remain_capacity_mah": 10,
    "full_charge_capacity_mah": 10,
    "soc_permille": 1,
    "soh_permille": 1,
    "cycle_count": 0,
    "max_cell_voltage_mv": 1,
    "min_cell_voltage_mv": 1,
    "cell_temp_avg_ddegc": 10,
    "env_temp_ddegc": 10,
    "max_cell_temp_ddegc": 10,
    "min_cell_temp_ddegc": 10,
    "mosfet_temp_ddegc": 10,
}


class Poll:
    __slots__ = ("t_s", "unit", "function", "values", "identity", "comm_warning", "misses", "warnings")

    def key(self):
        return (self.t_s, self.unit, self.function)

    def exact(self):
        values = None
        if self.values is not None:
            values = {name: value for name, value in self.values.items() if name not in SLACK}
        return (self.identity, self.comm_warning, self.misses, self.warnings, values is None, values)


def recorder(target):
    """What the inverter learnt at each of its polls, in order."""
    polls = []
    inverter = target.world.inverter

    def on_poll(request, reply, now_s):
        state = inverter.units[request.unit]
        poll = Poll()
        poll.t_s = round(now_s, 6)
        poll.unit = request.unit
        poll.function = request.function
        answered = reply is not None and state.misses == 0 and request.function == modbus.READ_INPUT
        poll.values = dict(state.values) if answered else None
        poll.identity = dict(state.identity) if request.function == modbus.REPORT_ID and state.identity else None
        poll.comm_warning = state.comm_warning
        poll.misses = state.misses
        poll.warnings = tuple(inverter.warnings())
        polls.append(poll)

    inverter.on_poll = on_poll
    return polls


def play(bench, fidelity, seconds, script=()):
    """The scenario on a des target at the fidelity: script is ((at_s, action(target)), ...)."""
    target = DesTarget(bench)
    target.set_fidelity(fidelity)
    polls = recorder(target)
    for at_s, action in script:
        target.advance(at_s - target.now_s())
        action(target)
    target.advance(seconds - target.now_s())
    return target, polls


def differences(full, fast):
    """Every way fast fidelity's polls differ from full fidelity's beyond the tolerance."""
    found = []
    if [poll.key() for poll in full] != [poll.key() for poll in fast]:
        return ["the polls differ in time or unit"]
    history = collections.defaultdict(list)  # unit -> full fidelity's answers, in time order
    for poll in full:
        if poll.values is not None:
            history[poll.unit].append(poll)
    window_s = FAST_BATTERY_STEP_S + POLL_SLACK_S
    for seen, got in zip(full, fast, strict=True):
        if seen.exact() != got.exact():
            found.append((got.t_s, got.unit, "exact", seen.exact(), got.exact()))
            continue
        if got.values is None:
            continue
        answers = history[got.unit]
        times = [poll.t_s for poll in answers]
        window = answers[bisect.bisect_left(times, got.t_s - window_s) : bisect.bisect_right(times, got.t_s)]
        for name, slack in SLACK.items():
            shown = [poll.values[name] for poll in window]
            value = got.values[name]
            if callable(slack):
                slack = slack(value)
            if not min(shown) - slack <= value <= max(shown) + slack:
                found.append((got.t_s, got.unit, name, value, (min(shown), max(shown))))
    return found


def both(bench_factory, seconds, script=()):
    full_target, full = play(bench_factory(), FULL, seconds, script)
    fast_target, fast = play(bench_factory(), FAST, seconds, script)
    return full_target, full, fast_target, fast


# The solar-day scenario's bench with its day compressed into half an hour, at the power the scenario
# had when it ran a day compressed into an hour (12 kW of sun, 3 kW of load): the currents change 48
# times faster than in features/solar_day.feature, a harder case for a model that lags by a step.
SOLAR_HOUR_S = 1800.0
SOLAR_HOUR = {"day_length_s": SOLAR_HOUR_S, "peak_solar_w": 12000.0, "base_load_w": 3000.0}

# A fault scenario on the default bench: what the bus, device and alarm steps of features/ do.
FAULTS = (
    (30, lambda target: target.bus_fault("inverter", "noise", count=10)),
    (60, lambda target: target.bus_fault("bms", "corrupt", source="BYD-2", count=5)),
    (90, lambda target: target.device_failure(2, "silent")),
    (120, lambda target: target.raise_alarm(1, "alarm", 3)),
    (150, lambda target: target.device_failure(2, None)),
    (160, lambda target: target.raise_alarm(5, "error", 4)),  # a JK module over BLE
    (170, lambda target: target.bus_fault("inverter", "drop", source="dut", count=3)),
    (200, lambda target: target.clear_alarms(1)),
    (210, lambda target: target.device_failure(0, "bad_checksum")),
    (240, lambda target: target.clear_alarms(5)),
    (260, lambda target: target.device_failure(0, None)),
    (280, lambda target: target.bus_fault("bms", "delay", source="BYD-4", count=20)),
    (330, lambda target: target.set_power(-8000.0)),
    (400, lambda target: target.set_power(3000.0)),
)
FAULT_S = 480.0


@pytest.fixture(scope="module")
def solar_hour():
    return both(lambda: solar_day_bench(**SOLAR_HOUR), SOLAR_HOUR_S)


@pytest.fixture(scope="module")
def fault_scenario():
    return both(load_default, FAULT_S, FAULTS)


def test_a_solar_day_gives_the_inverter_the_same_answers_in_both_fidelities(solar_hour):
    _, full, _, fast = solar_hour
    assert sum(poll.values is not None for poll in full) > 12_500  # 8 units answered about every second
    currents = [poll.values["pack_current_ma"] for poll in full if poll.values is not None]
    assert min(currents) < -5_000 and max(currents) > 5_000  # it charged and discharged
    assert differences(full, fast) == []


def test_a_fault_scenario_gives_the_inverter_the_same_answers_in_both_fidelities(fault_scenario):
    _, full, _, fast = fault_scenario
    warned = {unit for poll in full for unit in range(8) if "battery %d" % (unit + 1) in " ".join(poll.warnings)}
    assert warned == {0, 2}  # the silent BYD module and the one with bad checksums; the bus faults were absorbed
    alarmed = {poll.unit for poll in full if poll.values and (poll.values["warning"] or poll.values["protection"])}
    assert alarmed >= {1, 5}  # the raised alarms reached the inverter
    assert differences(full, fast) == []


def test_fast_fidelity_leaves_out_what_nobody_reads(solar_hour, fault_scenario):
    """The same answers from less work: fewer BLE notifications and battery model steps."""
    for full_target, _, fast_target, _ in (solar_hour, fault_scenario):
        full_world, fast_world = full_target.world, fast_target.world
        frames = [world.proxy.ble.sessions[4].reassembler.frames for world in (full_world, fast_world)]
        assert frames[1] < frames[0] / 2
        steps = [sum(battery.steps for battery in world.batteries.values()) for world in (full_world, fast_world)]
        assert steps[1] < steps[0] / 2


# --- the pieces fast fidelity is made of -------------------------------------------------------


class _Bus:
    def __init__(self, name, protocol):
        self.name = name
        self.protocol = protocol


def test_switched_to_fast_mid_run_every_battery_model_still_steps_at_least_every_step_time():
    """Fast fidelity steps a battery model FAST_BATTERY_STEP_S after its last step at the latest, also
    when a run switches to it between two of full fidelity's whole seconds and no current moves."""
    bench = load_default()
    bench.profile = {"kind": "constant", "watts": 0.0}
    target = DesTarget(bench)
    target.advance(23.5)
    target.set_fidelity(FAST)
    batteries = target.world.batteries
    before = {slot: battery.steps for slot, battery in batteries.items()}
    target.advance(6 * FAST_BATTERY_STEP_S)
    assert all(batteries[slot].steps - before[slot] >= 5 for slot in batteries), {
        slot: batteries[slot].steps - before[slot] for slot in batteries
    }


def test_a_trace_ring_keeps_the_last_frames_in_memory_and_every_frame_in_its_file(tmp_path):
    bus = _Bus("bms", "byd-pro")
    ring = Trace(decode=False, keep=5)
    filed = Trace(str(tmp_path / "trace.jsonl"), decode=False, keep=5)
    for trace in (ring, filed):
        for index in range(12):
            trace.record(bus, index * 0.1, "dut", bytes((index,)))
    assert [record["hex"] for record in ring.records] == ["07", "08", "09", "0A", "0B"]
    assert [record["hex"] for record in filed.records] == ["07", "08", "09", "0A", "0B"]
    filed.close()
    lines = (tmp_path / "trace.jsonl").read_text().splitlines()
    assert len(lines) == 12  # the file of `vbms sim --trace` stays complete


def test_a_failure_tail_keeps_the_wire_frames_among_many_ble_chunks():
    trace = Trace(decode=False, keep=1000)
    bus = _Bus("inverter", "deye")
    request = modbus.encode_read_request(0, modbus.READ_INPUT, 0x1000, 25)
    for index in range(10):
        trace.record(bus, index * 1.0, "deye", request)
        for chunk in range(20):
            trace.ble(index * 1.0 + 0.5, "JK-BMS-A", bytes((chunk,)) * 20)
    tail = trace.tail(8, ble=2)
    assert [record["bus"] for record in tail] == ["inverter"] * 6 + ["ble"] * 2  # the newest chunks
    assert [record["t"] for record in tail] == sorted(record["t"] for record in tail)
    assert tail[0]["decoded"]["function_name"] == "read_input_registers"  # decoded for the report
    assert [record["bus"] for record in trace.tail(8)] == ["ble"] * 8  # without the limit: chunks only


def test_one_long_battery_step_with_the_mean_current_moves_the_charge_of_the_short_ones():
    """Coulomb counting: 10 s at 20 A then 20 s at 10 A is 400 A s (fast fidelity steps at once when
    the current turns, so a step's current keeps its sign, and the heat of its mean is close)."""
    per_second, at_once = BatteryModel(seed=3, soc_permille=500), BatteryModel(seed=3, soc_permille=500)
    samples = [20_000] * 10 + [10_000] * 20
    for current_ma in samples:
        per_second.advance(1.0, current_ma)
    at_once.advance(len(samples), samples[-1], mean_current_ma=sum(samples) / len(samples))
    assert at_once.charge_mah == pytest.approx(per_second.charge_mah, abs=1e-9)
    assert at_once.charge_mah[0] - BatteryModel(seed=3, soc_permille=500).charge_mah[0] == pytest.approx(400 / 3.6)
    assert at_once.current_ma == per_second.current_ma == 10_000  # the current at the end is the one reported
    assert at_once.cell_voltages_mv() == per_second.cell_voltages_mv()
    assert at_once.temperature_c == pytest.approx(per_second.temperature_c, abs=0.01)


def test_a_session_of_whole_frames_sends_one_notification_per_frame_and_skips_what_nobody_read():
    battery = BatteryModel(seed=1)
    chunked = JkBleSession(JkBms(battery), "mtu131")
    whole = JkBleSession(JkBms(battery), "mtu131", whole_frames=True)
    for session in (chunked, whole):
        session.on_write(jk_ble.encode_command(jk_ble.GET_SETTINGS), 0.0)
    assert len(chunked.poll(0.5)) == 5  # AT keep-alive, 128 + 22 + 128 + 22 (jk-protocols.md 1.3)
    frame = whole.poll(0.5)
    assert len(frame) == 1 and len(frame[0]) == jk_frames.FRAME_LENGTH
    assert jk_frames.decode_frame(frame[0])["frame_type"] == "cell_info"
    assert whole.due_s(0.9) is None and whole.due_s(3.2) == 3.0
    assert len(whole.latest(3.2)) == 1  # the frames due at 1.0 .. 2.5 were never read: skipped
    assert whole.latest(3.4) == [] and whole.next_frame_s == 3.5  # and the stream keeps its pace
