"""The vbms pytest plugin (registered as a pytest11 entry point).

Options:
  --target des|sim|micropython|esp32   the world scenarios run in (default des)
  --bench FILE             the bench file (default: the embedded default bench)
  --deploy                 esp32: build the firmware and copy it onto the board before the first scenario
  --lg-place NAME[,NAME]   esp32: the board of a labgrid place (bench farm, docs/farm.md, hil/farm/plugin.py);
  --lg-tags K=V[,K=V]      or of any place with these tags; with pytest-xdist one place per worker
With --target esp32 the bench file's [esp32] section names the board's console, its two RS485 adapters
and the Bluetooth adapters (hil/benches/esp32-example.toml); it is checked before anything runs, and a
mistake stops the session with what to fix.  Without --bench, esp32 runs on the virtual board (hil/board.py
VirtualBoard: the firmware on the MicroPython unix port behind PTYs, started once per session).
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
                   between the scenarios of a real-time target and reset between them;
                   one that failed stops it and the next scenario gets a new one) or
                   .use(bench) (a bench of its own); released at the scenario's end.
  ble_environment  a private dbus-daemon and BlueZoo with two adapters (hci0
                   for a peripheral, hci1 for a central); nothing is left
                   running afterwards.  Tests using it are marked `ble`.
  mqtt_broker      a real mosquitto on a free localhost port; "host:port".
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Generator, Iterator
from typing import TYPE_CHECKING, NoReturn

import pytest

from hil.farm import plugin as farm_plugin
from hil.wires.ble import BleEnvironment, BleEnvironmentError

if TYPE_CHECKING:
    from pathlib import Path

    import pluggy

    from hil.benchfile import Bench
    from hil.board import VirtualBoard
    from hil.targets import Target

TAGS = {
    "des_only": "needs simulated time",
    "needs_ble": "needs Bluetooth LE",
    "needs_radio": "needs a real Bluetooth radio",
    "needs_browser": "needs the web dashboard in a browser",
    "slow": "takes long on a real-time target",
    "soak": "runs simulated days on end (minutes of wall time even on des): on demand, tox -e soak",
}
# which tags each target cannot serve
UNSUPPORTED = {
    "des": ("needs_radio", "needs_browser"),
    "sim": ("des_only", "needs_radio"),
    "micropython": ("des_only", "needs_radio"),
    "esp32": ("des_only",),
}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("vbms")
    group.addoption(
        "--target",
        default="des",
        choices=("des", "sim", "micropython", "esp32"),
        help="where scenarios run (default des)",
    )
    group.addoption("--bench", default=None, help="bench file (TOML); default: the embedded default bench")
    group.addoption(
        "--deploy",
        action="store_true",
        help="esp32: build the firmware (vbms firmware build) and copy it onto the board (vbms firmware deploy) first",
    )
    farm_plugin.add_options(group)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "ble: needs the BLE environment (dbus-daemon + BlueZoo)")
    for tag, meaning in TAGS.items():
        config.addinivalue_line("markers", "%s: %s" % (tag, meaning))
    if config.getoption("--deploy", False) and config.getoption("--target", None) != "esp32":
        raise pytest.UsageError("--deploy copies the firmware onto a board: it goes with --target esp32")
    config.addinivalue_line("markers", "farm: a bench farm test (labgrid; tox env farm, tests/test_farm.py)")
    farm = farm_plugin.configure(config)  # None unless --lg-place, --lg-tags or --lg-env
    if config.getoption("--target", None) == "esp32" and config.getoption("--bench", None) and farm is None:
        check_esp32_bench(config.getoption("--bench"))


def check_esp32_bench(path: str) -> None:
    """A bench file for a board, checked before any scenario runs: its [esp32] keys, its ports, its
    Bluetooth adapters.  A mistake is the user's: a usage error saying what to fix, never a skip."""
    from hil.benchfile import BenchError, load
    from hil.board import BoardError, check_bench

    try:
        check_bench(load(path))
    except (BenchError, BoardError) as error:
        raise pytest.UsageError("--bench %s: %s" % (path, error)) from None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    target = config.getoption("--target")
    virtual_board = target == "esp32" and not config.getoption("--bench") and farm_plugin.FARM not in config.stash
    for item in items:
        for tag in UNSUPPORTED[target]:
            if item.get_closest_marker(tag) is not None:
                item.add_marker(
                    pytest.mark.skip(reason="%s: the %s target cannot run it (%s)" % (tag, target, TAGS[tag]))
                )
        if virtual_board and item.get_closest_marker("needs_radio") is not None:
            item.add_marker(
                pytest.mark.skip(reason="needs_radio: the virtual board (--target esp32 without --bench) has BlueZoo, "
                                 "no radio; give a real board's --bench")
            )  # fmt: skip


def load_bench(config: pytest.Config) -> tuple[Bench, str | None]:
    from hil.benchfile import BenchError, load, load_default

    path = config.getoption("--bench")
    try:
        return (load(path) if path else load_default()), path
    except BenchError as error:
        raise pytest.UsageError("--bench: %s" % error) from None


BENCHES: pytest.StashKey[BenchPool] = pytest.StashKey()  # config.stash: the session's BenchPool
SCENARIO_TARGET: pytest.StashKey[Target] = pytest.StashKey()  # item.stash: the target a test ran on, for its report
SCENARIO_FAILED: pytest.StashKey[bool] = pytest.StashKey()  # item.stash: a phase of the test failed


class BenchPool:
    """The targets of a session's scenarios.

    On a real-time target the default bench is started once and reset between scenarios;
    a scenario with a bench of its own stops it first (two real-time benches on one machine
    slow each other) and gets its own, stopped at its end.  A scenario that failed on the
    shared bench stops it too: whatever broke (a wedged link, a device that stopped
    answering) is not handed to the next scenario, which gets a fresh bench.  On des every
    scenario gets a fresh bench: it costs nothing.
    """

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.name: str = config.getoption("--target")
        self.default_bench, self.bench_path = load_bench(config)
        self._shared: Target | None = None
        self.virtual_board: VirtualBoard | None = None  # esp32 without --bench: the board CI has, one per session
        self.broken: str | None = None  # esp32: why the board could not be used; later scenarios fail with it at once
        self._deploy: bool = config.getoption("--deploy", False)
        self._directory: str | None = None
        self.farm = config.stash.get(farm_plugin.FARM, None)  # --lg-place/--lg-tags: the board is a place's

    def _make(self, bench: Bench) -> Target:
        from hil.targets import TargetUnavailable, make_target

        if self.name == "esp32":
            return self._make_esp32(bench)
        try:
            return make_target(self.name, bench, self.bench_path)
        except TargetUnavailable as reason:
            pytest.skip(str(reason))

    # --- esp32: a board the harness did not start ------------------------------------------------
    def _esp32_failed(self, error: object) -> NoReturn:
        self.broken = str(error)
        pytest.fail(self.broken, pytrace=False)

    def _start_virtual_board(self) -> None:
        """esp32 without --bench: the virtual board, at the first scenario that needs a board; the
        default bench becomes the bench file it writes (the default bench with an [esp32] section)."""
        if self.farm is not None:
            return self._lease_place()
        if self.name != "esp32" or self.bench_path is not None or self.broken is not None:
            return
        from hil.benchfile import default_text, load
        from hil.board import VirtualBoard

        self._directory = tempfile.mkdtemp(prefix="vbms-esp32-")
        try:
            self.virtual_board = VirtualBoard(default_text(), self._directory).start()
        except Exception as error:  # noqa: BLE001 - BoardError, BlueZoo's, the unix port's: all mean no board
            self._esp32_failed("the virtual board did not start: %s" % error)
        self.bench_path = str(self.virtual_board.bench_path)
        self.default_bench = load(self.bench_path)

    def _lease_place(self) -> None:
        """esp32 with a bench farm's place: the default bench (or --bench) gets the place's [esp32] (its ports
        bridged to local paths, its board, its Bluetooth adapters); held until close()."""
        # self.farm: there (_start_virtual_board calls this only with a farm)
        if self.broken is not None or self.farm.table is not None:  # type: ignore[union-attr]
            return
        from hil.benchfile import BenchError
        from hil.farm import FarmError

        try:
            self.farm.bench(self.default_bench)  # type: ignore[union-attr]
        except (FarmError, BenchError) as error:
            self._esp32_failed(error)

    def _deploy_tree(self) -> str | None:
        """--deploy: the build to copy onto the board, made once; None after the first board has it."""
        if not self._deploy:
            return None
        from hil import firmware

        self._deploy = False
        if self._directory is None:
            self._directory = tempfile.mkdtemp(prefix="vbms-esp32-")  # removed at the session's end
        out = os.path.join(self._directory, "firmware")
        try:
            firmware.build(out)
        except firmware.FirmwareError as error:
            self._esp32_failed("--deploy: the firmware did not build: %s" % error)
        return os.path.join(out, "tree")

    def _make_esp32(self, bench: Bench) -> Target:
        from hil.benchfile import BenchError
        from hil.board import BoardError
        from hil.targets import Esp32Target

        if self.broken is not None:
            pytest.fail("the esp32 bench failed earlier in this session: %s" % self.broken, pytrace=False)
        if not bench.esp32:  # a scenario's own bench runs on the same board and adapters
            bench.esp32 = dict(self.default_bench.esp32)
        try:
            return Esp32Target(bench, self.bench_path, deploy_tree=self._deploy_tree())
        except (BoardError, BenchError) as error:
            self._esp32_failed(error)

    def shared(self) -> tuple[Target, bool]:
        self._start_virtual_board()
        if self.name == "des":
            return self._make(self.default_bench), True
        if self._shared is None:
            self._shared = self._make(self.default_bench)
            self._shared.remember_config()
        return self._shared, False

    def own(self, bench: Bench) -> tuple[Target, bool]:
        self._start_virtual_board()
        if self._shared is not None:
            self._shared.stop()
            self._shared = None
        return self._make(bench), True

    def release(self, target: Target, owned: bool, failed: bool = False) -> None:
        if owned or failed:
            target.stop()
            if self._shared is target:
                self._shared = None
        else:
            target.reset()

    def close(self) -> None:
        if self._shared is not None:
            self._shared.stop()
            self._shared = None
        if self.virtual_board is not None:
            self.virtual_board.stop()
            self.virtual_board = None
        if self.farm is not None:
            self.farm.release()  # after the target closed its ports
        if self._directory is not None:
            shutil.rmtree(self._directory, ignore_errors=True)
            self._directory = None


class ScenarioBench:
    """A scenario's hold on a target: the default bench unless use(bench) asks for another."""

    def __init__(self, pool: BenchPool, item: pytest.Item) -> None:
        self.pool = pool
        self.item = item
        self._target: Target | None = None
        self._owned = False

    @property
    def target(self) -> Target:
        if self._target is None:
            self._hold(*self.pool.shared())
        return self._target  # type: ignore[return-value]  # _hold() has set it

    def use(self, bench: Bench) -> Target:
        """This scenario runs on a bench of its own (a Given step builds it)."""
        if self._target is not None:
            self.pool.release(self._target, self._owned)
        self._hold(*self.pool.own(bench))
        return self._target  # type: ignore[return-value]  # _hold() has set it

    def _hold(self, target: Target, owned: bool) -> None:
        self._target, self._owned = target, owned
        self.item.stash[SCENARIO_TARGET] = target

    def release(self) -> None:
        if self._target is not None:
            self.pool.release(self._target, self._owned, failed=self.item.stash.get(SCENARIO_FAILED, False))
            self._target = None


def pytest_sessionfinish(session: pytest.Session) -> None:
    pool = session.config.stash.get(BENCHES, None)
    if pool is not None:
        pool.close()


@pytest.fixture
def scenario_bench(request: pytest.FixtureRequest) -> Iterator[ScenarioBench]:
    """The target a scenario runs on (see ScenarioBench); released when the scenario ends."""
    config = request.config
    if BENCHES not in config.stash:
        config.stash[BENCHES] = BenchPool(config)
    hold = ScenarioBench(config.stash[BENCHES], request.node)
    yield hold
    hold.release()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pluggy.Result[pytest.TestReport], None]:
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        item.stash[SCENARIO_FAILED] = True
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
            report.longrepr.addsection(title, text)  # type: ignore[union-attr]  # (hasattr)


@pytest.fixture
def ble_environment() -> Iterator[BleEnvironment]:
    try:
        environment = BleEnvironment().start()
    except BleEnvironmentError as error:
        pytest.fail("the BLE environment did not start: %s" % error)
    try:
        yield environment
    finally:
        environment.stop()


@pytest.fixture
def mqtt_broker(tmp_path: Path) -> Iterator[str]:
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
            if broker.poll() is not None:  # (stderr: a pipe)
                pytest.fail("mosquitto exited: %s" % broker.stderr.read().decode(errors="replace"))  # type: ignore[union-attr]
            time.sleep(0.05)
    try:
        yield "127.0.0.1:%d" % port
    finally:
        broker.terminate()
        broker.wait(timeout=10)
