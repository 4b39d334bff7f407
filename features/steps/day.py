"""Days of solar charge and evening discharge: a day, and a week's soak (simulated time).

The days run second by second: the warnings the inverter shows are read every second (a W31
lasts until the battery's next answer, a poll period at least, so none goes unseen) and the
batteries' SOC every hour.  context.samples holds (t, {unit: SOC permille} or None, warnings):
one per hour, and one per second in which the inverter showed a warning.
"""

from pytest_bdd import given, parsers, then, when

from .common import Context, slot

DAY_S = 86400
HOUR_S = 3600
NOON_HOURS = (10, 16)  # the afternoon's sun: every battery charged by then
EVENING_HOUR = 19  # the evening load: every battery discharging from then on
CLEARED_WITHIN_S = 60


@given("the simulation models what the inverter sees, and the rest only when it is read")
def fast_fidelity(context: Context):
    """Only the inverter is looked at: the target may leave out what nobody reads (Target.set_fidelity)."""
    context.target.set_fidelity("fast")


@given(parsers.parse("BYD battery {battery:d} stops answering from {start} to {end} every night"))
def nightly_silence(context: Context, battery, start, end):
    silences = getattr(context, "nightly_silences", [])
    silences.append((slot(battery), _clock_s(start), _clock_s(end)))
    context.nightly_silences = silences


def _clock_s(text):
    hours, minutes = text.split(":")
    return int(hours) * HOUR_S + int(minutes) * 60


def _run(context, days):
    target = context.target
    start_s = target.now_s()
    changes = []  # (at_s, slot, failure)
    for day in range(days):
        for battery_slot, silent_s, answers_s in getattr(context, "nightly_silences", []):
            changes.append((start_s + day * DAY_S + silent_s, battery_slot, "silent"))
            changes.append((start_s + day * DAY_S + answers_s, battery_slot, None))
    changes.sort(key=lambda change: change[0])
    units = target.configured_units()
    for second in range(days * DAY_S + 1):
        now_s = start_s + second
        while changes and changes[0][0] <= now_s:
            _, battery_slot, failure = changes.pop(0)
            target.device_failure(battery_slot, failure)
        if second % HOUR_S == 0:
            socs = {unit: target.battery(unit).soc_permille for unit in units}
            context.samples.append((now_s, socs, tuple(target.warnings())))
        else:
            warnings = target.warnings()
            if warnings:
                context.samples.append((now_s, None, tuple(warnings)))
        if second < days * DAY_S:
            target.advance(1.0)


@when("the bench runs through the day")
def run_day(context: Context):
    _run(context, 1)


@when(parsers.parse("the bench runs for {days:d} days"))
def run_days(context: Context, days):
    _run(context, days)


def _socs(context):
    return [(t, socs) for t, socs, _ in context.samples if socs is not None]


def _charged_and_discharged(context, day):
    """Every battery rose from the day's start to the afternoon, and fell from there to the next day's start."""
    socs = _socs(context)
    start_s = socs[0][0] + day * DAY_S
    morning = next(s for t, s in socs if t == start_s)
    noon = [s for t, s in socs if start_s + NOON_HOURS[0] * HOUR_S <= t <= start_s + NOON_HOURS[1] * HOUR_S]
    evening = [s for t, s in socs if start_s + EVENING_HOUR * HOUR_S <= t <= start_s + DAY_S]
    for unit in morning:
        peak = max(s[unit] for s in noon)
        assert peak > morning[unit], (day, unit, morning[unit], [s[unit] for s in noon])
        assert evening[-1][unit] < peak, (day, unit, peak, [s[unit] for s in evening])


@then("every battery charged in the afternoon and discharged in the evening")
def day_shape(context: Context):
    _charged_and_discharged(context, 0)


@then("every battery charged and discharged on every day")
def week_shape(context: Context):
    days = round((_socs(context)[-1][0] - _socs(context)[0][0]) / DAY_S)
    assert days >= 1
    for day in range(days):
        _charged_and_discharged(context, day)


@then(parsers.parse("every battery ends between {low:d} % and {high:d} % SOC"))
def day_soc(context: Context, low, high):
    for unit, soc in _socs(context)[-1][1].items():
        assert low * 10 <= soc <= high * 10, (unit, soc)


@then("the inverter raised no communication warning during the day")
@then("the inverter raised no communication warning during the week")
def no_warning(context: Context):
    warned = [(t, warnings) for t, _, warnings in context.samples if warnings]
    assert not warned, warned[:10]


def _silences(context):
    start_s = context.samples[0][0]
    days = round((context.samples[-1][0] - start_s) / DAY_S)
    return [
        (battery_slot, start_s + day * DAY_S + silent_s, start_s + day * DAY_S + answers_s)
        for day in range(days)
        for battery_slot, silent_s, answers_s in context.nightly_silences
    ]


def _warned_units(warnings):
    return {int(text.rsplit(" ", 1)[1]) - 1 for text in warnings}


@then(
    parsers.parse("the inverter warned about battery {battery:d} in each of its silences, and about no other battery")
)
def warned_in_silences(context: Context, battery):
    warned = [(t, _warned_units(warnings)) for t, _, warnings in context.samples if warnings]
    assert {unit for _, units in warned for unit in units} == {slot(battery)}, warned[:10]
    silences = [(silent_s, answers_s) for unit, silent_s, answers_s in _silences(context) if unit == slot(battery)]
    assert silences
    for silent_s, answers_s in silences:
        assert any(silent_s <= t <= answers_s for t, _ in warned), (silent_s, answers_s)


@then(parsers.parse("each warning cleared within a minute of battery {battery:d} answering again"))
def warnings_cleared(context: Context, battery):
    silences = [(silent_s, answers_s) for unit, silent_s, answers_s in _silences(context) if unit == slot(battery)]
    for t, _, warnings in context.samples:
        if warnings:
            assert any(silent_s <= t <= answers_s + CLEARED_WITHIN_S for silent_s, answers_s in silences), (t, warnings)
