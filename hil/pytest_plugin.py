"""The vbms pytest plugin (registered as a pytest11 entry point).

Options:
  --target des|sim|esp32   the world scenarios run in (default des)
  --bench FILE             the bench file (default: the embedded default bench)
Tags (Gherkin tags become these markers; a scenario that cannot run on the
chosen target is skipped with the reason):
  des_only      needs simulated time (long waits, days of SOC drift)
  needs_ble     needs Bluetooth LE (modelled on des, BlueZoo on sim, radio on esp32)
  needs_radio   needs a real radio (esp32 only)
  needs_browser needs the web dashboard in a browser (sim, esp32)
  slow          takes long on a real-time target
When a scenario fails, the decoded bus trace (both buses) and the device
under test's log are attached to its report.

Fixtures:
  target           the chosen target, started on the bench, stopped afterwards.
  ble_environment  a private dbus-daemon and BlueZoo with two adapters (hci0
                   for a peripheral, hci1 for a central); nothing is left
                   running afterwards.  Tests using it are marked `ble`.
  mqtt_broker      a real mosquitto on a free localhost port; "host:port".
"""

import os
import shutil
import socket
import subprocess
import time

import pytest

from hil.wires.ble import BleEnvironment, BleEnvironmentError

TAGS = {
    "des_only": "needs simulated time",
    "needs_ble": "needs Bluetooth LE",
    "needs_radio": "needs a real Bluetooth radio",
    "needs_browser": "needs the web dashboard in a browser",
    "slow": "takes long on a real-time target",
}
# which tags each target cannot serve
UNSUPPORTED = {"des": ("needs_radio", "needs_browser"), "sim": ("des_only", "needs_radio"), "esp32": ("des_only",)}


def pytest_addoption(parser):
    group = parser.getgroup("vbms")
    group.addoption(
        "--target", default="des", choices=("des", "sim", "esp32"), help="where scenarios run (default des)"
    )
    group.addoption("--bench", default=None, help="bench file (TOML); default: the embedded default bench")


def pytest_configure(config):
    config.addinivalue_line("markers", "ble: needs the BLE environment (dbus-daemon + BlueZoo)")
    for tag, meaning in TAGS.items():
        config.addinivalue_line("markers", "%s: %s" % (tag, meaning))


def pytest_collection_modifyitems(config, items):
    target = config.getoption("--target")
    for item in items:
        for tag in UNSUPPORTED[target]:
            if item.get_closest_marker(tag) is not None:
                item.add_marker(
                    pytest.mark.skip(reason="%s: the %s target cannot run it (%s)" % (tag, target, TAGS[tag]))
                )


def load_bench(config):
    from hil.benchfile import BenchError, load, load_default

    path = config.getoption("--bench")
    try:
        return (load(path) if path else load_default()), path
    except BenchError as error:
        raise pytest.UsageError("--bench: %s" % error) from None


@pytest.fixture
def bench_spec(request):
    bench, _ = load_bench(request.config)
    return bench


@pytest.fixture
def target(request, bench_spec):
    from hil.targets import TargetUnavailable, make_target

    name = request.config.getoption("--target")
    try:
        world = make_target(name, bench_spec, request.config.getoption("--bench"))
    except TargetUnavailable as reason:
        pytest.skip(str(reason))
    request.node._vbms_target = world
    yield world
    world.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    world = getattr(item, "_vbms_target", None)
    if world is None or not report.failed or call.when != "call":
        return
    from hil.trace import format_record

    lines = [format_record(entry) for entry in world.trace_tail(60)]
    report.sections.append(("bus trace (last %d frames, decoded)" % len(lines), "\n".join(lines) or "(no frames)"))
    log = getattr(world.world, "dut_log", None)
    if log and os.path.exists(log):
        with open(log, encoding="utf-8", errors="replace") as handle:
            report.sections.append(("device under test log (tail)", "".join(handle.readlines()[-30:])))


@pytest.fixture
def ble_environment():
    try:
        environment = BleEnvironment().start()
    except BleEnvironmentError as error:
        pytest.fail("the BLE environment did not start: %s" % error)
    try:
        yield environment
    finally:
        environment.stop()


@pytest.fixture
def mqtt_broker(tmp_path):
    if shutil.which("mosquitto") is None:
        pytest.fail("mosquitto is not installed (Debian package mosquitto; ./dev test installs it)")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = tmp_path / "mosquitto.conf"
    config.write_text("listener %d 127.0.0.1\nallow_anonymous true\npersistence false\n" % port)
    broker = subprocess.Popen(["mosquitto", "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if broker.poll() is not None:
                pytest.fail("mosquitto exited: %s" % broker.stderr.read().decode(errors="replace"))
            time.sleep(0.05)
    try:
        yield "127.0.0.1:%d" % port
    finally:
        broker.terminate()
        broker.wait(timeout=10)
