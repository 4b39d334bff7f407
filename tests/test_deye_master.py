"""The DEYE master model alone (simulators/deye/master.py): no I/O, time given by the test.

Expected values come from shared/reference/deye-byd-modbus.md: the synthetic request and
identity frames of 4.4, the register scaling of 1.3.2 cross-checked against the Li-BMS photo
of 1.3.4 (54.58 V, 0.90 A, 28.2 C, 100.0 %, 49.5 Ah, 55.8 V, 50.0 A), 10 bit times per byte at
9600 8N1 (1.1), and the W31 rule of hil/benches/default.toml (warn_after = 3 misses in a row
of a unit that has answered, cleared by its next answer; hil/report.py says the same).
"""

import struct

import pytest

from simulators.deye.master import DeyeMaster
from simulators.deye.profile import PowerProfile
from vbms_core import modbus

# deye-byd-modbus.md 4.4 (synthetic, CRC recomputed there)
READ_UNIT_0 = bytes.fromhex("00 04 10 00 00 19 34 D1")
READ_UNIT_1 = bytes.fromhex("01 04 10 00 00 19 35 00")
READ_UNIT_14 = bytes.fromhex("0E 04 10 00 00 19 35 FF")
IDENTITY_UNIT_0 = bytes.fromhex("00 11 C1 BC")
IDENTITY_UNIT_1 = bytes.fromhex("01 11 C0 2C")
IDENTITY_REPLY_UNIT_0 = bytes.fromhex(
    "00 11 27 42 59 44 20 50 52 4F 20 32 2E 35 2A 10 11 2A 20 21 2A 42 59 44 31 32 33 34 35 36 37 38 39 30"
    " 31 32 33 34 35 36 37 2A 09 B8"
)

# The Li-BMS photo's BYD PRO 2.5 row (1.3.4) as registers 0x1000..0x1018 (1.3.2 scaling):
# 54.58 V, 0.90 A, 49.50 Ah, 28.2 C, env 25.0 C, no alarms, status "charging" (0x0100: high byte),
# 100.0 %, SOH 100.0 %, full 50.00 Ah, 3 cycles, charge current 50.00 A, cells 3412/3410 mV,
# temps 29.0/28.0/30.0 C, float 55.80 V, design 50.00 Ah.
PHOTO_REGISTERS = (
    5458, 90, 4950, 282, 250, 0, 0, 0x0100, 1000, 1000, 5000, 3, 5000, 3412, 3410, 0,
    290, 280, 300, 0, 5580, 5000, 0, 0, 0,
)  # fmt: skip
EXCHANGE_S = 0.07  # how long the tests let an answered exchange take


def registers_reply(unit, registers=PHOTO_REGISTERS):
    return modbus.with_crc(
        bytes((unit, modbus.READ_INPUT, 2 * len(registers))) + struct.pack(">%dH" % len(registers), *registers)
    )


def identity_reply(unit):
    if unit == 0:
        return IDENTITY_REPLY_UNIT_0
    return modbus.with_crc(bytes((unit,)) + IDENTITY_REPLY_UNIT_0[1:-2])


def answer_all(request):
    return registers_reply(request.unit) if request.function == modbus.READ_INPUT else identity_reply(request.unit)


def run_cycle(master, now_s, reply=answer_all):
    """Drive one cycle from now_s: reply(request) gives the reply bytes or None; returns (time, requests)."""
    requests = []
    cycles = master.cycles
    while master.cycles == cycles:
        request = master.next_request(now_s)
        if request is None:
            now_s = master.wake_s()
            continue
        requests.append(request)
        answer = reply(request)
        if answer is None:
            now_s = request.deadline_s
        else:
            now_s += EXCHANGE_S
        master.receive_frame(answer, now_s)
    return now_s, requests


# --- the schedule ----------------------------------------------------------------------


def test_requests_are_the_reference_frames_in_unit_order():
    master = DeyeMaster(units=[0, 1, 14], identity_interval_s=60.0)
    _, requests = run_cycle(master, 0.0)
    assert [bytes(r.adu) for r in requests] == [
        READ_UNIT_0,
        IDENTITY_UNIT_0,
        READ_UNIT_1,
        IDENTITY_UNIT_1,
        READ_UNIT_14,
        modbus.with_crc(b"\x0e\x11"),
    ]
    assert master.cycles == 1
    _, requests = run_cycle(master, 1.0)
    assert [bytes(r.adu) for r in requests] == [READ_UNIT_0, READ_UNIT_1, READ_UNIT_14]


def test_gap_period_and_deadline():
    master = DeyeMaster(units=[0, 1], poll_period_s=1.0, timeout_s=0.2, gap_s=0.005, identity_interval_s=1e9)
    first = master.next_request(0.0)
    assert master.next_request(0.001) is None  # one exchange at a time
    # 8 bytes at 9600 8N1 take 8 x 10 / 9600 s on the wire, then the reply has timeout_s
    assert first.deadline_s == pytest.approx(0.2 + 8 * 10 / 9600)
    master.receive_frame(registers_reply(0), 0.05)
    assert master.next_request(0.054) is None
    identity = master.next_request(0.055)  # the first answer asks for the identity, gap_s later
    assert (identity.unit, identity.function) == (0, modbus.REPORT_ID)
    master.receive_frame(identity_reply(0), 0.08)
    assert master.next_request(0.08 + 0.004) is None
    second = master.next_request(0.08 + 0.005)
    assert second.unit == 1 and second.function == modbus.READ_INPUT
    master.receive_frame(None, second.deadline_s)  # silence: the cycle ends at the deadline
    assert master.cycles == 1
    assert master.wake_s() == pytest.approx(1.0)  # the next cycle starts poll_period_s after this one started
    assert master.next_request(0.999) is None
    assert master.next_request(1.0).unit == 0


def test_a_cycle_longer_than_the_period_is_followed_after_the_gap():
    master = DeyeMaster(units=[0, 1, 2], poll_period_s=0.3, timeout_s=0.2, gap_s=0.005)
    end_s, _ = run_cycle(master, 0.0, reply=lambda request: None)
    assert end_s > 0.3
    assert master.wake_s() == pytest.approx(end_s + 0.005)


def test_expire_turns_a_late_reply_into_a_miss_and_a_stray_reply_means_nothing():
    master = DeyeMaster(units=[0])
    request = master.next_request(0.0)
    assert not master.expire(request.deadline_s - 0.001)
    assert master.expire(request.deadline_s)
    assert master.units[0].misses == 1 and master.pending is None
    master.receive_frame(registers_reply(0), request.deadline_s + 0.01)  # nothing pending: ignored
    assert master.units[0].answers == 0 and master.units[0].values is None


def test_units_are_checked():
    with pytest.raises(ValueError, match="0..14"):
        DeyeMaster(units=[15])
    with pytest.raises(ValueError, match="0..14"):
        DeyeMaster(units=[])


# --- what a reply means ----------------------------------------------------------------


def test_an_answer_is_decoded_with_the_reference_scaling():
    master = DeyeMaster(units=[0])
    run_cycle(master, 0.0)
    state = master.units[0]
    values = state.values
    assert values["pack_voltage_mv"] == 54_580
    assert values["pack_current_ma"] == 900  # + = charging
    assert values["remain_capacity_mah"] == 49_500
    assert values["cell_temp_avg_ddegc"] == 282
    assert values["soc_permille"] == 1000
    assert values["max_charge_current_ma"] == 50_000
    assert values["nominal_float_voltage_mv"] == 55_800
    assert (state.answers, state.misses, state.polls, state.comm_warning) == (1, 0, 1, False)
    assert state.identity == {
        "model": "BYD PRO 2.5",
        "sw_version_hex": "1011",
        "hw_version_hex": "2021",
        "serial": "BYD12345678901234567",
    }


def test_each_answer_shows_its_own_values_when_the_same_frame_comes_between():
    """The master keeps each unit's last frame and its names (a battery at rest answers the same one):
    a changed frame of the same unit, and another unit's, must show their own values."""
    changed = list(PHOTO_REGISTERS)
    changed[0] = 5000
    frames = iter([registers_reply(0), registers_reply(0), registers_reply(0, changed), registers_reply(0)])
    master = DeyeMaster(units=[0], poll_period_s=0.5, identity_interval_s=1e9)
    now_s, seen = 0.0, []
    for _ in range(4):
        now_s = run_cycle(master, now_s, reply=lambda r: next(frames) if r.function == 4 else identity_reply(0))[0]
        seen.append(master.units[0].values["pack_voltage_mv"])
    assert seen == [54_580, 54_580, 50_000, 54_580]


def test_a_discharging_current_is_negative():
    registers = list(PHOTO_REGISTERS)
    registers[1] = 0x10000 - 1234  # s16: -12.34 A (1.3.2)
    master = DeyeMaster(units=[0])
    run_cycle(master, 0.0, reply=lambda r: registers_reply(0, registers) if r.function == 4 else identity_reply(0))
    assert master.units[0].values["pack_current_ma"] == -12_340


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(lambda unit: None, id="silence"),
        pytest.param(lambda unit: modbus.with_crc(bytes((unit, 0x84, 0x02))), id="exception"),
        pytest.param(lambda unit: registers_reply(unit)[:-1] + b"\x00", id="bad-crc"),
        pytest.param(lambda unit: registers_reply(unit + 1), id="other-unit"),
        pytest.param(lambda unit: registers_reply(unit, PHOTO_REGISTERS[:10]), id="short-read"),
    ],
)
def test_w31_after_warn_after_misses_of_a_unit_that_answered_and_cleared_by_an_answer(bad):
    master = DeyeMaster(units=[0, 1], warn_after=3, poll_period_s=1.0)
    now_s, _ = run_cycle(master, 0.0)  # both answer
    silent = {0}

    def reply(request):
        return bad(request.unit) if request.unit in silent else answer_all(request)

    for miss in (1, 2):
        now_s, _ = run_cycle(master, master.wake_s(), reply)
        assert master.units[0].misses == miss and not master.units[0].comm_warning
        assert master.warnings() == []
    now_s, _ = run_cycle(master, master.wake_s(), reply)
    assert master.units[0].comm_warning
    assert master.warnings() == ["W31 Battery_comm_warn: battery 1"]
    assert not master.units[1].comm_warning
    assert master.units[0].values["pack_voltage_mv"] == 54_580  # the last values stay, the row goes offline
    assert master.rows()[0]["online"] is False
    silent.clear()
    run_cycle(master, master.wake_s(), reply)
    assert not master.units[0].comm_warning and master.units[0].misses == 0
    assert master.warnings() == []


def test_an_exception_reply_is_recorded_and_cleared_by_an_answer():
    master = DeyeMaster(units=[0])
    run_cycle(master, 0.0, reply=lambda r: modbus.with_crc(bytes((0, 0x84, 0x02))))
    assert master.units[0].exception == 2 and master.units[0].misses == 1
    run_cycle(master, master.wake_s())
    assert master.units[0].exception is None


def test_a_unit_that_never_answered_gets_no_w31():
    master = DeyeMaster(units=[0], warn_after=3)
    for _ in range(10):
        run_cycle(master, master.wake_s(), reply=lambda request: None)
    assert master.units[0].misses == 10 and master.units[0].polls == 10
    assert master.warnings() == [] and master.units[0].values is None


def test_w31_after_one_miss_when_warn_after_is_one():
    master = DeyeMaster(units=[0], warn_after=1)
    run_cycle(master, 0.0)
    run_cycle(master, master.wake_s(), reply=lambda request: None)
    assert master.warnings() == ["W31 Battery_comm_warn: battery 1"]


# --- identity --------------------------------------------------------------------------


def identity_requests(requests):
    return [r.unit for r in requests if r.function == modbus.REPORT_ID]


def test_identity_is_read_again_every_identity_interval():
    master = DeyeMaster(units=[0], poll_period_s=1.0, identity_interval_s=10.0)
    reads = []
    for cycle in range(25):
        _, requests = run_cycle(master, float(cycle))
        reads += [cycle for _ in identity_requests(requests)]
    # read at t=0.07 (after the first answer), due again 10 s later: the polls at 11 s and 22 s
    assert reads == [0, 11, 22]


def test_a_missed_identity_is_retried_at_the_next_poll_and_is_not_a_miss():
    master = DeyeMaster(units=[0], poll_period_s=1.0, identity_interval_s=60.0, warn_after=1)
    refused = [2]

    def reply(request):
        if request.function == modbus.REPORT_ID and refused[0]:
            refused[0] -= 1
            return None if refused[0] else modbus.with_crc(bytes((0, 0x91, 0x01)))  # silence, then an exception
        return answer_all(request)

    per_cycle = []
    for cycle in range(4):
        _, requests = run_cycle(master, float(cycle), reply)
        per_cycle.append(identity_requests(requests))
        if cycle < 2:
            assert master.units[0].identity is None
    assert per_cycle == [[0], [0], [0], []]
    assert master.units[0].identity["model"] == "BYD PRO 2.5"
    assert master.units[0].misses == 0 and master.warnings() == []


def test_an_identity_that_does_not_fit_is_shown_raw():
    master = DeyeMaster(units=[0])
    odd = modbus.with_crc(b"\x00\x11\x03abc")
    run_cycle(master, 0.0, reply=lambda r: registers_reply(0) if r.function == 4 else odd)
    assert master.units[0].identity == {"raw": "616263"}


# --- power -----------------------------------------------------------------------------


def two_batteries(watts, limits_ma=(100_000, 30_000), volts_raw=5200):
    registers = {}
    for unit, limit in enumerate(limits_ma):
        values = list(PHOTO_REGISTERS)
        values[0] = volts_raw  # 52.00 V
        values[12] = limit // 10
        registers[unit] = values
    master = DeyeMaster(units=[0, 1, 2], profile=PowerProfile("constant", watts=watts))

    def reply(request):
        if request.unit == 2:
            return None
        if request.function == modbus.READ_INPUT:
            return registers_reply(request.unit, registers[request.unit])
        return identity_reply(request.unit)

    run_cycle(master, 0.0, reply)
    return master


def test_charge_power_is_split_and_limited_by_each_batterys_max_charge_current():
    # 5200 W / 52.00 V = 100 A over the two answering batteries: 50 A each; battery 2 advertises 30 A
    master = two_batteries(5200.0)
    assert master.battery_current_ma == {0: 50_000, 1: 30_000}


def test_discharge_power_is_negative_and_not_limited():
    master = two_batteries(-5200.0)
    assert master.battery_current_ma == {0: -50_000, 1: -50_000}


def test_units_with_w31_get_no_current():
    master = DeyeMaster(units=[0, 1], warn_after=1, profile=PowerProfile("constant", watts=5458.0))
    run_cycle(master, 0.0)
    run_cycle(master, master.wake_s(), reply=lambda r: None if r.unit == 1 else answer_all(r))
    # 5458 W at 54.58 V: 100 A, all into battery 1, limited to its 50 A
    assert master.battery_current_ma == {0: 50_000}


def test_profile_time_is_the_time_the_cycle_ends():
    profile = PowerProfile("day", peak_solar_w=6000, base_load_w=1000, day_length_s=24)
    master = DeyeMaster(units=[0], profile=profile, poll_period_s=1.0)
    run_cycle(master, 0.0)
    end_s, _ = run_cycle(master, 17.95)  # starts before 18:00 of the 24 s day, ends after it
    assert end_s == pytest.approx(18.02)
    # at 18:00 the sun is down and the evening load doubles: 2000 W out of the battery at 54.58 V
    assert master.battery_current_ma == {0: round(-2000 / 54.58 * 1000)}


# --- the Li-BMS table ------------------------------------------------------------------


def test_rows_show_the_photo_row_and_empty_rows():
    master = DeyeMaster(units=[0, 1])
    run_cycle(master, 0.0, reply=lambda r: None if r.unit == 1 else answer_all(r))
    assert master.rows() == [
        {
            "battery": 1,
            "online": True,
            "comm_warning": False,
            "volt_v": 54.58,
            "curr_a": 0.9,
            "temp_c": 28.2,
            "soc_pct": 100.0,
            "energy_ah": 49.5,
            "charge_volt_v": 55.8,
            "charge_curr_a": 50.0,
            "fault": "0|0|0",
            "model": "BYD PRO 2.5",
        },
        {"battery": 2, "online": False, "comm_warning": False},
    ]


def test_render_table_shows_every_row():
    from rich.console import Console

    from hil.console import render_table

    master = DeyeMaster(units=[0, 1])
    run_cycle(master, 0.0, reply=lambda r: None if r.unit == 1 else answer_all(r))
    console = Console(width=140, record=True)
    console.print(render_table(master))
    text = console.export_text()
    assert "54.58V" in text and "BYD PRO 2.5" in text and "55.8V" in text and "50.0A" in text
    assert "(cycle 1)" in text


def test_unit_state_snapshot_is_a_copy():
    master = DeyeMaster(units=[0])
    run_cycle(master, 0.0)
    state = master.units[0]
    snapshot = state.snapshot()
    assert snapshot["values"] == state.values and snapshot["values"] is not state.values
    assert snapshot["comm_warning"] is False and snapshot["identity"]["model"] == "BYD PRO 2.5"
