"""The vbms pytest plugin (registered as a pytest11 entry point).

Options:
  --target des|sim|micropython|esp32   the world scenarios run in (default des)
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
  scenario_bench   the target a scenario runs on: .target (the default bench, shared
                   between the scenarios of a real-time target and reset between them) or
                   .use(bench) (a bench of its own); released at the scenario's end.
  ble_environment  a private dbus-daemon and BlueZoo with two adapters (hci0
                   for a peripheral, hci1 for a central); nothing is left
                   running afterwards.  Tests using it are marked `ble`.
  mqtt_broker      a real mosquitto on a free localhost port; "host:port".
"""

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
UNSUPPORTED = {
    "des": ("needs_radio", "needs_browser"),
    "sim": ("des_only", "needs_radio"),
    "micropython": ("des_only", "needs_radio"),
    "esp32": ("des_only",),
}


def pytest_addoption(parser):
    group = parser.getgroup("vbms")
    group.addoption(
        "--target",
        default="des",
        choices=("des", "sim", "micropython", "esp32"),
        help="where scenarios run (default des)",
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


BENCHES = pytest.StashKey()  # config.stash: the session's BenchPool
SCENARIO_TARGET = pytest.StashKey()  # item.stash: the target a test ran on, for its failure report


class BenchPool:
    """The targets of a session's scenarios.

    On a real-time target the default bench is started once and reset between scenarios;
    a scenario with a bench of its own stops it first (two real-time benches on one machine
    slow each other) and gets its own, stopped at its end.  On des every scenario gets a
    fresh bench: it costs nothing.
    """

    def __init__(self, config):
        self.config = config
        self.name = config.getoption("--target")
        self.default_bench, self.bench_path = load_bench(config)
        self._shared = None

    def _make(self, bench):
        from hil.targets import TargetUnavailable, make_target

        try:
            return make_target(self.name, bench, self.bench_path)
        except TargetUnavailable as reason:
            pytest.skip(str(reason))

    def shared(self):
        if self.name == "des":
            return self._make(self.default_bench), True
        if self._shared is None:
            self._shared = self._make(self.default_bench)
            self._shared.remember_config()
        return self._shared, False

    def own(self, bench):
        if self._shared is not None:
            self._shared.stop()
            self._shared = None
        return self._make(bench), True

    def release(self, target, owned):
        if owned:
            target.stop()
        else:
            target.reset()

    def close(self):
        if self._shared is not None:
            self._shared.stop()
            self._shared = None


class ScenarioBench:
    """A scenario's hold on a target: the default bench unless use(bench) asks for another."""

    def __init__(self, pool, item):
        self.pool = pool
        self.item = item
        self._target = None
        self._owned = False

    @property
    def target(self):
        if self._target is None:
            self._hold(*self.pool.shared())
        return self._target

    def use(self, bench):
        """This scenario runs on a bench of its own (a Given step builds it)."""
        if self._target is not None:
            self.pool.release(self._target, self._owned)
        self._hold(*self.pool.own(bench))
        return self._target

    def _hold(self, target, owned):
        self._target, self._owned = target, owned
        self.item.stash[SCENARIO_TARGET] = target

    def release(self):
        if self._target is not None:
            self.pool.release(self._target, self._owned)
            self._target = None


def pytest_sessionfinish(session):
    pool = session.config.stash.get(BENCHES, None)
    if pool is not None:
        pool.close()


@pytest.fixture
def scenario_bench(request):
    """The target a scenario runs on (see ScenarioBench); released when the scenario ends."""
    config = request.config
    if BENCHES not in config.stash:
        config.stash[BENCHES] = BenchPool(config)
    hold = ScenarioBench(config.stash[BENCHES], request.node)
    yield hold
    hold.release()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    target = item.stash.get(SCENARIO_TARGET, None)
    if target is None or not report.failed or call.when != "call":
        return
    from hil.trace import format_record

    lines = [format_record(entry) for entry in target.trace_tail(60)]
    sections = [("bus trace (last %d frames, decoded)" % len(lines), "\n".join(lines) or "(no frames)")]
    log = target.dut_log_tail(30)
    if log:
        sections.append(("device under test log (tail)", "\n".join(log)))
    for title, text in sections:
        report.sections.append((title, text))
        if hasattr(report.longrepr, "addsection"):  # so JUnit XML and Cucumber JSON carry them too
            report.longrepr.addsection(title, text)


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
