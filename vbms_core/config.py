"""The VBMS configuration: schema, defaults, validation.  Portable (MicroPython).

The original firmware's keys are kept (app.refresh_ms, app.bms_uart_no,
app.inv_uart_no, pins.led, pins.button, pins.button_hold_ms, bms0..bms14
with type, name, addr, serial, voltage); the rest are this project's.

Slot types (bmsN.type), as numbered by the original where it had them:
  0 none, 1 BYD PRO over RS485, 2 JK-BMS over BLE, 3 JK-PB over RS485 (Modbus),
  4 JK over RS485, legacy 4E57 protocol.

validate(config) returns a complete, normalized copy or raises ConfigError
naming the key; nothing is changed on error.  merge(config, changes) applies
a partial update (dotted keys or nested dicts) and validates the result.
"""

from .errors import LocalProtocolError

SLOTS = 15
TYPE_NONE = 0
TYPE_BYD_PRO = 1
TYPE_JK_BLE = 2
TYPE_JK_PB = 3
TYPE_JK_4E57 = 4
TYPE_NAMES = {0: "none", 1: "byd_pro", 2: "jk_ble", 3: "jk_pb", 4: "jk_4e57"}
RS485_TYPES = (TYPE_BYD_PRO, TYPE_JK_PB, TYPE_JK_4E57)

# key: (kind, default, low, high)
#   "int", "float": a number within low..high
#   "bool": true or false
#   "choice": one of low (a tuple)
#   a text kind (TEXT_KINDS): text of low..high characters, each allowed by the kind
SCHEMA = {
    "app.refresh_ms": ("int", 1000, 100, 60000),
    "app.bms_uart_no": ("int", 2, 0, 2),
    "app.inv_uart_no": ("int", 1, 0, 2),
    "app.bms_baud": ("int", 9600, 1200, 921600),
    "app.inv_baud": ("int", 9600, 1200, 115200),
    "app.stale_s": ("int", 10, 2, 600),
    "app.bms_timeout_ms": ("int", 250, 20, 5000),
    "app.bms_retries": ("int", 1, 0, 5),
    "app.bms_gap_ms": ("int", 5, 0, 1000),
    "app.ble_max_connections": ("int", 4, 1, 8),
    "app.ble_timeout_s": ("int", 5, 2, 120),
    "app.max_charge_current_a": ("int", 100, 0, 655),
    "pins.led": ("int", -1, -1, 48),
    "pins.button": ("int", -1, -1, 48),
    "pins.button_hold_ms": ("int", 5000, 500, 60000),
    "rpc.auth_token": ("token", "", 0, 64),
    "mqtt.enable": ("bool", False, None, None),
    "mqtt.server": ("server", "", 0, 128),
    "mqtt.topic_prefix": ("topic", "vbms", 1, 64),
    "device.id": ("identifier", "vbms", 1, 32),
}
CHEMISTRIES = ("auto", "lfp", "nmc", "lto")
SLOT_SCHEMA = {
    "type": ("int", TYPE_NONE, 0, 4),
    "name": ("text", "", 0, 31),
    "addr": ("ascii", "", 0, 17),
    "serial": ("identity", "", 0, 20),
    "voltage": ("float", 55.2, 40.0, 64.0),
    "max_charge_a": ("int", 0, 0, 655),
    "chemistry": ("choice", "auto", CHEMISTRIES, None),
}
MAX_DEPTH = 3  # {"bms0": {"name": ...}} is two levels; deeper input is refused, not recursed into

# What each kind of text may hold, and how an error says so.  Values that reach a wire are
# printable ASCII: the DEYE identity (serial: no '*', its separator), HTTP headers (token),
# MQTT topics (id and prefix: no wildcards).  Names are shown, never sent to the inverter:
# any printable character.
_ID_CHARACTERS = "-_0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


def _printable(char):
    code = ord(char)
    return code >= 0x20 and code != 0x7F and not 0x80 <= code < 0xA0 and not 0xD800 <= code <= 0xDFFF


def _ascii(char):
    return " " <= char <= "~"


TEXT_KINDS = {
    "text": (_printable, "printable characters"),
    "ascii": (_ascii, "printable ASCII characters (space to ~)"),
    "identity": (lambda char: _ascii(char) and char != "*", "printable ASCII characters (space to ~) except *"),
    "token": (lambda char: "!" <= char <= "~", "printable ASCII characters without spaces"),
    "server": (lambda char: "!" <= char <= "~", "printable ASCII characters without spaces (host:port)"),
    "topic": (lambda char: "!" <= char <= "~" and char not in "+#", "printable ASCII without spaces, + or #"),
    "identifier": (lambda char: char in _ID_CHARACTERS, "letters, digits, - and _"),
}


class ConfigError(LocalProtocolError):
    """A configuration value that cannot be used; key names it."""

    def __init__(self, key, message):
        super().__init__("%s: %s" % (key, message))
        self.key = key


def is_ascii_digits(text):
    """True for "0".."9" only (str.isdigit also takes "²" and other digits int() refuses)."""
    if not text:
        return False
    for char in text:
        if not "0" <= char <= "9":
            return False
    return True


def shown(value):
    """A value for an error message: short, whatever it holds (a list or an object nested
    thousands deep is named by its kind, never written out)."""
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _check(key, value, spec):
    kind, _, low, high = spec
    if kind == "choice":
        if value not in low:
            raise ConfigError(key, "must be one of %s, not %s" % (", ".join(low), shown(value)))
        return value
    if kind == "bool":
        if value is not True and value is not False:
            raise ConfigError(key, "must be true or false, not %s" % shown(value))
        return value
    if kind == "int":
        if not isinstance(value, int) or value is True or value is False:
            raise ConfigError(key, "must be a whole number, not %s" % shown(value))
        if not low <= value <= high:
            raise ConfigError(key, "must be within %d..%d, not %d" % (low, high, value))
        return value
    if kind == "float":
        if not isinstance(value, (int, float)) or value is True or value is False:
            raise ConfigError(key, "must be a number, not %s" % shown(value))
        if not low <= value <= high:
            raise ConfigError(key, "must be within %s..%s, not %s" % (low, high, value))
        return value
    if not isinstance(value, str):
        raise ConfigError(key, "must be text, not %s" % shown(value))
    if not low <= len(value) <= high:
        raise ConfigError(key, "must be %d..%d characters long" % (low, high))
    if not _plain_text(value, kind):
        allowed, description = TEXT_KINDS[kind]
        for char in value:
            if not allowed(char):
                raise ConfigError(key, "may hold only %s, not U+%04X" % (description, ord(char)))
    if kind == "server" and value:
        host, _, port = value.rpartition(":")
        if not host or not is_ascii_digits(port) or not 1 <= int(port) <= 65535:
            raise ConfigError(key, "must be host:port with a port within 1..65535, not %s" % shown(value))
    return value


# A text kind's allowed characters as a range of ASCII and the ones it leaves out: a value within the range
# and without those is allowed, seen at once (min and max run in C); any other goes character by character.
_PLAIN_TEXT = {
    "text": (" ", ""),
    "ascii": (" ", ""),
    "identity": (" ", "*"),
    "token": ("!", ""),
    "server": ("!", ""),
    "topic": ("!", "+#"),
}


def _plain_text(value, kind):
    plain = _PLAIN_TEXT.get(kind)
    if plain is None or not value or min(value) < plain[0] or max(value) > "~":
        return False
    for char in plain[1]:
        if char in value:
            return False
    return True


def is_mac(text):
    parts = text.split(":")
    if len(parts) != 6:
        return False
    for part in parts:
        if len(part) != 2:
            return False
        for char in part:
            if char not in "0123456789abcdefABCDEF":
                return False
    return True


_template = []  # the defaults, built on first use: every valid key, each with its default


def defaults():
    """A new complete configuration of defaults (every valid key: validate's list of known settings)."""
    if not _template:
        config = {}
        for key in SCHEMA:
            config[key] = SCHEMA[key][1]
        for slot in range(SLOTS):
            for field in SLOT_SCHEMA:
                config["bms%d.%s" % (slot, field)] = SLOT_SCHEMA[field][1]
        _template.append(config)
    return dict(_template[0])


def flatten(tree, prefix="", out=None, depth=1):
    """{"app": {"stale_s": 5}} -> {"app.stale_s": 5}; flat keys pass through.

    Raises ConfigError for a key that is not text and for nesting deeper than MAX_DEPTH.
    """
    if out is None:
        out = {}
    for key in tree:
        if not isinstance(key, str):
            raise ConfigError(prefix + shown(key), "setting names are text")
        value = tree[key]
        name = prefix + key
        if isinstance(value, dict):
            if depth >= MAX_DEPTH:
                raise ConfigError(name, "nested deeper than %d levels: no setting is that deep" % MAX_DEPTH)
            flatten(value, name + ".", out, depth + 1)
        else:
            out[name] = value
    return out


def nest(flat):
    tree = {}
    for key in sorted(flat):
        node = tree
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = flat[key]
    return tree


def validate(config):
    """A complete, checked flat config from any (flat or nested) input."""
    if not isinstance(config, dict):
        raise ConfigError("config", "must be an object")
    flat = flatten(config)
    result = defaults()  # holds every known key, so a key not in it is unknown
    for key in flat:
        value = flat[key]
        if key not in result:
            raise ConfigError(key, "unknown setting")
        if value is result[key]:
            continue  # the default itself (the same object), valid by the schema
        spec = SCHEMA.get(key)
        if spec is None:  # bmsN.field
            spec = SLOT_SCHEMA[key[key.index(".") + 1 :]]
        result[key] = _check(key, value, spec)
    seen = {}
    for slot in range(SLOTS):
        prefix = "bms%d." % slot
        kind = result[prefix + "type"]
        address = result[prefix + "addr"]
        if kind == TYPE_NONE:
            continue
        if kind == TYPE_JK_BLE:
            if not is_mac(address):
                raise ConfigError(
                    prefix + "addr", "a JK BLE slot needs a MAC address like C8:47:8C:10:00:01, not %s" % shown(address)
                )
            address = address.upper()
            result[prefix + "addr"] = address
            identity = ("ble", address)
        else:
            if not is_ascii_digits(address) or not 1 <= int(address) <= 247:
                message = "an RS485 slot needs a Modbus address 1..247, not %s" % shown(address)
                raise ConfigError(prefix + "addr", message)
            if kind == TYPE_BYD_PRO and int(address) > 63:
                raise ConfigError(prefix + "addr", "a BYD PRO DIP address is 1..63, not %s" % address)
            result[prefix + "addr"] = str(int(address))
            identity = ("rs485", int(address))
        if identity in seen:
            raise ConfigError(prefix + "addr", "already used by bms%d" % seen[identity])
        seen[identity] = slot
    return result


def merge(config, changes):
    """config with changes applied, validated; config itself is left as it was."""
    if not isinstance(changes, dict):
        raise ConfigError("config", "changes must be an object")
    updated = dict(config)
    flat = flatten(changes)
    for key in flat:
        updated[key] = flat[key]
    return validate(updated)


def public(config):
    """The config as Config.Get shows it: secrets masked."""
    shown = dict(config)
    if shown.get("rpc.auth_token"):
        shown["rpc.auth_token"] = "***"
    return shown
