"""The DEYE inverter in simulated time: polls units, keeps their values, raises W31."""

import simpy

from vbms_core import deye, modbus


class InverterModel:
    """The DEYE master: polls units, keeps values, raises W31 after warn_after misses."""

    def __init__(self, des, units, poll_period_s, timeout_s, warn_after, profile):
        self.des = des
        self.units = {
            unit: {"values": None, "identity": None, "misses": 0, "answers": 0, "comm_warning": False} for unit in units
        }
        self.poll_period_s = poll_period_s
        self.timeout_s = timeout_s
        self.warn_after = warn_after
        self.profile = profile
        self.cycles = 0
        self._reply = None
        self.line = simpy.Resource(des.env, capacity=1)  # one exchange on the line at a time
        self.battery_current_ma = {}

    def reply_arrived(self, data, now_s):
        if self._reply is not None and not self._reply.triggered:
            self._reply.succeed(data)

    def ask(self, request):
        """A request out and its reply (bytes) or None after the timeout; a simpy process."""
        env = self.des.env
        with self.line.request() as turn:
            yield turn
            self._reply = env.event()
            reply_event = self._reply
            self.des.inverter_bus.send("deye", request, lambda data, t: self.des.proxy_inv_bytes(data, t))
            result = yield reply_event | env.timeout(self.des.inverter_bus.transfer_s(request) + self.timeout_s)
            self._reply = None
            return result[reply_event] if reply_event in result else None

    def run(self):
        env = self.des.env
        while True:
            started = env.now
            for unit, state in self.units.items():
                reply = yield env.process(self.ask(modbus.encode_read_request(unit, modbus.READ_INPUT, 0x1000, 25)))
                try:
                    event = modbus.decode_response(reply) if reply else None
                except modbus.RemoteProtocolError:
                    event = None
                if isinstance(event, modbus.ReadResponse) and event.unit == unit:
                    state["values"] = deye.named_registers(0x1000, event.registers)
                    state["misses"] = 0
                    state["answers"] += 1
                    state["comm_warning"] = False
                    if state["identity"] is None:
                        identity = yield env.process(self.ask(modbus.encode_report_id_request(unit)))
                        try:
                            state["identity"] = deye.decode_identity(modbus.decode_response(identity).data)
                        except (modbus.RemoteProtocolError, AttributeError, TypeError):
                            pass
                else:
                    state["misses"] += 1
                    if state["answers"] and state["misses"] >= self.warn_after:
                        state["comm_warning"] = True
                yield env.timeout(0.005)
            self.cycles += 1
            self._power()
            yield env.timeout(max(0.0, self.poll_period_s - (env.now - started)))

    def _power(self):
        online = [(u, s) for u, s in self.units.items() if s["values"] is not None and not s["comm_warning"]]
        self.battery_current_ma = {}
        if not online:
            return
        watts = self.profile.watts_at(self.des.env.now)
        volts = sum(s["values"]["pack_voltage_mv"] for _, s in online) / len(online) / 1000 or 51.2
        share = watts / volts * 1000 / len(online)
        for unit, state in online:
            current = min(share, state["values"]["max_charge_current_ma"]) if share > 0 else share
            self.battery_current_ma[unit] = round(current)

    def warnings(self):
        return ["W31 Battery_comm_warn: battery %d" % (unit + 1) for unit, s in self.units.items() if s["comm_warning"]]
