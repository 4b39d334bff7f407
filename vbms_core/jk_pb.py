"""JK-PB "inverter BMS" RS485 protocol: Modbus RTU plus proprietary 55AA replies.

Reference: shared/reference/jk-protocols.md section 11.  115200 8N1 by default.

- Blocks: settings 0x1000, live data 0x1200, device info 0x1400 (same memory
  images as the BLE frames from byte 6 on), control 0x1600.  A register
  address is block base + BYTE offset, and a read of N registers returns 2N
  bytes of the image (section 11.2).
- Trigger writes: FC 0x10, one register, value 0, at 0x161C / 0x161E / 0x1620
  ask for a 55AA frame of type 0x03 / 0x01 / 0x02; the slave sends the 300-byte
  frame, then (optionally after a 00 byte) the 8-byte FC 0x10 acknowledgement,
  possibly followed by another 00 (section 11.6).
"""

from . import jk_frames, modbus
from .errors import LocalProtocolError, RemoteProtocolError

SETTINGS_BLOCK = 0x1000
LIVE_BLOCK = 0x1200
DEVICE_BLOCK = 0x1400
CONTROL_BLOCK = 0x1600
BLOCK_NAMES = {
    SETTINGS_BLOCK: "settings",
    LIVE_BLOCK: "live_data",
    DEVICE_BLOCK: "device_info",
    CONTROL_BLOCK: "control",
}
BLOCK_SIZE = 0x200

TRIGGER_DEVICE_INFO = 0x161C
TRIGGER_SETTINGS = 0x161E
TRIGGER_STATUS = 0x1620
TRIGGERS = {
    TRIGGER_DEVICE_INFO: ("device_info", jk_frames.DEVICE_INFO),
    TRIGGER_SETTINGS: ("settings", jk_frames.SETTINGS),
    TRIGGER_STATUS: ("status", jk_frames.CELL_INFO),
}
TRIGGER_BY_NAME = {"device_info": TRIGGER_DEVICE_INFO, "settings": TRIGGER_SETTINGS, "status": TRIGGER_STATUS}

ACK_LENGTH = 8


def block_of(register):
    base = register & ~(BLOCK_SIZE - 1)
    return base if base in BLOCK_NAMES else None


def encode_trigger(address, what):
    """The master's trigger write for 'device_info', 'settings' or 'status'."""
    if what not in TRIGGER_BY_NAME:
        raise LocalProtocolError("JK-PB trigger %r is not one of %s" % (what, ", ".join(sorted(TRIGGER_BY_NAME))))
    return modbus.encode_write_multiple_request(address, TRIGGER_BY_NAME[what], (0,))


def encode_read(address, register, count):
    return modbus.encode_read_request(address, modbus.READ_HOLDING, register, count)


def image_slice(image, register, count, base):
    """The 2*count bytes a read at register returns from a block image (bytes from offset 0)."""
    start = register - base
    if start < 0 or start + 2 * count > len(image):
        raise LocalProtocolError("read of %d registers at %04X falls outside the block" % (count, register))
    return image[start : start + 2 * count]


def registers_from_image(image, register, count, base):
    """Big-endian 16-bit words of a block image, as a Modbus read returns them."""
    raw = image_slice(image, register, count, base)
    return tuple((raw[2 * index] << 8) | raw[2 * index + 1] for index in range(count))


def image_from_frame(frame):
    """A block image from a BLE/55AA frame: block offset = frame offset - 6.

    The image is little-endian as stored; registers_from_image returns it as
    the BMS does, byte for byte (so a u16 field reads byte-swapped).
    """
    return bytes(frame[6 : jk_frames.FRAME_LENGTH - 1])


class TriggerReply:
    """A parsed trigger reply: the 55AA frame and the acknowledgement, if seen."""

    __slots__ = ("frame", "ack", "padding")

    def __init__(self, frame, ack, padding):
        self.frame = frame
        self.ack = ack
        self.padding = padding


def encode_trigger_reply(address, register, frame, padded=False):
    """The slave's side: the 55AA frame, optional 00 bytes, and the ACK."""
    ack = modbus.encode_write_multiple_response(address, register, 1)
    if padded:
        return bytes(frame) + b"\x00" + ack + b"\x00"
    return bytes(frame) + ack


def decode_trigger_reply(data):
    """Split a trigger reply: 300-byte frame, optional 00, 8-byte ACK, optional 00.

    Raises RemoteProtocolError when the frame is bad or something other than
    padding and one ACK follows it.
    """
    jk_frames.check_frame(data)
    rest = data[jk_frames.FRAME_LENGTH :]
    padding = 0
    while rest[:1] == b"\x00" and len(rest) != ACK_LENGTH:
        rest = rest[1:]
        padding += 1
    ack = None
    if rest:
        if len(rest) > ACK_LENGTH:
            tail = rest[ACK_LENGTH:]
            if tail.count(0) != len(tail):
                raise RemoteProtocolError(
                    "unexpected %d bytes after the JK-PB acknowledgement" % len(tail), raw=bytes(data)
                )
            rest = rest[:ACK_LENGTH]
        event = modbus.decode_response(rest)
        if not isinstance(event, modbus.WriteMultipleResponse):
            raise RemoteProtocolError("JK-PB trigger reply ends in a frame that is not an FC 0x10 ACK", raw=bytes(data))
        ack = event
    return TriggerReply(bytes(data[: jk_frames.FRAME_LENGTH]), ack, padding)
