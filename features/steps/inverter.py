"""What the inverter reads: values, identities, exceptions, communication warnings, time passing."""

from pytest_bdd import parsers, then, when

from .common import Context, slot, values


@when(parsers.parse("the bench runs for {seconds:d} seconds"))
def bench_runs(context: Context, seconds):
    context.target.advance(seconds)


@when(parsers.parse("the bench runs for {seconds:d} seconds, noting each poll of the batteries"))
def bench_runs_noting_cycles(context: Context, seconds):
    for _ in range(seconds // 3):
        context.target.advance(3)
        cycle = context.target.rs485_cycle_s()
        if cycle is not None:
            context.samples.append(cycle)


@when(
    parsers.parse(
        "the inverter reads {count:d} registers at {address} with function {function:d} from battery {battery:d}"
    )
)
def inverter_reads(context: Context, count, address, function, battery):
    context.answer = context.target.inverter_read(slot(battery), int(address, 0), count, function)


@then(parsers.parse("the inverter shows battery {battery:d} with the voltage and charge of its pack"))
def shows_pack(context: Context, battery):
    target = context.target
    shown = values(context, battery)
    model = target.battery(slot(battery))
    assert shown is not None, "battery %d does not answer" % battery
    assert abs(shown["pack_voltage_mv"] - model.pack_voltage_mv) <= 100, (
        shown["pack_voltage_mv"],
        model.pack_voltage_mv,
    )
    spec = target.bench.battery(slot(battery))
    if spec.type == "jk_ble" and spec.layout == "JK04":
        # JK04 frames carry no SOC: the inverter gets one estimated from the cell voltages, never a silent 0
        summary, _ = target.rpc("VBMS.GetSummary")
        row = next(r for r in summary["bms"] if r["slot"] == slot(battery))
        assert row["SOC_estimated"] is True and row["SOC"] == shown["soc_permille"] > 0, (row["SOC"], shown)
    else:
        assert abs(shown["soc_permille"] - model.soc_permille) <= 10, (shown["soc_permille"], model.soc_permille)
    assert shown["nominal_float_voltage_mv"] == 55_200


@then(parsers.parse('the inverter reads the model "{model}" for battery {battery:d}'))
def reads_model(context: Context, model, battery):
    identity = context.target.unit(slot(battery))["identity"]
    assert identity is not None and identity["model"] == model, identity


@then(parsers.parse("the inverter gets no answer from batteries {first:d} to {last:d}"))
def no_answer(context: Context, first, last):
    for battery in range(first, last + 1):
        assert values(context, battery) is None, battery


@then(parsers.parse("within {seconds:d} seconds the inverter raises the communication warning for battery {battery:d}"))
def raises_warning(context: Context, seconds, battery):
    target = context.target
    assert context.wait(seconds, lambda: target.unit(slot(battery))["comm_warning"]), target.warnings()


@then(parsers.parse("within {seconds:d} seconds the inverter reads battery {battery:d} again"))
def reads_again(context: Context, seconds, battery):
    target = context.target
    unit = slot(battery)
    assert context.wait(seconds, lambda: not target.unit(unit)["comm_warning"] and target.unit(unit)["values"])


@then(parsers.parse("the inverter still reads battery {battery:d}"))
def still_reads(context: Context, battery):
    assert not context.target.unit(slot(battery))["comm_warning"]


@then(parsers.parse("the inverter reads battery {battery:d} without a warning"))
def reads_without_warning(context: Context, battery):
    target = context.target
    unit = slot(battery)
    assert context.wait(10, lambda: target.unit(unit)["values"] and not target.unit(unit)["comm_warning"])


@then("the inverter reads every configured battery without a warning")
def all_without_warning(context: Context):
    target = context.target
    assert target.warnings() == []
    for unit in target.configured_units():
        assert target.unit(unit)["values"] is not None, unit


@then(parsers.parse("the answer is exception {code:d}"))
def answer_is_exception(context: Context, code):
    assert context.answer == ("exception", code), context.answer


@then(parsers.parse("the answer holds {count:d} registers starting with the charge voltage"))
def answer_holds(context: Context, count):
    kind, registers = context.answer
    assert kind == "registers" and len(registers) == count and registers[0] == 5520, context.answer


@then("a poll of every battery typically takes less than 1.5 times its wire time")
def poll_cycle_budget(context: Context):
    samples = sorted(context.samples)
    assert samples, "no poll cycle was completed"
    median = samples[len(samples) // 2]
    wire_time_s = context.target.bms_wire_time_s()
    assert median < 1.5 * wire_time_s, (samples, wire_time_s)


@then("the inverter reads all fifteen batteries without a warning")
def fifteen_read(context: Context):
    target = context.target
    assert context.wait(30, lambda: all(target.unit(u)["values"] for u in range(15)))
    assert target.warnings() == []
