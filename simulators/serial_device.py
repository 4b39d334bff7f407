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

import serial

from vbms_core.modbus import NEED_DATA, RtuFramer


class SerialDevice:
    def __init__(self, port, baud, model, name=None):
        self.port = port
        self.baud = baud
        self.model = model
        self.name = name or type(model).__name__
        self.errors = []
        self._stop = threading.Event()
        self._thread = None
        self._serial = None

    def start(self):
        self._serial = serial.Serial(self.port, self.baud, timeout=0)
        self._thread = threading.Thread(target=self._run, name="device-" + self.name, daemon=True)
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._serial is not None:
            self._serial.close()

    def _run(self):
        framer = RtuFramer(self.baud)
        line = self._serial
        while not self._stop.is_set():
            try:
                waiting = line.in_waiting
                data = line.read(waiting) if waiting else b""
            except (OSError, serial.SerialException) as error:
                self.errors.append(str(error))
                return
            now_us = int(time.monotonic() * 1e6)
            if data:
                framer.feed(data, now_us)
            while (frame := framer.next_event(now_us)) is not NEED_DATA:
                answer = self.model.handle(frame.raw) if frame.ok else None
                for length in getattr(self.model, "request_lengths", ()):
                    if answer is not None:
                        break
                    if len(frame.raw) > length:
                        answer = self.model.handle(frame.raw[-length:])
                if answer is None:
                    continue
                reply, delay_s = answer
                if delay_s > 0 and self._stop.wait(delay_s):
                    return
                try:
                    line.write(reply)
                except (OSError, serial.SerialException) as error:
                    self.errors.append(str(error))
                    return
            if not data:
                # sleep until bytes come, or until an open frame's t3.5 has passed
                timeout_s = framer.gap_us / 1e6 if framer.pending() else 0.2
                try:
                    select.select([line.fileno()], [], [], timeout_s)
                except (OSError, ValueError):
                    return
