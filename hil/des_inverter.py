"""The DEYE inverter in simulated time: the master model (simulators/deye/master.py) on the des FrameBus.

The model decides what to send, when, and what each reply means; this adapter sends its
requests on the inverter bus as the "deye" endpoint, hands them to the device under test when
they have crossed the wire, and feeds the model the reply bytes, or no reply once the
request's deadline has passed, all in simpy's time.  ask() is a raw exchange outside the
schedule (a scenario's own request); one exchange is on the line at a time, and a scenario's
request waiting for the line goes before the next poll.

The adapter runs on simpy timeouts with callbacks (no process per exchange): an exchange is
a request sent, a reply that arrives or a deadline that passes first, and the next exchange.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Generator, Iterable
from typing import TYPE_CHECKING, Any

import simpy

from simulators.deye.master import GAP_S, DeyeMaster, MasterView, PollRequest
from simulators.deye.profile import PowerProfile

from .wires.frame_bus import call_later

if TYPE_CHECKING:
    from .des import DesBench

SOURCE = "deye"  # the inverter's endpoint name on the bus (as on the real-time bench)


class _Exchange:
    """A request on the line: what to do with its reply (bytes, or None at its deadline)."""

    __slots__ = ("done",)

    def __init__(self, done: Callable[[bytes | None], object]) -> None:
        self.done = done


class InverterModel(MasterView):
    """The DEYE master in a DesBench: start() (or the process run()) around one DeyeMaster."""

    def __init__(
        self,
        des: DesBench,
        units: Iterable[int],
        poll_period_s: float,
        timeout_s: float,
        warn_after: int,
        profile: PowerProfile,
        identity_interval_s: float | None = None,
        gap_s: float = GAP_S,
    ) -> None:
        if identity_interval_s is None:
            identity_interval_s = des.bench.inverter.get("identity_interval_s", 60.0)
        self.des = des
        self.master = DeyeMaster(
            units,
            poll_period_s=poll_period_s,
            timeout_s=timeout_s,
            warn_after=warn_after,
            identity_interval_s=identity_interval_s,
            gap_s=gap_s,
            baud=des.inverter_bus.baud,
            profile=profile,
        )
        # on_poll(request, reply bytes or None, now_s) after the model took a poll's reply
        self.on_poll: Callable[[PollRequest, bytes | None, float], object] | None = None
        # on_cycle(now_s) when a cycle ended (the batteries' currents were split anew)
        self.on_cycle: Callable[[float], object] | None = None
        self._exchange: _Exchange | None = None  # the exchange on the line
        # (request, event): scenarios' requests waiting for the line
        self._asks: collections.deque[tuple[bytes, simpy.Event]] = collections.deque()
        self._wake_token = 0  # the latest planned wake; older ones are stale
        self._started = False

    # --- the line ----------------------------------------------------------------------

    def start(self) -> None:
        """Start polling (once): whatever the model asks for, when it asks for it."""
        if not self._started:
            self._started = True
            self._next()

    def run(self) -> Generator[simpy.Event, Any, None]:
        """start() as a simpy process, for callers that start the inverter with env.process();
        the polling lives in callbacks, so this process waits for nothing and never ends."""
        self.start()
        yield self.des.env.event()

    def reply_arrived(self, data: bytes, now_s: float) -> None:
        """Bytes the device under test sent on the inverter bus (the bus calls this when they arrive)."""
        if self._exchange is not None:
            self._finish(self._exchange, data)

    def ask(self, request: bytes) -> Generator[simpy.Event, Any, bytes | None]:
        """A request out and its reply (bytes) or None after the timeout; a simpy process."""
        env = self.des.env
        done = env.event()
        self._asks.append((request, done))
        self._next()
        return (yield done)

    def _send(self, request: bytes, deadline_s: float, done: Callable[[bytes | None], object]) -> None:
        env = self.des.env
        exchange = _Exchange(done)
        self._exchange = exchange
        self.des.inverter_bus.send(SOURCE, request)
        call_later(env, max(deadline_s - env.now, 0.0), self._finish, exchange, None)

    def _finish(self, exchange: _Exchange, reply: bytes | None) -> None:
        if self._exchange is not exchange:
            return  # answered already: this is its deadline passing, or a second reply
        self._exchange = None
        exchange.done(reply)
        self._next()

    def _next(self) -> None:
        """The line is free: a scenario's request first, then the model's next one, or a wait for it."""
        if self._exchange is not None:
            return
        env = self.des.env
        request: bytes | PollRequest | None  # a scenario's raw request, else the model's
        if self._asks:
            request, event = self._asks.popleft()
            deadline_s = env.now + self.des.inverter_bus.transfer_s(request) + self.master.timeout_s
            self._send(request, deadline_s, event.succeed)
            return
        if not self._started:
            return
        request = self.master.next_request(env.now)
        if request is not None:
            self._send(request.adu, request.deadline_s, lambda reply: self._polled(request, reply))
            return
        self._wake_token += 1
        token = self._wake_token
        wait_s = max(self.master.wake_s() - env.now, 0.0)
        call_later(env, wait_s, self._wake, token)

    def _wake(self, token: int) -> None:
        if token == self._wake_token:
            self._next()

    def _polled(self, request: PollRequest, reply: bytes | None) -> None:
        now_s = self.des.env.now
        cycles = self.master.cycles
        self.master.receive_frame(reply, now_s)
        if self.on_poll is not None:
            self.on_poll(request, reply, now_s)
        if self.on_cycle is not None and self.master.cycles != cycles:
            self.on_cycle(now_s)
