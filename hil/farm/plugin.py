"""The pytest side of bench farms (hil/pytest_plugin.py adds the options and calls in here).

  pytest features --target esp32 --lg-place NAME           the place NAME
  pytest features --target esp32 --lg-place A,B -n 2       pytest-xdist worker gwN takes the N-th place
  pytest features --target esp32 --lg-tags board=esp32 -n 2    each worker reserves a place with these tags;
                                                               the coordinator gives each another one
  pytest features --target esp32 --lg-env ENV.yaml         the place of the RemotePlace in a labgrid
                                                           environment file (labgrid's own option)
The coordinator: labgrid's --lg-coordinator, else LG_COORDINATOR, else 127.0.0.1:20408.

Each process that runs scenarios holds its place for its whole session (FarmSession: reserved and acquired
at its first scenario, released at the session's end, also after a failure, Ctrl-C or SIGTERM: SIGTERM is
made a KeyboardInterrupt so pytest unwinds).  A process killed with SIGKILL cannot release: the place stays
acquired until `vbms farm release NAME`.

Reports: every scenario's JUnit testcase gets the properties lg_place and lg_worker, its Cucumber element the
tag `lg_place:NAME` and a description naming the place.  Under pytest-xdist every worker also writes its own
reports, named after its place: --junitxml reports/x.xml gives reports/x-NAME.xml (with a testsuite property
lg_place), --cucumberjson reports/x.json gives reports/x-NAME.json.  (pytest-bdd writes Cucumber JSON only
for scenarios run in its own process: under xdist the controller's file stays empty, the workers' have them.)
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any, NoReturn, Protocol

import pytest

from . import FarmError, coordinator_address, parse_tags

if TYPE_CHECKING:
    from types import FrameType

    from _pytest.junitxml import LogXML
    from pluggy import Result

    from ..benchfile import Bench
    from .session import Lease


# config.stash: the FarmSession of a run with --lg-place/--lg-tags/--lg-env
FARM: pytest.StashKey[FarmSession] = pytest.StashKey()
RADIO_TAG = "radio"  # a place whose Bluetooth is a real radio says radio=1 (needs_radio scenarios run there)


class ReportFile(Protocol):
    """A report writer of this worker's (pytest's LogXML, pytest-bdd's LogBDDCucumberJSON): where it writes."""

    logfile: str


def add_options(group: pytest.OptionGroup) -> None:
    group.addoption(
        "--lg-place", metavar="NAME[,NAME...]",
        help="esp32: run on the labgrid place NAME (bench farm, docs/farm.md); with pytest-xdist one place per "
        "worker (-n N, worker gwN takes the N-th)",
    )  # fmt: skip
    group.addoption(
        "--lg-tags", metavar="KEY=VALUE[,KEY=VALUE...]",
        help="esp32: reserve a labgrid place with these tags (exact values; one key per capability, e.g. "
        "board=esp32,bms_byd=1); each xdist worker reserves its own",
    )  # fmt: skip
    group.addoption(
        "--lg-wait", type=float, default=600.0, metavar="SECONDS",
        help="how long a reservation by --lg-tags waits for a free place (default 600)",
    )  # fmt: skip
    try:
        import labgrid  # noqa: F401 - its own pytest plugin adds --lg-coordinator and --lg-env
    except ImportError:
        group.addoption("--lg-coordinator", metavar="HOST:PORT", help="labgrid coordinator (needs the farm extra)")


def configure(config: pytest.Config) -> FarmSession | None:
    """The run's FarmSession (stashed), or None without --lg-place, --lg-tags or --lg-env; UsageError for a
    mistake in them."""
    place = config.getoption("lg_place", None)
    tags = config.getoption("lg_tags", None)
    env = config.getoption("lg_env", None)
    if not (place or tags or env):
        return None
    if config.getoption("--target", None) != "esp32":
        raise pytest.UsageError("--lg-place, --lg-tags and --lg-env hold a bench farm's place for --target esp32")
    if place and tags:
        raise pytest.UsageError("--lg-place and --lg-tags: give one (a place by name, or any place with the tags)")
    try:
        from . import require_labgrid

        require_labgrid()
        tag_filter = parse_tags(tags) if tags else None
    except FarmError as error:
        raise pytest.UsageError(str(error)) from None
    env_address: str | None = None
    places = [name for name in (place or "").split(",") if name]
    if env and not (place or tags):
        places, env_address = _from_environment(config, env)
    address = coordinator_address(config.getoption("lg_coordinator", None) or env_address)
    workers = config.getoption("numprocesses", None)
    if places and isinstance(workers, int) and workers > len(places):
        raise pytest.UsageError(
            "-n %d starts %d pytest-xdist workers but --lg-place names %d place(s): one worker per place"
            % (workers, workers, len(places))
        )
    if places and not workers and len(places) > 1 and not hasattr(config, "workerinput"):
        raise pytest.UsageError(
            "--lg-place names %d places: run one pytest-xdist worker per place (-n %d)" % (len(places), len(places))
        )
    farm = FarmSession(config, address, places or None, tag_filter, config.getoption("lg_wait", 600.0))
    config.stash[FARM] = farm
    config.pluginmanager.register(farm, "vbms-farm")
    farm.configure()
    return farm


def _from_environment(config: pytest.Config, path: str) -> tuple[list[str], str | None]:
    """The places and the coordinator of a labgrid environment file: its targets' RemotePlace resources."""
    from labgrid import Environment
    from labgrid.factory import target_factory

    environment = Environment(config_file=path)
    places: list[str] = []
    for role in environment.config.get_targets().values():
        resources, _ = target_factory.normalize_config(role)
        places += list(resources.get("RemotePlace", {}))
    if not places:
        raise pytest.UsageError("--lg-env %s names no RemotePlace: give --lg-place NAME" % path)
    return places, environment.config.get_option("coordinator_address", None)


class FarmSession:
    """The place one pytest process holds (a plugin: registered by configure())."""

    def __init__(
        self,
        config: pytest.Config,
        address: str,
        places: list[str] | None,
        tags: dict[str, str] | None,
        wait_s: float,
    ) -> None:
        self.config = config
        self.address = address
        self.places = places
        self.tags = tags
        self.wait_s = wait_s
        self.worker = os.environ.get("PYTEST_XDIST_WORKER")  # "gw0", ...: set in each xdist worker
        self.lease: Lease | None = None
        self.table: dict[str, Any] | None = None
        self.failure: str | None = None
        self.place: str | None = None
        self.tags_of_place: dict[str, str] = {}
        self._reports: list[ReportFile] = []  # this worker's own report writers, renamed after its place
        self._report_name: str | None = None  # what they are named after: the place, or the worker until it is known
        self.say = _terminal_say(config)

    @property
    def runs_tests(self) -> bool:
        return self.worker is not None or not _is_xdist_controller(self.config)

    def configure(self) -> None:
        _sigterm_interrupts()  # in an xdist controller too: its workers are then shut down, and release
        if self.places and self.runs_tests:
            index = int(self.worker[2:]) if self.worker else 0
            if index >= len(self.places):
                raise pytest.UsageError(
                    "xdist worker %s has no place: --lg-place names %d" % (self.worker, len(self.places))
                )
            self.place = self.places[index]
        if self.worker is not None:
            self._own_reports()

    # --- the lease --------------------------------------------------------------------------
    def bench(self, bench: Bench) -> Bench:
        """The bench with the place's [esp32]: its ports (bridged), board and Bluetooth adapters; the place is
        reserved and acquired at the first call.  FarmError (or BenchError) when it cannot be used."""
        if self.failure is not None:
            raise FarmError(self.failure)
        from ..benchfile import BenchError

        try:
            return self._bench(bench)
        except Exception as error:
            self.failure = str(error)
            self.release()
            if isinstance(error, (FarmError, BenchError)):
                raise
            raise FarmError("bench farm, place %s: %s" % (self.place or "(reserving)", error)) from error

    def acquire(self) -> None:
        """Reserve (with --lg-tags) and acquire the place, once; FarmError when it cannot be had."""
        if self.failure is not None:
            raise FarmError(self.failure)
        if self.lease is not None:
            return
        from .session import Lease

        started = time.monotonic()
        try:
            self.lease = Lease(self.address, place=self.place, tags=None if self.place else self.tags,
                               wait_s=self.wait_s, say=self.say).start()  # fmt: skip
            self.place = self.lease.place
            # a started lease has its coordinator and place
            self.tags_of_place = self.lease.coordinator.places().get(self.place, {}).get("tags", {})  # type: ignore[union-attr, arg-type]
        except Exception as error:
            self.failure = str(error)
            self.release()
            if isinstance(error, FarmError):
                raise
            raise FarmError("bench farm, place %s: %s" % (self.place or "(reserving)", error)) from error
        self.say("holding labgrid place %s (%s) for %s: %.1f s to reserve and acquire"
                 % (self.place, self.address, self.worker or "this run", time.monotonic() - started))  # fmt: skip
        for report in self._reports:  # (type: ignore below: self.place is the lease's place now)
            if self._report_name != self.place:
                report.logfile = _place_path(report.logfile, self._report_name, self.place)  # type: ignore[arg-type]
        xml = self.config.stash.get(_xml_key(), None)
        if xml is not None and self._report_name != self.place:
            xml.add_global_property("lg_place", self.place)

    def _bench(self, bench: Bench) -> Bench:
        from ..benchfile import BenchError, _esp32
        from .session import is_local

        self.acquire()  # (type: ignore below: from here on it holds a lease)
        if self.table is None:
            self.table = self.lease.esp32_table(_bauds(bench), base=bench.esp32)  # type: ignore[union-attr]
        jk_ble = [spec for spec in bench.batteries if spec.type == "jk_ble"]
        if jk_ble and self.table.get("ble_adapters") and not is_local(self.lease.exporter_host):  # type: ignore[union-attr]
            raise FarmError(
                "place %s: its Bluetooth adapters are on %s, and BlueZ serves only its own machine: run the "
                "scenarios there, or give a bench without JK BLE batteries (--bench)"
                % (self.place, self.lease.exporter_host)  # type: ignore[union-attr]
            )
        try:
            bench.esp32 = _esp32(dict(self.table), bench)
        except BenchError as error:
            raise FarmError("place %s: %s" % (self.place, error)) from None
        return bench

    def release(self) -> None:
        lease, self.lease = self.lease, None
        if lease is not None:
            lease.close()

    # --- hooks ----------------------------------------------------------------------------------
    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        if item.get_closest_marker("needs_radio") is None or "scenario_bench" not in getattr(item, "fixturenames", ()):
            return
        self.acquire()  # a failure here fails the scenario, as its bench would
        if self.tags_of_place.get(RADIO_TAG) != "1":
            pytest.skip("needs_radio: place %s is not tagged %s=1 (a real Bluetooth radio)" % (self.place, RADIO_TAG))

    @pytest.hookimpl(hookwrapper=True, tryfirst=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, Result[pytest.TestReport], None]:
        outcome = yield
        report = outcome.get_result()
        if self.place is None or self.lease is None or call.when != "call":
            return
        properties = [("lg_place", self.place), ("lg_worker", self.worker or "-")]
        for pair in properties:
            if pair not in item.user_properties:
                item.user_properties.append(pair)
            if pair not in report.user_properties:
                report.user_properties.append(pair)
        try:
            from pytest_bdd.reporting import test_report_context_registry
        except ImportError:
            return
        context = test_report_context_registry.get(report)
        if context is not None:
            scenario = context.scenario
            scenario["tags"] = sorted(set(scenario["tags"]) | {"lg_place:%s" % self.place})
            said = "ran on labgrid place %s (worker %s, coordinator %s)" % (
                self.place, self.worker or "-", self.address
            )  # fmt: skip
            scenario["description"] = "\n".join(part for part in (scenario.get("description"), said) if part)

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        self.release()  # after hil.pytest_plugin's (its targets close their ports first); safe twice

    def _own_reports(self) -> None:
        """An xdist worker's own JUnit and Cucumber reports (pytest and pytest-bdd write them only in the
        controller): named after the worker until its place is known, then after the place."""
        config = self.config
        # called in an xdist worker only: self.worker is set, so name is a str (type: ignore below)
        name = self._report_name = self.place or self.worker
        if config.option.xmlpath:
            from _pytest.junitxml import LogXML

            xml = LogXML(
                _place_path(config.option.xmlpath, None, name), config.option.junitprefix,  # type: ignore[arg-type]
                config.getini("junit_suite_name"), config.getini("junit_logging"),
                config.getini("junit_duration_report"), config.getini("junit_family"),
                config.getini("junit_log_passing_tests"),
            )  # fmt: skip
            config.stash[_xml_key()] = xml
            config.pluginmanager.register(xml)
            xml.add_global_property("lg_worker", self.worker)
            if self.place:
                xml.add_global_property("lg_place", self.place)
            self._reports.append(xml)
        path = getattr(config.option, "cucumber_json_path", None)
        if path:
            from pytest_bdd.cucumber_json import LogBDDCucumberJSON

            cucumber = LogBDDCucumberJSON(_place_path(path, None, name))  # type: ignore[arg-type]
            config.pluginmanager.register(cucumber)
            self._reports.append(cucumber)


def _xml_key() -> pytest.StashKey[LogXML]:
    from _pytest.junitxml import xml_key

    return xml_key


def _place_path(path: str, old: str | None, name: str) -> str:
    """reports/x.xml -> reports/x-NAME.xml; with old, reports/x-OLD.xml -> reports/x-NAME.xml."""
    stem, extension = os.path.splitext(path)
    if old and stem.endswith("-" + old):
        stem = stem[: -len(old) - 1]
    return "%s-%s%s" % (stem, name, extension)


def _is_xdist_controller(config: pytest.Config) -> bool:
    return not hasattr(config, "workerinput") and bool(config.getoption("numprocesses", None))


def _sigterm_interrupts() -> None:
    """SIGTERM (a CI's cancel, timeout, kill) unwinds as Ctrl-C does: the place is released on the way out."""

    def interrupt(signum: int, frame: FrameType | None) -> NoReturn:
        raise KeyboardInterrupt("SIGTERM")

    try:
        if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
            signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread: leave it
        pass


def _terminal_say(config: pytest.Config) -> Callable[[str], None]:
    reporter = config.pluginmanager.get_plugin("terminalreporter")

    def say(text: str) -> None:
        if reporter is not None:
            reporter.write_line("farm: " + text)

    return say


def _bauds(bench: Bench) -> dict[str, int]:
    """The RS485 adapters' baud rates: the bench's buses (the inverter's, the batteries')."""

    def baud(bus: str | None) -> int:
        return bench.buses[bus].baud if bus in bench.buses else 9600

    bms_bus = next((spec.bus for spec in bench.batteries if spec.bus), None)
    return {"inverter": baud(bench.inverter.get("bus")), "bms": baud(bms_bus)}
