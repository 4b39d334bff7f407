"""RPC: the method table, its handlers, and calls that are answered later.

Every call (events.RpcCall) gets exactly one events.RpcReply with its call_id: at
once, or, for VBMS.ScanBLE, when the driver's BleScanResult arrives (or the scan's
deadline passes).  Errors are {"code", "message"}; codes follow JSON-RPC (-32601
unknown method, -32602 bad params, -32000 the device could not do it) plus 401 for a
missing or wrong token.  Methods that change the device need rpc.auth_token.
"""

from . import config as config_module
from .events import BleScan, Reboot, RpcReply, SaveConfig

VERSION = "0.1.0"

UNKNOWN_METHOD = -32601
BAD_PARAMS = -32602
DEVICE_ERROR = -32000
UNAUTHORIZED = 401

SCAN_GRACE_S = 15  # a scan that has not answered seconds + this much later is given up


class RpcError(Exception):
    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.message = message


class Later:
    """A handler's answer that comes later (the call stays pending)."""


LATER = Later()


def _get_summary(proxy, params, call):
    return proxy.summary(call.now_us, call.wall_s)


def _scan_ble(proxy, params, call):
    seconds = params.get("seconds", 5)
    if not isinstance(seconds, int) or isinstance(seconds, bool) or not 1 <= seconds <= 30:
        raise RpcError(BAD_PARAMS, "seconds must be a whole number within 1..30")
    proxy.rpc.wait_for_scan(call, seconds)
    return LATER


def _config_get(proxy, params, call):
    return config_module.nest(config_module.public(proxy.config))


def _config_set(proxy, params, call):
    changes = params.get("config")
    if not isinstance(changes, dict) or not changes:
        raise RpcError(BAD_PARAMS, 'params.config must be an object of settings, e.g. {"config": {"bms0.name": "A"}}')
    updated = config_module.merge(proxy.config, changes)  # the whole change is checked before any of it applies
    proxy.reconfigure(updated, call.now_us)
    return {"applied": sorted(config_module.flatten(changes)), "saved": False}


def _config_save(proxy, params, call):
    reboot = params.get("reboot", False)
    if reboot is not True and reboot is not False:
        raise RpcError(BAD_PARAMS, "reboot must be true or false")
    proxy.emit(SaveConfig(dict(proxy.config)))
    if reboot:
        proxy.emit(Reboot())
    return {"saved": True, "reboot": reboot}


def _sys_info(proxy, params, call):
    master = proxy.rs485
    return {
        "app": "vbms",
        "version": VERSION,
        "id": proxy.config["device.id"],
        "uptime_s": (call.now_us - proxy.started_us) // 1000000,
        "slots": sum(1 for s in proxy.slots if s.kind != config_module.TYPE_NONE),
        "inverter_requests": proxy.inverter_requests,
        "inverter_replies": proxy.inverter_replies,
        "bms_cycles": master.cycles,
        "last_bms_cycle_ms": None if master.last_cycle_us is None else master.last_cycle_us // 1000,
    }


def _sys_reboot(proxy, params, call):
    proxy.emit(Reboot())
    return {"rebooting": True}


def _factory_reset(proxy, params, call):
    """Every setting back to its default (the token too: the driver makes a new one), then reboot.

    The firmware does the same when pins.button is held for pins.button_hold_ms.
    """
    proxy.emit(SaveConfig(config_module.defaults()))
    proxy.emit(Reboot())
    return {"reset": True, "rebooting": True}


# method: (handler, changes the device -> needs the token)
METHODS = {
    "VBMS.GetSummary": (_get_summary, False),
    "VBMS.ScanBLE": (_scan_ble, False),
    "Config.Get": (_config_get, False),
    "Config.Set": (_config_set, True),
    "Config.Save": (_config_save, True),
    "Sys.GetInfo": (_sys_info, False),
    "Sys.Reboot": (_sys_reboot, True),
    "Sys.FactoryReset": (_factory_reset, True),
}


def _error(code, message):
    return {"code": code, "message": message}


class Rpc:
    """owner: the Proxy.  Answers calls through METHODS and keeps the ones answered later."""

    __slots__ = ("owner", "scan_calls", "scan_deadline_us")

    def __init__(self, owner):
        self.owner = owner
        self.scan_calls = []  # call ids waiting for the scan under way
        self.scan_deadline_us = None

    def call(self, call):
        result, error = self._answer(call)
        if result is not LATER:
            self.owner.emit(RpcReply(call.call_id, result, error))

    def _answer(self, call):
        method = call.method
        params = {} if call.params is None else call.params
        if not isinstance(params, dict):
            return None, _error(BAD_PARAMS, "params must be an object")
        entry = METHODS.get(method) if isinstance(method, str) else None
        if entry is None:
            return None, _error(UNKNOWN_METHOD, "unknown method %s; methods: %s" % (method, ", ".join(sorted(METHODS))))
        handler, changes_device = entry
        if changes_device:
            expected = self.owner.config["rpc.auth_token"]
            if not expected:
                return None, _error(
                    UNAUTHORIZED, "no rpc.auth_token is set on this device: set one on its console first"
                )
            if call.token != expected:
                return None, _error(UNAUTHORIZED, "%s changes the device: a valid token is required" % method)
        try:
            return handler(self.owner, params, call), None
        except config_module.ConfigError as error:
            return None, _error(BAD_PARAMS, str(error))
        except RpcError as error:
            return None, _error(error.code, error.message)

    # --- VBMS.ScanBLE: the driver scans, its BleScanResult answers -------------------------

    def wait_for_scan(self, call, seconds):
        if not self.scan_calls:
            self.owner.emit(BleScan(seconds))
            self.scan_deadline_us = call.now_us + (seconds + SCAN_GRACE_S) * 1000000
        self.scan_calls.append(call.call_id)  # a second caller shares the scan under way

    def scan_result(self, devices, now_us):
        rows = []
        if isinstance(devices, (list, tuple)):
            for device in devices:
                if isinstance(device, (list, tuple)) and len(device) == 4:
                    address, name, rssi, connected = device
                    rows.append({"address": address, "name": name, "rssi": rssi, "connected": connected})
        self._answer_scan({"devices": rows}, None)

    def tick(self, now_us):
        if self.scan_calls and now_us >= self.scan_deadline_us:
            self._answer_scan(None, _error(DEVICE_ERROR, "the BLE scan did not finish; try again"))

    def next_deadline_us(self):
        return self.scan_deadline_us if self.scan_calls else None

    def _answer_scan(self, result, error):
        for call_id in self.scan_calls:
            self.owner.emit(RpcReply(call_id, result, error))
        self.scan_calls = []
        self.scan_deadline_us = None
