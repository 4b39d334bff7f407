"""The batteries: alarms they raise, failures they have, and the bits the inverter sees."""

from pytest_bdd import parsers, then, when

from .common import Context, slot, values

DEYE_WORDS = {"warning": "warning", "protection": "protection", "fault": "fault_status"}


@when(parsers.parse("BYD battery {battery:d} raises its {word} bit {bit:d}"))
def byd_raises(context: Context, battery, word, bit):
    context.target.raise_alarm(slot(battery), word, bit)


@when(parsers.parse("BYD battery {battery:d} clears its alarms"))
def byd_clears(context: Context, battery):
    context.target.clear_alarms(slot(battery))


@when(parsers.parse("JK battery {battery:d} raises its error bit {bit:d}"))
def jk_raises(context: Context, battery, bit):
    context.target.raise_alarm(slot(battery), "error", bit)


@when(parsers.parse("BYD battery {battery:d} stops answering"))
def byd_silent(context: Context, battery):
    context.target.device_failure(slot(battery), "silent")


@when(parsers.parse("BYD battery {battery:d} answers with bad checksums"))
def byd_bad_checksum(context: Context, battery):
    context.target.device_failure(slot(battery), "bad_checksum")


@when(parsers.parse("BYD battery {battery:d} answers again"))
def byd_answers(context: Context, battery):
    context.target.device_failure(slot(battery), None)


@then(parsers.parse("the inverter shows battery {battery:d} with {word} bit {bit:d} set"))
def shows_bit(context: Context, battery, word, bit):
    register = DEYE_WORDS[word]
    assert context.wait(15, lambda: values(context, battery)[register] & (1 << bit)), values(context, battery)


@then(parsers.parse("the inverter shows battery {battery:d} with no alarm bits"))
def shows_no_alarm(context: Context, battery):
    def clear():
        shown = values(context, battery)
        return shown["warning"] == 0 and shown["protection"] == 0 and shown["fault_status"] & 0xFF == 0

    assert context.wait(15, clear), values(context, battery)
