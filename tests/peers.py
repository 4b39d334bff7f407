"""Test support: the far ends a test plays, written out here rather than taken from vbms_core or hil, so a
mistake there cannot agree with itself (CRC-16/MODBUS, a WebSocket client)."""

import base64
import json
import os
import socket
import struct
import time


def modbus_crc(frame):
    """CRC-16/MODBUS bit by bit (reflected polynomial 0xA001, initial 0xFFFF)."""
    crc = 0xFFFF
    for byte in frame:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def with_crc(frame):
    """The frame with its CRC appended, low byte first."""
    crc = modbus_crc(frame)
    return bytes(frame) + bytes((crc & 0xFF, crc >> 8))


def websocket_call(port, frames):
    """RPC frames over one WebSocket on /rpc (RFC 6455: the handshake, masked text frames out, unmasked text
    frames in); the replies, one a frame, in order."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        key = base64.b64encode(os.urandom(16)).decode()
        sock.sendall(("GET /rpc HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                      "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n" % key).encode())  # fmt: skip
        stream = sock.makefile("rb")
        assert b" 101 " in stream.readline()
        while stream.readline() not in (b"\r\n", b""):
            pass
        replies = []
        for frame in frames:
            payload = json.dumps(frame).encode()
            mask = os.urandom(4)
            size = bytes((0x80 | len(payload),)) if len(payload) < 126 else b"\xfe" + struct.pack(">H", len(payload))
            sock.sendall(b"\x81" + size + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
            _, length = stream.read(2)
            length &= 0x7F
            if length == 126:
                length = struct.unpack(">H", stream.read(2))[0]
            replies.append(json.loads(stream.read(length)))
        return replies


class PtyEnds:
    """Serial lines by role, each a PTY pair: the device under test opens name(role), the test reads and writes
    the master end without blocking.  drain(role) keeps what came so far."""

    def __init__(self, roles=("bms", "inv")):
        self.pairs = {}
        self.received = {role: bytearray() for role in roles}
        for role in roles:
            master, slave = os.openpty()
            os.set_blocking(master, False)
            self.pairs[role] = (master, slave)

    def name(self, role):
        return os.ttyname(self.pairs[role][1])

    def read(self, role, count, timeout_s=5):
        """Up to count bytes, waiting at most timeout_s for them."""
        got = b""
        deadline = time.monotonic() + timeout_s
        while len(got) < count and time.monotonic() < deadline:
            try:
                got += os.read(self.pairs[role][0], count - len(got))
            except BlockingIOError:
                time.sleep(0.005)
        return got

    def write(self, role, data):
        os.write(self.pairs[role][0], data)

    def drain(self, role):
        """Everything that came on this line so far."""
        try:
            while True:
                data = os.read(self.pairs[role][0], 4096)
                if not data:
                    break
                self.received[role].extend(data)
        except BlockingIOError:
            pass
        return bytes(self.received[role])

    def close(self):
        for pair in self.pairs.values():
            for fd in pair:
                os.close(fd)
        self.pairs = {}
