"""Stand-in for MicroPython's `bluetooth` on the unix port: the central's calls go to a
bridge process (firmware/host/ble_bridge.py: bleak on the bench's BlueZoo), the bridge's
events come back as irq(event, data) calls.  Never shipped to a board.

Wire format: JSON lines over the unix socket $VBMS_BLE_BRIDGE.  Calls:
  {"op": "scan", "ms", "active"}   {"op": "connect", "addr_type", "addr", "ms"}
  {"op": "connect_cancel"}         {"op": "disconnect", "conn"}
  {"op": "services", "conn", "uuid"}   {"op": "chars", "conn", "start", "end", "uuid"}
  {"op": "descs", "conn", "start", "end"}   {"op": "write", "conn", "handle", "data", "mode"}
  {"op": "read", "conn", "handle"}   {"op": "mtu", "conn", "mtu"}
Events: {"ev": <irq code>, "d": [<the irq's data tuple>]}; bytes are hex, addresses
"AA:BB:..", UUIDs "ffe0" or a dashed 128-bit string.

As on a board, addresses and data reach the handler as memoryviews that are
valid only during the call (one buffer, reused); and irq() runs only between
the loop's tasks here, where a board may run it between any two bytecodes.
"""

import asyncio
import json
import os
import socket
import struct
from binascii import hexlify, unhexlify

FLAG_READ = 0x0002
FLAG_WRITE_NO_RESPONSE = 0x0004
FLAG_WRITE = 0x0008
FLAG_NOTIFY = 0x0010
FLAG_INDICATE = 0x0020

# event code -> position in its data tuple of an address, of bytes, of a UUID
_ADDRESS_AT = {5: 1, 7: 2, 8: 2}
_BYTES_AT = {5: 4, 15: 2, 18: 2, 19: 2}
_UUID_AT = {9: 3, 11: 4, 13: 2}


class UUID:
    """Kept little-endian, as modbluetooth keeps it."""

    def __init__(self, value):
        if isinstance(value, UUID):
            self._le = value._le
        elif isinstance(value, int):
            self._le = struct.pack("<H", value)
        elif isinstance(value, str):
            self._le = bytes(reversed(unhexlify(value.replace("-", ""))))
        else:
            self._le = bytes(value)

    def __eq__(self, other):
        return isinstance(other, UUID) and self._le == other._le

    def __hash__(self):
        return hash(self._le)

    def wire(self):
        text = hexlify(bytes(reversed(self._le))).decode()
        if len(text) == 32:
            return "%s-%s-%s-%s-%s" % (text[:8], text[8:12], text[12:16], text[16:20], text[20:])
        return text

    def __str__(self):
        if len(self._le) == 2:
            return "UUID(0x%04x)" % struct.unpack("<H", self._le)[0]
        return "UUID('%s')" % self.wire()

    __repr__ = __str__


def _address_text(raw):
    return ":".join("%02X" % byte for byte in bytes(raw))


class BLE:
    _instance = None

    def __new__(cls):
        if BLE._instance is None:
            instance = object.__new__(cls)
            instance._socket = None
            instance._handler = None
            instance._task = None
            instance._config = {"mtu": 23, "rxbuf": 1024, "gap_name": "VBMS"}
            instance._buffer = bytearray(1024)  # reused: an irq's memoryviews die after the call
            BLE._instance = instance
        return BLE._instance

    def __init__(self):
        pass

    def active(self, on=None):
        if on is None:
            return self._socket is not None
        if on and self._socket is None:
            path = os.getenv("VBMS_BLE_BRIDGE")
            if not path:
                raise OSError("no Bluetooth on this host ($VBMS_BLE_BRIDGE is not set)")
            connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            connection.connect(struct.pack("H", socket.AF_UNIX) + path.encode() + b"\0")  # a packed sockaddr_un
            self._socket = connection
            self._task = asyncio.create_task(self._pump())
        elif not on and self._socket is not None:
            self._task.cancel()
            self._socket.close()
            self._socket = None
        return self._socket is not None

    def config(self, *names, **values):
        if names:
            if names[0] == "mac":
                return (0, b"\x00\xaa\xbb\xcc\xdd\xee")
            return self._config[names[0]]
        self._config.update(values)

    def irq(self, handler):
        self._handler = handler

    def _send(self, message):
        if self._socket is None:
            raise OSError("Bluetooth is not active")
        self._socket.write((json.dumps(message) + "\n").encode())  # blocking: a line is small

    def gap_scan(self, duration_ms, interval_us=1280000, window_us=11250, active=False):
        self._send({"op": "scan", "ms": duration_ms, "active": bool(active)})

    def gap_connect(self, addr_type, addr=None, scan_duration_ms=2000, min_conn_interval_us=None,
                    max_conn_interval_us=None):  # fmt: skip
        if addr_type is None:
            self._send({"op": "connect_cancel"})
        else:
            self._send({"op": "connect", "addr_type": addr_type, "addr": _address_text(addr), "ms": scan_duration_ms})

    def gap_disconnect(self, conn_handle):
        self._send({"op": "disconnect", "conn": conn_handle})
        return True

    def gattc_discover_services(self, conn_handle, uuid=None):
        self._send({"op": "services", "conn": conn_handle, "uuid": uuid.wire() if uuid else None})

    def gattc_discover_characteristics(self, conn_handle, start_handle, end_handle, uuid=None):
        self._send({"op": "chars", "conn": conn_handle, "start": start_handle, "end": end_handle,
                    "uuid": uuid.wire() if uuid else None})  # fmt: skip

    def gattc_discover_descriptors(self, conn_handle, start_handle, end_handle):
        self._send({"op": "descs", "conn": conn_handle, "start": start_handle, "end": end_handle})

    def gattc_read(self, conn_handle, value_handle):
        self._send({"op": "read", "conn": conn_handle, "handle": value_handle})

    def gattc_write(self, conn_handle, value_handle, data, mode=0):
        self._send({"op": "write", "conn": conn_handle, "handle": value_handle,
                    "data": hexlify(bytes(data)).decode(), "mode": mode})  # fmt: skip

    def gattc_exchange_mtu(self, conn_handle):
        self._send({"op": "mtu", "conn": conn_handle, "mtu": self._config["mtu"]})

    async def _pump(self):
        reader = asyncio.StreamReader(self._socket)
        while True:
            line = await reader.readline()
            if not line:
                raise OSError("the BLE bridge went away")  # an error, never a busy loop
            self._dispatch(json.loads(line))

    def _dispatch(self, message):
        event = message["ev"]
        data = list(message["d"])
        if event in _ADDRESS_AT:
            at = _ADDRESS_AT[event]
            data[at] = memoryview(unhexlify(data[at].replace(":", "")))
        if event in _BYTES_AT:
            at = _BYTES_AT[event]
            raw = unhexlify(data[at])
            self._buffer[: len(raw)] = raw
            data[at] = memoryview(self._buffer)[: len(raw)]
        if event in _UUID_AT:
            at = _UUID_AT[event]
            data[at] = UUID(data[at] if len(data[at]) > 4 else int(data[at], 16))
        if self._handler is not None:
            self._handler(event, tuple(data))
