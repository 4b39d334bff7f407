"""The device under test: its configuration over RPC, its restarts, its BLE scan, its dashboard."""

from pytest_bdd import parsers, then, when

from .common import Context, slot, values

BROWSER_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip


@when(parsers.parse("the charge voltage of battery {battery:d} is set to {volts:f} V through RPC"))
def set_voltage(context: Context, battery, volts):
    result, error = context.target.rpc("Config.Set", {"config": {"bms%d.voltage" % slot(battery): volts}})
    assert error is None, error


@when("the configuration is saved and the VBMS restarts")
def save_and_restart(context: Context):
    result, error = context.target.rpc("Config.Save", {})
    assert error is None, error
    context.target.restart_dut()


@when(parsers.parse("a charge voltage of {volts:d} V is sent for battery {battery:d} through RPC"))
def send_voltage(context: Context, volts, battery):
    changes = {"config": {"bms%d.voltage" % slot(battery): volts}}
    context.answer, context.error = context.target.rpc("Config.Set", changes)


@when(parsers.parse("a charge voltage of {volts:d} V is sent for battery {battery:d} through RPC without the token"))
def send_voltage_without_token(context: Context, volts, battery):
    changes = {"config": {"bms%d.voltage" % slot(battery): volts}}
    context.answer, context.error = context.target.rpc("Config.Set", changes, authenticated=False)


@when("the VBMS scans for Bluetooth devices")
def scan(context: Context):
    context.answer, context.error = context.target.rpc("VBMS.ScanBLE", {"seconds": 2})


@when("the dashboard is opened in a browser")
def open_dashboard(context: Context):
    from playwright.sync_api import sync_playwright

    url = context.target.dashboard_url()
    assert url, "the %s target serves no dashboard" % context.target.name
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=BROWSER_FLAGS)
        page = browser.new_page()
        page.clock.install()  # the page's refresh timer stays put: the table shows the summary caught here
        with page.expect_response(lambda response: "/rpc/VBMS.GetSummary" in response.url) as caught:
            page.goto(url + "/")
        context.answer = caught.value.json()
        page.wait_for_selector("#batteries tr.battery")
        context.page_rows = {
            int(row.get_attribute("data-slot")): dict(
                row.locator("td").evaluate_all("cells => cells.map(c => [c.dataset.label, c.innerText])")
            )
            for row in page.locator("#batteries tr.battery").all()
        }
        browser.close()


@then(
    parsers.parse(
        "within {seconds:d} seconds the inverter reads a charge voltage of {volts:f} V for battery {battery:d}"
    )
)
def reads_voltage(context: Context, seconds, volts, battery):
    wanted = round(volts * 1000)
    target = context.target

    def reads_it():
        shown = values(context, battery) or {}
        return shown.get("nominal_float_voltage_mv") == wanted and not target.unit(slot(battery))["comm_warning"]

    assert context.wait(seconds, reads_it), values(context, battery)


@then(parsers.parse('the RPC answers an error naming "{key}"'))
def rpc_error(context: Context, key):
    assert context.answer is None and key in context.error["message"], context.error


@then(parsers.parse("the RPC answers an error with code {code:d}"))
def rpc_error_code(context: Context, code):
    assert context.answer is None and context.error["code"] == code, context.error


@then(parsers.parse("the charge voltage of battery {battery:d} is still {volts:f} V"))
def voltage_unchanged(context: Context, battery, volts):
    config, _ = context.target.rpc("Config.Get")
    assert config["bms%d" % slot(battery)]["voltage"] == volts


@then("every JK module of the bench is in the scan result")
def scan_lists_all(context: Context):
    assert context.error is None, context.error
    found = {device["address"] for device in context.answer["devices"]}
    wanted = {spec.address for spec in context.target.bench.batteries if spec.type == "jk_ble"}
    assert wanted <= found, (wanted, found)


@then("it shows every battery with the voltage VBMS.GetSummary returns")
def dashboard_matches(context: Context):
    assert sorted(context.page_rows) == [battery["slot"] for battery in context.answer["bms"]]
    for battery in context.answer["bms"]:
        shown = context.page_rows[battery["slot"]]
        assert shown["Volt"] == "%.2f" % (battery["pack_voltage"] / 100), (shown, battery["pack_voltage"])
