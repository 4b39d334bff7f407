"""What goes into the proxy and what comes out of it: typed inputs, typed actions,
and the one contract every driver implements (ARCHITECTURE.md, "Drivers: one contract").

A driver feeds inputs (`Proxy.feed(event)`) and executes the actions the proxy
returns (`execute(executor, actions)`).  Every input carries the driver's clock
in microseconds (`now_us`); the proxy never reads a clock.

Inputs:
  BmsBytes(data, now_us)        bytes that arrived on the BMS-side RS485 port
  InvBytes(data, now_us)        bytes that arrived on the inverter-side port
  Tick(now_us)                  time passed; at the latest by Proxy.next_deadline_us()
  BleConnected(slot, now_us)    a connection asked for by BleConnect is up and subscribed
  BleConnectFailed(slot, reason, now_us)
  BleDisconnected(slot, reason, now_us)
  BleNotify(slot, data, now_us) one notification from the module's FFE1 characteristic
  BleScanResult(devices, now_us)
        devices: a list of [address, name, rssi or None, connected]; answers a BleScan
  RpcCall(call_id, method, params, now_us, token=None, wall_s=None)
        answered by an RpcReply with the same call_id, at once or (VBMS.ScanBLE) later
  MqttConnected(now_us)         the driver's MQTT session is (again) up

Actions (the Executor method that carries each out is named in `method`):
  BmsWrite(data)                    bms_write
  InvWrite(data)                    inv_write
  BleConnect(slot, address)         ble_connect: answer with BleConnected or BleConnectFailed
  BleWrite(slot, data)              ble_write
  BleDisconnect(slot)               ble_disconnect (no BleDisconnected is expected back)
  BleScan(seconds)                  ble_scan: answer with BleScanResult
  Publish(topic, payload, retain)   publish (MQTT; payload is text)
  SaveConfig(config)                save_config: store the flat config atomically
  Reboot()                          reboot: start again from the saved config
  RpcReply(call_id, result, error)  rpc_reply: hand the answer to whoever called
  Log(level, event, fields)         log: one line on the driver's console/log

An executor must not feed the proxy from inside an action's method (the answer
to BleScan, say, is fed later, from the driver's loop), so the actions of one
input are always carried out in order before the next input is taken.
"""


class BmsBytes:
    __slots__ = ("data", "now_us")

    def __init__(self, data, now_us):
        self.data = data
        self.now_us = now_us


class InvBytes:
    __slots__ = ("data", "now_us")

    def __init__(self, data, now_us):
        self.data = data
        self.now_us = now_us


class Tick:
    __slots__ = ("now_us",)

    def __init__(self, now_us):
        self.now_us = now_us


class BleConnected:
    __slots__ = ("slot", "now_us")

    def __init__(self, slot, now_us):
        self.slot = slot
        self.now_us = now_us


class BleConnectFailed:
    __slots__ = ("slot", "reason", "now_us")

    def __init__(self, slot, reason, now_us):
        self.slot = slot
        self.reason = reason
        self.now_us = now_us


class BleDisconnected:
    __slots__ = ("slot", "reason", "now_us")

    def __init__(self, slot, reason, now_us):
        self.slot = slot
        self.reason = reason
        self.now_us = now_us


class BleNotify:
    __slots__ = ("slot", "data", "now_us")

    def __init__(self, slot, data, now_us):
        self.slot = slot
        self.data = data
        self.now_us = now_us


class BleScanResult:
    __slots__ = ("devices", "now_us")

    def __init__(self, devices, now_us):
        self.devices = devices
        self.now_us = now_us


class RpcCall:
    __slots__ = ("call_id", "method", "params", "now_us", "token", "wall_s")

    def __init__(self, call_id, method, params, now_us, token=None, wall_s=None):
        self.call_id = call_id
        self.method = method
        self.params = params
        self.now_us = now_us
        self.token = token
        self.wall_s = wall_s


class MqttConnected:
    __slots__ = ("now_us",)

    def __init__(self, now_us):
        self.now_us = now_us


# --- actions ------------------------------------------------------------------------


class BmsWrite:
    __slots__ = ("data",)
    method = "bms_write"

    def __init__(self, data):
        self.data = data


class InvWrite:
    __slots__ = ("data",)
    method = "inv_write"

    def __init__(self, data):
        self.data = data


class BleConnect:
    __slots__ = ("slot", "address")
    method = "ble_connect"

    def __init__(self, slot, address):
        self.slot = slot
        self.address = address


class BleWrite:
    __slots__ = ("slot", "data")
    method = "ble_write"

    def __init__(self, slot, data):
        self.slot = slot
        self.data = data


class BleDisconnect:
    __slots__ = ("slot",)
    method = "ble_disconnect"

    def __init__(self, slot):
        self.slot = slot


class BleScan:
    __slots__ = ("seconds",)
    method = "ble_scan"

    def __init__(self, seconds):
        self.seconds = seconds


class Publish:
    __slots__ = ("topic", "payload", "retain")
    method = "publish"

    def __init__(self, topic, payload, retain=False):
        self.topic = topic
        self.payload = payload
        self.retain = retain


class SaveConfig:
    __slots__ = ("config",)
    method = "save_config"

    def __init__(self, config):
        self.config = config


class Reboot:
    __slots__ = ()
    method = "reboot"


class RpcReply:
    __slots__ = ("call_id", "result", "error")
    method = "rpc_reply"

    def __init__(self, call_id, result, error):
        self.call_id = call_id
        self.result = result
        self.error = error


class Log:
    __slots__ = ("level", "event", "fields")
    method = "log"

    def __init__(self, level, event, fields):
        self.level = level
        self.event = event
        self.fields = fields


ACTIONS = (BmsWrite, InvWrite, BleConnect, BleWrite, BleDisconnect, BleScan, Publish, SaveConfig, Reboot, RpcReply, Log)


class Executor:
    """The contract: one method per action type.  A driver subclasses this and
    overrides every method; the ones left here say which action it forgot."""

    def _missing(self, action):
        raise NotImplementedError("%s does not carry out %s" % (type(self).__name__, action.method))

    def bms_write(self, action):
        self._missing(action)

    def inv_write(self, action):
        self._missing(action)

    def ble_connect(self, action):
        self._missing(action)

    def ble_write(self, action):
        self._missing(action)

    def ble_disconnect(self, action):
        self._missing(action)

    def ble_scan(self, action):
        self._missing(action)

    def publish(self, action):
        self._missing(action)

    def save_config(self, action):
        self._missing(action)

    def reboot(self, action):
        self._missing(action)

    def rpc_reply(self, action):
        self._missing(action)

    def log(self, action):
        self._missing(action)


def execute(executor, actions):
    """Carry out actions in order through the executor's method for each."""
    for action in actions:
        getattr(executor, action.method)(action)


def describe(action):
    """An action as a plain list (transcripts, traces, test messages)."""
    values = [action.method]
    for name in type(action).__slots__:
        value = getattr(action, name)
        if isinstance(value, (bytes, bytearray, memoryview)):
            value = "".join("%02X" % byte for byte in bytes(value))
        values.append(value)
    return values
