"""Bench farms: benches as labgrid places (docs/farm.md; ARCHITECTURE.md "Bench farms").

vbms builds no scheduler: labgrid's coordinator knows the places, who holds them and the reservations; an
exporter on each bench host publishes the bench's resources and serves its serial ports through ser2net
(RFC 2217) while a place that matches them is acquired.  A bench is one resource group of an exporter:

  console, inverter, bms   the board's USB console and the two USB-RS485 adapters: USBSerialPort on a real
                           bench (matched by udev properties), RawSerialPort for a device path or a PTY, or
                           NetworkSerialPort for a port a ser2net of your own already serves (RFC 2217)
  board                    cls VbmsBoard: the [esp32] settings that belong to the board (BOARD_KEYS: rpc_url,
                           rpc_token, reset, reset_command, ...), plain parameters the exporter only publishes
  ble0, ble1, ...          cls VbmsBluetoothAdapter (hci, address, optional dbus_address): the Bluetooth
                           adapters that play the bench's JK BLE modules, in the order of its JK BLE batteries.
                           BlueZ is local: they serve a harness that runs on the exporter's host

A place matches the group (`EXPORTER/GROUP/*`) and carries tags, one key per capability, because a
reservation matches tags by exact value: board=esp32, inverter=deye, bms_byd=1, bms_jk=1, jk_ble=1.

  session.py  Coordinator: labgrid's client session on a thread of its own; Lease: reserve, acquire, the
              place's ports as local paths, release
  bridge.py   a local PTY <-> RFC 2217 bridge per port: the esp32 target opens paths as on a local bench
  local.py    LocalFarm: a coordinator and an exporter on 127.0.0.1 (CI, `vbms farm virtual`)
  plugin.py   the pytest side: a lease per session, one pytest-xdist worker per place, reports per place
  cli.py      `vbms farm`

labgrid is an optional extra (`pip install -e '.[farm]'`): nothing here imports it at module level.
"""

import os
import re

DEFAULT_COORDINATOR = "127.0.0.1:20408"  # labgrid's default port
PORT_KEYS = {"console": "console_port", "inverter": "inverter_port", "bms": "bms_port"}  # resource -> [esp32]
BOARD_CLASS = "VbmsBoard"
BLE_CLASS = "VbmsBluetoothAdapter"
BOARD_KEYS = ("rpc_url", "rpc_token", "reset", "reset_command", "console_baud", "ready_timeout_s", "deploy_frozen")
SERIAL_CLASSES = ("NetworkSerialPort",)  # what a USBSerialPort or RawSerialPort is published as
TAG_KEY = re.compile(r"^[a-z][a-z0-9_]+$")  # labgrid's rule for tag keys (labgrid.remote.common.TAG_KEY)
TAG_VALUE = re.compile(r"^[a-z0-9_]+$")


class FarmError(Exception):
    """The farm cannot be used as asked: the message says what is wrong and how to fix it."""


def require_labgrid() -> None:
    try:
        import labgrid  # noqa: F401
    except ImportError:
        raise FarmError(
            "labgrid is not installed: bench farms need the `farm` extra (pip install -e '.[farm]'; the tox env "
            "`farm` has it)"
        ) from None


def coordinator_address(explicit: str | None = None) -> str:
    """--lg-coordinator, else LG_COORDINATOR, else labgrid's default (127.0.0.1:20408)."""
    return explicit or os.environ.get("LG_COORDINATOR") or DEFAULT_COORDINATOR


def parse_tags(text: str) -> dict[str, str]:
    """Tags from text: "board=esp32,bms_byd=1" (commas or spaces between them) -> {"board": "esp32", "bms_byd": "1"};
    FarmError for a malformed one."""
    tags: dict[str, str] = {}
    for word in text.replace(",", " ").split():
        key, sep, value = word.partition("=")
        if not sep or not TAG_KEY.match(key) or not TAG_VALUE.match(value):
            raise FarmError(
                "tag %r: a tag is KEY=VALUE, the key lower case letters, digits and _ (starting with a letter), the "
                "value lower case letters, digits and _. A reservation matches each tag's exact value, so a place "
                "says each capability with a key of its own: bms_byd=1,bms_jk=1, not bms=byd,jk" % word
            )
        tags[key] = value
    if not tags:
        raise FarmError("no tags given: name what the bench must have, e.g. board=esp32,bms_byd=1")
    return tags
