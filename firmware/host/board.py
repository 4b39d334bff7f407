"""The virtual board (CPython, never shipped): the firmware on the MicroPython unix port, with a console
(a PTY, as the board's USB serial port) and a reset line.  The harness (hil/board.py VirtualBoard) wires
its UARTs to PTY adapters and drives it as the esp32 target drives a real board.

    python firmware/host/board.py --flash DIR --tree DIR --micropython PATH [--ble-adapter hciN]

The firmware's environment comes from this process's (hil/firmware.py host_environment: $VBMS_FLASH,
$VBMS_UART<n> and their DE pins, $VBMS_GPIO_DIR, and $DBUS_SYSTEM_BUS_ADDRESS for the BLE bridge,
firmware/host/ble_bridge.py, which this process runs on --ble-adapter).  It prints one JSON line,
{"event": "board", "console": PATH, "pid": N}, then runs until SIGTERM, SIGINT or SIGHUP (the power is
cut).  SIGUSR1 is the EN line: a hardware reset.

The console behaves as a MicroPython board's does, for what the harness and mpremote use:
  running   the firmware's output ("\\n" sent as "\\r\\n", as a board's UART console does); Ctrl-C raises
            KeyboardInterrupt in the firmware, which ends it, and the REPL follows;
  REPL      ">>> ": a line is run by MicroPython (one interpreter that lives until the next reset, its
            working directory the flash); Ctrl-D is a soft reset (the firmware starts again), Ctrl-A the
            raw REPL, Ctrl-B prints the banner;
  raw REPL  mpremote's protocol: code up to Ctrl-D, "OK", its output, \\x04, its error, \\x04, ">";
            or raw-paste mode (Ctrl-E A Ctrl-A: "R\\x01", a window of PASTE_WINDOW bytes, a \\x01 for each
            window taken, \\x04 at its end); Ctrl-D on an empty buffer is a soft reset that stays in the raw
            REPL; machine.reset() is a hardware reset.
A hardware reset prints a boot line and starts the firmware.  The flash is DIR: config.json, device.json,
web/ and, once `vbms firmware deploy` has copied it there, the built tree, which the firmware then runs
from (until then from --tree, the source tree).  Only the console and the reset are emulated: the
firmware, its UARTs, its BLE and its web server are those of `vbms firmware host` (hil/firmware.py).
"""

import argparse
import ctypes
import json
import os
import pty
import select
import signal
import subprocess
import sys
import termios
import tty
from pathlib import Path

HOST = Path(__file__).resolve().parent
ROOT = HOST.parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # ble_bridge (beside this file) imports hil.host

CTRL_A, CTRL_B, CTRL_C, CTRL_D, CTRL_E = 1, 2, 3, 4, 5
BANNER = (
    b'MicroPython (unix port) on the vbms virtual board with ESP32 stand-ins\r\nType "help()" for more information.\r\n'
)
RAW_PROMPT = b"raw REPL; CTRL-B to exit\r\n>"
SOFT_REBOOT = b"MPY: soft reboot\r\n"
POWER_ON = b"\r\nrst:0x1 (POWERON_RESET) vbms virtual board: hardware reset\r\n"
PASTE_WINDOW = 4096  # raw-paste flow control: bytes the host may send per \x01 (a board offers half its buffer)
HARD_RESET_EXIT, SOFT_RESET_EXIT = 3, 4  # the agent's exit statuses for machine.reset() and sys.exit()

# The REPL's interpreter: MicroPython, reading "<E|S><length>\n<code>" (E: exec, S: a REPL line whose
# value is printed), answering with the code's output, then \x04, its error, \x04.  machine.reset() (the
# stand-in raises machine.Reset) and sys.exit() end it with the statuses above.  os.stat("") is the
# working directory's, as on a board's VFS (the unix port's is ENOENT; mpremote asks it of ":").
AGENT = """
import io, sys
import os as _os
import machine
class _BoardOs:
    def __getattr__(self, name):
        return getattr(_os, name)
    def stat(self, path):
        return _os.stat(path or ".")
sys.modules["os"] = _BoardOs()
scope = {"__name__": "__main__"}
source_in, out = sys.stdin.buffer, sys.stdout.buffer
while True:
    header = source_in.readline()
    if not header:
        break
    size = int(header[1:])
    code = b""
    while len(code) < size:
        chunk = source_in.read(size - len(code))
        if not chunk:
            sys.exit(0)
        code += chunk
    error = b""
    try:
        exec(compile(code.decode(), "<stdin>", "single" if header[:1] == b"S" else "exec"), scope)
    except SystemExit as stop:
        sys.exit(%d if isinstance(stop, machine.Reset) else %d)
    except BaseException as exception:
        text = io.StringIO()
        sys.print_exception(exception, text)
        error = text.getvalue().encode()
    out.write(b"\\x04" + error + b"\\x04")
""" % (HARD_RESET_EXIT, SOFT_RESET_EXIT)


def crlf(data):
    return data.replace(b"\n", b"\r\n")


def _die_with_this_board():
    """In a child: SIGTERM when this process dies (as hil/procs.py ties a bench's children to it)."""
    if ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0) != 0:  # PR_SET_PDEATHSIG
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")


def start_child(command, env, cwd, stdin):
    return subprocess.Popen(command, env=env, cwd=cwd, stdin=stdin, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, preexec_fn=_die_with_this_board)  # fmt: skip


def stop_child(process, timeout_s):
    """The power is cut: SIGTERM, SIGKILL when it lingers."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class VirtualBoard:
    def __init__(self, flash, tree, micropython, ble_adapter=None):
        self.flash = Path(flash).resolve()
        self.tree = Path(tree).resolve()
        self.micropython = micropython
        self.ble_adapter = ble_adapter
        self.bridge = None
        self.firmware = None  # the MicroPython process running the firmware
        self.agent = None  # the REPL's MicroPython process
        self.mode = "off"  # running, interrupted (waiting for the firmware to end), repl, raw
        self.pending = bytearray()  # console input that waits (the firmware is ending, the REPL is busy)
        self.line = bytearray()  # the REPL's line, or the raw REPL's code
        self.paste_request = None  # a raw-paste request (Ctrl-E A Ctrl-A) being read
        self.paste_taken = 0  # raw-paste bytes taken since the last window was granted
        self.busy = None  # "raw" or "repl" while the agent runs code
        self.markers = 0
        self.signals = []
        self.console = None
        self._console_slave = None
        self._wake_r, self._wake_w = os.pipe()

    # --- the ports ------------------------------------------------------------------------
    def open(self):
        self.console, self._console_slave = pty.openpty()
        tty.setraw(self._console_slave)  # no echo, no line discipline: a USB serial port
        attributes = termios.tcgetattr(self._console_slave)
        attributes[3] &= ~termios.ECHO
        termios.tcsetattr(self._console_slave, termios.TCSANOW, attributes)
        os.set_blocking(self.console, False)
        if self.ble_adapter is not None:
            import ble_bridge

            self.bridge = ble_bridge.BridgeThread(self.ble_adapter).start()
        return {"event": "board", "console": os.ttyname(self._console_slave), "pid": os.getpid()}

    def write(self, data):
        """To the console; dropped when nobody reads it and the PTY's buffer is full (as on a USB port)."""
        try:
            os.write(self.console, data)
        except (BlockingIOError, OSError):
            pass

    # --- the firmware -----------------------------------------------------------------------
    def deployed(self):
        return (self.flash / "vbms_fw").is_dir()

    def environment(self):
        """The firmware's: this process's, its modules from the deployed tree or the source tree (the
        stand-ins first; `.frozen` last keeps the port's own asyncio), the BLE bridge."""
        tree = self.flash if self.deployed() else self.tree
        env = dict(os.environ, MICROPYPATH="%s:%s:.frozen" % (HOST, tree), VBMS_FLASH=str(self.flash))
        if self.bridge is not None:
            env["VBMS_BLE_BRIDGE"] = self.bridge.path
        return env

    def boot(self):
        """main.py: the firmware starts from the deployed tree, or else from the source tree."""
        self.stop_agent()
        deployed = self.deployed()
        self.write(b"vbms virtual board: boot, firmware from %s\r\n"
                   % (b"the deployed tree in the flash" if deployed else b"the source tree"))  # fmt: skip
        command = [self.micropython, str(HOST / "start.py")]
        try:
            self.firmware = start_child(command, self.environment(), str(self.flash), subprocess.DEVNULL)
        except OSError as error:
            self.write(crlf(b"the firmware cannot start: %s\n" % str(error).encode()))
            self.enter_repl()
            return
        os.set_blocking(self.firmware.stdout.fileno(), False)
        self.mode = "running"

    def stop_firmware(self):
        if self.firmware is not None:
            stop_child(self.firmware, timeout_s=5)
            self.firmware.stdout.close()
            self.firmware = None

    def firmware_output(self):
        try:
            data = os.read(self.firmware.stdout.fileno(), 4096)
        except BlockingIOError:
            return
        if data:
            self.write(crlf(data))
            return
        self.firmware.wait()  # it ended: a KeyboardInterrupt, or it crashed; the REPL follows, as on a board
        self.firmware.stdout.close()
        self.firmware = None
        self.enter_repl()

    def hard_reset(self):
        self.stop_agent()
        self.stop_firmware()
        self.pending.clear()
        self.line.clear()
        self.paste_request = None
        self.write(POWER_ON)
        self.boot()

    # --- the REPL ---------------------------------------------------------------------------
    def enter_repl(self):
        self.mode = "repl"
        self.line.clear()
        self.write(BANNER + b">>> ")
        self.take_pending()

    def start_agent(self):
        command = [self.micropython, "-c", AGENT]
        self.agent = start_child(command, self.environment(), str(self.flash), subprocess.PIPE)
        os.set_blocking(self.agent.stdout.fileno(), False)

    def stop_agent(self):
        if self.agent is not None:
            stop_child(self.agent, timeout_s=2)
            for stream in (self.agent.stdin, self.agent.stdout):
                stream.close()
            self.agent = None
        self.busy = None

    def run_code(self, code, kind):
        if self.agent is None:
            self.start_agent()
        self.busy = kind
        self.markers = 0
        try:
            self.agent.stdin.write(b"%s%d\n" % (b"E" if kind == "raw" else b"S", len(code)) + bytes(code))
            self.agent.stdin.flush()
        except OSError:
            self.agent_ended()

    def agent_output(self):
        try:
            data = os.read(self.agent.stdout.fileno(), 4096)
        except BlockingIOError:
            return
        if not data:
            self.agent_ended()
            return
        if self.busy is None:
            return
        self.markers += data.count(b"\x04")
        self.write(crlf(data if self.busy == "raw" else data.replace(b"\x04", b"")))
        if self.markers >= 2:
            self.write(b">" if self.busy == "raw" else b">>> ")
            self.busy = None
            self.take_pending()

    def agent_ended(self):
        status = self.agent.wait()
        kind = self.busy
        self.stop_agent()
        if kind is None:  # it ended between two runs: the next run starts another
            return
        if status == HARD_RESET_EXIT:
            self.hard_reset()
        elif kind == "raw":
            self.write(SOFT_REBOOT + RAW_PROMPT)
        else:
            self.soft_reset()

    def soft_reset(self):
        self.stop_agent()
        self.write(SOFT_REBOOT)
        self.boot()

    # --- console input ------------------------------------------------------------------------
    def console_input(self, data):
        if self.mode == "running":
            if CTRL_C in data:  # a board's UART raises KeyboardInterrupt; what follows waits for the REPL
                self.firmware.send_signal(signal.SIGINT)
                self.mode = "interrupted"
                self.pending.extend(data[data.index(CTRL_C) + 1 :])
            return
        if self.mode == "interrupted" or self.busy is not None:
            if CTRL_C in data:  # again: the firmware, or the code the REPL runs
                (self.agent if self.busy is not None else self.firmware).send_signal(signal.SIGINT)
            self.pending.extend(data)
            return
        self.pending.extend(data)
        self.take_pending()

    def take_pending(self):
        while self.pending and self.mode in ("repl", "raw", "paste") and self.busy is None:
            if self.mode == "paste":  # in bulk: a build's files come this way
                end = self.pending.find(CTRL_D)
                chunk = bytes(self.pending[: end if end >= 0 else len(self.pending)])
                del self.pending[: len(chunk) + (end >= 0)]
                self.paste(chunk, end >= 0)
                continue
            byte = self.pending.pop(0)
            if self.mode == "raw":
                self.raw_byte(byte)
            else:
                self.repl_byte(byte)

    def raw_byte(self, byte):
        if self.paste_request is not None:
            self.paste_request.append(byte)
            if len(self.paste_request) < 2:
                return
            if self.paste_request != b"A\x01":
                self.write(b"R\x00")  # not a request this board knows
            else:  # raw-paste mode: the window (little-endian), and a \x01 that grants a second one
                self.mode, self.paste_taken = "paste", 0
                self.line.clear()
                self.write(b"R\x01" + PASTE_WINDOW.to_bytes(2, "little") + b"\x01")
            self.paste_request = None
        elif byte == CTRL_A:
            self.line.clear()
            self.write(RAW_PROMPT)
        elif byte == CTRL_B:
            self.mode = "repl"
            self.line.clear()
            self.write(b"\r\n" + BANNER + b">>> ")
        elif byte == CTRL_C:
            self.line.clear()
        elif byte == CTRL_D:
            if not self.line:  # a soft reset that stays in the raw REPL (main.py does not run)
                self.stop_agent()
                self.write(SOFT_REBOOT + RAW_PROMPT)
                return
            self.write(b"OK")
            code, self.line = bytes(self.line), bytearray()
            self.run_code(code, "raw")
        elif byte == CTRL_E:
            self.paste_request = bytearray()
        else:
            self.line.append(byte)

    def paste(self, chunk, ended):
        """Raw-paste bytes: a window granted for each one taken; at the end (Ctrl-D) acknowledged, then run
        as the raw REPL runs code."""
        self.line += chunk
        self.paste_taken += len(chunk)
        while self.paste_taken >= PASTE_WINDOW:
            self.paste_taken -= PASTE_WINDOW
            self.write(b"\x01")
        if ended:
            self.mode = "raw"
            self.write(b"\x04")
            code, self.line = bytes(self.line), bytearray()
            self.run_code(code, "raw")

    def repl_byte(self, byte):
        if byte == CTRL_A:
            self.mode = "raw"
            self.line.clear()
            self.write(b"\r\n" + RAW_PROMPT)
        elif byte == CTRL_B:
            self.line.clear()
            self.write(b"\r\n" + BANNER + b">>> ")
        elif byte == CTRL_C:
            self.line.clear()
            self.write(b"\r\n>>> ")
        elif byte == CTRL_D:
            if not self.line:
                self.soft_reset()
        elif byte in (0x0D, 0x0A):
            self.write(b"\r\n")
            code, self.line = bytes(self.line), bytearray()
            if code.strip():
                self.run_code(code, "repl")
            else:
                self.write(b">>> ")
        elif byte in (0x08, 0x7F):
            if self.line:
                self.line.pop()
                self.write(b"\b \b")
        elif 0x20 <= byte < 0x7F or byte == 0x09:
            self.line.append(byte)
            self.write(bytes((byte,)))

    # --- the loop ------------------------------------------------------------------------------
    def on_signal(self, number, _frame):
        self.signals.append(number)
        os.write(self._wake_w, b"!")

    def run(self):
        for number in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1):
            signal.signal(number, self.on_signal)
        self.write(POWER_ON)
        self.boot()
        while True:
            while self.signals:
                number = self.signals.pop(0)
                if number != signal.SIGUSR1:
                    return
                self.hard_reset()
            readers = [self.console, self._wake_r]
            if self.firmware is not None:
                readers.append(self.firmware.stdout.fileno())
            if self.agent is not None:
                readers.append(self.agent.stdout.fileno())
            ready, _, _ = select.select(readers, [], [], 1.0)
            if self._wake_r in ready:
                os.read(self._wake_r, 64)
            if self.firmware is not None and self.firmware.stdout.fileno() in ready:
                self.firmware_output()
            if self.agent is not None and self.agent.stdout.fileno() in ready:
                self.agent_output()
            if self.console in ready:
                try:
                    data = os.read(self.console, 4096)
                except (BlockingIOError, OSError):
                    data = b""
                if data:
                    self.console_input(data)

    def close(self):
        self.stop_agent()
        self.stop_firmware()
        if self.bridge is not None:
            self.bridge.stop()
        for fd in (self.console, self._console_slave, self._wake_r, self._wake_w):
            if fd is not None:
                os.close(fd)


def main(argv=None):
    parser = argparse.ArgumentParser(description="the firmware on the MicroPython unix port, as a board")
    parser.add_argument("--flash", required=True, help="the directory standing in for the board's flash")
    parser.add_argument("--tree", required=True, help="the firmware's source tree (vbms_fw, vbms_core, microdot)")
    parser.add_argument("--micropython", required=True, help="the MicroPython unix port's executable")
    parser.add_argument("--ble-adapter", help="the board's Bluetooth adapter ($DBUS_SYSTEM_BUS_ADDRESS: BlueZoo)")
    args = parser.parse_args(argv)
    board = VirtualBoard(args.flash, args.tree, args.micropython, args.ble_adapter)
    try:
        ports = board.open()
    except Exception as error:  # noqa: BLE001 - the bridge's or the PTY's: the board cannot start
        sys.stderr.write("vbms virtual board: %s\n" % error)
        board.close()
        return 2
    print(json.dumps(ports), flush=True)
    try:
        board.run()
    finally:
        board.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
