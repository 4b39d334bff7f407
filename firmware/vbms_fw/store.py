"""The flash: the configuration (config.json) and the board's own settings (device.json).

config.json holds exactly what `vbms run --config` holds (vbms_core.config's keys,
nested, sorted), so one file works for both.  device.json holds what only a
board has: the Wi-Fi station's network, the access point's password, the UART
and driver-enable pins, the HTTP port.

Every write is atomic: the text goes to a temporary file, is flushed and synced,
and is renamed over the old file (LittleFS, the ESP32 port's file system,
replaces the target in one step), so a power cut leaves the old file or the new
one, never half of one.  File names are relative: the board's working
directory is /, the unix port's is the directory standing in for the flash.
"""

import json
import os
from binascii import b2a_base64

from vbms_core import config as config_module

CONFIG_FILE = "config.json"
DEVICE_FILE = "device.json"

# UART number -> pins.  The DEYE side on UART1, the batteries on UART2 (the
# original's app.inv_uart_no / app.bms_uart_no).  UART1's default pins are the
# flash's, so both are remapped; de is the RS485 transceiver's DE (and /RE) line.
DEFAULT_UART_PINS = {
    "0": {"tx": 1, "rx": 3, "de": 5},
    "1": {"tx": 26, "rx": 25, "de": 27},
    "2": {"tx": 17, "rx": 16, "de": 4},
}
DEFAULT_DEVICE = {
    "wifi": {"ssid": "", "password": ""},
    "ap_password": "",
    "uart": DEFAULT_UART_PINS,
    "http": {"host": "0.0.0.0", "port": 80},
}


class StoreError(Exception):
    """A file that cannot be used; the message names it and says why."""


def random_text(length):
    """Random URL-safe text (os.urandom: the ESP32's hardware generator)."""
    text = b2a_base64(os.urandom((length * 3 + 3) // 4)).decode().strip()
    return text.replace("+", "-").replace("/", "_").replace("=", "")[:length]


def exists(name):
    try:
        os.stat(name)
        return True
    except OSError:
        return False


def _sync():
    sync = getattr(os, "sync", None)
    if sync is not None:
        sync()


def write_atomically(name, text):
    temporary = name + ".tmp"
    with open(temporary, "w") as stream:
        stream.write(text)
        stream.flush()
    _sync()
    try:
        os.rename(temporary, name)
    except OSError:
        # FAT cannot rename onto an existing file: the only non-atomic path, never taken on LittleFS
        os.remove(name)
        os.rename(temporary, name)
    _sync()


def dumps_sorted(value, indent=1, depth=0):
    """JSON with sorted keys and one item per line (CPython's json.dump(indent=1, sort_keys=True)):
    MicroPython's json has neither option, and its dicts keep no order."""
    if isinstance(value, dict):
        if not value:
            return "{}"
        inner = " " * (indent * (depth + 1))
        items = [inner + json.dumps(key) + ": " + dumps_sorted(value[key], indent, depth + 1) for key in sorted(value)]
        return "{\n" + ",\n".join(items) + "\n" + " " * (indent * depth) + "}"
    if isinstance(value, (list, tuple)):
        if not value:
            return "[]"
        inner = " " * (indent * (depth + 1))
        items = [inner + dumps_sorted(item, indent, depth + 1) for item in value]
        return "[\n" + ",\n".join(items) + "\n" + " " * (indent * depth) + "]"
    return json.dumps(value)


def _read_json(name):
    try:
        with open(name) as stream:
            return json.loads(stream.read())
    except ValueError as error:
        raise StoreError("%s is not valid JSON: %s" % (name, error)) from None


def save_config(flat_config):
    write_atomically(CONFIG_FILE, dumps_sorted(config_module.nest(flat_config)))


def load_config(log):
    """The validated configuration.  A missing file gives the defaults; an unusable one
    is kept as config.json.bad and the defaults are used (a board must come up)."""
    if not exists(CONFIG_FILE):
        log("config_missing", path=CONFIG_FILE, note="starting from the defaults")
        return config_module.defaults()
    try:
        return config_module.validate(_read_json(CONFIG_FILE))
    except (StoreError, config_module.ConfigError) as error:
        log("config_unusable", level="error", path=CONFIG_FILE, error=str(error), kept_as=CONFIG_FILE + ".bad")
        try:
            os.rename(CONFIG_FILE, CONFIG_FILE + ".bad")
        except OSError:
            pass
        return config_module.defaults()


def prepare_config(log, say=print):
    """The configuration to start from; with no rpc.auth_token a random one is made,
    saved, and printed once on the console (there is no default password)."""
    config = load_config(log)
    if not config["rpc.auth_token"]:
        config["rpc.auth_token"] = random_text(24)
        save_config(config)
        say(
            "vbms: generated an RPC token for state-changing calls (saved in %s):\n  %s"
            % (CONFIG_FILE, config["rpc.auth_token"])
        )
    return config


def _section(stored, key):
    section = dict(DEFAULT_DEVICE[key])
    value = stored.get(key)
    if isinstance(value, dict):
        section.update(value)
    return section


def load_device(log):
    """device.json over the defaults; an unusable file is reported and the defaults used."""
    stored = {}
    if exists(DEVICE_FILE):
        try:
            stored = _read_json(DEVICE_FILE)
            if not isinstance(stored, dict):
                raise StoreError("%s must hold a JSON object" % DEVICE_FILE)
        except StoreError as error:
            log("device_settings_unusable", level="error", path=DEVICE_FILE, error=str(error))
            stored = {}
    password = stored.get("ap_password")
    return {
        "wifi": _section(stored, "wifi"),
        "ap_password": password if isinstance(password, str) else "",
        "uart": _section(stored, "uart"),
        "http": _section(stored, "http"),
    }


def save_device(device):
    write_atomically(DEVICE_FILE, dumps_sorted(device))


def factory_reset():
    """Every setting back to its default: the configuration, the Wi-Fi network and the
    access point's password (the next start makes a new token and a new password)."""
    save_config(config_module.defaults())
    if exists(DEVICE_FILE):
        device = load_device(lambda *args, **kwargs: None)
        device["wifi"] = {"ssid": "", "password": ""}
        device["ap_password"] = ""
        save_device(device)
