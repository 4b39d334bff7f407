"""A frame-level model of an RS485 bus for simulated time (the `des` target).

A frame takes 10 bit times per byte at the bus's baud rate; a sender's UART sends its
frames one after another; two frames from different senders that overlap on the line
collide and arrive garbled; faults (drop, corrupt, noise) apply per sender.  Every frame
is recorded in the bench's trace.
"""


class FrameBus:
    """Frame-level RS485: transfer time, collisions, faults; records a trace."""

    def __init__(self, des, name, baud, protocol):
        self.des = des
        self.name = name
        self.baud = baud
        self.protocol = protocol
        self.char_s = 10 / baud
        self.busy_until = 0.0
        self.busy_frame = None
        self.collisions = 0
        self.frames = 0
        self.faults = []  # dicts: kind (drop, corrupt, noise), source, count
        self.sending_until = {}  # source -> when its UART has sent everything it was given

    def transfer_s(self, data):
        return len(data) * self.char_s

    def send(self, source, data, deliver):
        """A frame from source; deliver(bytes, end_s) gets it (garbled on collision).

        A sender's UART sends its frames one after another: a frame written while the
        sender's previous one is still on the line follows it, it does not collide with it.
        """
        env = self.des.env
        sending_until = self.sending_until.get(source, 0.0)
        self.sending_until[source] = max(sending_until, env.now) + self.transfer_s(data)
        if sending_until > env.now:
            env.process(self._put_later(sending_until - env.now, source, data, deliver))
        else:
            self._put(source, data, deliver)

    def _put_later(self, delay_s, source, data, deliver):
        yield self.des.env.timeout(delay_s)
        self._put(source, data, deliver)

    def _put(self, source, data, deliver):
        """The frame goes on the line now."""
        env = self.des.env
        start = env.now
        end = start + self.transfer_s(data)
        data = bytes(data)
        faults = []
        for fault in list(self.faults):
            if fault["source"] not in (None, source):
                continue
            faults.append(fault["kind"])
            if fault["kind"] == "drop":
                data = None
            elif fault["kind"] == "corrupt":
                data = data[:-1] + bytes(((data[-1] ^ 0x01),))
            elif fault["kind"] == "noise":
                data = bytes(self.des.random.randrange(256) for _ in range(4)) + data
            if fault.get("count") is not None:
                fault["count"] -= 1
                if fault["count"] <= 0:
                    self.faults.remove(fault)
        collided = start < self.busy_until
        if collided:
            self.collisions += 1
            if data is not None:
                data = bytes(b ^ 0xA5 for b in data)
            if self.busy_frame is not None:
                self.busy_frame["garbled"] = True
        frame = {"garbled": False}
        self.busy_until = max(self.busy_until, end)
        self.busy_frame = frame
        self.frames += 1
        self.des.trace.record(self, start, source, data or b"", faults=faults, collision=collided)

        def arrive():
            yield env.timeout(end - start)
            if data is not None:
                deliver(bytes(b ^ 0x5A for b in data) if frame["garbled"] else data, env.now)

        env.process(arrive())
