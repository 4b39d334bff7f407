"""The DEYE hybrid inverter as the Li-BMS Modbus master, on the pymodbus client.

It polls units 0x00..0x0E like the real inverter: input registers 0x1000 x 25
(function 0x04) every cycle and the 0x11 identity on first contact and every
identity_interval_s.  It keeps each unit's last values, raises the
communication warning (W31) when a unit that answered misses warn_after
polls in a row, and drives a charge/discharge power profile whose current,
limited by what the batteries advertise, flows back into the batteries.

Choices where the real inverter is unknown (deye-byd-modbus.md 5): poll
period 1 s per cycle, 0.3 s reply timeout, no retry, W31 after 3 misses.
"""

import csv
import math
import threading
import time

from pymodbus.client import ModbusSerialClient
from pymodbus.exceptions import ModbusException
from pymodbus.pdu import ModbusPDU

from vbms_core import deye

UNITS = range(deye.UNITS)


class DeyeIdentityRequest(ModbusPDU):
    """0x11 request; the reply is DEYE's model*SW*HW*serial* (no run indicator)."""

    function_code = 0x11
    rtu_frame_size = 4

    def encode(self):
        return b""

    def decode(self, data):
        return None


class DeyeIdentityResponse(ModbusPDU):
    function_code = 0x11
    rtu_byte_count_pos = 2

    def __init__(self, data=b"", dev_id=0, transaction_id=0):
        super().__init__(dev_id=dev_id, transaction_id=transaction_id)
        self.data = data

    def encode(self):
        return bytes((len(self.data),)) + self.data

    def decode(self, data):
        self.data = bytes(data[1 : 1 + data[0]])


class PowerProfile:
    """Battery power over time, watts, positive = charging the batteries.

    kinds: constant (watts), day (a compressed day of solar and load: the sun
    charges around noon, the evening load discharges; day_length_s scales it),
    csv (a recorded profile of time_s,watts rows, repeated).
    """

    def __init__(
        self, kind="constant", watts=0.0, peak_solar_w=3000.0, base_load_w=800.0, day_length_s=86400.0, path=None
    ):
        if kind not in ("constant", "day", "csv"):
            raise ValueError("unknown power profile %r; choose constant, day or csv" % (kind,))
        self.kind = kind
        self.watts = watts
        self.peak_solar_w = peak_solar_w
        self.base_load_w = base_load_w
        self.day_length_s = day_length_s
        self.samples = []
        if kind == "csv":
            if path is None:
                raise ValueError("a csv power profile needs a path")
            with open(path, newline="", encoding="utf-8") as handle:
                for row in csv.reader(handle):
                    if not row or row[0].startswith("#"):
                        continue
                    try:
                        self.samples.append((float(row[0]), float(row[1])))
                    except (ValueError, IndexError) as error:
                        raise ValueError("%s: bad row %r (want time_s,watts)" % (path, row)) from error
            if not self.samples:
                raise ValueError("%s holds no time_s,watts rows" % path)

    def watts_at(self, t_s):
        if self.kind == "constant":
            return self.watts
        if self.kind == "day":
            hour = 24.0 * (t_s % self.day_length_s) / self.day_length_s
            solar = self.peak_solar_w * max(0.0, math.sin(math.pi * (hour - 6) / 12)) if 6 <= hour <= 18 else 0.0
            load = self.base_load_w * (2.0 if 18 <= hour <= 23 else 1.0)
            return solar - load
        period = self.samples[-1][0] or 1.0
        t = t_s % period
        previous = self.samples[0]
        for sample in self.samples:
            if sample[0] > t:
                return previous[1]
            previous = sample
        return previous[1]


class UnitState:
    __slots__ = ("unit", "values", "identity", "last_ok_s", "misses", "polls", "answers", "comm_warning", "exception")

    def __init__(self, unit):
        self.unit = unit
        self.values = None
        self.identity = None
        self.last_ok_s = None
        self.misses = 0
        self.polls = 0
        self.answers = 0
        self.comm_warning = False
        self.exception = None


class DeyeInverter:
    """The master; run() in a thread (start/stop) or poll_cycle() by hand."""

    def __init__(
        self,
        port,
        units=UNITS,
        baud=9600,
        timeout_s=0.3,
        poll_period_s=1.0,
        identity_interval_s=60.0,
        warn_after=3,
        profile=None,
        on_current=None,
        clock=time.monotonic,
    ):
        self.units = {unit: UnitState(unit) for unit in units}
        self.poll_period_s = poll_period_s
        self.identity_interval_s = identity_interval_s
        self.warn_after = warn_after
        self.profile = profile or PowerProfile()
        self.on_current = on_current
        self.clock = clock
        self.t0 = clock()
        self.cycles = 0
        self.battery_current_ma = {}
        self._identity_due = {}
        self.lock = threading.RLock()  # one exchange on the line at a time (polls and raw_exchange)
        self._stop = threading.Event()
        self._thread = None
        self.client = ModbusSerialClient(
            port, baudrate=baud, bytesize=8, parity="N", stopbits=1, timeout=timeout_s, retries=0
        )
        self.client.register(DeyeIdentityResponse)

    # --- polling ----------------------------------------------------------------

    def connect(self):
        if not self.client.connect():
            raise ConnectionError("cannot open the inverter port %s" % self.client.comm_params.host)

    def close(self):
        self.client.close()

    def _read_registers(self, state):
        try:
            response = self.client.read_input_registers(
                deye.FIRST_REGISTER, count=deye.REGISTER_COUNT, device_id=state.unit
            )
        except ModbusException:
            return None
        if response.isError():
            state.exception = getattr(response, "exception_code", None)
            return None
        return list(response.registers)

    def _read_identity(self, state):
        try:
            response = self.client.execute(False, DeyeIdentityRequest(dev_id=state.unit))
        except ModbusException:
            return None
        if response.isError():
            return None
        try:
            return deye.decode_identity(response.data)
        except Exception:  # noqa: BLE001 - a broken identity is shown, not fatal
            return {"raw": response.data.hex()}

    def raw_exchange(self, request, timeout_s=0.5):
        """Send raw request bytes on the inverter's line and return the reply bytes (or None).

        For requests pymodbus will not build (an illegal count, say): a test
        wants to see what the battery side answers to what a real inverter might send.
        """
        from vbms_core import modbus

        with self.lock:
            line = self.client.socket
            line.reset_input_buffer()
            line.write(request)
            reply = bytearray()
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                chunk = line.read(line.in_waiting or 1)
                if chunk:
                    reply.extend(chunk)
                    if len(reply) >= 3 and modbus.response_length(reply) == len(reply):
                        return bytes(reply)
            return bytes(reply) or None

    def poll_unit(self, unit, now_s):
        with self.lock:
            return self._poll_unit(unit, now_s)

    def _poll_unit(self, unit, now_s):
        state = self.units[unit]
        state.polls += 1
        registers = self._read_registers(state)
        if registers is None:
            state.misses += 1
            if state.answers and state.misses >= self.warn_after:
                state.comm_warning = True
            return False
        state.values = deye.named_registers(deye.FIRST_REGISTER, registers)
        state.last_ok_s = now_s
        state.misses = 0
        state.answers += 1
        state.comm_warning = False
        state.exception = None
        if now_s >= self._identity_due.get(unit, 0.0):
            identity = self._read_identity(state)
            if identity is not None:  # a failed read is tried again at the next poll
                state.identity = identity
                self._identity_due[unit] = now_s + self.identity_interval_s
        return True

    def poll_cycle(self):
        for unit in self.units:
            if self._stop.is_set():
                return
            self.poll_unit(unit, self.clock() - self.t0)
        self.cycles += 1

    # --- power flow -------------------------------------------------------------

    def battery_currents(self, t_s):
        """Current per answering unit for the profile's power, charge limited
        by each battery's advertised maximum charge current."""
        online = [s for s in self.units.values() if s.values is not None and not s.comm_warning]
        if not online:
            return {}
        watts = self.profile.watts_at(t_s)
        volts = sum(s.values["pack_voltage_mv"] for s in online) / len(online) / 1000 or 51.2
        total_ma = watts / volts * 1000
        share_ma = total_ma / len(online)
        currents = {}
        for state in online:
            current = share_ma
            if current > 0:
                current = min(current, state.values["max_charge_current_ma"])
            currents[state.unit] = round(current)
        return currents

    def step_power(self):
        self.battery_current_ma = self.battery_currents(self.clock() - self.t0)
        if self.on_current is not None:
            self.on_current(dict(self.battery_current_ma))

    # --- thread -----------------------------------------------------------------

    def start(self):
        self.connect()
        self._thread = threading.Thread(target=self._run, name="deye-inverter", daemon=True)
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.close()

    def _run(self):
        while not self._stop.is_set():
            started = self.clock()
            self.poll_cycle()
            self.step_power()
            self._stop.wait(max(0.0, self.poll_period_s - (self.clock() - started)))

    # --- the Li-BMS screen --------------------------------------------------------

    def rows(self):
        """The Li-BMS table: one row per unit, as the inverter's screen shows it."""
        rows = []
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

    def warnings(self):
        return ["W31 Battery_comm_warn: battery %d" % (unit + 1) for unit, s in self.units.items() if s.comm_warning]


def render_table(inverter):
    """A rich Table of the Li-BMS screen."""
    from rich.table import Table

    table = Table(title="DEYE Li-BMS (cycle %d)" % inverter.cycles)
    for heading in ("#", "Volt", "Curr", "Temp", "SOC", "Energy", "Charge Volt", "Charge Curr", "Fault", "Model"):
        table.add_column(heading, justify="right")
    for row in inverter.rows():
        if "volt_v" not in row:
            status = "[red]W31[/red]" if row["comm_warning"] else ""
            table.add_row(
                str(row["battery"]), "0.00V", "0.00A", "0.0C", "0.0%", "0.0Ah", "0.0V", "0.0A", "0|0|0", status
            )
            continue
        table.add_row(
            str(row["battery"]),
            "%.2fV" % row["volt_v"],
            "%.2fA" % row["curr_a"],
            "%.1fC" % row["temp_c"],
            "%.1f%%" % row["soc_pct"],
            "%.1fAh" % row["energy_ah"],
            "%.1fV" % row["charge_volt_v"],
            "%.1fA" % row["charge_curr_a"],
            row["fault"],
            ("[red]W31[/red] " if row["comm_warning"] else "") + (row["model"] or ""),
        )
    return table
