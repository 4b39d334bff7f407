"""Steps shared by every feature.  Given builds state, When acts, Then only asserts.

The target comes from the vbms pytest plugin (--target, --bench).  On `des`
each scenario gets a fresh bench; on `sim` one bench per feature file is
started and reset between scenarios (BlueZoo and eight batteries take a while
to come up).  pytest-bdd has no async steps: the targets hide asyncio.
"""

import pytest
from pytest_bdd import given, parsers, then, when

from hil.benchfile import load, load_default, parse
from hil.targets import TargetUnavailable, make_target

DEYE_WORDS = {"warning": "warning", "protection": "protection", "fault": "fault_status"}
BYD_WORDS = {"alarm": "force_alarm_bits", "protect": "force_protect_bits", "fail": "force_fail_bits"}


class Context:
    """What a scenario works with: the target and what the steps learnt."""

    def __init__(self, request):
        self.request = request
        self.target_name = request.config.getoption("--target")
        self.bench_path = request.config.getoption("--bench")
        self._target = None
        self.answer = None
        self.error = None
        self.samples = []
        self.page_rows = None

    @property
    def target(self):
        if self._target is None:
            self.use(load(self.bench_path) if self.bench_path else load_default(), shared=True)
        return self._target

    def use(self, bench, shared=False):
        """Start the scenario's world on a bench (on sim, the shared one when it can be)."""
        cache = self.request.node.module.__dict__.setdefault("_vbms_worlds", {})
        if shared and self.target_name == "sim" and "default" in cache:
            self._target = cache["default"]
            return
        if not shared and "default" in cache:
            # Two real-time benches on one machine slow each other: the shared one goes, and
            # comes back when a later scenario needs it.
            cache.pop("default").stop()
        try:
            world = make_target(self.target_name, bench, self.bench_path)
        except TargetUnavailable as reason:
            pytest.skip(str(reason))
        if shared and self.target_name == "sim":
            cache["default"] = world
            world.remember_config()
        else:
            self.request.addfinalizer(world.stop)
        self._target = world
        self.request.node._vbms_target = world

    def wait(self, seconds, condition):
        """Let time pass (simulated or real) until condition() holds or seconds have gone."""
        target = self.target
        step = 1.0 if target.name == "des" else 0.5
        waited = 0.0
        while waited <= seconds:
            if condition():
                return True
            target.advance(step)
            waited += step
        return condition()

    def configured_units(self):
        return sorted(spec.slot for spec in self.bench().batteries)

    def bench(self):
        return self.target.world.bench


@pytest.fixture
def context(request):
    context = Context(request)
    yield context
    if context._target is not None:
        request.node._vbms_target = context._target
        if context.target_name == "sim":
            reset_sim(context._target)


@pytest.fixture(scope="module", autouse=True)
def stop_shared_worlds(request):
    yield
    for world in request.module.__dict__.get("_vbms_worlds", {}).values():
        world.stop()


def reset_sim(target):
    """Undo what a scenario injected, so the next one starts from a healthy bench."""
    from simulators.deye.inverter import PowerProfile

    target.restore_config()
    target.world.inverter.profile = PowerProfile(**target.world.bench.profile)
    for bus in target.world.buses.values():
        bus.clear_faults()
    for slot, device in target.world.devices.items():
        device.set_failure(None)
        for name in ("force_alarm_bits", "force_protect_bits", "force_fail_bits", "force_error_bits"):
            if hasattr(device, name):
                setattr(device, name, 0)
        target.world.batteries[slot].forced = set()


def unit_values(context, battery):
    return context.target.unit(battery - 1)["values"]


# --- Given ------------------------------------------------------------------------------


@given("the inverter reads every configured battery")
def inverter_reads_everything(context):
    units = context.configured_units()
    assert context.wait(
        60, lambda: all(context.target.unit(u)["values"] and not context.target.unit(u)["comm_warning"] for u in units)
    ), "not every battery reached the inverter: %s" % {u: bool(context.target.unit(u)["values"]) for u in units}


@given("the inverter draws no power")
def no_power(context):
    """Steady currents, so each pack's voltage can be compared with what the inverter read."""
    from simulators.deye.inverter import PowerProfile

    if context._target is None and context.target_name == "des":
        bench = load(context.bench_path) if context.bench_path else load_default()
        bench.profile = {"kind": "constant", "watts": 0.0}
        context.use(bench)
    context.target.world.inverter.profile = PowerProfile("constant", watts=0.0)
    context.target.advance(4)  # a poll cycle with the new currents: voltages settle


@given("a bench of fifteen mixed RS485 batteries")
def fifteen_batteries(context):
    data = {
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
    context.use(parse(data))


@given("a day of solar power compressed into one simulated hour")
def solar_day(context):
    bench = load_default()
    bench.profile = {"kind": "day", "peak_solar_w": 12000.0, "base_load_w": 3000.0, "day_length_s": 3600.0}
    bench.inverter["units"] = list(range(8))
    context.use(bench)


# --- When -------------------------------------------------------------------------------


@when(parsers.parse("the bench runs for {seconds:d} seconds"))
def bench_runs(context, seconds):
    context.target.advance(seconds)


@when(parsers.parse("the bench runs for {seconds:d} seconds, noting each poll of the batteries"))
def bench_runs_noting_cycles(context, seconds):
    for _ in range(seconds // 3):
        context.target.advance(3)
        cycle = context.target.rs485_cycle_s()
        if cycle is not None:
            context.samples.append(cycle)


@when(parsers.parse("BYD battery {battery:d} raises its {word} bit {bit:d}"))
def byd_raises(context, battery, word, bit):
    setattr(context.target.device(battery - 1), BYD_WORDS[word], 1 << bit)


@when(parsers.parse("BYD battery {battery:d} clears its alarms"))
def byd_clears(context, battery):
    device = context.target.device(battery - 1)
    device.force_alarm_bits = device.force_protect_bits = device.force_fail_bits = 0


@when(parsers.parse("JK battery {battery:d} raises its error bit {bit:d}"))
def jk_raises(context, battery, bit):
    context.target.device(battery - 1).force_error_bits = 1 << bit


@when(parsers.parse("BYD battery {battery:d} stops answering"))
def byd_silent(context, battery):
    context.target.device(battery - 1).set_failure("silent")


@when(parsers.parse("BYD battery {battery:d} answers with bad checksums"))
def byd_bad_checksum(context, battery):
    context.target.device(battery - 1).set_failure("bad_checksum")


@when(parsers.parse("BYD battery {battery:d} answers again"))
def byd_answers(context, battery):
    context.target.device(battery - 1).set_failure(None)


@when(parsers.parse("the BLE link to battery {battery:d} is lost"))
def ble_lost(context, battery):
    context.target.drop_ble(battery - 1)


@when(parsers.parse("the BLE link to battery {battery:d} is lost and the module refuses to reconnect"))
def ble_refused(context, battery):
    context.target.drop_ble(battery - 1, refuse=True)


@when(parsers.parse("the module of battery {battery:d} accepts connections again"))
def ble_allowed(context, battery):
    context.target.allow_ble(battery - 1)


@when(parsers.parse("noise comes before the next {count:d} frames on the inverter bus"))
def inverter_noise(context, count):
    context.target.bus_fault("inverter", "noise", source=None, count=count)


@when(parsers.parse("the next {count:d} frames from {source} on the battery bus are corrupted"))
def bms_corrupt(context, count, source):
    context.target.bus_fault("bms", "corrupt", source=source, count=count)


@when(
    parsers.parse(
        "the inverter reads {count:d} registers at {address} with function {function:d} from battery {battery:d}"
    )
)
def inverter_reads(context, count, address, function, battery):
    context.answer = context.target.inverter_read(battery - 1, int(address, 0), count, function)


@when(parsers.parse("the charge voltage of battery {battery:d} is set to {volts:f} V through RPC"))
def set_voltage(context, battery, volts):
    result, error = context.target.rpc("Config.Set", {"config": {"bms%d.voltage" % (battery - 1): volts}})
    assert error is None, error


@when("the configuration is saved and the VBMS restarts")
def save_and_restart(context):
    result, error = context.target.rpc("Config.Save", {})
    assert error is None, error
    context.target.restart_dut()


@when(parsers.parse("a charge voltage of {volts:d} V is sent for battery {battery:d} through RPC"))
def send_voltage(context, volts, battery):
    changes = {"config": {"bms%d.voltage" % (battery - 1): volts}}
    context.answer, context.error = context.target.rpc("Config.Set", changes)


@when(parsers.parse("a charge voltage of {volts:d} V is sent for battery {battery:d} through RPC without the token"))
def send_voltage_without_token(context, volts, battery):
    changes = {"config": {"bms%d.voltage" % (battery - 1): volts}}
    context.answer, context.error = context.target.rpc("Config.Set", changes, authenticated=False)


@when("the VBMS scans for Bluetooth devices")
def scan(context):
    context.answer, context.error = context.target.rpc("VBMS.ScanBLE", {"seconds": 2})


@when("the dashboard is opened in a browser")
def open_dashboard(context):
    from playwright.sync_api import sync_playwright

    world = context.target.world
    flags = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync"]  # fmt: skip
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=flags)
        page = browser.new_page()
        page.clock.install()  # the page's refresh timer stays put: the table shows the summary caught here
        with page.expect_response(lambda response: "/rpc/VBMS.GetSummary" in response.url) as caught:
            page.goto(world.http_url + "/")
        context.answer = caught.value.json()
        page.wait_for_selector("#batteries tr.battery")
        context.page_rows = {
            int(row.get_attribute("data-slot")): dict(
                row.locator("td").evaluate_all("cells => cells.map(c => [c.dataset.label, c.innerText])")
            )
            for row in page.locator("#batteries tr.battery").all()
        }
        browser.close()


@when("the bench runs through the day")
def run_day(context):
    for _ in range(24):
        context.target.advance(150)
        context.samples.append(
            (context.target.world.env.now, {slot: b.soc_permille for slot, b in context.target.world.batteries.items()},
             list(context.target.warnings()))
        )  # fmt: skip


# --- Then -------------------------------------------------------------------------------


@then(parsers.parse("the inverter shows battery {battery:d} with the voltage and charge of its pack"))
def shows_pack(context, battery):
    values = unit_values(context, battery)
    model = context.target.battery(battery - 1)
    assert values is not None, "battery %d does not answer" % battery
    assert abs(values["pack_voltage_mv"] - model.pack_voltage_mv) <= 100, (
        values["pack_voltage_mv"],
        model.pack_voltage_mv,
    )
    spec = context.bench().battery(battery - 1)
    if spec.type == "jk_ble" and spec.layout == "JK04":
        # JK04 frames carry no SOC: the inverter gets one estimated from the cell voltages, never a silent 0
        summary, _ = context.target.rpc("VBMS.GetSummary")
        row = next(r for r in summary["bms"] if r["slot"] == battery - 1)
        assert row["SOC_estimated"] is True and row["SOC"] == values["soc_permille"] > 0, (row["SOC"], values)
    else:
        assert abs(values["soc_permille"] - model.soc_permille) <= 10, (values["soc_permille"], model.soc_permille)
    assert values["nominal_float_voltage_mv"] == 55_200


@then(parsers.parse('the inverter reads the model "{model}" for battery {battery:d}'))
def reads_model(context, model, battery):
    identity = context.target.unit(battery - 1)["identity"]
    assert identity is not None and identity["model"] == model, identity


@then(parsers.parse("the inverter gets no answer from batteries {first:d} to {last:d}"))
def no_answer(context, first, last):
    for battery in range(first, last + 1):
        assert context.target.unit(battery - 1)["values"] is None, battery


@then(parsers.parse("the inverter shows battery {battery:d} with {word} bit {bit:d} set"))
def shows_bit(context, battery, word, bit):
    register = DEYE_WORDS[word]
    assert context.wait(15, lambda: unit_values(context, battery)[register] & (1 << bit)), unit_values(context, battery)


@then(parsers.parse("the inverter shows battery {battery:d} with no alarm bits"))
def shows_no_alarm(context, battery):
    def clear():
        values = unit_values(context, battery)
        return values["warning"] == 0 and values["protection"] == 0 and values["fault_status"] & 0xFF == 0

    assert context.wait(15, clear), unit_values(context, battery)


@then(parsers.parse("within {seconds:d} seconds the inverter raises the communication warning for battery {battery:d}"))
def raises_warning(context, seconds, battery):
    assert context.wait(seconds, lambda: context.target.unit(battery - 1)["comm_warning"]), context.target.warnings()


@then(parsers.parse("within {seconds:d} seconds the inverter reads battery {battery:d} again"))
def reads_again(context, seconds, battery):
    assert context.wait(
        seconds,
        lambda: not context.target.unit(battery - 1)["comm_warning"] and context.target.unit(battery - 1)["values"],
    )


@then(parsers.parse("the inverter still reads battery {battery:d}"))
def still_reads(context, battery):
    assert not context.target.unit(battery - 1)["comm_warning"]


@then(parsers.parse("within {seconds:d} seconds the VBMS has reconnected to battery {battery:d}"))
def reconnected(context, seconds, battery):
    def row():
        summary, _ = context.target.rpc("VBMS.GetSummary")
        return next(r for r in summary["bms"] if r["slot"] == battery - 1)

    assert context.wait(seconds, lambda: row().get("ble_connects", 0) >= 2 and row()["status"] == "online"), row()


@then(parsers.parse("the inverter reads battery {battery:d} without a warning"))
def reads_without_warning(context, battery):
    assert context.wait(
        10, lambda: context.target.unit(battery - 1)["values"] and not context.target.unit(battery - 1)["comm_warning"]
    )


@then("the inverter reads every configured battery without a warning")
def all_without_warning(context):
    assert context.target.warnings() == []
    for unit in context.configured_units():
        assert context.target.unit(unit)["values"] is not None, unit


@then(parsers.parse("the answer is exception {code:d}"))
def answer_is_exception(context, code):
    assert context.answer == ("exception", code), context.answer


@then(parsers.parse("the answer holds {count:d} registers starting with the charge voltage"))
def answer_holds(context, count):
    kind, registers = context.answer
    assert kind == "registers" and len(registers) == count and registers[0] == 5520, context.answer


def wire_time_s(context):
    """Every battery polled once at its bus's baud rate: request out, reply back, from the real frame sizes."""
    from vbms_core import byd, jk_4e57, jk_pb

    total_bytes = 0
    for spec in context.bench().batteries:
        device = context.target.device(spec.slot)
        if spec.type == "byd_pro":
            request = byd.encode_request(spec.address)
            reply = device.handle(request)[0]
        elif spec.type == "jk_rs485":
            request = jk_pb.encode_trigger(spec.address, "status")
            reply = device.handle_modbus(request)[0]
        elif spec.type == "jk_4e57":
            request = jk_4e57.encode_read_all_request()
            reply = device.handle_4e57(request)[0]
        else:
            continue
        total_bytes += len(request) + len(reply)
    return total_bytes * 10 / 9600


@then("a poll of every battery typically takes less than 1.5 times its wire time")
def poll_cycle_budget(context):
    samples = sorted(context.samples)
    assert samples, "no poll cycle was completed"
    median = samples[len(samples) // 2]
    assert median < 1.5 * wire_time_s(context), (samples, wire_time_s(context))


@then("the inverter reads all fifteen batteries without a warning")
def fifteen_read(context):
    assert context.wait(30, lambda: all(context.target.unit(u)["values"] for u in range(15)))
    assert context.target.warnings() == []


@then(
    parsers.parse(
        "within {seconds:d} seconds the inverter reads a charge voltage of {volts:f} V for battery {battery:d}"
    )
)
def reads_voltage(context, seconds, volts, battery):
    wanted = round(volts * 1000)
    assert context.wait(
        seconds,
        lambda: (
            (unit_values(context, battery) or {}).get("nominal_float_voltage_mv") == wanted
            and not context.target.unit(battery - 1)["comm_warning"]
        ),
    )


@then(parsers.parse('the RPC answers an error naming "{key}"'))
def rpc_error(context, key):
    assert context.answer is None and key in context.error["message"], context.error


@then(parsers.parse("the RPC answers an error with code {code:d}"))
def rpc_error_code(context, code):
    assert context.answer is None and context.error["code"] == code, context.error


@then(parsers.parse("the charge voltage of battery {battery:d} is still {volts:f} V"))
def voltage_unchanged(context, battery, volts):
    config, _ = context.target.rpc("Config.Get")
    assert config["bms%d" % (battery - 1)]["voltage"] == volts


@then("every JK module of the bench is in the scan result")
def scan_lists_all(context):
    found = {device["address"] for device in context.answer["devices"]}
    wanted = {spec.address for spec in context.bench().batteries if spec.type == "jk_ble"}
    assert wanted <= found, (wanted, found)


@then("it shows every battery with the voltage VBMS.GetSummary returns")
def dashboard_matches(context):
    assert sorted(context.page_rows) == [battery["slot"] for battery in context.answer["bms"]]
    for battery in context.answer["bms"]:
        shown = context.page_rows[battery["slot"]]
        assert shown["Volt"] == "%.2f" % (battery["pack_voltage"] / 100), (shown, battery["pack_voltage"])


@then("every battery charged in the afternoon and discharged in the evening")
def day_shape(context):
    noon = [s for t, s, _ in context.samples if 1500 <= t <= 2400]
    evening = [s for t, s, _ in context.samples if t >= 2850]
    morning = context.samples[0][1]
    for slot in (0, 4):
        assert max(s[slot] for s in noon) > morning[slot], (slot, morning[slot], noon)
        assert evening[-1][slot] < max(s[slot] for s in noon), (slot, evening)


@then(parsers.parse("every battery ends between {low:d} % and {high:d} % SOC"))
def day_soc(context, low, high):
    for slot, soc in context.samples[-1][1].items():
        assert low * 10 <= soc <= high * 10, (slot, soc)


@then("the inverter raised no communication warning during the day")
def day_no_warning(context):
    assert all(not warnings for _, _, warnings in context.samples), [w for _, _, w in context.samples if w]
