"""Stand-in for MicroPython's `machine` on the unix port (never shipped to a board).

UART(n)   the PTY named by $VBMS_UART<n> (the bench's RS485 drop); raw, non-blocking,
          pollable by asyncio (the stream ioctl hands select the PTY's fd).
Pin(n)    outputs record their changes; inputs read $VBMS_GPIO_DIR/gpio<n> ("0"/"1",
          the pull level when absent); outputs append "<ticks_us> <value>" to gpio<n>.out.
          The RS485 driver-enable line of UART n is pin $VBMS_UART<n>_DE: a byte
          written while it is low, or the line dropped before the last stop bit has
          left, is a violation, logged as a JSON line (event rs485_de_violation) and
          kept in `violations`.
WDT       counts feeds (see the class).   unique_id()  $VBMS_UNIQUE_ID (hex) or a fixed id.
reset()   raises Reset, which the host runner (start.py) turns into a fresh start.
"""

import io
import json
import os
import select
import termios
import time

# Linux termios speed codes (the unix port's termios names only B9600 and B57600 upwards)
_SPEEDS = {1200: 9, 2400: 11, 4800: 12, 9600: 13, 19200: 14, 38400: 15, 57600: 4097, 115200: 4098,
           230400: 4099, 460800: 4100, 921600: 4103}  # fmt: skip
_VTIME = 5
_VMIN = 6
_GET_FILENO = 10  # MP_STREAM_GET_FILENO
_POLL = 3  # MP_STREAM_POLL
_EIO = 5

violations = []  # (uart, what, ticks_us)
_pins = {}  # number -> the Pin made last for it
_uarts_by_de = {}  # DE pin number -> UART


class Reset(SystemExit):
    """machine.reset() on the unix port: the runner starts the firmware again."""


def reset():
    raise Reset(0)


def soft_reset():
    raise Reset(0)


def unique_id():
    text = os.getenv("VBMS_UNIQUE_ID") or "240ac4b1e2d3"
    return bytes(int(text[i : i + 2], 16) for i in range(0, len(text), 2))


def idle():
    time.sleep_ms(1)


def freq(hz=None):
    return 240000000


def _violation(uart_id, what):
    violations.append((uart_id, what, time.ticks_us()))
    record = {"t": time.time(), "level": "error", "event": "rs485_de_violation", "uart": uart_id, "what": what}
    print(json.dumps(record))


class WDT:
    """Counts feeds; with $VBMS_GPIO_DIR, writes "<timeout_ms> <feeds>" to its file wdt at most
    twice a second (a hung loop stops the count; nothing resets the host)."""

    def __init__(self, id=0, timeout=5000):
        self.timeout = timeout
        self.feeds = 0
        self.written_ms = None
        directory = os.getenv("VBMS_GPIO_DIR")
        self._path = None if directory is None else directory + "/wdt"
        self.feed()

    def feed(self):
        self.feeds += 1
        now = time.ticks_ms()
        if self._path is not None and (self.written_ms is None or time.ticks_diff(now, self.written_ms) >= 500):
            self.written_ms = now
            try:
                with open(self._path, "w") as handle:
                    handle.write("%d %d\n" % (self.timeout, self.feeds))
            except OSError:
                pass


class Pin:
    IN = 1
    OUT = 3
    OPEN_DRAIN = 7
    PULL_UP = 1
    PULL_DOWN = 2
    IRQ_FALLING = 2
    IRQ_RISING = 1

    def __init__(self, id, mode=-1, pull=-1, value=None):
        self.id = id
        self.mode = mode
        self.pull = pull
        self._value = 0 if value is None else (1 if value else 0)
        self.changes = []  # (ticks_us, value) of an output
        directory = os.getenv("VBMS_GPIO_DIR")
        self._path = None if directory is None else "%s/gpio%d" % (directory, id)
        _pins[id] = self
        if mode == Pin.OUT and value is not None:
            self._record(self._value)

    def value(self, level=None):
        if level is None:
            if self.mode == Pin.IN:
                return self._read_input()
            return self._value
        level = 1 if level else 0
        if level != self._value:
            uart = _uarts_by_de.get(self.id)
            if uart is not None and level == 0:
                uart._de_dropped()
            self._value = level
            self._record(level)

    def _read_input(self):
        idle_level = 0 if self.pull == Pin.PULL_DOWN else 1
        if self._path is None:
            return idle_level
        try:
            with open(self._path) as handle:
                return 1 if handle.read().strip() == "1" else 0
        except OSError:
            return idle_level

    def _record(self, level):
        now = time.ticks_us()
        self.changes.append((now, level))
        if len(self.changes) > 1000:
            self.changes.pop(0)
        if self._path is not None:
            try:
                with open(self._path + ".out", "a") as handle:
                    handle.write("%d %d\n" % (now, level))
            except OSError:
                pass

    def on(self):
        self.value(1)

    def off(self):
        self.value(0)

    def __call__(self, level=None):
        return self.value(level)


class UART(io.IOBase):
    def __init__(self, id, baudrate=9600, bits=8, parity=None, stop=1, **options):
        self.id = id
        path = os.getenv("VBMS_UART%d" % id)
        if not path:
            raise OSError("UART%d has no port on this host ($VBMS_UART%d is not set)" % (id, id))
        try:
            self._file = open(path, "r+b")
        except OSError as error:
            raise OSError("UART%d: cannot open %s (%s)" % (id, path, error)) from None
        self._fd = self._file.fileno()
        self._poll = select.poll()
        self._poll.register(self._fd, select.POLLIN)
        self._rx = bytearray()
        self._tx_end = time.ticks_us()
        self._sending = False
        de = os.getenv("VBMS_UART%d_DE" % id)
        self._de = int(de) if de else None
        if self._de is not None:
            _uarts_by_de[self._de] = self
        self.init(baudrate, bits, parity, stop)

    def init(self, baudrate=9600, bits=8, parity=None, stop=1, **options):
        self.baudrate = baudrate
        self._char_bits = 1 + bits + (0 if parity is None else 1) + stop
        termios.setraw(self._fd)
        attributes = termios.tcgetattr(self._fd)
        attributes[4] = attributes[5] = _SPEEDS.get(baudrate, 13)
        attributes[6][_VMIN] = 0  # a read returns at once with what is there
        attributes[6][_VTIME] = 0
        termios.tcsetattr(self._fd, termios.TCSANOW, attributes)

    def deinit(self):
        if self._file is not None:
            self._file.close()
            self._file = None

    def _wire_left_us(self):
        return time.ticks_diff(self._tx_end, time.ticks_us())

    def _de_dropped(self):
        left = self._wire_left_us()
        if self._sending and left > 0:
            _violation(self.id, "driver-enable dropped %d us before the last stop bit left" % left)
        self._sending = False

    def _drain_fd(self):
        while self._poll.poll(0):
            chunk = self._file.read(256)
            if chunk:
                self._rx.extend(chunk)
            else:
                raise OSError(_EIO)  # the other end closed the PTY: an error, never a busy loop

    def any(self):
        self._drain_fd()
        return len(self._rx)

    def read(self, count=-1):
        self._drain_fd()
        if not self._rx:
            return None  # as machine.UART when nothing came
        if count is None or count < 0:
            count = len(self._rx)
        data = bytes(self._rx[:count])
        self._rx[:count] = b""
        return data

    def readinto(self, buffer, count=-1):
        if count is None or count < 0:
            count = len(buffer)
        data = self.read(count)
        if data is None:
            return None
        buffer[: len(data)] = data
        return len(data)

    def write(self, data):
        if self._de is not None:
            pin = _pins.get(self._de)
            if pin is None or pin._value != 1:
                _violation(self.id, "%d bytes written while driver-enable was low" % len(data))
        count = self._file.write(data)
        now = time.ticks_us()
        start = self._tx_end if self._wire_left_us() > 0 else now
        self._tx_end = time.ticks_add(start, count * self._char_bits * 1000000 // self.baudrate)
        self._sending = True
        return count

    def txdone(self):
        """The wire time of what was written has passed (the bench's wire paces the bytes itself)."""
        return self._wire_left_us() <= 0

    def flush(self):
        left = self._wire_left_us()
        if left > 0:
            time.sleep_us(left)

    def ioctl(self, request, argument):
        if request == _GET_FILENO:
            # poll the fd natively while nothing is buffered here; otherwise select asks _POLL
            return -1 if self._rx else self._fd
        if request == _POLL:
            if self._rx or self._poll.poll(0):
                return argument & select.POLLIN
            return 0
        return -1
