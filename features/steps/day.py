"""A day of solar charge and evening discharge."""

from pytest_bdd import parsers, then, when

from .common import Context


@when("the bench runs through the day")
def run_day(context: Context):
    target = context.target
    for _ in range(24):
        target.advance(150)
        socs = {slot: target.battery(slot).soc_permille for slot in target.configured_units()}
        context.samples.append((target.now_s(), socs, list(target.warnings())))


@then("every battery charged in the afternoon and discharged in the evening")
def day_shape(context: Context):
    noon = [s for t, s, _ in context.samples if 1500 <= t <= 2400]
    evening = [s for t, s, _ in context.samples if t >= 2850]
    morning = context.samples[0][1]
    for slot in (0, 4):
        assert max(s[slot] for s in noon) > morning[slot], (slot, morning[slot], noon)
        assert evening[-1][slot] < max(s[slot] for s in noon), (slot, evening)


@then(parsers.parse("every battery ends between {low:d} % and {high:d} % SOC"))
def day_soc(context: Context, low, high):
    for slot, soc in context.samples[-1][1].items():
        assert low * 10 <= soc <= high * 10, (slot, soc)


@then("the inverter raised no communication warning during the day")
def day_no_warning(context: Context):
    assert all(not warnings for _, _, warnings in context.samples), [w for _, _, w in context.samples if w]
