"""Given: the bench a scenario runs on, and the inverter's power."""

from pytest_bdd import given, parsers

from hil.benchfile import FaultSpec, parse
from hil.benchmarks import solar_day_bench

from .common import Context

FIFTEEN_MIXED = {
    "name": "fifteen",
    "buses": {"inverter": {"baud": 9600, "protocol": "deye"}, "bms": {"baud": 9600, "protocol": "byd-pro"}},
    "inverter": {"bus": "inverter", "units": list(range(15)), "poll_period_s": 1.0, "timeout_s": 0.3},
    "batteries": [
        {"slot": slot, "type": "byd_pro", "bus": "bms", "address": slot + 1, "soc_permille": 500 + 30 * slot}
        for slot in range(12)
    ]
    + [
        {"slot": slot, "type": "jk_rs485", "bus": "bms", "address": 20 + slot, "layout": "JK02_32S"}
        for slot in (12, 13)
    ]
    + [{"slot": 14, "type": "jk_4e57", "bus": "bms", "address": 40}],
}


@given("the inverter reads every configured battery")
def inverter_reads_everything(context: Context):
    target = context.target
    units = target.configured_units()

    def everything_read():
        return all(target.unit(u)["values"] and not target.unit(u)["comm_warning"] for u in units)

    assert context.wait(60, everything_read), "not every battery reached the inverter: %s" % {
        u: bool(target.unit(u)["values"]) for u in units
    }


@given("the inverter draws no power")
def no_power(context: Context):
    """Steady currents, so each pack's voltage can be compared with what the inverter read."""
    context.target.set_power(0.0)
    context.target.advance(4)  # a poll cycle with the new currents: voltages settle


@given("a bench of fifteen mixed RS485 batteries")
def fifteen_batteries(context: Context):
    context.use(parse(FIFTEEN_MIXED))


@given("a day of solar power")
@given("a week of solar days")
def solar_day(context: Context):
    """The default bench's eight batteries under days of sun and household load (hil/benchmarks.py)."""
    context.use(solar_day_bench())


@given(parsers.parse("a week of solar days with noise before {percent:d} % of the frames on the battery bus"))
def solar_week_noisy(context: Context, percent):
    bench = solar_day_bench()
    bench.faults.append(FaultSpec(bus="bms", kind="noise", probability=percent / 100))
    context.use(bench)
