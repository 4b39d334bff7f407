"""The DEYE hybrid inverter as the Li-BMS Modbus master, sans-I/O: one model for every target.

Reference: shared/reference/deye-byd-modbus.md 1.3.1 (framing, units 0x00..0x0E, the 0x11
identity reply), 1.3.2 (register map and scaling), 1.3.3 (W31 on silence) and 5 (what no
capture settles).  The model decides what to send and what a reply means; it never sleeps,
never reads a clock and does no I/O.  Adapters move the bytes: simulators/deye/inverter.py
(pymodbus on a serial line, real time) and hil/des_inverter.py (simpy on the des FrameBus).

    request = master.next_request(now_s)   # a PollRequest to send now, or None
    ...                                    # None: ask again at master.wake_s()
    master.receive(response, now_s)        # a vbms_core.modbus response event, or None (no reply)
    master.receive_frame(adu, now_s)       # or the reply's raw bytes (None: no reply)

Rules (choices where the real inverter is unknown, section 5):
- a cycle polls the units in order with 0x04 at 0x1000 x 25; the next request goes gap_s after
  the previous exchange ended; a cycle starts poll_period_s after the previous one started, or
  gap_s after it ended if it took longer;
- a request waits timeout_s for its reply once it has left the wire (10 bit times per byte);
- an answer is a 25-register 0x04 reply from the polled unit; silence, an exception, a frame that
  does not decode and another unit's reply are misses;
- the identity (0x11) is read right after an answer when it is due: at the first answer, then
  identity_interval_s after the last identity read; an identity request that gets no identity
  reply is sent again after the unit's next answer; it never counts as a miss;
- W31 (Battery_comm_warn, 1.3.3): a unit that has answered at least once and then misses
  warn_after polls in a row; its next answer clears it (hil/benches/default.toml: warn_after);
- power: at the end of each cycle the profile's watts are split equally over the units that
  answer (values and no W31) at their mean pack voltage; positive = charging (0x1001's sign,
  1.3.2); a charging share is limited to the battery's max_charge_current (0x100C); the map
  has no discharge limit, so discharge is not limited.
"""

from collections.abc import Iterable
from typing import Any

from vbms_core import deye, modbus
from vbms_core.errors import RemoteProtocolError

from .profile import PowerProfile

GAP_S = 0.005  # between the end of one exchange and the next request (well above t3.5 at 9600 baud)
FALLBACK_VOLTS = 51.2  # when every answering unit reports 0 V: a 16-cell LFP pack's nominal voltage
W31_TEXT = "W31 Battery_comm_warn: battery %d"


class UnitState:
    """What the inverter knows of one unit (battery #unit+1): the same shape on every target."""

    __slots__ = ("unit", "values", "identity", "comm_warning", "misses", "answers", "polls", "last_ok_s", "exception")

    def __init__(self, unit: int) -> None:
        self.unit = unit
        self.values: dict[str, Any] | None = None  # the last answer, named and scaled (deye.named_registers)
        self.identity: dict[str, Any] | None = None  # the last identity read (vbms_core.deye.decode_identity)
        self.comm_warning = False  # W31
        self.misses = 0  # polls missed in a row
        self.answers = 0
        self.polls = 0  # 0x04 requests sent
        self.last_ok_s: float | None = None
        self.exception: int | None = None  # the exception code of the last poll, if it got one

    def snapshot(self) -> dict[str, Any]:
        """Every field, as a dict the caller may keep (values and identity copied)."""
        result = {name: getattr(self, name) for name in self.__slots__}
        for name in ("values", "identity"):
            if result[name] is not None:
                result[name] = dict(result[name])
        return result

    def __repr__(self) -> str:
        return "UnitState(unit=%d, answers=%d, misses=%d, comm_warning=%s)" % (
            self.unit,
            self.answers,
            self.misses,
            self.comm_warning,
        )


class PollRequest:
    """One request the master wants on the line now: its bytes and when its reply is late."""

    __slots__ = ("unit", "function", "address", "count", "adu", "sent_s", "deadline_s")

    def __init__(self, unit: int, function: int, adu: bytes, sent_s: float, deadline_s: float) -> None:
        self.unit = unit
        self.function = function  # modbus.READ_INPUT or modbus.REPORT_ID
        self.address = deye.FIRST_REGISTER if function == modbus.READ_INPUT else None
        self.count = deye.REGISTER_COUNT if function == modbus.READ_INPUT else None
        self.adu = adu
        self.sent_s = sent_s
        self.deadline_s = deadline_s

    def __repr__(self) -> str:
        return "PollRequest(unit=%d, function=0x%02X, sent_s=%.3f)" % (self.unit, self.function, self.sent_s)


def _encode_request(unit: int, function: int) -> bytes:
    if function == modbus.READ_INPUT:
        return modbus.encode_read_request(unit, modbus.READ_INPUT, deye.FIRST_REGISTER, deye.REGISTER_COUNT)
    return modbus.encode_report_id_request(unit)


# the master asks 15 units at most two questions: each one encoded once
_REQUESTS = {(unit, function): _encode_request(unit, function)
             for unit in range(deye.UNITS) for function in (modbus.READ_INPUT, modbus.REPORT_ID)}  # fmt: skip


def _encode(unit: int, function: int) -> bytes:
    return _REQUESTS[(unit, function)]


class DeyeMaster:
    """The inverter's side of the Li-BMS bus: schedule, replies, W31, power split, the Li-BMS table."""

    def __init__(
        self,
        units: Iterable[int] = range(deye.UNITS),
        poll_period_s: float = 1.0,
        timeout_s: float = 0.3,
        warn_after: int = 3,
        identity_interval_s: float = 60.0,
        gap_s: float = GAP_S,
        baud: int = 9600,
        profile: PowerProfile | None = None,
    ) -> None:
        order = tuple(units)
        if not order or len(set(order)) != len(order) or not all(0 <= u <= deye.MAX_UNIT for u in order):
            raise ValueError("units must be distinct DEYE units within 0..14, at least one, not %r" % (order,))
        if warn_after < 1:
            raise ValueError("warn_after must be at least 1, not %r" % (warn_after,))
        self.units = {unit: UnitState(unit) for unit in order}
        self.poll_period_s = poll_period_s
        self.timeout_s = timeout_s
        self.warn_after = warn_after
        self.identity_interval_s = identity_interval_s
        self.gap_s = gap_s
        self.char_s = 10.0 / baud  # 8N1: 10 bit times per byte
        self.profile = profile or PowerProfile()
        self.cycles = 0
        self.battery_current_ma: dict[int, int] = {}
        self.pending: PollRequest | None = None
        self._order = order
        self._queue: list[tuple[int, int]] = []  # (unit, function) still to send in this cycle
        self._due_s = 0.0
        self._cycle_start_s = 0.0
        self._identity_due_s: dict[int, float | None] = dict.fromkeys(order)  # None: at the next answer
        # receive_frame: per unit and function (a reply's first two bytes), its latest frame and decoding
        self._last_replies: dict[bytes, tuple[bytes, object]] = {}
        # unit -> (its latest registers, them named)
        self._named: dict[int, tuple[tuple[int, ...], dict[str, Any]]] = {}

    # --- the schedule ------------------------------------------------------------------

    def next_request(self, now_s: float) -> PollRequest | None:
        """The request to send now, or None while one is pending or the next is not due yet."""
        if self.pending is not None or now_s < self._due_s:
            return None
        if not self._queue:
            self._queue = [(unit, modbus.READ_INPUT) for unit in self._order]
            self._cycle_start_s = now_s
        unit, function = self._queue.pop(0)
        if function == modbus.READ_INPUT:
            self.units[unit].polls += 1
        adu = _encode(unit, function)
        self.pending = PollRequest(unit, function, adu, now_s, now_s + len(adu) * self.char_s + self.timeout_s)
        return self.pending

    def wake_s(self) -> float:
        """When to act next: the pending request's deadline, or when the next request is due."""
        return self.pending.deadline_s if self.pending is not None else self._due_s

    def expire(self, now_s: float) -> bool:
        """A pending request past its deadline is a request without a reply; True if so."""
        if self.pending is None or now_s < self.pending.deadline_s:
            return False
        self.receive(None, now_s)
        return True

    # --- replies -----------------------------------------------------------------------

    def receive_frame(self, adu: bytes | None, now_s: float) -> None:
        """The pending request's reply as bytes (None: no reply); a frame that does not decode is a miss."""
        response = None
        if adu is not None:
            adu = bytes(adu)
            last = self._last_replies.get(adu[:2])
            if last is not None and last[0] == adu:  # the same bytes decode to the same response
                response = last[1]
            else:
                try:
                    response = modbus.decode_response(adu)
                except RemoteProtocolError:
                    response = None
                if response is not None and adu[0] in self.units:  # (bounded: a unit and function's latest)
                    self._last_replies[adu[:2]] = (adu, response)
        self.receive(response, now_s)

    def receive(self, response: object, now_s: float) -> None:
        """The pending request's reply as a vbms_core.modbus response event, or None for no reply."""
        request = self.pending
        if request is None:
            return  # nothing was asked: a late or stray reply means nothing
        self.pending = None
        if request.function == modbus.READ_INPUT:
            self._registers_reply(request.unit, response, now_s)
        else:
            self._identity_reply(request.unit, response, now_s)
        if self._queue:
            self._due_s = now_s + self.gap_s
            return
        self.cycles += 1
        self.battery_current_ma = self.battery_currents(now_s)
        self._due_s = max(self._cycle_start_s + self.poll_period_s, now_s + self.gap_s)

    def _registers_reply(self, unit: int, response: object, now_s: float) -> None:
        state = self.units[unit]
        if (
            isinstance(response, modbus.ReadResponse)
            and response.unit == unit
            and response.function == modbus.READ_INPUT
            and len(response.registers) == deye.REGISTER_COUNT
        ):
            registers = tuple(response.registers)
            named = self._named.get(unit)
            if named is None or named[0] != registers:  # (named anew only when they changed)
                named = (registers, deye.named_registers(deye.FIRST_REGISTER, list(registers)))
                self._named[unit] = named
            state.values = named[1]
            state.last_ok_s = now_s
            state.misses = 0
            state.answers += 1
            state.comm_warning = False
            state.exception = None
            due = self._identity_due_s[unit]
            if due is None or now_s >= due:
                self._queue.insert(0, (unit, modbus.REPORT_ID))
            return
        state.exception = response.code if isinstance(response, modbus.ExceptionResponse) else None
        state.misses += 1
        if state.answers and state.misses >= self.warn_after:
            state.comm_warning = True

    def _identity_reply(self, unit: int, response: object, now_s: float) -> None:
        if not isinstance(response, modbus.ReportIdResponse) or response.unit != unit:
            return  # read again after the unit's next answer
        try:
            identity = deye.decode_identity(response.data)
        except RemoteProtocolError:
            identity = {"raw": bytes(response.data).hex()}  # it answered: show what it said
        self.units[unit].identity = identity
        self._identity_due_s[unit] = now_s + self.identity_interval_s

    # --- power flow --------------------------------------------------------------------

    def battery_currents(self, t_s: float) -> dict[int, int]:
        """Current per answering unit, mA, for the profile's power at t_s."""
        online = [s for s in self.units.values() if s.values is not None and not s.comm_warning]
        if not online:
            return {}
        watts = self.profile.watts_at(t_s)
        # (the ignores: online holds units with values only)
        volts = sum(s.values["pack_voltage_mv"] for s in online) / len(online) / 1000 or FALLBACK_VOLTS  # type: ignore[index]
        share_ma = watts / volts * 1000 / len(online)
        currents = {}
        for state in online:
            current = share_ma
            if current > 0:
                current = min(current, state.values["max_charge_current_ma"])  # type: ignore[index]
            currents[state.unit] = round(current)
        return currents

    # --- the Li-BMS screen -------------------------------------------------------------

    def rows(self) -> list[dict[str, Any]]:
        """The Li-BMS table: one row per unit, as the inverter's screen shows it (1.3.4)."""
        rows: list[dict[str, Any]] = []
        for unit, state in self.units.items():
            values = state.values
            if values is None:
                rows.append({"battery": unit + 1, "online": False, "comm_warning": state.comm_warning})
                continue
            rows.append(
                {
                    "battery": unit + 1,
                    "online": not state.comm_warning,
                    "comm_warning": state.comm_warning,
                    "volt_v": values["pack_voltage_mv"] / 1000,
                    "curr_a": values["pack_current_ma"] / 1000,
                    "temp_c": values["cell_temp_avg_ddegc"] / 10,
                    "soc_pct": values["soc_permille"] / 10,
                    "energy_ah": values["remain_capacity_mah"] / 1000,
                    "charge_volt_v": values["nominal_float_voltage_mv"] / 1000,
                    "charge_curr_a": values["max_charge_current_ma"] / 1000,
                    "fault": "%d|%d|%d" % (values["warning"], values["protection"], values["fault_status"] & 0xFF),
                    "model": (state.identity or {}).get("model"),
                }
            )
        return rows

    def warnings(self) -> list[str]:
        return [W31_TEXT % (unit + 1) for unit, state in self.units.items() if state.comm_warning]


class MasterView:
    """What an adapter of the master (a line that carries its polls) shows of it: the adapters of the
    pymodbus bench (simulators/deye/inverter.py) and of simulated time (hil/des_inverter.py) both
    answer for the inverter with the one model in self.master."""

    master: DeyeMaster

    @property
    def units(self) -> dict[int, UnitState]:
        return self.master.units

    @property
    def profile(self) -> PowerProfile:
        return self.master.profile

    @profile.setter
    def profile(self, profile: PowerProfile) -> None:
        self.master.profile = profile

    @property
    def cycles(self) -> int:
        return self.master.cycles

    @property
    def battery_current_ma(self) -> dict[int, int]:
        return self.master.battery_current_ma

    def battery_currents(self, t_s: float) -> dict[int, int]:
        return self.master.battery_currents(t_s)

    def rows(self) -> list[dict[str, Any]]:
        return self.master.rows()

    def warnings(self) -> list[str]:
        return self.master.warnings()
