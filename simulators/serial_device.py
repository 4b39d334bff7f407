"""Runs a sans-I/O device model on a serial port (a PTY of a bus or a real adapter).

The model's handle(frame) gets every frame heard on the line (split on t3.5
silence by vbms_core.modbus.RtuFramer, whatever the protocol) and returns
(reply, delay_s) or None.  The reply is written after delay_s, as a device
turns the line around.
"""

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
                if not frame.ok:
                    continue
                answer = self.model.handle(frame.raw)
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
                time.sleep(framer.gap_us / 4e6)
