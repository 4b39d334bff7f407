"""Serial transports: they only move bytes (open, read with timeout, write, close) and
raise their own errors (python-can's BusABC and CanOperationError are the model).

SerialTransport is pyserial on a tty (a USB-RS485 adapter, or a PTY of the simulated
bench).  PortLink keeps one open for the driver: it watches the port in the event
loop, hands what arrives to a callback, and when the port vanishes (an adapter
unplugged, a PTY closed) says so once, stops watching and reopens it with backoff,
never spinning on a dead descriptor.  A pseudo-terminal named directly (/dev/pts/N) is not
reopened: it never comes back, and its number is reused by the next PTY anybody opens.
"""

from __future__ import annotations

import asyncio
import errno
from collections.abc import Callable
from typing import TYPE_CHECKING, Self

from . import LogFunction

if TYPE_CHECKING:
    import serial

PSEUDO_TERMINALS = ("/dev/pts/", "/dev/pty")


class TransportError(Exception):
    """A transport could not do what was asked; port names it."""

    def __init__(self, port: str, message: str) -> None:
        super().__init__("%s: %s" % (port, message))
        self.port = port
        self.message = message


class PortVanished(TransportError):
    """The device behind the port is gone (unplugged, or the other end of a PTY closed)."""


class SerialTransport:
    """A serial port: open(), read(max_bytes, timeout_s), write(data), close()."""

    def __init__(self, path: str, baud: int) -> None:
        self.path = path
        self.baud = baud
        self._port: serial.Serial | None = None

    @property
    def is_open(self) -> bool:
        return self._port is not None

    def open(self) -> Self:
        import serial

        try:
            self._port = serial.Serial(self.path, self.baud, timeout=0)
        except (serial.SerialException, OSError, ValueError) as error:
            raise TransportError(self.path, "cannot open: %s" % _reason(error)) from error
        return self

    def fileno(self) -> int:
        return self._port.fileno()  # type: ignore[union-attr]  # called only while the port is open

    def read(self, max_bytes: int = 4096, timeout_s: float = 0) -> bytes:
        """Bytes that arrived (b"" if none within timeout_s); PortVanished when the device is gone."""
        import serial

        port = self._require_open()
        try:
            port.timeout = timeout_s
            return port.read(max_bytes)
        except serial.SerialException as error:
            # pyserial: "device reports readiness to read but returned no data": end of file
            raise PortVanished(self.path, _reason(error)) from error
        except OSError as error:
            if error.errno in (errno.EIO, errno.ENXIO, errno.ENODEV, errno.EBADF):
                raise PortVanished(self.path, _reason(error)) from error
            raise TransportError(self.path, "read failed: %s" % _reason(error)) from error

    def write(self, data: bytes) -> None:
        import serial

        port = self._require_open()
        try:
            port.write(data)
        except (serial.SerialException, OSError) as error:
            raise PortVanished(self.path, "write failed: %s" % _reason(error)) from error

    def close(self) -> None:
        if self._port is not None:
            try:
                self._port.close()
            except OSError:
                pass
            self._port = None

    def _require_open(self) -> serial.Serial:
        if self._port is None:
            raise TransportError(self.path, "not open")
        return self._port


def _reason(error: BaseException) -> str:
    return getattr(error, "strerror", None) or str(error) or type(error).__name__


class PortLink:
    """One port kept open for the driver in an asyncio loop.

    on_data(bytes) gets what arrives; log(event, level, **fields) says when the port is lost
    and back.  Writes while the port is down are dropped and counted: the proxy's own
    timeouts and retries deal with a missing answer, as on a real bus.
    """

    FIRST_RETRY_S = 0.5
    MAX_RETRY_S = 30.0

    def __init__(
        self, role: str, transport: SerialTransport, on_data: Callable[[bytes], None], log: LogFunction
    ) -> None:
        self.role = role
        self.transport = transport
        self.on_data = on_data
        self.log = log
        self.loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]  # set by start(), before any use
        self.dropped_writes = 0
        self.losses = 0
        self._retry_s = self.FIRST_RETRY_S
        self._reopen: asyncio.Task[None] | None = None
        self._closed = False

    def start(self) -> Self:
        """Open the port now; a port that cannot be opened at start is the caller's error."""
        self.loop = asyncio.get_running_loop()
        self.transport.open()
        self._watch()
        return self

    def _watch(self) -> None:
        self.loop.add_reader(self.transport.fileno(), self._readable)

    def _readable(self) -> None:
        try:
            data = self.transport.read(4096)
        except TransportError as error:
            self._lost(error)
            return
        if data:
            self.on_data(data)

    def _lost(self, error: TransportError) -> None:
        self.loop.remove_reader(self.transport.fileno())
        self.transport.close()
        self.losses += 1
        if self.transport.path.startswith(PSEUDO_TERMINALS):
            # a pseudo-terminal whose other end closed never comes back, and its number goes to the
            # next one opened, by anybody: reopening it by name would read somebody else's bytes
            self.log("port_lost", level="error", port=self.role, path=self.transport.path, error=error.message,
                     retry_s=None)  # fmt: skip
            return
        self.log("port_lost", level="error", port=self.role, path=self.transport.path, error=error.message,
                 retry_s=self._retry_s)  # fmt: skip
        self._reopen = self.loop.create_task(self._reopen_later())

    async def _reopen_later(self) -> None:
        while not self._closed:
            await asyncio.sleep(self._retry_s)
            try:
                self.transport.open()
            except TransportError:
                self._retry_s = min(self._retry_s * 2, self.MAX_RETRY_S)
                continue
            self._watch()
            self.log("port_back", port=self.role, path=self.transport.path)
            self._retry_s = self.FIRST_RETRY_S
            return

    def write(self, data: bytes) -> None:
        if not self.transport.is_open:
            self.dropped_writes += 1
            return
        try:
            self.transport.write(data)
        except TransportError as error:
            self.dropped_writes += 1
            self._lost(error)

    def close(self) -> None:
        self._closed = True
        if self._reopen is not None:
            self._reopen.cancel()
        if self.transport.is_open:
            self.loop.remove_reader(self.transport.fileno())
            self.transport.close()
