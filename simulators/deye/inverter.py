"""The DEYE inverter on a serial line: the master model (master.py) driven through the pymodbus client.

The model decides what to send, when, and what each reply means; this adapter only turns its
requests into pymodbus calls (the real Modbus peer on the line), pymodbus's answers into
vbms_core.modbus response events, and time into seconds since start.  start()/stop() run it in
a thread; poll_cycle() runs one cycle by hand.  raw_exchange() puts arbitrary bytes on the line
for tests that want what a battery answers to a request pymodbus would not build.
"""

import threading
import time
from collections.abc import Callable, Iterable
from typing import Self, cast

import serial
from pymodbus.client import ModbusSerialClient
from pymodbus.exceptions import ModbusException
from pymodbus.pdu import ModbusPDU

from vbms_core import deye, modbus

from .master import GAP_S, DeyeMaster, MasterView, PollRequest, UnitState
from .profile import PowerProfile

__all__ = ("UNITS", "DeyeInverter", "PowerProfile", "UnitState")

UNITS = range(deye.UNITS)


class DeyeIdentityRequest(ModbusPDU):
    """0x11 request; the reply is DEYE's model*SW*HW*serial* (no run indicator)."""

    function_code = 0x11
    rtu_frame_size = 4

    def encode(self) -> bytes:
        return b""

    def decode(self, data: bytes) -> None:
        return None


class DeyeIdentityResponse(ModbusPDU):
    """0x11 reply kept whole: pymodbus's own decoder takes the trailing '*' for a run indicator (3.3)."""

    function_code = 0x11
    rtu_byte_count_pos = 2

    def __init__(self, data: bytes = b"", dev_id: int = 0, transaction_id: int = 0) -> None:
        super().__init__(dev_id=dev_id, transaction_id=transaction_id)
        self.data = data

    def encode(self) -> bytes:
        return bytes((len(self.data),)) + self.data

    def decode(self, data: bytes) -> None:
        self.data = bytes(data[1 : 1 + data[0]])


class DeyeInverter(MasterView):
    """The master on a serial port; run() in a thread (start/stop) or poll_cycle() by hand."""

    def __init__(
        self,
        port: str,
        units: Iterable[int] = UNITS,
        baud: int = 9600,
        timeout_s: float = 0.3,
        poll_period_s: float = 1.0,
        identity_interval_s: float = 60.0,
        warn_after: int = 3,
        profile: PowerProfile | None = None,
        on_current: Callable[[dict[int, int]], object] | None = None,
        clock: Callable[[], float] = time.monotonic,
        gap_s: float = GAP_S,
    ) -> None:
        self.master = DeyeMaster(
            units,
            poll_period_s=poll_period_s,
            timeout_s=timeout_s,
            warn_after=warn_after,
            identity_interval_s=identity_interval_s,
            gap_s=gap_s,
            baud=baud,
            profile=profile,
        )
        self.on_current = on_current
        self.clock = clock
        self.t0 = clock()
        self.lock = threading.RLock()  # one exchange on the line at a time (polls and raw_exchange)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.client = ModbusSerialClient(
            port, baudrate=baud, bytesize=8, parity="N", stopbits=1, timeout=timeout_s, retries=0
        )
        self.client.register(DeyeIdentityResponse)

    # --- the line ----------------------------------------------------------------------

    def connect(self) -> None:
        if not self.client.connect():
            raise ConnectionError("cannot open the inverter port %s" % self.client.comm_params.host)

    def close(self) -> None:
        self.client.close()

    def _now_s(self) -> float:
        return self.clock() - self.t0

    def _exchange(
        self, request: PollRequest
    ) -> modbus.ExceptionResponse | modbus.ReadResponse | modbus.ReportIdResponse | None:
        """The request through pymodbus; its reply as a vbms_core.modbus event, or None for none."""
        try:
            if request.function == modbus.READ_INPUT:
                # (a READ_INPUT request has an address and a count)
                reply = self.client.read_input_registers(
                    cast(int, request.address), count=cast(int, request.count), device_id=request.unit
                )
            else:
                reply = self.client.execute(False, DeyeIdentityRequest(dev_id=request.unit))
        except ModbusException:
            return None
        if reply.isError():
            return modbus.ExceptionResponse(reply.dev_id, request.function, getattr(reply, "exception_code", 0))
        if request.function == modbus.READ_INPUT:
            return modbus.ReadResponse(reply.dev_id, modbus.READ_INPUT, tuple(reply.registers))
        return modbus.ReportIdResponse(reply.dev_id, cast(DeyeIdentityResponse, reply).data)  # registered for 0x11

    def step(self) -> float:
        """Exchange the model's next request if one is due: 0.0; otherwise the seconds until one is."""
        with self.lock:
            request = self.master.next_request(self._now_s())
            if request is None:
                return max(0.0, self.master.wake_s() - self._now_s())
            cycles = self.master.cycles
            self.master.receive(self._exchange(request), self._now_s())
        if self.master.cycles != cycles and self.on_current is not None:
            self.on_current(dict(self.master.battery_current_ma))
        return 0.0

    def poll_cycle(self) -> None:
        """Run until the model has finished one more cycle (waiting for its gaps and period)."""
        cycles = self.master.cycles
        while self.master.cycles == cycles and not self._stop.is_set():
            wait_s = self.step()
            if wait_s:
                self._stop.wait(wait_s)

    def raw_exchange(self, request: bytes, timeout_s: float = 0.5) -> bytes | None:
        """Send raw request bytes on the inverter's line and return the reply bytes (or None).

        For requests pymodbus will not build (an illegal count, say): a test
        wants to see what the battery side answers to what a real inverter might send.
        """
        with self.lock:
            line = cast(serial.Serial, self.client.socket)  # connected: start() or the caller's connect()
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

    # --- thread ------------------------------------------------------------------------

    def start(self) -> Self:
        self.connect()
        self._thread = threading.Thread(target=self._run, name="deye-inverter", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            wait_s = self.step()
            if wait_s:
                self._stop.wait(wait_s)
