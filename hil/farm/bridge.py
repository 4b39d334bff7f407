"""A local PTY <-> RFC 2217 bridge: a port of an acquired place as a device path on this machine.

Why a bridge: labgrid's exporter serves a place's serial ports with ser2net's telnet(rfc2217) accepter, so a
plain TCP stream (socket://) is not binary safe (ser2net negotiates telnet and escapes 0xFF); pyserial's
RFC 2217 client refuses write_timeout, which pymodbus's serial client always sets; and the esp32 target opens
its ports by path (serial.Serial(path), exclusive).  The bridge opens the remote port once, at the bench's baud
rate, and gives a local PTY whose slave side the target opens as it would open /dev/ttyUSB0.

- Each direction has a thread that waits for data (no polling): what arrives goes on at once, in one piece.
  ser2net itself gathers the bytes a device sends until about two characters of silence (its chardelay), so a
  Modbus frame crosses the network whole and the harness frames it on t3.5 silence as on a local adapter.
- A PTY has no modem lines: DTR/RTS the target sets on the path reach no board.  The bridge does the EN pulse
  (RTS, with DTR high) on its RFC 2217 connection when asked on a control socket: reset_command() is the
  command line that asks it, which the lease puts in [esp32] reset_command in place of reset = "dtr_rts".
- The bridge keeps the PTY's slave side open itself, so the port outlives the target that opens and closes it
  between scenarios; bytes nobody reads are dropped once the PTY's buffer is full, as a UART overruns.
"""

from __future__ import annotations

import errno
import os
import secrets
import select
import socket
import sys
import threading
import time
import tty
import warnings
from typing import TYPE_CHECKING

from . import FarmError

if TYPE_CHECKING:
    import serial

OPEN_RETRY_S = 5.0  # the exporter starts ser2net as the place is acquired: it may take a moment to listen
EN_PULSE_S = 0.1  # as hil.board.Board._pulse_en
# What reset_command runs: a client of the control socket, without site-packages (starts in some 20 ms).
RESET_CLIENT = (
    "import socket,sys\n"
    "s=socket.socket(socket.AF_UNIX)\n"
    "s.settimeout(10)\n"
    "s.connect('\\0'+sys.argv[1])\n"
    "s.sendall(b'en\\n')\n"
    "answer=s.recv(64)\n"
    "sys.exit(0 if answer.startswith(b'ok') else 'the bridge could not reset the board: '+answer.decode())\n"
)


class RemoteSerialBridge:
    """A remote serial port (host, port: ser2net's RFC 2217 accepter) as the local PTY `path`.

    modem_lines: (dtr, rts) to open with; None keeps pyserial's default (both asserted, as serial.Serial(path)
    does on a local port).  The console of an ESP32 dev board opens with (False, False): RTS drives EN, DTR
    drives IO0, and asserting RTS alone would hold the chip in reset (hil.board.Board.open does the same)."""

    def __init__(
        self,
        name: str,
        host: str,
        port: int,
        baud: int,
        protocol: str = "rfc2217",
        modem_lines: tuple[bool, bool] | None = None,
    ) -> None:
        if protocol != "rfc2217":
            raise FarmError(
                "port %s of the place is served as %r: only rfc2217 is binary safe (labgrid's exporter serves "
                "USBSerialPort and RawSerialPort so; give a NetworkSerialPort protocol: rfc2217)" % (name, protocol)
            )
        self.name = name
        self.where = "%s:%s" % (host, port)
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        # remote, master and _control are None only before they are opened here and after close(): the threads
        # and pulse_en() use them in between
        self._control: socket.socket = None  # type: ignore[assignment]
        self.remote: serial.Serial = None  # type: ignore[assignment]
        self.master: int = None  # type: ignore[assignment]
        self._slave: int | None = None
        try:
            self.remote = _open_remote(name, host, port, baud, modem_lines)
            self.master, self._slave = os.openpty()
            tty.setraw(self._slave)
            os.set_blocking(self.master, False)
            self.path = os.ttyname(self._slave)
            self._control = socket.socket(socket.AF_UNIX)
            # Linux's abstract namespace: nothing on disk, so a killed run leaves nothing behind
            self.control_name = "vbms-bridge-%d-%s" % (os.getpid(), secrets.token_hex(6))
            self._control.bind("\0" + self.control_name)
            self._control.listen(4)
            self._control.settimeout(0.2)
            for target, label in ((self._uplink, "up"), (self._downlink, "down"), (self._serve_control, "control")):
                thread = threading.Thread(target=target, name="bridge %s %s" % (name, label), daemon=True)
                thread.start()
                self._threads.append(thread)
        except BaseException:
            self.close()
            raise

    def reset_command(self) -> list[str]:
        """The command line that makes this bridge pulse EN (for [esp32] reset_command)."""
        return [sys.executable, "-S", "-c", RESET_CLIENT, self.control_name]

    def pulse_en(self) -> None:
        """EN low for EN_PULSE_S with IO0 (DTR) high: the reset esptool and hil.board do through RTS."""
        self.remote.dtr = False
        self.remote.rts = True
        time.sleep(EN_PULSE_S)
        self.remote.rts = False

    # --- the threads ------------------------------------------------------------------------
    def _uplink(self) -> None:
        """The local side's writes to the remote port."""
        import serial

        while not self._stop.is_set():
            try:
                ready, _, _ = select.select([self.master], [], [], 0.2)
                if not ready:
                    continue
                data = os.read(self.master, 4096)
            except OSError as error:
                if error.errno in (errno.EAGAIN, errno.EIO):
                    continue
                return self._failed(error)
            try:
                self.remote.write(data)
            except (OSError, serial.SerialException) as error:
                return self._failed(error)

    def _downlink(self) -> None:
        """What the remote port received, to the local side, as it comes."""
        import serial

        while not self._stop.is_set():
            try:
                data = self.remote.read(1)  # waits up to the remote's timeout for the first byte
                if not data:
                    continue
                waiting = self.remote.in_waiting
                if waiting:
                    data += self.remote.read(waiting)
            except (OSError, serial.SerialException, TypeError, AttributeError) as error:
                return self._failed(error)
            try:
                os.write(self.master, data)
            except OSError as error:
                if error.errno != errno.EAGAIN:  # EAGAIN: nobody reads and the PTY is full: dropped, as an overrun
                    return self._failed(error)

    def _serve_control(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self._control.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with connection:
                connection.settimeout(5)
                try:
                    if connection.recv(64).strip() == b"en":
                        self.pulse_en()
                        connection.sendall(b"ok\n")
                    else:
                        connection.sendall(b"unknown request\n")
                except Exception as error:  # noqa: BLE001 - whatever it is, the caller is told
                    try:
                        connection.sendall(("%s\n" % error).encode())
                    except OSError:
                        pass

    def _failed(self, error: BaseException) -> None:
        if not self._stop.is_set():
            self.errors.append("%s (%s): %s" % (self.name, self.where, error))

    # --- end -------------------------------------------------------------------------------
    def close(self) -> None:
        self._stop.set()
        if self._control is not None:
            self._control.close()
        for thread in self._threads:
            thread.join(timeout=2)
        self._threads = []
        if self.remote is not None:
            try:
                self.remote.close()
            except Exception:  # noqa: BLE001, S110 - a connection that already broke has nothing left to close
                pass
            self.remote = None  # type: ignore[assignment]
        for fd in (self.master, self._slave):
            if fd is not None:
                os.close(fd)
        self.master = self._slave = None  # type: ignore[assignment]


def _open_remote(name: str, host: str, port: int, baud: int, modem_lines: tuple[bool, bool] | None) -> serial.Serial:
    import serial

    # ign_set_control: ser2net on a PTY (the virtual board) cannot set modem lines and may not confirm them
    url = "rfc2217://%s:%d?ign_set_control" % (host, port)
    deadline = time.monotonic() + OPEN_RETRY_S
    while True:
        remote = serial.serial_for_url(url, do_not_open=True)
        remote.baudrate = baud
        remote.timeout = 0.05
        if modem_lines is not None:
            remote.dtr, remote.rts = modem_lines
        try:
            with warnings.catch_warnings():  # pyserial's RFC 2217 reader thread uses setDaemon() and setName()
                warnings.simplefilter("ignore", DeprecationWarning)
                remote.open()
            return remote
        except (OSError, serial.SerialException) as error:
            if time.monotonic() >= deadline:
                raise FarmError(
                    "cannot open the place's %s port at %s:%d (RFC 2217, ser2net on the exporter's host): %s. Is the "
                    "exporter running, and is that host reachable from here (labgrid-exporter --hostname)?"
                    % (name, host, port, error)
                ) from None
            time.sleep(0.2)
