"""A Bluetooth LE environment without a radio: a private dbus-daemon and BlueZoo.

BlueZoo (PyPI) emulates BlueZ's D-Bus API; bless (peripheral) and bleak
(central) talk to it as to BlueZ.  BleEnvironment starts a dbus-daemon of its
own, BlueZoo on it with one emulated adapter per address, points
DBUS_SYSTEM_BUS_ADDRESS at it (for this process and in .env for children),
and on stop ends both processes: it leaves nothing behind.

Quirks handled here and in the peripheral (ARCHITECTURE.md): advertisements
are seen only while the peripheral's adapter is discoverable (make_discoverable).
"""

import asyncio
import atexit
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

DEFAULT_ADAPTERS = ("00:11:22:33:44:55", "00:AA:BB:CC:DD:EE")


class BleEnvironmentError(RuntimeError):
    """The environment could not start; the message says what is missing."""


def _bluezoo_command():
    try:
        import bluezoo  # noqa: F401
    except ImportError:
        raise BleEnvironmentError("bluezoo is not installed (pip install bluezoo; ./dev installs it)") from None
    return [sys.executable, "-m", "hil.wires.bluezoo_launcher"]


class BleEnvironment:
    def __init__(self, adapters=DEFAULT_ADAPTERS, scan_interval_s=1, log_path=None):
        if not adapters:
            raise BleEnvironmentError("at least one adapter address is needed")
        self.adapter_addresses = tuple(adapters)
        self.scan_interval_s = scan_interval_s
        self.log_path = log_path
        self.address = None
        self._dbus_pid = None
        self._bluezoo = None
        self._previous = None
        self._log = None

    @property
    def pids(self):
        """The processes this environment started (dbus-daemon, BlueZoo), while it runs."""
        return [pid for pid in (self._dbus_pid, self._bluezoo.pid if self._bluezoo else None) if pid]

    @property
    def adapters(self):
        """Adapter names in the order of their addresses: hci0, hci1, ..."""
        return ["hci%d" % index for index in range(len(self.adapter_addresses))]

    @property
    def env(self):
        return dict(os.environ, DBUS_SYSTEM_BUS_ADDRESS=self.address)

    def start(self, timeout_s=15):
        if shutil.which("dbus-daemon") is None:
            raise BleEnvironmentError("dbus-daemon is missing (Debian package dbus-daemon; ./dev installs it)")
        # The forked daemon inherits stdout: print to a file, not a pipe we would wait on.
        with tempfile.TemporaryFile("w+") as printed:
            status = subprocess.run(
                ["dbus-daemon", "--session", "--print-address=1", "--print-pid=1", "--fork"],
                stdout=printed,
                stderr=subprocess.PIPE,
                text=True,
                timeout=timeout_s,
                check=False,
            )
            printed.seek(0)
            lines = printed.read().split()
        if status.returncode != 0 or len(lines) < 2:
            raise BleEnvironmentError("dbus-daemon did not start: %s" % status.stderr.strip())
        self.address, self._dbus_pid = lines[0], int(lines[1])
        atexit.register(self.stop)
        self._previous = os.environ.get("DBUS_SYSTEM_BUS_ADDRESS")
        os.environ["DBUS_SYSTEM_BUS_ADDRESS"] = self.address
        command = _bluezoo_command() + ["--auto-enable", "--scan-interval", str(self.scan_interval_s)]
        for address in self.adapter_addresses:
            command += ["-a", address]
        self._log = open(self.log_path, "w") if self.log_path else tempfile.TemporaryFile("w+")  # noqa: SIM115
        self._bluezoo = subprocess.Popen(
            command, env=self.env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self._wait_for_adapters(timeout_s)
        return self

    def _wait_for_adapters(self, timeout_s):
        deadline = time.monotonic() + timeout_s
        wanted = "/org/bluez/%s" % self.adapters[-1]
        while time.monotonic() < deadline:
            if self._bluezoo.poll() is not None:
                raise BleEnvironmentError(
                    "bluezoo exited with status %s: %s" % (self._bluezoo.returncode, self.log_tail())
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

    def log_tail(self, lines=20):
        if self._log is None:
            return ""
        self._log.flush()
        try:
            self._log.seek(0)
            return "".join(self._log.readlines()[-lines:])
        except (OSError, ValueError):
            return ""

    def stop(self):
        if self._bluezoo is not None:
            try:
                os.killpg(self._bluezoo.pid, signal.SIGTERM)
                self._bluezoo.wait(timeout=5)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self._bluezoo.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            self._bluezoo = None
        if self._dbus_pid is not None:
            try:
                os.kill(self._dbus_pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline:  # until it is gone (reaped when it is our child)
                try:
                    if os.waitpid(self._dbus_pid, os.WNOHANG)[0]:
                        break
                except ChildProcessError:
                    if not os.path.exists("/proc/%d" % self._dbus_pid):
                        break
                time.sleep(0.02)
            self._dbus_pid = None
        if self._previous is None:
            os.environ.pop("DBUS_SYSTEM_BUS_ADDRESS", None)
        else:
            os.environ["DBUS_SYSTEM_BUS_ADDRESS"] = self._previous
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


async def make_discoverable(adapter, alias=None):
    """Make an adapter visible as a peripheral.

    BlueZoo reports LE advertisements only while the advertiser's adapter is
    discoverable, and a central's device object may keep the adapter's name
    instead of the advertised local name: alias sets the adapter's name so
    both agree.  Each simulated module has an adapter (and so a MAC) of its own.
    """
    from dbus_fast import BusType, Variant
    from dbus_fast.aio import MessageBus

    bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
    try:
        path = "/org/bluez/" + adapter
        introspection = await bus.introspect("org.bluez", path)
        properties = bus.get_proxy_object("org.bluez", path, introspection).get_interface(
            "org.freedesktop.DBus.Properties"
        )
        if alias is not None:
            await properties.call_set("org.bluez.Adapter1", "Alias", Variant("s", alias))
        await properties.call_set("org.bluez.Adapter1", "DiscoverableTimeout", Variant("u", 0))
        await properties.call_set("org.bluez.Adapter1", "Discoverable", Variant("b", True))
    finally:
        bus.disconnect()


async def disconnect_peers(adapter):
    """Drop every link to an adapter, as when its radio link is lost.

    BlueZoo does not publish the peripheral side's view of a central, so the
    link is cut from the other end: every device object, on any adapter, whose
    address is this adapter's and that is connected gets Device1.Disconnect;
    BlueZoo then disconnects both ends.  Returns how many links were cut.
    """
    from dbus_fast import BusType
    from dbus_fast.aio import MessageBus

    bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
    dropped = 0
    try:
        introspection = await bus.introspect("org.bluez", "/")
        manager = bus.get_proxy_object("org.bluez", "/", introspection).get_interface(
            "org.freedesktop.DBus.ObjectManager"
        )
        objects = await manager.call_get_managed_objects()
        own = objects.get("/org/bluez/" + adapter, {}).get("org.bluez.Adapter1")
        if own is None:
            return 0
        address = own["Address"].value
        for path, interfaces in objects.items():
            device = interfaces.get("org.bluez.Device1")
            if device is None or device["Address"].value != address or not device["Connected"].value:
                continue
            node = await bus.introspect("org.bluez", path)
            await bus.get_proxy_object("org.bluez", path, node).get_interface("org.bluez.Device1").call_disconnect()
            dropped += 1
    finally:
        bus.disconnect()
    return dropped


async def find_device(address=None, name=None, adapter="hci1", timeout_s=10.0):
    """Scan until a device with this address (or name) is seen; its BLEDevice or None.

    BlueZoo reports a device once, when it first sees it (a radio would keep
    advertising): so the adapter first forgets the matching devices that are
    not connected, and the detection callback is registered before scanning
    starts (bleak's find_device_by_* helpers start listening after, and miss
    it now and then).
    """
    from bleak import BleakScanner

    if address is None and name is None:
        raise ValueError("give an address or a name to look for")
    await forget_devices(adapter, address)
    wanted = address.upper() if address else None
    found = {}
    event = asyncio.Event()

    def on_detection(device, advertisement):
        if (wanted and device.address.upper() == wanted) or (name and name in (device.name, advertisement.local_name)):
            found.setdefault("device", device)
            event.set()

    async with BleakScanner(detection_callback=on_detection, adapter=adapter):
        try:
            await asyncio.wait_for(event.wait(), timeout_s)
        except TimeoutError:
            return None
    return found["device"]


async def forget_devices(adapter, address=None):
    """Remove the adapter's disconnected device objects (all, or one address)."""
    from dbus_fast import BusType
    from dbus_fast.aio import MessageBus

    bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
    try:
        introspection = await bus.introspect("org.bluez", "/")
        manager = bus.get_proxy_object("org.bluez", "/", introspection).get_interface(
            "org.freedesktop.DBus.ObjectManager"
        )
        adapter_path = "/org/bluez/" + adapter
        node = await bus.introspect("org.bluez", adapter_path)
        adapter_interface = bus.get_proxy_object("org.bluez", adapter_path, node).get_interface("org.bluez.Adapter1")
        for path, interfaces in (await manager.call_get_managed_objects()).items():
            device = interfaces.get("org.bluez.Device1")
            if device is None or not path.startswith(adapter_path + "/") or device["Connected"].value:
                continue
            if address is None or device["Address"].value.upper() == address.upper():
                await adapter_interface.call_remove_device(path)
    finally:
        bus.disconnect()
