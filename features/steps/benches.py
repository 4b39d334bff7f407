"""Given: the bench a scenario runs on, and the inverter's power."""

from pytest_bdd import given

from hil.benchfile import load_default, parse

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


@given("a day of solar power compressed into one simulated hour")
def solar_day(context: Context):
    bench = load_default()
    bench.profile = {"kind": "day", "peak_solar_w": 12000.0, "base_load_w": 3000.0, "day_length_s": 3600.0}
    bench.inverter["units"] = list(range(8))
    context.use(bench)
