"""A small MQTT 3.1.1 client on asyncio streams: QoS 0 publish, one subscription, a last will.

What the VBMS needs and nothing more (OASIS MQTT 3.1.1, sections 2 and 3):
CONNECT with clean session and a retained will, SUBSCRIBE at QoS 0, PUBLISH at
QoS 0 both ways, PINGREQ to keep the session, DISCONNECT.  While the broker is
away, publications are dropped (QoS 0, as paho drops them) and the client
reconnects after 1 s, doubling up to 30 s.
"""

import asyncio
import struct

CONNECT = 0x10
CONNACK = 0x20
PUBLISH = 0x30
SUBSCRIBE = 0x82  # with the reserved flags 0010
SUBACK = 0x90
PINGREQ = b"\xc0\x00"
PINGRESP = 0xD0
DISCONNECT = b"\xe0\x00"

KEEPALIVE_S = 60
MAX_PACKET = 16384  # a received packet longer than this ends the connection
MAX_QUEUED = 16384  # bytes waiting to be sent; beyond, publications are dropped


class MqttError(Exception):
    pass


def encode_length(length):
    out = bytearray()
    while True:
        byte = length % 128
        length //= 128
        out.append(byte | 0x80 if length else byte)
        if not length:
            return bytes(out)


def _text(value):
    raw = value.encode() if isinstance(value, str) else bytes(value)
    return struct.pack("!H", len(raw)) + raw


def _packet(first_byte, body):
    return bytes((first_byte,)) + encode_length(len(body)) + body


def connect_packet(client_id, will_topic, will_message, keepalive_s=KEEPALIVE_S):
    flags = 0x02 | 0x04 | 0x20  # clean session, will, will retained (QoS 0)
    body = _text("MQTT") + bytes((4, flags)) + struct.pack("!H", keepalive_s)
    body += _text(client_id) + _text(will_topic) + _text(will_message)
    return _packet(CONNECT, body)


def subscribe_packet(packet_id, topic):
    return _packet(SUBSCRIBE, struct.pack("!H", packet_id) + _text(topic) + b"\x00")


def publish_packet(topic, payload, retain=False):
    return _packet(
        PUBLISH | (1 if retain else 0), _text(topic) + (payload.encode() if isinstance(payload, str) else payload)
    )


def parse_publish(first_byte, body):
    """(topic, payload bytes) of a PUBLISH packet's body."""
    length = body[0] << 8 | body[1]
    topic = bytes(body[2 : 2 + length]).decode()
    start = 2 + length + (2 if first_byte & 0x06 else 0)  # a packet id only at QoS 1 and 2
    return topic, bytes(body[start:])


async def read_packet(reader):
    """(first byte, body) of the next packet."""
    head = await reader.readexactly(1)
    length = 0
    shift = 0
    while True:
        byte = (await reader.readexactly(1))[0]
        length |= (byte & 0x7F) << shift
        if not byte & 0x80:
            break
        shift += 7
        if shift > 21:
            raise MqttError("malformed remaining length")
    if length > MAX_PACKET:
        raise MqttError("a %d-byte packet is more than this client takes" % length)
    body = await reader.readexactly(length) if length else b""
    return head[0], body


class MqttClient:
    """on_connected(): the session is (again) up; on_message(topic, payload): a PUBLISH arrived."""

    def __init__(self, server, client_id, status_topic, subscribe_topic, on_connected, on_message, log):
        host, _, port = server.rpartition(":")
        self.host = host
        self.port = int(port or 1883)
        self.client_id = client_id
        self.status_topic = status_topic
        self.subscribe_topic = subscribe_topic
        self.on_connected = on_connected
        self.on_message = on_message
        self.log = log
        self.writer = None
        self.outbox = []  # packets for the flusher, the only task that writes once the session is up
        self.queued = 0
        self.dropped = 0
        self.flush_flag = asyncio.ThreadSafeFlag()
        self.connected = False

    def publish(self, topic, payload, retain=False):
        if not self.connected:
            self.dropped += 1
            return
        packet = publish_packet(topic, payload, retain)
        if self.queued + len(packet) > MAX_QUEUED:
            self.dropped += 1
            return
        self.outbox.append(packet)
        self.queued += len(packet)
        self.flush_flag.set()

    async def run(self):
        backoff_s = 1
        while True:
            try:
                await self._session()
                backoff_s = 1
            except (OSError, MqttError, EOFError) as error:
                if self.connected:
                    self.log("mqtt_disconnected", level="warning", error=str(error) or type(error).__name__)
                else:
                    self.log("mqtt_unreachable", level="warning", server="%s:%d" % (self.host, self.port),
                             error=str(error) or type(error).__name__, retry_s=backoff_s)  # fmt: skip
            self._drop_connection()
            await asyncio.sleep(backoff_s)
            backoff_s = min(backoff_s * 2, 30)

    async def _session(self):
        reader, writer = await asyncio.open_connection(self.host, self.port)
        self.writer = writer
        writer.write(connect_packet(self.client_id, self.status_topic, "offline"))
        await writer.drain()
        kind, body = await asyncio.wait_for(read_packet(reader), 10)
        if kind & 0xF0 != CONNACK or len(body) < 2 or body[1] != 0:
            raise MqttError("the broker refused the connection (code %s)" % (body[1] if len(body) > 1 else "?"))
        writer.write(subscribe_packet(1, self.subscribe_topic))
        await writer.drain()
        self.connected = True
        self.log("mqtt_connected", server="%s:%d" % (self.host, self.port))
        self.on_connected()
        flusher = asyncio.create_task(self._flush())
        try:
            while True:
                first, body = await asyncio.wait_for(read_packet(reader), KEEPALIVE_S * 3 // 2)
                if first & 0xF0 == PUBLISH:
                    topic, payload = parse_publish(first, body)
                    self.on_message(topic, payload)
        finally:
            flusher.cancel()

    async def _flush(self):
        """Sends what publish() queued, and a PINGREQ when the line has been quiet.  The only
        writer while the session is up: no write lands in the middle of another one's drain."""
        while True:
            try:
                await asyncio.wait_for(self.flush_flag.wait(), KEEPALIVE_S // 2)
            except asyncio.TimeoutError:  # noqa: UP041 - MicroPython has no builtin TimeoutError
                self.outbox.append(PINGREQ)
            packets = self.outbox
            self.outbox = []
            self.queued = 0
            try:
                for packet in packets:
                    self.writer.write(packet)
                await self.writer.drain()
            except OSError:
                self.writer.close()  # the reader sees the end and the session starts again
                return

    def _drop_connection(self):
        self.connected = False
        self.outbox = []
        self.queued = 0
        if self.writer is not None:
            try:
                self.writer.close()
            except OSError:
                pass
            self.writer = None

    async def close(self):
        """Says offline (retained), then DISCONNECT: a clean end sends no will."""
        if self.connected:
            self.outbox.append(publish_packet(self.status_topic, "offline", True))
            self.outbox.append(DISCONNECT)
            self.flush_flag.set()
            for _ in range(50):
                if not self.outbox:
                    break
                await asyncio.sleep_ms(20)
            await asyncio.sleep_ms(50)
        self._drop_connection()
