"""Runs a sans-I/O device model on a serial port (a PTY of a bus or a real adapter).

The model's handle(frame) gets every frame heard on the line (split on t3.5
silence by vbms_core.modbus.RtuFramer, whatever the protocol) and returns
(reply, delay_s) or None.  The reply is written after delay_s, as a device
turns the line around.

Timestamps come from this process's clock when bytes are read; on a loaded
machine two frames may be read in one go and merge.  A frame that gets no
answer is therefore tried again by its trailing bytes, at each length in the
model's request_lengths: a device resynchronising on the last request it heard.
"""

import select
import threading
import time
from collections.abc import Callable
from typing import Protocol, Self, cast

import serial

from vbms_core.modbus import NEED_DATA, RtuFrame, RtuFramer


class DeviceModel(Protocol):
    """A sans-I/O device: (reply, delay_s) for a frame heard on the line, or None to stay silent."""

    def handle(self, frame: bytes) -> tuple[bytes, float] | None: ...


# answer(frame) -> None, or (delay_s, send): send() puts the reply on the line
Answer = Callable[[RtuFrame], tuple[float, Callable[[], object]] | None]


class SerialDevice:
    def __init__(self, port: str, baud: int, model: DeviceModel, name: str | None = None) -> None:
        self.port = port
        self.baud = baud
        self.model = model
        self.name = name or type(model).__name__
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._serial: serial.Serial | None = None

    def start(self) -> Self:
        self._serial = serial.Serial(self.port, self.baud, timeout=0)
        self._thread = threading.Thread(target=self._run, name="device-" + self.name, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._serial is not None:
            self._serial.close()

    def _run(self) -> None:
        line = cast(serial.Serial, self._serial)  # start() opened it before the thread runs

        def answer(frame: RtuFrame) -> tuple[float, Callable[[], object]] | None:
            reply = self.model.handle(frame.raw) if frame.ok else None
            for length in getattr(self.model, "request_lengths", ()):
                if reply is not None:
                    break
                if len(frame.raw) > length:
                    reply = self.model.handle(frame.raw[-length:])
            if reply is None:
                return None
            data, delay_s = reply
            return delay_s, lambda: line.write(data)

        serve_line(line, self.baud, self._stop, self.errors, answer)


def serve_line(line: serial.Serial, baud: int, stop: threading.Event, errors: list[str], answer: Answer) -> None:
    """A device's loop on an open serial line until stop (a threading.Event) is set or the line fails
    (its error appended to errors): frames split on t3.5 silence; answer(frame) gives None, or
    (delay_s, send) and send() is called after delay_s, as a device turns the line around."""
    framer = RtuFramer(baud)
    while not stop.is_set():
        try:
            waiting = line.in_waiting
            data = line.read(waiting) if waiting else b""
        except (OSError, serial.SerialException) as error:
            errors.append(str(error))
            return
        now_us = int(time.monotonic() * 1e6)
        if data:
            framer.feed(data, now_us)
        while (frame := framer.next_event(now_us)) is not NEED_DATA:
            answered = answer(frame)
            if answered is None:
                continue
            delay_s, send = answered
            if delay_s > 0 and stop.wait(delay_s):
                return
            try:
                send()
            except (OSError, serial.SerialException) as error:
                errors.append(str(error))
                return
        if not data:
            # sleep until bytes come, or until an open frame's t3.5 has passed
            timeout_s = framer.gap_us / 1e6 if framer.pending() else 0.2
            try:
                select.select([line.fileno()], [], [], timeout_s)
            except (OSError, ValueError):
                return
