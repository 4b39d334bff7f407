"""Bench files (TOML): the devices, addresses, buses, profile and faults of a bench.

load(path) or load_default() returns a Bench; any mistake raises BenchError
naming the key, what is wrong and what is allowed.  See hil/benches/default.toml.
"""

import os
import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, TypeVar, cast

from vbms_core.dissect import PROTOCOLS
from vbms_core.jk_frames import LAYOUTS

from .wires.faults import FAULT_KINDS, BusError, Fault

BATTERY_TYPES = ("byd_pro", "jk_ble", "jk_rs485", "jk_4e57")
RS485_TYPES = ("byd_pro", "jk_rs485", "jk_4e57")
CHEMISTRIES = ("LFP", "NMC", "LTO")
GATT_LAYOUTS = ("single", "split")
CHUNKINGS = ("mtu23", "mtu131", "mtu247")
PROFILE_KINDS = ("constant", "day", "csv")
DEVICE_FAILURES = (
    "silent",
    "garbage",
    "bad_checksum",
    "slow",
    "stuck",
    "stop_streaming",
    "disconnect",
    "refuse_reconnect",
)
MAC = re.compile(r"^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$")
_Choice = TypeVar("_Choice")


class BenchError(ValueError):
    """A bench file that cannot be used; the message names the key."""


@dataclass
class BusSpec:
    name: str
    baud: int = 9600
    protocol: str | None = None


@dataclass
class BatterySpec:
    slot: int
    type: str
    address: int | str  # a unit on an RS485 bus, a MAC for a JK BLE battery
    bus: str | None = None
    name: str = None  # type: ignore[assignment]  # parse(), the one maker of a BatterySpec, names each
    layout: str = "JK02_32S"
    gatt: str = "single"
    chunking: str = "mtu131"
    chemistry: str = "LFP"
    cells: int = 16
    capacity_mah: int = 50_000
    soc_permille: int = 800
    soh_permille: int = 1000
    reply_delay_s: float = 0.02
    failure: str | None = None


@dataclass
class FaultSpec:
    """A [[faults]] entry: a hil/wires/faults.Fault rule (Fault.from_spec builds it) and its bus."""

    bus: str
    kind: str
    source: str | None = None
    target: str | None = None
    probability: float = 1.0
    count: int | None = None
    delay_s: float = 0.05
    noise_bytes: int = 8
    bit: int | None = None


@dataclass
class Bench:
    name: str
    description: str = ""
    seed: int = 0
    buses: dict[str, BusSpec] = field(default_factory=dict)
    inverter: dict[str, Any] = field(default_factory=dict)
    profile: dict[str, Any] = field(default_factory=dict)
    batteries: list[BatterySpec] = field(default_factory=list)
    faults: list[FaultSpec] = field(default_factory=list)
    dut: dict[str, str] = field(default_factory=dict)
    esp32: dict[str, Any] = field(default_factory=dict)
    source: str = ""

    def battery(self, slot: int) -> BatterySpec:
        return next(b for b in self.batteries if b.slot == slot)


def _expect(condition: object, key: str, message: str) -> None:
    if not condition:
        raise BenchError("%s: %s" % (key, message))


def _int(
    table: dict[str, Any],
    key: str,
    where: str,
    default: int | None = None,
    low: int | None = None,
    high: int | None = None,
) -> int:
    value: Any = table.get(key, default)  # what the file holds: _expect checks it
    _expect(
        isinstance(value, int) and not isinstance(value, bool),
        "%s.%s" % (where, key),
        "must be a whole number, not %r" % (value,),
    )
    if low is not None and high is not None:
        _expect(low <= value <= high, "%s.%s" % (where, key), "must be within %d..%d, not %d" % (low, high, value))
    return value


def _number(table: dict[str, Any], key: str, where: str, default: float, low: float = 0.0) -> float:
    value = table.get(key, default)
    _expect(
        isinstance(value, (int, float)) and not isinstance(value, bool) and value >= low,
        "%s.%s" % (where, key),
        "must be a number >= %s, not %r" % (low, value),
    )
    return float(value)


def _choice(
    table: dict[str, Any], key: str, where: str, choices: tuple[_Choice, ...], default: _Choice | None = None
) -> _Choice:
    value: Any = table.get(key, default)  # what the file holds: _expect checks it
    _expect(
        value in choices, "%s.%s" % (where, key), "must be one of %s, not %r" % (", ".join(map(str, choices)), value)
    )
    return value


def _known_keys(table: dict[str, Any], where: str, allowed: Iterable[str]) -> None:
    unknown = sorted(set(table) - set(allowed))
    _expect(not unknown, where, "unknown key(s) %s; allowed: %s" % (", ".join(unknown), ", ".join(sorted(allowed))))


def parse(data: dict[str, Any], source: str = "<bench>") -> Bench:
    _known_keys(
        data, "bench", ("name", "description", "seed", "buses", "inverter", "batteries", "faults", "dut", "esp32")
    )
    _expect(isinstance(data.get("name"), str) and data["name"], "name", "a bench needs a name")
    bench = Bench(
        name=data["name"], description=data.get("description", ""), seed=_int(data, "seed", "bench", 0), source=source
    )

    buses = data.get("buses", {})
    _expect(isinstance(buses, dict), "buses", "must be a table of buses")
    for name, table in buses.items():
        where = "buses.%s" % name
        _known_keys(table, where, ("baud", "protocol"))
        bench.buses[name] = BusSpec(
            name,
            _int(table, "baud", where, 9600, 300, 4_000_000),
            _choice(table, "protocol", where, PROTOCOLS + (None,)),
        )

    inverter = data.get("inverter", {})
    _known_keys(
        inverter,
        "inverter",
        ("bus", "units", "poll_period_s", "timeout_s", "warn_after", "identity_interval_s", "profile"),
    )
    if inverter:
        _choice(inverter, "bus", "inverter", tuple(bench.buses))
        units = inverter.get("units", list(range(15)))
        _expect(
            isinstance(units, list)
            and units
            and all(isinstance(u, int) and 0 <= u <= 14 for u in units)
            and len(set(units)) == len(units),
            "inverter.units",
            "must be a list of distinct units within 0..14",
        )
        bench.inverter = {
            "bus": inverter["bus"],
            "units": units,
            "poll_period_s": _number(inverter, "poll_period_s", "inverter", 1.0),
            "timeout_s": _number(inverter, "timeout_s", "inverter", 0.3, 0.01),
            "warn_after": _int(inverter, "warn_after", "inverter", 3, 1, 1000),
            "identity_interval_s": _number(inverter, "identity_interval_s", "inverter", 60.0),
        }
        profile = inverter.get("profile", {"kind": "constant", "watts": 0})
        _known_keys(
            profile, "inverter.profile", ("kind", "watts", "peak_solar_w", "base_load_w", "day_length_s", "path")
        )
        kind = _choice(profile, "kind", "inverter.profile", PROFILE_KINDS, "constant")
        bench.profile = {"kind": kind}
        for key, default in (
            ("watts", 0.0),
            ("peak_solar_w", 3000.0),
            ("base_load_w", 800.0),
            ("day_length_s", 86400.0),
        ):
            if key in profile or kind != "constant":
                low = None if key == "watts" else 0.0
                value = profile.get(key, default)
                _expect(
                    isinstance(value, (int, float)) and (low is None or value >= low),
                    "inverter.profile.%s" % key,
                    "must be a number%s, not %r" % ("" if low is None else " >= 0", value),
                )
                bench.profile[key] = float(value)
        if kind == "csv":
            _expect(isinstance(profile.get("path"), str), "inverter.profile.path", "a csv profile needs a path")
            bench.profile["path"] = profile["path"]

    batteries = data.get("batteries", [])
    _expect(isinstance(batteries, list), "batteries", "must be an array of tables ([[batteries]])")
    slots: set[int] = set()
    addresses: set[tuple[str | None, int | str]] = set()
    for index, table in enumerate(batteries):
        where = "batteries[%d]" % index
        _known_keys(table, where, tuple(BatterySpec.__dataclass_fields__))
        slot = _int(table, "slot", where, None, 0, 14)
        _expect(slot not in slots, where + ".slot", "slot %d is used twice" % slot)
        slots.add(slot)
        kind = _choice(table, "type", where, BATTERY_TYPES)
        spec = BatterySpec(slot=slot, type=kind, address=table.get("address"))
        if kind in RS485_TYPES:
            spec.bus = _choice(table, "bus", where, tuple(bench.buses))
            high = 63 if kind == "byd_pro" else 247
            spec.address = _int(table, "address", where, None, 1, high)
            _expect(
                (spec.bus, spec.address) not in addresses,
                where + ".address",
                "address %d is used twice on bus %s" % (spec.address, spec.bus),
            )
            addresses.add((spec.bus, spec.address))
        else:
            _expect(
                isinstance(spec.address, str) and MAC.match(spec.address),
                where + ".address",
                "a JK BLE battery needs a MAC address like C8:47:8C:10:00:01, not %r" % (spec.address,),
            )
            spec.address = cast(str, spec.address).upper()  # _expect checked it
            _expect(("ble", spec.address) not in addresses, where + ".address", "MAC %s is used twice" % spec.address)
            addresses.add(("ble", spec.address))
            spec.gatt = _choice(table, "gatt", where, GATT_LAYOUTS, "single")
            spec.chunking = _choice(table, "chunking", where, CHUNKINGS, "mtu131")
        if kind != "byd_pro":
            spec.layout = _choice(table, "layout", where, LAYOUTS, "JK02_32S")
        # (a BYD's address is a whole number, _int checked it above)
        spec.name = table.get("name") or ("BYD-%d" % spec.address if kind == "byd_pro" else "JK-%d" % slot)  # type: ignore[str-format]
        _expect(isinstance(spec.name, str) and 0 < len(spec.name) <= 16, where + ".name", "must be 1..16 characters")
        spec.chemistry = _choice(table, "chemistry", where, CHEMISTRIES, "LFP")
        spec.cells = _int(table, "cells", where, 16, 1, 24 if spec.layout != "JK02_32S" else 32)
        spec.capacity_mah = _int(table, "capacity_mah", where, 50_000, 1_000, 10_000_000)
        spec.soc_permille = _int(table, "soc_permille", where, 800, 0, 1000)
        spec.soh_permille = _int(table, "soh_permille", where, 1000, 500, 1000)
        spec.reply_delay_s = _number(table, "reply_delay_s", where, 0.02)
        spec.failure = _choice(table, "failure", where, DEVICE_FAILURES + (None,))
        bench.batteries.append(spec)
    if bench.inverter:
        for spec in bench.batteries:
            _expect(
                spec.slot in bench.inverter["units"],
                "batteries slot %d" % spec.slot,
                "the inverter does not poll unit %d (inverter.units)" % spec.slot,
            )

    faults = data.get("faults", [])
    _expect(isinstance(faults, list), "faults", "must be an array of tables ([[faults]])")
    for index, table in enumerate(faults):
        where = "faults[%d]" % index
        _known_keys(table, where, tuple(FaultSpec.__dataclass_fields__))
        fault = FaultSpec(
            bus=_choice(table, "bus", where, tuple(bench.buses)), kind=_choice(table, "kind", where, FAULT_KINDS)
        )
        endpoints = _endpoint_names(bench, fault.bus)
        for key in ("source", "target"):
            if key in table:
                _expect(
                    table[key] in endpoints,
                    "%s.%s" % (where, key),
                    "bus %s has no endpoint %r; it has: %s" % (fault.bus, table[key], ", ".join(endpoints)),
                )
        fault.source = table.get("source")
        fault.target = table.get("target")
        fault.probability = _number(table, "probability", where, 1.0)
        _expect(fault.probability <= 1.0, where + ".probability", "must be within 0..1")
        if "count" in table:
            fault.count = _int(table, "count", where, None, 1, 1_000_000)
        fault.delay_s = _number(table, "delay_s", where, 0.05)
        fault.noise_bytes = _int(table, "noise_bytes", where, 8, 1, 256)
        if "bit" in table:
            fault.bit = _int(table, "bit", where, None, 0, 8 * 4096)
        try:
            Fault.from_spec(fault)
        except BusError as error:
            raise BenchError("%s: %s" % (where, error)) from None
        bench.faults.append(fault)

    dut = data.get("dut", {})
    _known_keys(dut, "dut", ("ble_address",))
    if "ble_address" in dut:
        _expect(
            isinstance(dut["ble_address"], str) and MAC.match(dut["ble_address"]),
            "dut.ble_address",
            "must be a MAC address",
        )
    bench.dut = {"ble_address": dut.get("ble_address", "00:AA:BB:CC:DD:EE").upper()}
    bench.esp32 = _esp32(data.get("esp32", {}), bench)
    return bench


# --- [esp32]: a board the harness did not start (hil/board.py; hil/benches/esp32-example.toml) -------------

ESP32_PORTS = ("console_port", "inverter_port", "bms_port")
ESP32_RESETS = ("dtr_rts", "soft", "command")
ESP32_DEFAULTS: dict[str, Any] = {
    "reset": "dtr_rts",
    "console_baud": 115200,
    "ready_timeout_s": 30.0,
    "deploy_frozen": False,
}
ESP32_KEYS = ESP32_PORTS + (
    "ble_adapters", "ble_dbus_address", "rpc_url", "rpc_token", "reset", "reset_command", "console_baud",
    "ready_timeout_s", "deploy_frozen",
)  # fmt: skip
ADAPTER = re.compile(r"^hci[0-9]+$")


def _esp32(table: dict[str, Any], bench: Bench) -> dict[str, Any]:
    """The [esp32] section, checked whole (the ports' presence is checked when the target opens them):
    {} when the bench has none, else every key with its default."""
    _expect(isinstance(table, dict), "esp32", "must be a table ([esp32])")
    if not table:
        return {}
    if "ble_adapter" in table:
        raise BenchError(
            'esp32.ble_adapter: use ble_adapters = ["hci0", ...], one Bluetooth adapter per JK BLE battery (each '
            "simulated module advertises with its adapter's own MAC)"
        )
    _known_keys(table, "esp32", ESP32_KEYS)
    missing = [key for key in ESP32_PORTS if key not in table]
    _expect(
        not missing,
        "esp32",
        "missing %s: name the board's console, the USB-RS485 adapter wired to its inverter side and the one wired "
        "to its battery side (see hil/benches/esp32-example.toml)" % ", ".join(missing),
    )
    esp32 = dict(ESP32_DEFAULTS)
    for key in ESP32_PORTS + ("ble_dbus_address", "rpc_token"):
        if key in table:
            _expect(isinstance(table[key], str) and table[key], "esp32." + key, "must be text, not %r" % (table[key],))
            esp32[key] = table[key]
    if "rpc_url" in table:
        url = table["rpc_url"]
        _expect(
            isinstance(url, str) and url.startswith(("http://", "https://")),
            "esp32.rpc_url",
            "must be the board's address as a URL, like http://192.168.1.50, not %r" % (url,),
        )
        esp32["rpc_url"] = url.rstrip("/")
    esp32["reset"] = _choice(table, "reset", "esp32", ESP32_RESETS, "dtr_rts")
    command = table.get("reset_command")
    if command is not None:
        _expect(
            (isinstance(command, str) and command.strip())
            or (isinstance(command, list) and command and all(isinstance(part, str) for part in command)),
            "esp32.reset_command",
            "must be a command line (text, or a list of words), not %r" % (command,),
        )
        esp32["reset_command"] = command
    _expect(
        esp32["reset"] != "command" or command is not None,
        "esp32.reset_command",
        'reset = "command" needs the command that resets the board (a relay, a USB hub port, the virtual board)',
    )
    esp32["console_baud"] = _int(table, "console_baud", "esp32", 115200, 300, 4_000_000)
    esp32["ready_timeout_s"] = _number(table, "ready_timeout_s", "esp32", 30.0, 1.0)
    frozen = table.get("deploy_frozen", False)
    _expect(isinstance(frozen, bool), "esp32.deploy_frozen", "must be true or false")
    esp32["deploy_frozen"] = frozen
    adapters = table.get("ble_adapters", [])
    _expect(
        isinstance(adapters, list) and all(isinstance(a, str) and ADAPTER.match(a) for a in adapters),
        "esp32.ble_adapters",
        'must be a list of Bluetooth adapter names like ["hci0", "hci1"], not %r' % (adapters,),
    )
    _expect(len(set(adapters)) == len(adapters), "esp32.ble_adapters", "names an adapter twice")
    esp32["ble_adapters"] = list(adapters)
    check_ble_adapter_count(bench, esp32)
    return esp32


def check_ble_adapter_count(bench: Bench, esp32: dict[str, Any]) -> None:
    """BenchError unless [esp32] names an adapter for every JK BLE battery (one MAC each)."""
    jk = [spec for spec in bench.batteries if spec.type == "jk_ble"]
    adapters = esp32.get("ble_adapters", [])
    _expect(
        len(adapters) >= len(jk),
        "esp32.ble_adapters",
        "the bench has %d JK BLE batteries (slots %s) but names %d Bluetooth adapters: each simulated JK module "
        "needs an adapter of its own, as it advertises with that adapter's MAC"
        % (len(jk), ", ".join(str(spec.slot) for spec in jk), len(adapters)),
    )


def _endpoint_names(bench: Bench, bus: str) -> list[str]:
    """Who is on a bus: the device under test, the inverter ("deye"; "inverter" when an outside
    master takes its place, vbms sim --external deye) and the batteries wired to it."""
    names = ["dut"]
    if bench.inverter and bench.inverter["bus"] == bus:
        names += ["deye", "inverter"]
    return names + [spec.name for spec in bench.batteries if spec.bus == bus]


def load(path: str | os.PathLike[str]) -> Bench:
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except OSError as error:
        raise BenchError("cannot read bench file %s: %s" % (path, error.strerror)) from error
    except tomllib.TOMLDecodeError as error:
        raise BenchError("%s is not valid TOML: %s" % (path, error)) from error
    return parse(data, str(path))


def default_text() -> str:
    """The embedded default bench's TOML (hil/benches/default.toml)."""
    return resources.files("hil").joinpath("benches/default.toml").read_text()


def load_default() -> Bench:
    return parse(tomllib.loads(default_text()), "default")
