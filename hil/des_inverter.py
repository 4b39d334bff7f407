"""The DEYE inverter in simulated time: the master model (simulators/deye/master.py) on the des FrameBus.

The model decides what to send, when, and what each reply means; this adapter sends its
requests on the inverter bus as the "deye" endpoint, hands them to the device under test when
they have crossed the wire, and feeds the model the reply bytes, or no reply once the
request's deadline has passed, all in simpy's time.  ask() is a raw exchange outside the
schedule (a scenario's own request); one exchange is on the line at a time.
"""

import simpy

from simulators.deye.master import GAP_S, DeyeMaster

SOURCE = "deye"  # the inverter's endpoint name on the bus (as on the real-time bench)


class InverterModel:
    """The DEYE master in a DesBench: a simpy process (run) around one DeyeMaster."""

    def __init__(
        self, des, units, poll_period_s, timeout_s, warn_after, profile, identity_interval_s=None, gap_s=GAP_S
    ):
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
        self._reply = None
        self.line = simpy.Resource(des.env, capacity=1)  # one exchange on the line at a time

    # --- what the inverter knows: the model's ----------------------------------------

    @property
    def units(self):
        return self.master.units

    @property
    def profile(self):
        return self.master.profile

    @profile.setter
    def profile(self, profile):
        self.master.profile = profile

    @property
    def cycles(self):
        return self.master.cycles

    @property
    def battery_current_ma(self):
        return self.master.battery_current_ma

    def rows(self):
        return self.master.rows()

    def warnings(self):
        return self.master.warnings()

    # --- the line ----------------------------------------------------------------------

    def reply_arrived(self, data, now_s):
        """Bytes the device under test sent on the inverter bus (the bus calls this when they arrive)."""
        if self._reply is not None and not self._reply.triggered:
            self._reply.succeed(data)

    def _exchange(self, request, deadline_s):
        """Send request; its reply (bytes), or None at deadline_s. Holds the line already."""
        env = self.des.env
        self._reply = env.event()
        reply_event = self._reply
        self.des.inverter_bus.send(SOURCE, request)
        result = yield reply_event | env.timeout(max(deadline_s - env.now, 0.0))
        self._reply = None
        return result[reply_event] if reply_event in result else None

    def ask(self, request):
        """A request out and its reply (bytes) or None after the timeout; a simpy process."""
        with self.line.request() as turn:
            yield turn
            deadline_s = self.des.env.now + self.des.inverter_bus.transfer_s(request) + self.master.timeout_s
            return (yield from self._exchange(request, deadline_s))

    def run(self):
        """The poll loop: whatever the model asks for, when it asks for it."""
        env = self.des.env
        while True:
            with self.line.request() as turn:
                yield turn
                request = self.master.next_request(env.now)
                if request is not None:
                    reply = yield from self._exchange(request.adu, request.deadline_s)
                    self.master.receive_frame(reply, env.now)
                    continue
            yield env.timeout(max(self.master.wake_s() - env.now, 0.0))
