"""The campaign's end of a bus: raw writes with their wire time, and replies split out of what arrives.

Line is one endpoint of hil/wires/rs485.py's bus, or a board's RS485 adapter, opened raw at
the bus's baud rate; it only moves bytes and keeps the times the campaign paces itself by
(when its last byte leaves the wire, when something last arrived).  ReplySplitter cuts what
arrives into replies by the length their first bytes announce
(shared/reference/deye-byd-modbus.md 3.1), else by silence.
"""

import os
import select
import termios
import time
import tty
from typing import cast

from . import grammar


class Line:
    """One endpoint of a bus, raw, at its baud rate: write frames, read what arrives with its time."""

    def __init__(self, path: str, baud: int) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        tty.setraw(self.fd)
        speed = getattr(termios, "B%d" % baud, None)  # a real adapter (a board's): its baud rate; a PTY has none
        if speed is not None:
            attributes = termios.tcgetattr(self.fd)
            attributes[4] = attributes[5] = speed
            termios.tcsetattr(self.fd, termios.TCSANOW, attributes)
        self.char_s = grammar.char_s(baud)
        self.t35_s = grammar.silence_s(baud)
        self.free_s = 0.0  # when the last byte written leaves the wire (monotonic)
        self.last_rx_s = 0.0

    def write(self, data: bytes | bytearray) -> float:
        now = time.monotonic()
        view = memoryview(data)
        while view:
            try:
                written = os.write(self.fd, view)
            except BlockingIOError:
                select.select([], [self.fd], [], 0.05)
                continue
            view = view[written:]
        self.free_s = max(now, self.free_s) + len(data) * self.char_s
        return now

    def read(self, timeout_s: float) -> list[tuple[float, bytes]]:
        """[(arrival time, bytes)] of what arrives within timeout_s (returns at the first arrival)."""
        readable, _, _ = select.select([self.fd], [], [], max(timeout_s, 0.0))
        chunks = []
        while readable:
            try:
                data = os.read(self.fd, 4096)
            except (BlockingIOError, OSError):
                break
            if not data:
                break
            self.last_rx_s = time.monotonic()
            chunks.append((self.last_rx_s, data))
            readable, _, _ = select.select([self.fd], [], [], 0)
        return chunks

    def close(self) -> None:
        try:
            os.close(self.fd)
        except OSError:
            pass


class ReplySplitter:
    """Received bytes into replies: by the length their first bytes announce, else by silence."""

    def __init__(self, silence_s: float) -> None:
        self.silence_s = silence_s
        self.buffer = bytearray()
        # set by the first feed(): frames() reads them only while the buffer holds bytes
        self.first_s: float | None = None
        self.last_s: float | None = None
        self.last_frame_s: float | None = None  # when the frame frames() gave last began to arrive

    def feed(self, t_s: float, data: bytes) -> None:
        if not self.buffer:
            self.first_s = t_s
        self.buffer.extend(data)
        self.last_s = t_s

    def frames(self, now_s: float) -> list[tuple[float, bytes]]:
        """[(time of the first byte, frame)] complete by now_s."""
        out: list[tuple[float, bytes]] = []
        while self.buffer:
            length = grammar.response_length(self.buffer)
            if length is not None and len(self.buffer) >= length:
                self.last_frame_s = self.first_s
                out.append((cast(float, self.first_s), bytes(self.buffer[:length])))
                del self.buffer[:length]
                self.first_s = self.last_s
                continue
            if now_s - cast(float, self.last_s) >= self.silence_s:
                self.last_frame_s = self.first_s
                out.append((cast(float, self.first_s), bytes(self.buffer)))
                self.buffer.clear()
            break
        return out

    def waiting(self) -> bool:
        return bool(self.buffer)
