"""The harness's side of the USB-RS485 adapters wired to a board (the esp32 target).

On a bench with a board the simulators sit on no simulated bus: the DEYE simulator talks through one
adapter to the board's inverter port, and every simulated BMS module answers through ONE adapter on the
board's battery port, each at its own address, as modules on one RS485 line do.

  SharedPort    several device models on one serial port: it splits what the board sends into frames on
                t3.5 silence (vbms_core.modbus.RtuFramer), hands each frame to every model, and writes the
                answer of the one it is for (a model answers only its own address).
  AdapterEnd    one bus as the harness sees it through its adapter: the fault rules (hil/wires/faults.py,
                the same model as the simulated buses) and the trace.  A fault acts where the harness can
                act: on the frames it sends (drop, corrupt, noise, delay, disconnect) and on the frames it
                hears from the board before its models see them (drop, corrupt).  Frames the board sends to
                the inverter reach it as the wire carries them: a fault from "dut" on the inverter bus is
                refused (BusError says so).
  FaultyLine    a pyserial port whose writes go through an AdapterEnd: the DEYE simulator's pymodbus line.
  PortTap       one more device on a SharedPort's line: it hears every frame the board sends there and
                writes its own bytes (a wire campaign standing in for modules, hil/fuzz/stand_in.py).
  AdapterBench  the esp32 target's world: the bench's device models (hil/builder.py) on the adapters named
                in [esp32], the JK modules as bless peripherals on their Bluetooth adapters, the inverter
                (simulators/deye) and the clock that moves current through the battery models.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol, Self, cast

import serial

from simulators.serial_device import serve_line
from vbms_core.modbus import RtuFrame, char_time_us, silence_us

from .builder import battery_clock, build_devices, serial_model
from .trace import Trace
from .wires.faults import NOISE_SILENCE_T35, BusError, Decision, Fault, FaultModel, LiveFaults

if TYPE_CHECKING:
    from simulators.deye.inverter import DeyeInverter
    from simulators.jk.ble import JkBlePeripheral, PeripheralHost
    from simulators.jk.device import JkBms
    from simulators.serial_device import DeviceModel

    from .benchfile import Bench
    from .board import BoardError

DUT = "dut"  # the board, on every bus
INVERTER = "deye"
RS485_TYPES = ("byd_pro", "jk_rs485", "jk_4e57")


class Line(Protocol):
    """What AdapterEnd.send writes a frame to: a serial port (or a FaultyLine's)."""

    def write(self, data: bytes, /) -> object: ...


class AdapterEnd(LiveFaults):
    """One bus seen from the harness's adapter.  names: who answers or asks on the harness's side
    (the inverter, the modules); the board is "dut".  Has what Target.bus_fault and reset use:
    add_fault, remove_fault, clear_faults, faults."""

    def __init__(
        self,
        name: str,
        baud: int,
        protocol: str | None,
        names: Iterable[str],
        trace: Trace | None = None,
        seed: int = 0,
        t0: float | None = None,
        hears_board: bool = True,
    ) -> None:
        self.name = name
        self.baud = baud
        self.protocol = protocol
        self.names = list(names)
        self.trace = trace
        self.hears_board = hears_board  # False: the board's frames are not framed here (the inverter's line)
        self.char_s = char_time_us(baud) / 1e6
        self.gap_s = silence_us(baud) / 1e6
        self.model = FaultModel(self.char_s, self.gap_s, seed)
        self.t0 = time.monotonic() if t0 is None else t0
        self._lock = threading.Lock()

    # --- faults (LiveFaults: faults, remove_fault, clear_faults, now) ---------------------
    def add_fault(self, fault: Fault) -> Fault:
        known = self.names + [DUT]
        for name in (fault.source, fault.target):
            if name is not None and name not in known:
                raise BusError("bus %s has no endpoint %r (it has: %s)" % (self.name, name, ", ".join(known)))
        if fault.source == DUT and not self.hears_board:
            raise BusError(
                "on a board's bench the harness sits at one end of bus %s: it can fault what it sends, not what the "
                "board sends to the inverter (use source %s, or no source)" % (self.name, ", ".join(self.names))
            )
        return self._hold(fault)

    # --- frames ---------------------------------------------------------------------------
    def heard(self, frame: bytes, receivers: list[str]) -> Decision:
        """The Decision for a frame the board sent, heard by receivers (model names); traced."""
        with self._lock:
            decision = self.model.decide(DUT, frame, self.now(), receivers)
        self.record(DUT, frame, decision.faults)
        return decision

    def send(self, line: Line, source: str, frame: bytes, stop: threading.Event | None = None) -> None:
        """Write frame from source (a harness device) on line, through the fault rules: a delay, a burst of
        noise and twice t3.5 of silence before it, a flipped bit, or nothing at all.  stop: an Event that
        cuts the waits short."""
        with self._lock:
            decision = self.model.decide(source, frame, self.now(), [DUT])
        if not decision.sent:
            return
        # without stop: sleep, then False (not stopped)
        wait = (lambda s: stop.wait(s)) if stop is not None else (lambda s: time.sleep(s) or False)  # type: ignore[func-returns-value]
        delay_s = decision.noise_start_s - self.now()
        if delay_s > 0 and wait(delay_s):
            return
        if decision.noise:
            line.write(decision.noise)
            self.record("noise", decision.noise)
            if wait(len(decision.noise) * self.char_s + NOISE_SILENCE_T35 * self.gap_s):
                return
        data = decision.received(DUT, frame)
        self.record(source, frame, decision.faults)
        if data is not None:
            line.write(data)

    def record(self, source: str, raw: bytes, faults: Iterable[str] = ()) -> None:
        if self.trace is not None and raw:
            self.trace.record(self, self.now(), source, raw, faults)


class SharedPort:
    """Device models answering on one serial port, each at its own address.

    models: {name: model}; model.handle(frame) returns (reply, delay_s) or None (not for it), and
    model.request_lengths the lengths of the requests it answers.  On a loaded host two requests
    can be read in one go and merge: a frame that no model answers is tried again by its trailing
    bytes at each request length (a module resynchronising on the last request it heard).
    Two models answering one frame would collide on a real line: the first answers, the clash is
    kept in `clashes`.
    """

    def __init__(self, port: str, baud: int, models: Mapping[str, DeviceModel], end: AdapterEnd) -> None:
        self.port = port
        self.baud = baud
        self.models = dict(models)
        self.end = end
        self.errors: list[str] = []
        self.clashes: list[tuple[bytes, list[str]]] = []
        self.answered = {name: 0 for name in self.models}
        self.tap: PortTap | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._line: serial.Serial | None = None

    def start(self) -> Self:
        """Opens the port (for itself: exclusive); OSError or serial.SerialException when it cannot."""
        self._line = serial.Serial(self.port, self.baud, timeout=0, exclusive=True)
        self._thread = threading.Thread(target=self._run, name="shared-port", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._line is not None:
            self._line.close()

    def answer(self, frame: bytes) -> tuple[str, bytes, float] | None:
        """(name, reply, delay_s) of the model a frame is for, after the faults on what the board sent; or None."""
        decision = self.end.heard(frame, list(self.models))
        answers: list[tuple[str, bytes, float]] = []
        for name, model in self.models.items():
            heard = decision.received(name, frame)
            if heard is None:
                continue
            answer = _ask(model, heard)
            if answer is not None:
                answers.append((name,) + tuple(answer))  # type: ignore[arg-type]  # (name, reply, delay_s)
        if not answers:
            return None
        if len(answers) > 1:
            self.clashes.append((frame, [name for name, _, _ in answers]))
        self.answered[answers[0][0]] += 1
        return answers[0]

    def _run(self) -> None:
        line = cast(serial.Serial, self._line)  # start() opened it before the thread runs

        def answer(frame: RtuFrame) -> tuple[float, Callable[[], object]] | None:
            tap = self.tap
            if tap is not None:
                tap.hear(frame.raw)
            answered = self.answer(frame.raw)
            if answered is None:
                return None
            name, reply, delay_s = answered
            return delay_s, lambda: self.end.send(line, name, reply, self._stop)

        serve_line(line, self.baud, self._stop, self.errors, answer)


class PortTap:
    """One more device on a SharedPort's line, with hil/fuzz/line.py Line's surface: read() gives the frames
    the board sent (as the port split them, with the time each was complete), write() puts bytes on the line
    at once, beside the port's own models.  One at a time; close() takes it off."""

    def __init__(self, port: SharedPort) -> None:
        if port.tap is not None or port._line is None:
            raise BusError("the shared port %s has a tap already, or is not open" % port.port)
        self.port = port
        self.char_s = char_time_us(port.baud) / 1e6
        self.t35_s = silence_us(port.baud) / 1e6
        self.free_s = 0.0
        self.last_rx_s = 0.0
        self._heard: list[tuple[float, bytes]] = []
        self._changed = threading.Condition()
        port.tap = self

    def hear(self, frame: bytes) -> None:
        with self._changed:
            self._heard.append((time.monotonic(), frame))
            self._changed.notify_all()

    def read(self, timeout_s: float) -> list[tuple[float, bytes]]:
        """[(time, frame)] heard so far, waiting at most timeout_s for the first."""
        with self._changed:
            if not self._heard:
                self._changed.wait(max(timeout_s, 0.0))
            heard, self._heard = self._heard, []
        if heard:
            self.last_rx_s = heard[-1][0]
        return heard

    def write(self, data: bytes | bytearray) -> float:
        now = time.monotonic()
        line = self.port._line
        if line is None:
            raise OSError("the shared port %s is closed" % self.port.port)
        line.write(bytes(data))
        self.port.end.record("fuzz", bytes(data))
        self.free_s = max(now, self.free_s) + len(data) * self.char_s
        return now

    def close(self) -> None:
        if self.port.tap is self:
            self.port.tap = None


def _cannot_open(key: str, path: str, error: Exception) -> BoardError:
    from .board import BoardError

    return BoardError("cannot open %s %s: %s (is another program using the port?)" % (key, path, error))


def _ask(model: DeviceModel, frame: bytes) -> tuple[bytes, float] | None:
    answer = model.handle(frame)
    for length in getattr(model, "request_lengths", ()):
        if answer is not None:
            break
        if len(frame) > length:
            answer = model.handle(frame[-length:])
    return answer


class FaultyLine:
    """A pyserial port whose writes go through an AdapterEnd as frames from `source`; what is read is
    traced as the board's frame (the bytes read between two writes: its answer to the first)."""

    # kept in __dict__ (__setattr__ passes every other attribute to the port)
    line: serial.Serial
    end: AdapterEnd
    source: str
    heard: bytearray

    def __init__(self, line: serial.Serial, end: AdapterEnd, source: str) -> None:
        self.__dict__.update(line=line, end=end, source=source, heard=bytearray())

    def write(self, data: bytes) -> int:
        self._trace_heard()
        self.end.send(self.line, self.source, bytes(data))
        return len(data)

    def read(self, size: int = 1) -> bytes:
        data = self.line.read(size)
        self.heard.extend(data)
        return data

    def _trace_heard(self) -> None:
        if self.heard:
            self.end.record(DUT, bytes(self.heard))
            self.heard.clear()

    def __getattr__(self, name: str) -> Any:  # whatever the port has
        return getattr(self.line, name)

    def __setattr__(self, name: str, value: object) -> None:
        setattr(self.line, name, value)


class AdapterBench:
    """The simulated side of a bench with a board: the devices of `bench` on the adapters of bench.esp32.

    start() opens the BMS adapter (every RS485 module on it), starts the JK BLE peripherals (one per
    adapter of esp32.ble_adapters, in the order of the bench's JK batteries: each is fully up before the
    board can look for it) and the battery clock; start_inverter() starts the DEYE simulator on the
    inverter adapter once the board is configured.
    Has what the Target vocabulary uses: bench, batteries, devices, inverter, buses, trace.
    """

    def __init__(self, bench: Bench, trace_path: str | None = None) -> None:
        from .benchfile import BenchError

        self.bench = bench
        self.esp32 = bench.esp32
        self.trace = Trace(trace_path, {name: bus.protocol for name, bus in bench.buses.items()})
        self.batteries, self.devices = build_devices(bench)
        # an RS485 battery is on a bus (hil/benchfile.py parse)
        bms_buses = sorted({cast(str, spec.bus) for spec in bench.batteries if spec.type in RS485_TYPES})
        if len(bms_buses) > 1:
            raise BenchError(
                "a board has one battery port; this bench puts batteries on buses %s" % ", ".join(bms_buses)
            )
        self.bms_bus = bms_buses[0] if bms_buses else None
        self.inverter_bus = bench.inverter["bus"] if bench.inverter else None
        if self.bms_bus is not None and self.bms_bus == self.inverter_bus:
            raise BenchError(
                "bus %s carries both the inverter and batteries; a board has an inverter port and a battery port, "
                "so the bench needs a bus for each" % self.bms_bus
            )
        t0 = time.monotonic()
        self.buses: dict[str, AdapterEnd] = {}
        for name, spec in bench.buses.items():
            if name == self.inverter_bus:
                names, hears_board = [INVERTER, "inverter"], False
            else:
                names, hears_board = [s.name for s in bench.batteries if s.bus == name], True
            self.buses[name] = AdapterEnd(
                name, spec.baud, spec.protocol, names, self.trace, bench.seed, t0, hears_board
            )
        for fault in bench.faults:
            self.buses[fault.bus].add_fault(Fault.from_spec(fault))
        self.inverter: DeyeInverter | None = None
        self.shared_port: SharedPort | None = None
        self.peripherals: dict[int, JkBlePeripheral] = {}
        self.started_s: float | None = None
        self._ble_host: PeripheralHost | None = None
        self._clock_thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._dbus_before: str | None = None

    # --- start ---------------------------------------------------------------------------
    def start(self) -> Self:
        self.started_s = time.monotonic()
        if self.bms_bus is not None:
            models: dict[str, DeviceModel] = {}
            for spec in self.bench.batteries:
                if spec.bus == self.bms_bus:
                    models[spec.name] = serial_model(spec, self.devices[spec.slot])
            baud = self.bench.buses[self.bms_bus].baud
            port = SharedPort(self.esp32["bms_port"], baud, models, self.buses[self.bms_bus])
            try:
                self.shared_port = port.start()
            except (OSError, serial.SerialException) as error:
                raise _cannot_open("bms_port", self.esp32["bms_port"], error) from None
        self.start_ble()
        self._clock_thread = threading.Thread(
            target=battery_clock, args=(self, self._stop), name="battery-clock", daemon=True
        )
        self._clock_thread.start()
        return self

    def start_ble(self) -> None:
        jk_ble = [spec for spec in self.bench.batteries if spec.type == "jk_ble"]
        if not jk_ble:
            return
        from simulators.jk.ble import JkBlePeripheral, PeripheralHost

        if self.esp32.get("ble_dbus_address"):  # bless and dbus-fast find BlueZ there (the virtual board's BlueZoo)
            self._dbus_before = os.environ.get("DBUS_SYSTEM_BUS_ADDRESS", "")
            os.environ["DBUS_SYSTEM_BUS_ADDRESS"] = self.esp32["ble_dbus_address"]
        self._ble_host = PeripheralHost()
        self.peripherals = self._ble_host.peripherals
        for spec, adapter in zip(jk_ble, self.esp32["ble_adapters"], strict=False):
            peripheral = JkBlePeripheral(
                cast("JkBms", self.devices[spec.slot]),
                adapter=adapter,
                name=spec.name,
                gatt_layout=spec.gatt,
                chunking=spec.chunking,
            )
            self._ble_host.add(spec.slot, peripheral)

    def start_inverter(self) -> None:
        import logging

        from simulators.deye.inverter import DeyeInverter
        from simulators.deye.profile import PowerProfile

        if not self.bench.inverter:
            return
        inverter = self.bench.inverter
        logging.getLogger("pymodbus").setLevel(logging.CRITICAL)  # a silent unit is news here, not an error
        self.inverter = DeyeInverter(
            self.esp32["inverter_port"], units=inverter["units"], baud=self.bench.buses[self.inverter_bus].baud,  # type: ignore[index]
            timeout_s=inverter["timeout_s"], poll_period_s=inverter["poll_period_s"],
            identity_interval_s=inverter["identity_interval_s"], warn_after=inverter["warn_after"],
            profile=PowerProfile(**self.bench.profile),
        )  # fmt: skip
        try:
            self.inverter.connect()
        except ConnectionError as error:
            raise _cannot_open("inverter_port", self.esp32["inverter_port"], error) from None
        client = self.inverter.client
        # the port connect() opened, faulted; inverter_bus is set, as bench.inverter is (as for baud above)
        client.socket = FaultyLine(client.socket, self.buses[self.inverter_bus], INVERTER)  # type: ignore[assignment, arg-type, index]
        self.inverter.start()

    # --- stop ----------------------------------------------------------------------------
    def stop(self) -> None:
        self._stop.set()
        if self.inverter is not None:
            self.inverter.stop()
        if self.shared_port is not None:
            self.shared_port.stop()
        if self._ble_host is not None:
            self._ble_host.stop()
            self._ble_host = None
        if self._dbus_before is not None:
            if self._dbus_before:
                os.environ["DBUS_SYSTEM_BUS_ADDRESS"] = self._dbus_before
            else:
                os.environ.pop("DBUS_SYSTEM_BUS_ADDRESS", None)
            self._dbus_before = None
        if self._clock_thread is not None:
            self._clock_thread.join(timeout=5)
        self.trace.close()
