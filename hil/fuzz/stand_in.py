"""The campaign's hands on the battery side: a stand-in on the BMS bus, and the BLE mangling.

BmsStandIn takes the place of some BMS modules (each is set "silent", the failure every
simulated module has) on an endpoint of its own on the BMS bus, and answers the device
under test's polls of their addresses as hil/fuzz/grammar.py BmsReplyGrammar draws.
Valid replies come from twin device models (simulators/) over the same battery models,
so a valid reply carries the battery's values of the moment.

BleMangling passes every notification of the JK peripherals through a NotificationMangler.
simulators/jk/ble.py JkBlePeripheral has no hook for that; the mangling wraps the
peripheral's _send (the one place its notifications go out) on the instance, and counts a
send as delivered only when the peripheral's own notification counter moves (it counts
only what a subscribed central gets).

Both starve each of their modules in turn for app.stale_s plus margins (no usable reading
at all), so that the staleness limit is checked: the unit must then fall silent.
"""

from __future__ import annotations

import collections
import heapq
import random
import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, cast

from . import grammar
from .checks import BLE_RECOVERY_S, SILENT_MARGIN_S
from .line import Line

if TYPE_CHECKING:
    from simulators.battery import BatteryModel
    from simulators.byd.device import BydModule
    from simulators.jk.device import JkBms

    from ..benchfile import BatterySpec
    from ..shared_port import PortTap
    from ..sim import Simulation
    from .wire import WireCampaign

REQUEST_LENGTHS = {"byd_pro": (8,), "jk_rs485": (11, 8), "jk_4e57": (21,)}
STARVE_EXTRA_S = 5.0  # a starvation lasts app.stale_s plus this (the unit must be silent for the last seconds)


class Starvation:
    """Which slot, if any, gets no usable reading now: each in turn, app.stale_s + extra long, with
    app.stale_s of normal service between two."""

    def __init__(self, slots: Iterable[int], stale_s: float, start_s: float) -> None:
        self.slots = list(slots)
        self.length_s = stale_s + SILENT_MARGIN_S + STARVE_EXTRA_S
        self.period_s = self.length_s + stale_s
        self.start_s = start_s + stale_s

    def slot(self, now_s: float) -> int | None:
        if not self.slots or now_s < self.start_s:
            return None
        turn, offset = divmod(now_s - self.start_s, self.period_s)
        return self.slots[int(turn) % len(self.slots)] if offset < self.length_s else None

    def ended(self, now_s: float) -> tuple[int | None, float | None]:
        """The slot whose starvation ended last, and when (None before the first has ended)."""
        if not self.slots or now_s < self.start_s + self.length_s:
            return None, None
        turn = int((now_s - self.start_s - self.length_s) // self.period_s)
        return self.slots[turn % len(self.slots)], self.start_s + turn * self.period_s + self.length_s


def _twin(spec: BatterySpec, battery: BatteryModel) -> BydModule | JkBms:
    """A second device model over the same battery: the valid reply of the moment."""
    if spec.type == "byd_pro":
        from simulators.byd.device import BydModule

        return BydModule(cast(int, spec.address), battery, reply_delay_s=0.0)  # a unit on its bus
    from simulators.jk.device import JkBms

    twin = JkBms(battery, layout=spec.layout, address=spec.address if isinstance(spec.address, int) else 1,
                 name=spec.name, serial_number="SIM%02d" % spec.slot, seed=spec.slot)  # fmt: skip
    return twin


def _answer(twin: BydModule | JkBms, spec: BatterySpec, request: bytes) -> bytes | None:
    # the twin is the model _twin built for spec.type
    if spec.type == "byd_pro":
        answer = cast("BydModule", twin).handle(request)
    elif spec.type == "jk_rs485":
        answer = cast("JkBms", twin).handle_modbus(request)
    else:
        answer = cast("JkBms", twin).handle_4e57(request)
    return None if answer is None else answer[0]


class BmsStandIn:
    def __init__(self, campaign: WireCampaign) -> None:
        self.campaign = campaign
        sim = campaign.sim  # the real-time bench or a board (the des bench has no bms port, hil/fuzz/replay.py)
        rs485 = [spec for spec in sim.bench.batteries if spec.bus]
        bus = cast(str, rs485[0].bus)
        rng = campaign.random
        if len(rs485) > 1:  # one module keeps answering itself: what the stand-in does must not hurt it
            kept = rng.choice(rs485)
            self.specs = [spec for spec in rs485 if spec is not kept]
        else:
            self.specs = rs485
        self.slots = [spec.slot for spec in self.specs]
        self.twins = {spec.slot: (spec, _twin(spec, sim.batteries[spec.slot])) for spec in rs485}
        protocol = sim.bench.buses[bus].protocol
        self.grammar = grammar.BmsReplyGrammar(random.Random(rng.random()), protocol or "byd-pro")
        tap = getattr(sim, "battery_tap", None)  # a board's battery adapter (hil/fuzz/board.py)
        if tap is not None:
            self.line: Line | PortTap = tap()
        else:
            endpoint = cast("Simulation", sim).buses[bus].add_endpoint("fuzz")
            self.line = Line(endpoint.path, sim.bench.buses[bus].baud)
        bms_config, _ = campaign._rpc("Config.Get")
        self.timeout_s = bms_config["app"]["bms_timeout_ms"] / 1000
        self.starvation = Starvation(self.slots, cast(int, campaign.stale_s), time.monotonic())  # attach() set it
        self.malformed = 0
        self.answers = 0
        self.kinds: collections.Counter[str] = collections.Counter()
        # (when, sequence, data, slot, freshens)
        self._queue: list[tuple[float, int, bytes | bytearray, int, bool]] = []
        self._sequence = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def traffic(self) -> int:
        """Polls answered so far, whatever the answer was."""
        return self.answers

    def start(self) -> None:
        for spec in self.specs:
            self.campaign.sim.devices[spec.slot].set_failure("silent")
        self._thread = threading.Thread(target=self._run, name="fuzz-bms", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        for spec in self.specs:
            self.campaign.sim.devices[spec.slot].set_failure(None)
        self.line.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            now = time.monotonic()
            while self._queue and self._queue[0][0] <= now:
                _, _, data, slot, freshens = heapq.heappop(self._queue)
                self.line.write(data)
                if freshens:
                    self.campaign.evidence.sure(slot, time.monotonic())
            timeout = min(self._queue[0][0] - now, 0.02) if self._queue else 0.02
            for t_s, chunk in self.line.read(timeout):
                self._heard(t_s, chunk)

    def _heard(self, t_s: float, chunk: bytes) -> None:
        """A burst from the bus: a poll of an address the stand-in answers for, or anything else."""
        for slot in self.slots:
            spec, twin = self.twins[slot]
            for length in REQUEST_LENGTHS[spec.type]:
                if len(chunk) < length:
                    continue
                request = chunk[-length:]
                own = _answer(twin, spec, request)
                if own is not None:
                    self._answer(t_s, slot, spec, request, own)
                    return

    def _answer(self, t_s: float, slot: int, spec: BatterySpec, request: bytes, own: bytes) -> None:
        starving = self.starvation.slot(t_s) == slot
        kind = self.grammar.kind(starving)
        others = [s for s in self.twins if s != slot]
        other = None
        if others:
            other_spec, other_twin = self.twins[self.grammar.random.choice(others)]
            other = _answer(other_twin, other_spec, self._request_for(other_spec, request))
        sends = self.grammar.replies(kind, own, other, self.timeout_s + (len(request) + len(own)) * self.line.char_s,
                                     self.line.char_s)  # fmt: skip
        self.answers += 1
        self.kinds[kind] += 1
        if kind != "valid":
            self.malformed += 1
        if kind in grammar.MAY_FRESHEN and kind not in grammar.FRESHENING:
            self.campaign.evidence.possible(slot, t_s + max((s.delay_s for s in sends), default=0.0))
        self.campaign.note("bms_reply", slot=slot, request=request.hex(), reply_kind=kind,
                           sends=[send.to_json() for send in sends])  # fmt: skip
        for index, send in enumerate(sends):
            self._sequence += 1
            freshens = index == 0 and kind in grammar.FRESHENING
            heapq.heappush(self._queue, (t_s + send.delay_s, self._sequence, send.data, slot, freshens))

    @staticmethod
    def _request_for(spec: BatterySpec, request: bytes) -> bytes:
        """The same poll, addressed to another module (its twin answers it)."""
        if spec.type == "byd_pro":
            from vbms_core import byd

            return byd.encode_request(spec.address)
        return request


class BleMangling:
    def __init__(self, campaign: WireCampaign, slots: Iterable[int]) -> None:
        self.campaign = campaign
        self.slots = list(slots)
        rng = campaign.random
        self.manglers = {slot: grammar.NotificationMangler(random.Random(rng.random())) for slot in self.slots}
        self.starvation = Starvation(self.slots, cast(int, campaign.stale_s), time.monotonic())  # attach() set it
        self.malformed = 0
        self.sends = 0
        self.kinds: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()
        self._originals: dict[int, Callable[[list[bytes]], None]] = {}  # slot -> the peripheral's own _send
        self._last_starved: float | None = None

    @property
    def traffic(self) -> int:
        """Notification sends that reached a central so far, mangled or not."""
        return self.sends

    def start(self) -> None:
        for slot in self.slots:
            peripheral = self.campaign.sim.peripherals[slot]
            self._originals[slot] = peripheral._send
            # wrapped on the instance (the peripheral has no hook): mypy sees a method replaced
            peripheral._send = lambda payloads, slot=slot: self._send(slot, payloads)  # type: ignore[method-assign, misc]

    def stop(self) -> None:
        for slot, original in self._originals.items():
            self.campaign.sim.peripherals[slot]._send = original  # type: ignore[method-assign, assignment]

    def _send(self, slot: int, payloads: list[bytes]) -> None:
        now = time.monotonic()
        peripheral = self.campaign.sim.peripherals[slot]
        with self._lock:
            self._grace(now)
            starving = self.starvation.slot(now) == slot
            kind, sent, delivered = self.manglers[slot].mangle(payloads, starving)
            before = peripheral.notifications
            self._originals[slot](sent)
            if peripheral.notifications == before:
                return  # nobody subscribed: nothing reached the central
            self.sends += 1
            self.kinds[kind] += 1
            if kind != "intact":
                self.malformed += 1
            if delivered:
                self.campaign.evidence.sure(slot, now)
        self.campaign.note("ble_send", slot=slot, send_kind=kind, chunks=[chunk.hex() for chunk in sent],
                           delivered=len(delivered))  # fmt: skip

    def _grace(self, now: float) -> None:
        """A starved JK module's connection is dropped by the central (no frames for app.ble_timeout_s); it
        reconnects with backoff, so an answer is required again only BLE_RECOVERY_S after the starvation."""
        slot, ended_s = self.starvation.ended(now)
        if slot is not None and ended_s != self._last_starved:
            self._last_starved = ended_s
            self.campaign.evidence.grace_until[slot] = cast(float, ended_s) + BLE_RECOVERY_S  # set with slot
        current = self.starvation.slot(now)
        if current is not None:
            self.campaign.evidence.grace_until[current] = float("inf")
