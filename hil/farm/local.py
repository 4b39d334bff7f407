"""A farm on this machine: a labgrid coordinator and one exporter on 127.0.0.1, places made and tagged.

For CI (tests/test_farm.py: the virtual boards' PTYs as benches) and for trying the farm without hardware
(`vbms farm virtual`).  The exporter publishes each bench as RawSerialPorts (served by ser2net, from Debian,
while a place is acquired), a VbmsBoard entry and a VbmsBluetoothAdapter per Bluetooth adapter, the same
layout as hil/benches/labgrid-exporter.yaml for a real bench.  The coordinator and the exporter are tied to
this process (hil/procs.py start_tied): they, and the exporter's ser2net children, stop with it.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Self, TextIO

from . import BLE_CLASS, BOARD_CLASS, FarmError, require_labgrid

if TYPE_CHECKING:
    from ..board import VirtualBoard
    from .session import Coordinator

EXPORTER = "vbms-local"
START_S = 30.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def ser2net_path() -> str | None:
    return shutil.which("ser2net") or next((p for p in ("/usr/sbin/ser2net",) if os.path.exists(p)), None)


class Bench:
    """One bench of a local farm: its three ports (device paths), its board settings, its Bluetooth adapters
    ([{"hci", "address", "dbus_address"}]) and its place's tags."""

    def __init__(
        self,
        name: str,
        console: str,
        inverter: str,
        bms: str,
        board: dict[str, Any] | None = None,
        ble: Iterable[dict[str, Any]] = (),
        tags: dict[str, str] | None = None,
        bauds: dict[str, int] | None = None,
    ) -> None:
        self.name = name
        self.ports = {"console": console, "inverter": inverter, "bms": bms}
        self.board = dict(board or {})
        self.ble = list(ble)
        self.tags = dict(tags or {})
        self.bauds = dict({"console": 115200, "inverter": 9600, "bms": 9600}, **(bauds or {}))


def exporter_config(benches: Iterable[Bench]) -> str:
    """The exporter's YAML for these benches (JSON values: YAML reads them as they are)."""
    lines = ["## written by hil/farm/local.py: one resource group per bench"]
    for bench in benches:
        lines += ["%s:" % bench.name, "  location: %s" % json.dumps("this machine (%s)" % bench.name)]
        for name, path in bench.ports.items():
            lines += ["  %s:" % name, "    cls: RawSerialPort", "    port: %s" % json.dumps(path),
                      "    speed: %d" % bench.bauds[name]]  # fmt: skip
        if bench.board:
            lines += ["  board:", "    cls: %s" % BOARD_CLASS]
            lines += ["    %s: %s" % (key, json.dumps(value)) for key, value in sorted(bench.board.items())]
        for number, adapter in enumerate(bench.ble):
            lines += ["  ble%d:" % number, "    cls: %s" % BLE_CLASS]
            lines += ["    %s: %s" % (key, json.dumps(value)) for key, value in sorted(adapter.items()) if value]
    return "\n".join(lines) + "\n"


class LocalFarm:
    """A coordinator and an exporter on 127.0.0.1 for `benches`; a place per bench (its name), matched to
    the bench's group and tagged.  start() returns when the coordinator lists every bench's resources."""

    def __init__(self, benches: Iterable[Bench], directory: str | None = None) -> None:
        self.benches = list(benches)
        self.directory = directory or tempfile.mkdtemp(prefix="vbms-farm-")
        self._own_directory = directory is None
        self.port = free_port()
        self.address = "127.0.0.1:%d" % self.port
        self.processes: dict[str, subprocess.Popen[Any]] = {}
        self._logs: list[TextIO] = []

    def start(self) -> Self:
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> Self:
        require_labgrid()
        if ser2net_path() is None:
            raise FarmError(
                "ser2net is not installed: labgrid's exporter serves serial ports with it (Debian package ser2net; "
                "./dev installs it)"
            )
        self.processes["coordinator"] = self._spawn("coordinator", ["labgrid-coordinator", "-l", self.address])
        self._wait(self._listening, "the coordinator to listen on %s" % self.address)
        config = os.path.join(self.directory, "exporter.yaml")
        with open(config, "w") as handle:
            handle.write(exporter_config(self.benches))
        self.processes["exporter"] = self._spawn(
            "exporter", ["labgrid-exporter", "-c", self.address, "-n", EXPORTER, "--hostname", "127.0.0.1", config]
        )
        from .session import connect

        coordinator = connect(self.address)
        try:
            self._wait(lambda: self._exported(coordinator), "the exporter's resources")
            for bench in self.benches:
                coordinator.create_place(bench.name, ["%s/%s/*" % (EXPORTER, bench.name)], bench.tags,
                                         comment="local farm: %s" % bench.name)  # fmt: skip
        finally:
            coordinator.close()
        return self

    def _exported(self, coordinator: Coordinator) -> bool:
        groups = coordinator.resources().get(EXPORTER, {})
        return all(
            name in groups.get(bench.name, {}) and groups[bench.name][name]["avail"]
            for bench in self.benches
            for name in bench.ports
        )

    def _spawn(self, name: str, command: list[str]) -> subprocess.Popen[Any]:
        from ..procs import start_tied

        executable: str | None  # where shutil.which finds none
        executable = os.path.join(os.path.dirname(sys.executable), command[0])
        if not os.path.exists(executable):
            executable = shutil.which(command[0])
        if executable is None:
            raise FarmError("%s is missing: install the farm extra (pip install -e '.[farm]')" % command[0])
        log = open(os.path.join(self.directory, name + ".log"), "w")  # noqa: SIM115 - kept open while it runs
        self._logs.append(log)
        env = dict(os.environ, PATH=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")  # ser2net is in /usr/sbin
        env.pop("LG_PLACE", None)
        return start_tied([executable] + command[1:], stdout=log, stderr=subprocess.STDOUT, cwd=self.directory, env=env)

    def _wait(self, ready: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + START_S
        while not ready():
            for name, process in self.processes.items():
                if process.poll() is not None:
                    raise FarmError("the %s exited (status %s): %s" % (name, process.returncode, self.log_tail(name)))
            if time.monotonic() >= deadline:
                raise FarmError("waited %g s for %s: %s" % (START_S, what, self.log_tail("exporter")))
            time.sleep(0.1)

    def _listening(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
            return True
        except OSError:
            return False

    def log_tail(self, name: str, characters: int = 1500) -> str:
        try:
            with open(os.path.join(self.directory, name + ".log"), errors="replace") as handle:
                return handle.read()[-characters:]
        except OSError:
            return ""

    def stop(self) -> None:
        """The exporter first (it stops its ser2net children; its process group goes with it in any case),
        then the coordinator."""
        from ..procs import stop_group

        for name in ("exporter", "coordinator"):
            process = self.processes.pop(name, None)
            if process is not None:
                stop_group(process)
        for log in self._logs:
            log.close()
        self._logs = []
        if self._own_directory:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --- virtual boards as places ---------------------------------------------------------------------

VIRTUAL_TAGS = {"board": "esp32", "inverter": "deye", "virtual": "1"}


def virtual_bench(name: str, board: VirtualBoard, tags: dict[str, str] | None = None) -> Bench:
    """A Bench for a started hil.board.VirtualBoard: its console and adapter PTYs, its RPC, token and EN
    line (SIGUSR1 to its supervisor), its BlueZoo adapters (one per JK BLE battery, in their order); tagged
    with what its bench file has."""
    bench = board.bench
    types = {spec.type for spec in bench.batteries}
    tags = dict(VIRTUAL_TAGS, **(tags or {}))
    for kind, tag in (("byd_pro", "bms_byd"), ("jk_rs485", "bms_jk"), ("jk_4e57", "bms_jk"), ("jk_ble", "jk_ble")):
        if kind in types:
            tags[tag] = "1"
    ble: list[dict[str, Any]] = []
    if board.ble is not None:
        jk = [spec for spec in bench.batteries if spec.type == "jk_ble"]
        ble = [{"hci": hci, "address": spec.address, "dbus_address": board.ble.address}
               for hci, spec in zip(board.ble.adapters, jk, strict=False)]  # fmt: skip
    inverter, bms = board.wires["inverter"], board.wires["bms"]
    # (type: ignore below: a started board, as given here, has its console and its supervisor's pid)
    return Bench(
        name, board.console, inverter.endpoint("adapter").path, bms.endpoint("adapter").path,  # type: ignore[arg-type]
        board={"rpc_url": board.http_url, "rpc_token": board.token, "reset": "command",
               "reset_command": "kill -USR1 %d" % board.pid},  # type: ignore[str-format]
        ble=ble, tags=tags, bauds={"inverter": inverter.baud, "bms": bms.baud},
    )  # fmt: skip


class VirtualFarm:
    """`count` virtual boards (hil/board.py, from bench_text: the default bench unless given) as places
    NAME-a, NAME-b, ... of a LocalFarm."""

    def __init__(
        self, count: int, prefix: str = "virtual", bench_text: str | None = None, directory: str | None = None
    ) -> None:
        self.count = count
        self.prefix = prefix
        self.bench_text = bench_text
        self.directory = directory or tempfile.mkdtemp(prefix="vbms-farm-")
        self._own_directory = directory is None
        self.boards: dict[str, VirtualBoard] = {}
        self.farm: LocalFarm | None = None

    @property
    def address(self) -> str:
        return self.farm.address  # type: ignore[union-attr]  # read once started

    @property
    def places(self) -> list[str]:
        return list(self.boards)

    def start(self) -> Self:
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> Self:
        from ..benchfile import default_text
        from ..board import VirtualBoard

        text = self.bench_text or default_text()
        for index in range(self.count):
            name = "%s-%s" % (self.prefix, chr(ord("a") + index))
            directory = os.path.join(self.directory, name)
            os.makedirs(directory, exist_ok=True)
            self.boards[name] = VirtualBoard(text, directory)
            self.boards[name].start()
        benches = [virtual_bench(name, board) for name, board in self.boards.items()]
        self.farm = LocalFarm(benches, os.path.join(self.directory, "farm"))
        os.makedirs(self.farm.directory, exist_ok=True)
        self.farm.start()
        return self

    def stop(self) -> None:
        if self.farm is not None:
            self.farm.stop()
            self.farm = None
        for board in self.boards.values():
            board.stop()
        self.boards = {}
        if self._own_directory:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
