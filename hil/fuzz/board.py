"""A board as the world of a wire campaign: `vbms fuzz wire --dut esp32`.

The board comes up as the esp32 target brings it up (hil/targets.py Esp32Target): the bench
checked against the machine, the adapters probed for echo, the simulated modules on the
battery adapter and the JK peripherals on their Bluetooth adapters, the board reset, its
ready line awaited and the bench's configuration put on it over RPC; only the DEYE
simulator stays off, since the campaign is the inverter on the inverter adapter (and, for
--port bms, a tap on the battery adapter: battery_tap).  A bench
without [esp32] runs on a virtual board (hil/board.py VirtualBoard), as pytest's
--target esp32 does without --bench.

What the campaign watches: the board's RPC, and its console (ConsoleLog): a traceback, or
a ready line after the campaign began (the board started again: a crash, a watchdog, a
brown-out), is a finding.  The board has no process of this machine to watch.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from simulators.battery import BatteryModel
    from simulators.byd.device import BydModule
    from simulators.jk.ble import JkBlePeripheral
    from simulators.jk.device import JkBms

    from ..benchfile import Bench
    from ..board import Board, VirtualBoard
    from ..shared_port import AdapterBench, PortTap
    from ..targets import Esp32Target
    from ..trace import Trace


class ConsoleLog:
    """What a board's console printed since the campaign began to watch it."""

    def __init__(self, board: Board) -> None:
        self.board = board
        self.seen = board.mark()[0]
        self.restarts: list[str] = []  # the ready lines that came after the start

    def new_text(self) -> str:
        """The console lines since the last call; a ready line among them is kept in restarts."""
        from ..board import READY_EVENT

        lines = self.board.lines_since(self.seen)
        if lines:
            self.seen = lines[-1][0]
        self.restarts += [text for _, text, record in lines if record and record.get("event") == READY_EVENT]
        return "".join(text + "\n" for _, text, _ in lines)

    def tail(self, characters: int = 2000) -> str:
        return "\n".join(self.board.tail(40))[-characters:]


class BoardWorld:
    """The started board and its adapter bench, with the surface a campaign uses (hil/fuzz/wire.py World)."""

    dut_process = None  # nothing of this machine: liveness is the RPC and the console
    dut_log = None

    def __init__(self, bench: Bench, bench_ref: str) -> None:
        self.virtual: VirtualBoard | None = None
        self._directory: str | None = None
        self.target: Esp32Target | None = None  # once started
        self.bench_in = bench
        self.bench_ref = bench_ref

    def start(self) -> BoardWorld:
        """BoardError, BenchError or the virtual board's failure when the board cannot be used."""
        from ..benchfile import default_text, load
        from ..board import VirtualBoard
        from ..targets import Esp32Target

        bench, path = self.bench_in, None if self.bench_ref == "default" else self.bench_ref
        try:
            if not bench.esp32:
                self._directory = tempfile.mkdtemp(prefix="vbms-board-")
                text = default_text() if path is None else Path(path).read_text()
                self.virtual = VirtualBoard(text, self._directory).start()
                path = str(self.virtual.bench_path)
                bench = load(path)
            self.target = Esp32Target(bench, path, inverter=False)
        except BaseException:
            self.stop()
            raise
        self.console = ConsoleLog(self.target.board)
        return self

    def _started(self) -> Esp32Target:
        if self.target is None:
            raise RuntimeError("the board's world is not started (or stopped)")
        return self.target

    @property
    def adapters(self) -> AdapterBench:
        return self._started().world

    @property
    def bench(self) -> Bench:
        return self.adapters.bench

    @property
    def batteries(self) -> dict[int, BatteryModel]:
        return self.adapters.batteries

    @property
    def devices(self) -> dict[int, BydModule | JkBms]:
        return self.adapters.devices

    @property
    def peripherals(self) -> dict[int, JkBlePeripheral]:
        return self.adapters.peripherals

    @property
    def trace(self) -> Trace:
        return self.adapters.trace

    @property
    def dut_token(self) -> str | None:
        return self._started().board.token

    @property
    def inverter_port(self) -> tuple[str, int]:
        """(path, baud) of the inverter adapter: the campaign's end of the board's inverter bus."""
        return self.bench.esp32["inverter_port"], self.bench.buses[self.bench.inverter["bus"]].baud

    def battery_tap(self) -> PortTap:
        """The campaign's own end of the battery bus: a tap on the battery adapter beside the modules."""
        from ..shared_port import PortTap

        port = self.adapters.shared_port
        if port is None:
            raise RuntimeError("bench %s has no battery on the board's battery port" % self.bench.name)
        return PortTap(port)

    def rpc(
        self, method: str, params: dict[str, Any] | None = None, token: str | None = None, timeout_s: float = 10
    ) -> tuple[int, Any]:
        """(status, body); a board that does not answer is a ConnectionError (the campaign's crash)."""
        from ..board import BoardError

        try:
            return self._started().board.rpc(method, params, token is not None, timeout_s)
        except BoardError as error:
            raise ConnectionError(str(error)) from None

    def stop(self) -> None:
        if self.target is not None:
            self.target.stop()  # the board runs on (a real one is left as it is)
            self.target = None
        if self.virtual is not None:
            self.virtual.stop()
            self.virtual = None
        if self._directory is not None:
            shutil.rmtree(self._directory, ignore_errors=True)
            self._directory = None
