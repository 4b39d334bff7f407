"""The fifteen battery slots: what each one is configured as and what it last read,
and the policy that turns a reading into what the inverter is told.

A slot is DEYE unit `index` (battery index + 1 on the inverter's screen).
"""

from . import battery, deye
from . import config as config_module

STATUS_UNCONFIGURED = "unconfigured"
STATUS_WAITING = "waiting"
STATUS_ONLINE = "online"
STATUS_STALE = "stale"
STATUS_ERROR = "error"

# Shown when the battery has not told us its model (BYD PRO never does).
DEFAULT_MODELS = {
    config_module.TYPE_BYD_PRO: "BYD PRO 2.5",
    config_module.TYPE_JK_BLE: "JK-BMS",
    config_module.TYPE_JK_PB: "JK-BMS",
    config_module.TYPE_JK_4E57: "JK-BMS",
}
# A battery type's own charge-current ceiling when it does not report one, mA.
TYPE_CHARGE_LIMITS_MA = {config_module.TYPE_BYD_PRO: 50000}  # B-Plus 2.5 module: 50 A
TRICKLE_DIVISOR = 10  # a battery warning "cell voltage high" gets a tenth of its limit


class Slot:
    __slots__ = (
        "index", "kind", "address", "name", "serial", "voltage_mv", "max_charge_ma", "chemistry", "reading",
        "updated_us", "status", "error", "model", "device_serial", "settings", "layout", "polls", "answers",
        "failures", "last_raw", "_identity", "_identity_of",
    )  # fmt: skip

    def __init__(self, index):
        self.index = index
        self.kind = config_module.TYPE_NONE
        self.address = ""
        self.name = ""
        self.serial = ""
        self.voltage_mv = 55200
        self.max_charge_ma = 0
        self.chemistry = "auto"
        self.reading = None
        self.updated_us = None
        self.status = STATUS_UNCONFIGURED
        self.error = None
        self.model = None
        self.device_serial = None
        self.settings = None
        self.layout = None
        self.polls = 0
        self.answers = 0
        self.failures = 0
        self.last_raw = None  # the bytes of the latest RS485 answer its reading was decoded from
        self._identity = None  # the encoded identity, and the (model, serial) it was encoded from
        self._identity_of = None

    def configure(self, config):
        """Take this slot's settings; returns True when it now names another battery."""
        prefix = "bms%d." % self.index
        kind = config[prefix + "type"]
        address = config[prefix + "addr"]
        replaced = kind != self.kind or address != self.address
        if replaced:
            self.forget()
            self.status = STATUS_UNCONFIGURED if kind == config_module.TYPE_NONE else STATUS_WAITING
        self.kind = kind
        self.address = address
        self.name = config[prefix + "name"]
        self.serial = config[prefix + "serial"]
        self.voltage_mv = int(config[prefix + "voltage"] * 1000 + 0.5)
        self.max_charge_ma = config[prefix + "max_charge_a"] * 1000
        self.chemistry = config[prefix + "chemistry"]
        self.last_raw = None  # (the next answer is decoded under these settings)
        return replaced

    def forget(self):
        self.reading = None
        self.last_raw = None
        self.updated_us = None
        self.error = None
        self.model = self.device_serial = self.settings = self.layout = None

    def model_name(self):
        return self.model or DEFAULT_MODELS.get(self.kind, "")

    def serial_number(self):
        return self.serial or self.device_serial or ("VBMS-SLOT-%02d" % self.index)

    def refresh_status(self, now_us, stale_us):
        if self.kind == config_module.TYPE_NONE:
            self.status = STATUS_UNCONFIGURED
        elif self.updated_us is None:
            self.status = STATUS_ERROR if self.error else STATUS_WAITING
        elif now_us - self.updated_us > stale_us:
            self.status = STATUS_STALE
        else:
            self.status = STATUS_ONLINE


def charge_limit_ma(slot, max_charge_current_a):
    """What the inverter may push into this battery: the smallest of every limit we know,
    nothing when the battery blocks charging or protects against high voltage, a
    trickle when it warns of a high cell."""
    reading = slot.reading
    limit = max_charge_current_a * 1000
    if reading.max_charge_current_ma:
        limit = min(limit, reading.max_charge_current_ma)
    elif slot.kind in TYPE_CHARGE_LIMITS_MA:
        limit = min(limit, TYPE_CHARGE_LIMITS_MA[slot.kind])
    if slot.max_charge_ma:
        limit = min(limit, slot.max_charge_ma)
    if reading.charge_enabled is False or reading.protection & (
        (1 << battery.P_CELL_HIGH) | (1 << battery.P_PACK_HIGH)
    ):
        return 0
    if reading.warning & (1 << battery.W_CELL_HIGH):
        return limit // TRICKLE_DIVISOR
    return limit


def registers(slot, max_charge_current_a):
    """The DEYE register block for the slot's reading."""
    return deye.registers_from_reading(slot.reading, slot.voltage_mv, charge_limit_ma(slot, max_charge_current_a))


def wire_text(text, limit):
    """Text the identity can carry: printable ASCII without the '*' separator, at most limit long.

    The configured serial is already restricted to that (config.py); a model or serial a
    battery reports is mended here rather than let it break every identity reply.
    """
    chars = []
    for char in text[:limit]:
        chars.append(char if " " <= char <= "~" and char != "*" else "?")
    return "".join(chars)


def identity(slot):
    """The DEYE 0x11 identity: the model (15 characters) and serial (20) the wire carries.
    Encoded again only when the model or serial changed (it is asked for at every answer)."""
    model = slot.model_name()
    serial = slot.serial_number()
    seen = slot._identity_of
    if seen is None or seen[0] != model or seen[1] != serial:
        slot._identity = deye.encode_identity(wire_text(model, deye.MODEL_MAX), wire_text(serial, deye.SERIAL_LENGTH))
        slot._identity_of = (model, serial)
    return slot._identity
