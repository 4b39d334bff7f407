"""A Bluetooth LE environment without a radio: a private dbus-daemon and BlueZoo.

BlueZoo (PyPI) emulates BlueZ's D-Bus API; bless (peripheral) and bleak
(central) talk to it as to BlueZ.  BleEnvironment starts a dbus-daemon of its
own, BlueZoo on it with one emulated adapter per address, points
DBUS_SYSTEM_BUS_ADDRESS at it (for this process and in .env for children),
and on stop ends both processes: it leaves nothing behind.

Quirks handled here and in the peripheral (ARCHITECTURE.md): advertisements
are seen only while the peripheral's adapter is discoverable (simulators.jk.ble.make_discoverable).
"""

import atexit
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from typing import IO, Self

from ..procs import start_tied, stop_group

DEFAULT_ADAPTERS = ("00:11:22:33:44:55", "00:AA:BB:CC:DD:EE")


class BleEnvironmentError(RuntimeError):
    """The environment could not start; the message says what is missing."""


def _bluezoo_command() -> list[str]:
    try:
        import bluezoo  # noqa: F401
    except ImportError:
        raise BleEnvironmentError("bluezoo is not installed (pip install bluezoo; ./dev installs it)") from None
    return [sys.executable, "-m", "hil.wires.bluezoo_launcher"]


class BleEnvironment:
    def __init__(
        self, adapters: Iterable[str] = DEFAULT_ADAPTERS, scan_interval_s: float = 1, log_path: str | None = None
    ) -> None:
        if not adapters:
            raise BleEnvironmentError("at least one adapter address is needed")
        self.adapter_addresses = tuple(adapters)
        self.scan_interval_s = scan_interval_s
        self.log_path = log_path
        self.address: str | None = None
        self._dbus: subprocess.Popen[str] | None = None
        self._bluezoo: subprocess.Popen[bytes] | None = None
        self._previous: str | None = None
        self._log: IO[str] | None = None

    @property
    def pids(self) -> list[int]:
        """The processes this environment started (dbus-daemon, BlueZoo), while it runs."""
        return [process.pid for process in (self._dbus, self._bluezoo) if process is not None]

    @property
    def adapters(self) -> list[str]:
        """Adapter names in the order of their addresses: hci0, hci1, ..."""
        return ["hci%d" % index for index in range(len(self.adapter_addresses))]

    @property
    def env(self) -> dict[str, str]:
        return dict(os.environ, DBUS_SYSTEM_BUS_ADDRESS=self.address)  # type: ignore[arg-type]  # read once started

    def start(self, timeout_s: float = 15) -> Self:
        if shutil.which("dbus-daemon") is None:
            raise BleEnvironmentError("dbus-daemon is missing (Debian package dbus-daemon; ./dev installs it)")
        # Not forked: our child, tied to this process (hil.procs), so it cannot outlive the bench.
        self._dbus = start_tied(
            ["dbus-daemon", "--session", "--print-address=1", "--nofork"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        # (the ignores on stdout and stderr here and in stop(): they are the pipes asked for above)
        ready, _, _ = select.select([self._dbus.stdout], [], [], timeout_s)  # type: ignore[type-var]
        self.address = self._dbus.stdout.readline().strip() if ready else ""  # type: ignore[union-attr]
        if not self.address:
            stop_group(self._dbus)
            error = self._dbus.stderr.read().strip()  # type: ignore[union-attr]
            self._dbus = None
            raise BleEnvironmentError("dbus-daemon did not start: %s" % (error or "no address within %s s" % timeout_s))
        atexit.register(self.stop)
        self._previous = os.environ.get("DBUS_SYSTEM_BUS_ADDRESS")
        os.environ["DBUS_SYSTEM_BUS_ADDRESS"] = self.address
        command = _bluezoo_command() + ["--auto-enable", "--scan-interval", str(self.scan_interval_s)]
        for address in self.adapter_addresses:
            command += ["-a", address]
        self._log = open(self.log_path, "w") if self.log_path else tempfile.TemporaryFile("w+")  # noqa: SIM115
        self._bluezoo = start_tied(command, env=self.env, stdout=self._log, stderr=subprocess.STDOUT)
        self._wait_for_adapters(timeout_s)
        return self

    def _wait_for_adapters(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        wanted = "/org/bluez/%s" % self.adapters[-1]
        while time.monotonic() < deadline:
            if self._bluezoo.poll() is not None:  # type: ignore[union-attr]  # start() started it
                raise BleEnvironmentError(
                    "bluezoo exited with status %s: %s" % (self._bluezoo.returncode, self.log_tail())  # type: ignore[union-attr]
                )
            probe = subprocess.run(
                [
                    "dbus-send",
                    "--system",
                    "--print-reply",
                    "--dest=org.bluez",
                    wanted,
                    "org.freedesktop.DBus.Properties.Get",
                    "string:org.bluez.Adapter1",
                    "string:Powered",
                ],
                env=self.env,
                capture_output=True,
                text=True,
                check=False,
            )
            if probe.returncode == 0 and "true" in probe.stdout:
                return
            time.sleep(0.1)
        self.stop()
        raise BleEnvironmentError("BlueZoo adapters did not come up within %s s: %s" % (timeout_s, self.log_tail()))

    def log_tail(self, lines: int = 20) -> str:
        if self._log is None:
            return ""
        self._log.flush()
        try:
            self._log.seek(0)
            return "".join(self._log.readlines()[-lines:])
        except (OSError, ValueError):
            return ""

    def stop(self) -> None:
        for process in (self._bluezoo, self._dbus):
            if process is not None:
                stop_group(process, timeout_s=5)
        if self._dbus is not None:
            self._dbus.stdout.close()  # type: ignore[union-attr]  # a pipe (see start)
            self._dbus.stderr.close()  # type: ignore[union-attr]
        self._bluezoo = self._dbus = None
        if self._previous is None:
            os.environ.pop("DBUS_SYSTEM_BUS_ADDRESS", None)
        else:
            os.environ["DBUS_SYSTEM_BUS_ADDRESS"] = self._previous
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
