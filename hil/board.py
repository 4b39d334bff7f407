"""A board the harness did not start (the esp32 target): its console, its reset, its ready line, its
configuration, and the checks that say what is wrong with a bench before anything runs.

  check_bench   the [esp32] section against this machine: the ports exist, each JK BLE battery has a
                Bluetooth adapter that is there and has the MAC the bench gives the battery.
  check_echo    an RS485 adapter that hears itself: refused (see the function).
  Board         the console (read all the time: the firmware's JSON log lines, a tail for error
                messages), the reset the bench chooses, the ready line, RPC with the bench's token,
                the bench's configuration, deploying a build.
  VirtualBoard  for CI, which has no board: firmware/host/board.py (the firmware on the unix port with
                its console and UARTs on PTYs) and BlueZoo, and the bench file that presents them as a
                bench file presents a real board.
  BoardError    what is wrong and how to fix it: a user's error, never a skip.

Reset (bench key `reset`): "dtr_rts" pulses EN through RTS with IO0 (DTR) high, as esptool's hard
reset does on the usual USB-serial auto-reset circuit; "soft" stops the firmware with Ctrl-C on the
console and soft-resets MicroPython with Ctrl-D; "command" runs `reset_command` (a relay or a USB hub
port that cuts the power; the virtual board's EN line).

Configuration goes over RPC, with the token the bench names (`rpc_token`; or the one a board prints on
its console when it makes one at its first start): Config.Set with the bench's slots over the defaults
(they take effect at once), then Config.Save, with a reboot only when a setting the firmware reads at its
start changed (the RS485 baud rates).  The scenarios need the board's RPC anyway (Config.Get,
VBMS.GetSummary, Sys.GetInfo), so this asks nothing more of a bench; the change goes through the
firmware's own checks and its atomic save, as a user's would; and what belongs to the board is kept: its
UART numbers, pins, device id and MQTT settings.  The console offers only the REPL: writing config.json
there means stopping the firmware and bypassing its validation.  Nothing changes when the board already
has the bench's configuration.  (A reboot while the board is connecting to a JK module can leave the
virtual board's BLE bridge holding a link the restarted firmware does not know, and that module then
never advertises again: one more reason to reboot only when needed.)
"""

from __future__ import annotations

import collections
import json
import os
import re
import secrets
import select
import shlex
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Self, cast

from . import rpc_client
from .benchfile import ESP32_PORTS, BenchError, check_ble_adapter_count

if TYPE_CHECKING:
    import serial

    from .benchfile import Bench
    from .wires.ble import BleEnvironment
    from .wires.rs485 import Rs485Bus

# Where the console is: (lines seen, bytes received); a wait with `since` looks only at what came after it
Mark = tuple[int, int]

ROOT = Path(__file__).resolve().parents[1]
SUPERVISOR = ROOT / "firmware" / "host" / "board.py"
READY_EVENT = "started"  # firmware/vbms_fw/app.py logs it when everything is up
TOKEN_SAID = "generated an RPC token"  # firmware/vbms_fw/store.py, the first start without a token
# What belongs to the board, not to a bench: kept as the board has it when it is configured.
BOARD_KEYS = ("app.bms_uart_no", "app.inv_uart_no", "pins.led", "pins.button", "pins.button_hold_ms", "device.id",
              "mqtt.enable", "mqtt.server", "mqtt.topic_prefix")  # fmt: skip
# What the firmware reads only at its start (firmware/vbms_fw/app.py opens the UARTs at these rates).
START_KEYS = ("app.bms_baud", "app.inv_baud")
ECHO_PROBE = b"\xff\x00vbms echo probe\x00\xff"  # no Modbus, BYD or JK frame: a board discards it
SOFT_STOP_S = 5.0
RPC_CONNECT_S = 10.0  # the ready line comes as the web server starts listening: a refused connection is retried


class BoardError(Exception):
    """The bench or the board cannot be used: the message says what is wrong and how to fix it."""


# --- checks before anything runs ------------------------------------------------------------


def check_bench(bench: Bench) -> None:
    """bench.esp32 against this machine; BoardError for anything missing."""
    esp32 = bench.esp32
    if not esp32:
        raise BoardError(
            "the esp32 target drives the board a bench file's [esp32] section names (console_port, inverter_port, "
            "bms_port, ...): pass --bench FILE (see hil/benches/esp32-example.toml), or leave --bench out to use the "
            "virtual board"
        )
    try:
        check_ble_adapter_count(bench, esp32)
    except BenchError as error:
        raise BoardError(str(error)) from None
    absent = ["%s %s" % (key, esp32[key]) for key in ESP32_PORTS if not os.path.exists(esp32[key])]
    if absent:
        raise BoardError(
            "%s: no such port. Is the board or adapter plugged in? `ls -l /dev/serial/by-id/` lists the USB serial "
            "ports by name; put those paths in [esp32]" % "; ".join(absent)
        )
    real = [os.path.realpath(esp32[key]) for key in ESP32_PORTS]
    if len(set(real)) < len(real):
        raise BoardError("console_port, inverter_port and bms_port must be three different ports, not %s" % real)
    jk = [spec for spec in bench.batteries if spec.type == "jk_ble"]
    for spec, adapter in zip(jk, esp32["ble_adapters"], strict=False):
        address = adapter_address(adapter, esp32.get("ble_dbus_address"))
        if address != spec.address:
            raise BoardError(
                "battery slot %d (%s) has the address %s, but its Bluetooth adapter %s has %s: a simulated JK module "
                'advertises with its adapter\'s own MAC, so set address = "%s" for that battery'
                % (spec.slot, spec.name, spec.address, adapter, address, address)
            )


def adapter_address(adapter: str, dbus_address: str | None = None) -> str:
    """The MAC of a Bluetooth adapter (BlueZ on the system bus, or the bus at dbus_address); BoardError
    when it is not there."""
    command = ["dbus-send", "--system", "--print-reply", "--dest=org.bluez", "/org/bluez/%s" % adapter,
               "org.freedesktop.DBus.Properties.Get", "string:org.bluez.Adapter1", "string:Address"]  # fmt: skip
    env = dict(os.environ)
    if dbus_address:
        env["DBUS_SYSTEM_BUS_ADDRESS"] = dbus_address
    try:
        answer = subprocess.run(command, env=env, capture_output=True, text=True, timeout=10, check=False)
    except FileNotFoundError:
        raise BoardError("dbus-send is missing (Debian package dbus-bin): it asks BlueZ for the adapters") from None
    except subprocess.TimeoutExpired:
        raise BoardError("BlueZ did not answer about adapter %s within 10 s" % adapter) from None
    found = re.search(r'string "([0-9A-Fa-f:]{17})"', answer.stdout)
    if answer.returncode != 0 or found is None:
        raise BoardError(
            "no Bluetooth adapter %s%s: %s. `bluetoothctl list` shows the adapters there are; each JK BLE battery "
            "needs one of its own in [esp32] ble_adapters"
            % (adapter, " on D-Bus %s" % dbus_address if dbus_address else "", answer.stderr.strip() or "no address")
        )
    return found.group(1).upper()


def check_echo(path: str, baud: int, key: str, listen_s: float = 0.3) -> None:
    """BoardError when the RS485 adapter at path echoes what it sends.

    An adapter whose receiver stays enabled while it transmits hands every frame the harness writes back
    to the harness: pymodbus would read the inverter's own request as the start of the answer, and the
    modules would hear their own replies as requests.  Stripping the echo is not safe on a shared line:
    an echo garbled by a collision with the board cannot be told from the board's own bytes.  So an
    echoing adapter is refused, with how to turn the echo off.
    """
    import serial

    try:
        with serial.Serial(path, baud, timeout=0, exclusive=True) as line:
            line.reset_input_buffer()
            line.write(ECHO_PROBE)
            line.flush()
            heard = bytearray()
            deadline = time.monotonic() + listen_s
            while time.monotonic() < deadline and ECHO_PROBE not in heard:
                heard += line.read(256)
                time.sleep(0.01)
    except (OSError, serial.SerialException) as error:
        raise BoardError(
            "cannot open %s %s: %s (is your user in the dialout group? is another program using the port?)"
            % (key, path, error)
        ) from None
    if ECHO_PROBE in heard:
        raise BoardError(
            "the RS485 adapter on %s (%s) echoes what it sends: its receiver stays on while it transmits, so the "
            "simulators would read their own frames back. Turn the echo off (a jumper or switch on many adapters, "
            "often marked ECHO or RE; or tie the transceiver's /RE to DE) or use an adapter with automatic "
            "direction control that does not echo" % (key, path)
        )


# --- the board ---------------------------------------------------------------------------


class Board:
    """A board on its console and its RPC, as [esp32] describes them (hil/benchfile.py)."""

    def __init__(self, esp32: dict[str, Any]) -> None:
        self.console_port: str = esp32["console_port"]
        self.baud: int = esp32.get("console_baud", 115200)
        self.reset_kind: str = esp32.get("reset", "dtr_rts")
        self.reset_command: str | list[str] | None = esp32.get("reset_command")
        self.ready_timeout_s: float = esp32.get("ready_timeout_s", 30.0)
        self.rpc_url: str | None = esp32.get("rpc_url")
        self.token: str | None = esp32.get("rpc_token")
        self.ready: dict[str, Any] | None = None  # the last ready line's record
        # (number, text, record or None)
        self.lines: collections.deque[tuple[int, str, dict[str, Any] | None]] = collections.deque(maxlen=400)
        self.line_count = 0
        self._raw = bytearray()  # the last bytes received, for prompts that end no line
        self._raw_end = 0  # bytes received in all
        self._partial = bytearray()
        self._token_next = False
        self._changed = threading.Condition()
        self._serial: serial.Serial | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    # --- the console ------------------------------------------------------------------------
    def open(self) -> Self:
        import serial

        line = serial.Serial()
        line.port, line.baudrate, line.timeout, line.exclusive = self.console_port, self.baud, 0.1, True
        line.rts = False  # EN high: opening must not hold the board in reset
        line.dtr = False  # IO0 high: it boots its firmware
        try:
            line.open()
        except (OSError, serial.SerialException) as error:
            raise BoardError(
                "cannot open console_port %s: %s (is your user in the dialout group? is another program, a "
                "terminal or mpremote, using the port?)" % (self.console_port, error)
            ) from None
        self._serial = line
        self._stop.clear()
        self._thread = threading.Thread(target=self._read, name="board-console", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self._serial is not None:
            self._serial.close()
            self._serial = None

    def write(self, data: bytes) -> None:
        # _serial: the console is open while the board is used (open() to close())
        self._serial.write(data)  # type: ignore[union-attr]
        self._serial.flush()  # type: ignore[union-attr]

    def _read(self) -> None:
        import serial

        while not self._stop.is_set():
            try:
                data = self._serial.read(4096)  # type: ignore[union-attr]  # open() set it, then started this
            except (OSError, serial.SerialException, TypeError):
                return  # the port went away (closed, unplugged): the next wait says so
            if data:
                self._received(data)

    def _received(self, data: bytes) -> None:
        with self._changed:
            self._raw += data
            self._raw_end += len(data)
            del self._raw[: max(0, len(self._raw) - 65536)]
            self._partial += data
            while b"\n" in self._partial:
                end = self._partial.index(b"\n")
                text = self._partial[:end].decode("utf-8", "replace").strip("\r")
                del self._partial[: end + 1]
                self._line(text)
            self._changed.notify_all()

    def _line(self, text: str) -> None:
        record = None
        if text.startswith("{"):
            try:
                record = json.loads(text)
            except ValueError:
                pass
        if self._token_next and text.strip():
            self.token = text.strip()  # the board made a token at its first start; it holds from now on
            self._token_next = False
        if TOKEN_SAID in text:
            self._token_next = True
        self.line_count += 1
        self.lines.append((self.line_count, text, record if isinstance(record, dict) else None))

    def tail(self, count: int = 30) -> list[str]:
        with self._changed:
            lines = [text for _, text, _ in list(self.lines)[-count:]]
            if self._partial:
                lines.append(self._partial.decode("utf-8", "replace"))
        return lines

    def lines_since(self, number: int) -> list[tuple[int, str, dict[str, Any] | None]]:
        """The console lines after line `number` that it still keeps (number, text, JSON record or None)."""
        with self._changed:
            return [entry for entry in self.lines if entry[0] > number]

    def mark(self) -> Mark:
        """Where the console is now: waits with since=mark() look only at what comes after."""
        with self._changed:
            return self.line_count, self._raw_end

    def wait_record(
        self, wanted: Callable[[dict[str, Any]], bool], since: Mark, timeout_s: float
    ) -> dict[str, Any] | None:
        """The first JSON log record after mark `since` for which wanted(record) holds, or None."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while True:
                for number, _, record in self.lines:
                    if number > since[0] and record is not None and wanted(record):
                        return record
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._changed.wait(min(left, 0.5))

    def wait_text(self, patterns: Iterable[bytes], since: Mark, timeout_s: float) -> bytes | None:
        """The first of patterns (bytes) the console shows after mark `since`, or None."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while True:
                start = max(0, len(self._raw) - (self._raw_end - since[1]))
                seen = bytes(self._raw[start:])
                for pattern in patterns:
                    if pattern in seen:
                        return pattern
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._changed.wait(min(left, 0.5))

    def _tail_text(self) -> str:
        return "\n".join("  | " + line for line in self.tail(20)) or "  | (nothing at all)"

    # --- reset and the ready line ---------------------------------------------------------------
    def reset(self) -> Mark:
        """Reset the board as the bench says; returns the console's mark from before it."""
        since = self.mark()
        if self.reset_kind == "dtr_rts":
            self._pulse_en()
        elif self.reset_kind == "soft":
            self._soft_reset(since)
        else:
            self._run_reset_command()
        return since

    def _pulse_en(self) -> None:
        try:  # (_serial: open, as in write())
            self._serial.dtr = False  # type: ignore[union-attr]  # IO0 high: boot the firmware, not the ROM loader
            self._serial.rts = True  # type: ignore[union-attr]  # EN low: the chip is held in reset
            time.sleep(0.1)
            self._serial.rts = False  # type: ignore[union-attr]  # EN high: it starts
        except OSError as error:
            raise BoardError(
                'console_port %s has no DTR/RTS lines to reset the board with (%s): set [esp32] reset = "soft" '
                '(Ctrl-C, Ctrl-D on the console) or reset = "command" with a reset_command'
                % (self.console_port, error.strerror or error)
            ) from None

    def _soft_reset(self, since: Mark) -> None:
        self.write(b"\r\x03\x03")  # Ctrl-C: KeyboardInterrupt in main.py; twice, as mpremote does
        prompt = self.wait_text((b">>> ", b"raw REPL"), since, SOFT_STOP_S)
        if prompt is None:
            raise BoardError(
                "the board did not stop at Ctrl-C: no REPL prompt within %d s on console_port %s (is console_baud "
                "%d right? is MicroPython on the board?). Its console's last lines:\n%s"
                % (SOFT_STOP_S, self.console_port, self.baud, self._tail_text())
            )
        if prompt == b"raw REPL":
            mark = self.mark()
            self.write(b"\x02")  # Ctrl-B: leave the raw REPL (mpremote left it there)
            self.wait_text((b">>> ",), mark, SOFT_STOP_S)
        mark = self.mark()
        self.write(b"\x04")  # Ctrl-D at the REPL: soft reset; boot.py and main.py run again
        if self.wait_text((b"soft reboot",), mark, SOFT_STOP_S) is None:
            raise BoardError("the board did not soft-reset at Ctrl-D. Its console's last lines:\n" + self._tail_text())

    def _run_reset_command(self) -> None:
        command = self.reset_command
        # reset = "command" comes with a reset_command (hil/benchfile.py)
        words = shlex.split(command) if isinstance(command, str) else list(command)  # type: ignore[arg-type]
        try:
            done = subprocess.run(words, capture_output=True, text=True, timeout=30, check=False)
        except (OSError, subprocess.TimeoutExpired) as error:
            raise BoardError("reset_command %r did not run: %s" % (command, error)) from None
        if done.returncode != 0:
            raise BoardError(
                "reset_command %r failed (exit status %d): %s"
                % (command, done.returncode, (done.stderr or done.stdout).strip())
            )

    def wait_ready(self, since: Mark, timeout_s: float | None = None) -> dict[str, Any]:
        """The firmware's ready line after mark `since` (its JSON "started" log record); BoardError with
        the console's tail when it does not come."""
        timeout_s = self.ready_timeout_s if timeout_s is None else timeout_s
        record = self.wait_record(lambda r: r.get("event") == READY_EVENT, since, timeout_s)
        if record is None:
            raise BoardError(
                'the board printed no ready line (the JSON log line with "event": "started") within %g s of its '
                "reset on console_port %s. Is the firmware on it (pytest --deploy, or vbms firmware deploy)? Is "
                "console_baud (%d) right? Raise ready_timeout_s for a slow start. Its console's last lines:\n%s"
                % (timeout_s, self.console_port, self.baud, self._tail_text())
            )
        self.ready = record
        return record

    def restart(self) -> dict[str, Any]:
        """Sys.Reboot, and the ready line of the start that follows."""
        since = self.mark()
        self.call("Sys.Reboot", {})
        return self.wait_ready(since)

    # --- RPC ----------------------------------------------------------------------------------
    def url(self) -> str:
        """Where the board answers RPC: rpc_url, or the address its firmware logged (the station's, once
        the Wi-Fi is up; the access point's) with the port of its ready line."""
        if self.rpc_url:
            return self.rpc_url
        announced = (self.ready or {}).get("http", "")
        host_port = announced.split("//", 1)[-1]
        host, _, port = host_port.partition(":")
        if host and host != "0.0.0.0":
            return announced.rstrip("/")
        since = (0, 0)
        record = self.wait_record(lambda r: r.get("event") == "wifi_sta_connected", since, self.ready_timeout_s)
        if record is None or not record.get("address"):
            raise BoardError(
                "the board logged no address to reach its RPC at (no wifi_sta_connected line): set [esp32] rpc_url "
                "to its address, e.g. http://192.168.1.50. Its console's last lines:\n" + self._tail_text()
            )
        return "http://%s%s" % (record["address"], ":" + port if port and port != "80" else "")

    def rpc(
        self, method: str, params: dict[str, Any] | None = None, authenticated: bool = True, timeout_s: float = 10
    ) -> tuple[int, Any]:
        """(status, decoded JSON) of one call over HTTP."""
        token = self.token if authenticated else None
        deadline = time.monotonic() + RPC_CONNECT_S
        while True:
            try:
                return rpc_client.call(self.url(), method, params, token, timeout_s)
            except (urllib.error.URLError, ConnectionError) as error:
                if time.monotonic() >= deadline:
                    raise BoardError(
                        "the board's RPC at %s does not answer (%s): is rpc_url right and the board on the network? "
                        "Its console's last lines:\n%s"
                        % (self.url(), getattr(error, "reason", error), self._tail_text())
                    ) from None
                time.sleep(0.2)

    def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        """The result of a call; BoardError when the board refuses it."""
        status, body = self.rpc(method, params)
        if status == 200:
            return body
        error = (body or {}).get("error", {}) if isinstance(body, dict) else {}
        if status == 401:
            raise BoardError(
                "the board refused %s: %s. Set [esp32] rpc_token to the board's rpc.auth_token (it prints one on its "
                "console when it makes it, at its first start; it is in config.json on the board)"
                % (method, error.get("message", "no valid token"))
            )
        raise BoardError("the board refused %s (HTTP %d): %s" % (method, status, error.get("message", body)))

    # --- configuration and deploying ---------------------------------------------------------------
    def configure(self, bench: Bench) -> dict[str, Any]:
        """The bench's configuration on the board (see the module docstring); the changes made."""
        from vbms_core import config as config_module

        current = config_module.flatten(self.call("Config.Get"))
        wanted = wanted_config(bench, current)
        changes = {key: value for key, value in wanted.items() if current.get(key) != value}
        if not changes:
            return {}
        self.call("Config.Set", {"config": changes})
        since = self.mark()
        reboot = any(key in START_KEYS for key in changes)
        self.call("Config.Save", {"reboot": reboot})
        if reboot:
            self.wait_ready(since)
        return changes

    def deploy(self, tree: str | Path, frozen: bool = False) -> None:
        """`vbms firmware deploy`: the built tree onto the board with mpremote (which takes the console for
        itself meanwhile), which resets it at the end."""
        from . import firmware

        self.close()
        try:
            firmware.deploy(self.console_port, tree, frozen=frozen)
        except firmware.FirmwareError as error:
            raise BoardError("deploying the build to the board failed: %s" % error) from None
        finally:
            self.open()


def wanted_config(bench: Bench, current: dict[str, Any]) -> dict[str, Any]:
    """The configuration a board runs a bench with: the defaults, the board's own settings (BOARD_KEYS)
    from `current`, and the bench's slots (hil/builder.py); its token is left as it is."""
    from vbms_core import config as config_module

    from .builder import vbms_config

    wanted = config_module.defaults()
    for key in BOARD_KEYS:
        if key in current:
            wanted[key] = current[key]
    for key, value in vbms_config(bench, None).items():
        if key not in BOARD_KEYS and key != "rpc.auth_token":
            wanted[key] = value
    wanted = config_module.validate(wanted)
    wanted.pop("rpc.auth_token")
    return wanted


# --- the virtual board -----------------------------------------------------------------------


class VirtualBoard:
    """The firmware on the unix port presented as a board, for CI.  What it is made of:

    - the board: firmware/host/board.py, the firmware with its console on a PTY and a reset line (SIGUSR1);
      its flash in `directory` with a token in config.json (as a user sets a board up) and what
      `vbms firmware deploy` would have put there besides the modules (hil/firmware.py prepare_flash);
    - the cables and the USB adapters: two PTY wires (hil/wires/rs485.py, two drops each: the board's UART
      and the adapter), at the bench's baud rates;
    - Bluetooth: BlueZoo with an adapter per JK BLE battery of the bench (at the battery's MAC) and the
      board's own;
    - `bench_path`: the bench's TOML with an [esp32] section naming the console, the adapters, the RPC URL,
      the token, the reset and the Bluetooth adapters, as for a real board.
    """

    def __init__(self, bench_text: str, directory: str | Path) -> None:
        import tomllib

        from .benchfile import parse

        self.bench_text = bench_text
        self.bench = parse(tomllib.loads(bench_text))
        self.directory = Path(directory)
        self.bench_path = self.directory / "virtual-board.toml"
        self.flash = self.directory / "flash"
        self.token = secrets.token_urlsafe(12)
        self.http_url: str | None = None
        self.console: str | None = None
        self.pid: int | None = None
        self.process: subprocess.Popen[Any] | None = None
        self.wires: dict[str, Rs485Bus] = {}
        self.ble: BleEnvironment | None = None
        self._log: IO[str] | None = None

    def start(self, timeout_s: float = 30) -> Self:
        try:
            return self._start(timeout_s)
        except BaseException:
            self.stop()
            raise

    def _start(self, timeout_s: float) -> Self:
        from vbms_core import config as config_module

        from . import firmware
        from .procs import start_tied
        from .wires.rs485 import Rs485Bus

        bench = self.bench
        for role, bus in (("inverter", bench.inverter.get("bus")), ("bms", _bms_bus(bench))):
            wire = Rs485Bus(role, bench.buses[bus].baud if bus in bench.buses else 9600)
            wire.add_endpoint("board")
            wire.add_endpoint("adapter")
            self.wires[role] = wire.start()
        self.flash.mkdir(parents=True, exist_ok=True)
        config = config_module.nest(config_module.validate({"rpc.auth_token": self.token}))
        (self.flash / "config.json").write_text(json.dumps(config, indent=1, sort_keys=True))
        http_port = firmware.free_port()
        firmware.prepare_flash(self.flash, "127.0.0.1", http_port)
        self.http_url = "http://127.0.0.1:%d" % http_port
        tree = firmware.stage(self.directory / "tree")
        env = firmware.host_environment(self.flash, tree, self.wires["bms"].endpoint("board").path,
                                        self.wires["inverter"].endpoint("board").path)  # fmt: skip
        command = [sys.executable, str(SUPERVISOR), "--flash", str(self.flash), "--tree", str(tree),
                   "--micropython", firmware.micropython_command()]  # fmt: skip
        jk = [spec for spec in bench.batteries if spec.type == "jk_ble"]
        if jk:
            from .wires.ble import BleEnvironment

            # a JK BLE battery's address is its MAC
            self.ble = BleEnvironment(
                adapters=[cast(str, spec.address) for spec in jk] + [bench.dut["ble_address"]]
            ).start()
            command += ["--ble-adapter", self.ble.adapters[-1]]
            env["DBUS_SYSTEM_BUS_ADDRESS"] = cast(str, self.ble.address)  # known once started
        self._log = open(self.directory / "virtual-board.log", "w")  # noqa: SIM115 - kept open while it runs
        self.process = start_tied(command, env=env, stdout=subprocess.PIPE, stderr=self._log, cwd=str(ROOT))
        # stdout: a pipe (stdout=subprocess.PIPE)
        ready, _, _ = select.select([self.process.stdout], [], [], timeout_s)  # type: ignore[type-var]
        line = self.process.stdout.readline() if ready else b""  # type: ignore[union-attr]
        if not line:
            raise BoardError("the virtual board did not start within %d s: %s" % (timeout_s, self.log_tail()))
        announced = json.loads(line)
        self.console, self.pid = announced["console"], announced["pid"]
        self.bench_path.write_text(self.bench_file())
        return self

    def bench_file(self) -> str:
        # pid: start() has read it from the board's first line
        lines = [
            "",
            "# The virtual board (hil/board.py VirtualBoard): firmware/host/board.py, pid %d" % self.pid,  # type: ignore[str-format]
            "[esp32]",
            "console_port = %s" % json.dumps(self.console),
            "inverter_port = %s" % json.dumps(self.wires["inverter"].endpoint("adapter").path),
            "bms_port = %s" % json.dumps(self.wires["bms"].endpoint("adapter").path),
            "rpc_url = %s" % json.dumps(self.http_url),
            "rpc_token = %s" % json.dumps(self.token),
            'reset = "command"',
            'reset_command = ["kill", "-USR1", "%d"]  # the virtual board\'s EN line' % self.pid,  # type: ignore[str-format]
        ]
        if self.ble is not None:
            lines.append("ble_adapters = %s" % json.dumps(self.ble.adapters[:-1]))
            lines.append("ble_dbus_address = %s" % json.dumps(self.ble.address))
        return self.bench_text.rstrip("\n") + "\n" + "\n".join(lines) + "\n"

    def log_tail(self, characters: int = 2000) -> str:
        try:
            return (self.directory / "virtual-board.log").read_text(errors="replace")[-characters:]
        except OSError:
            return ""

    def stop(self) -> None:
        from .procs import stop_group

        if self.process is not None:
            stop_group(self.process)
            self.process.stdout.close()  # type: ignore[union-attr]  # a pipe
            self.process = None
        for wire in self.wires.values():
            wire.stop()
        self.wires = {}
        if self.ble is not None:
            self.ble.stop()
            self.ble = None
        if self._log is not None:
            self._log.close()
            self._log = None


def _bms_bus(bench: Bench) -> str | None:
    return next((spec.bus for spec in bench.batteries if spec.bus), None)
