"""The wires: faults on the RS485 buses, Bluetooth LE links lost and refused."""

from pytest_bdd import parsers, then, when

from .common import Context, slot


@when(parsers.parse("noise comes before the next {count:d} frames on the inverter bus"))
def inverter_noise(context: Context, count):
    context.target.bus_fault("inverter", "noise", source=None, count=count)


@when(parsers.parse("the next {count:d} frames from {source} on the battery bus are corrupted"))
def bms_corrupt(context: Context, count, source):
    context.target.bus_fault("bms", "corrupt", source=source, count=count)


@when(parsers.parse("the BLE link to battery {battery:d} is lost"))
def ble_lost(context: Context, battery):
    context.target.drop_ble(slot(battery))


@when(parsers.parse("the BLE link to battery {battery:d} is lost and the module refuses to reconnect"))
def ble_refused(context: Context, battery):
    context.target.drop_ble(slot(battery), refuse=True)


@when(parsers.parse("the module of battery {battery:d} accepts connections again"))
def ble_allowed(context: Context, battery):
    context.target.allow_ble(slot(battery))


@then(parsers.parse("within {seconds:d} seconds the VBMS has reconnected to battery {battery:d}"))
def reconnected(context: Context, seconds, battery):
    def row():
        summary, _ = context.target.rpc("VBMS.GetSummary")
        return next(r for r in summary["bms"] if r["slot"] == slot(battery))

    assert context.wait(seconds, lambda: row().get("ble_connects", 0) >= 2 and row()["status"] == "online"), row()
