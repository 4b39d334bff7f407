"""JK-PB "inverter BMS" RS485 protocol: Modbus RTU plus proprietary 55AA replies.

Reference: shared/reference/jk-protocols.md section 11.  115200 8N1 by default.

- Blocks: settings 0x1000, live data 0x1200, device info 0x1400 (same memory
  images as the BLE frames from byte 6 on), control 0x1600.  A register
  address is block base + BYTE offset, and a read of N registers returns 2N
  bytes of the block (section 11.2).
- Trigger writes: FC 0x10, one register, value 0, at 0x161C / 0x161E / 0x1620
  ask for a 55AA frame of type 0x03 / 0x01 / 0x02; the slave sends the 300-byte
  frame, then (optionally after a 00 byte) the 8-byte FC 0x10 acknowledgement,
  possibly followed by another 00 (section 11.6).

Byte order of FC 0x03 reads (decided here; the 55AA frames are little-endian):
- every 16-bit field is sent big-endian, so a register holds the field's value:
  cell 0 = 3293 mV reads as register 0x0CDD, bytes 0C DD on the wire.  Sources:
  reference 11.2; mr-manuel/venus-os_dbus-serialbattery bms-docs/JKBMS-PB.md
  ("big-endian register values per Modbus spec", observed reply
  01 03 14 0d0d 0d0e ... = 3341, 3342 mV); syssi/esphome-jk-bms
  esp32-jk-pb-modbus-example.yaml reads the cells as U_WORD (data[0] << 8 |
  data[1]).
- every 32-bit field is sent big-endian as a whole, high word first: BatVol
  52695 mV at 0x1290 reads as 0x0000, 0xCDD7.  Sources: reference 11.2 ("32-bit
  values high word first"); the esphome example reads BatVol, BatCurrent and
  the capacities as U_DWORD / S_DWORD, which its modbus_controller decodes high
  word first (U_DWORD_R would be low word first); dbus-serialbattery's notes say
  big-endian.  The word at the field's address + 2 is its low word.
- single bytes (u8 pairs such as MaxVolCellNbr/MinVolCellNbr, SOC, SOH) and
  ASCII strings go in address order.  Sources: dbus-serialbattery's observed
  reply to 01 03 1400 000A reads "JK_PB2A16S20P" in order; the esphome example
  takes the max-cell number (offset 0x48) from the high byte of register 0x1248,
  SOC (0xA7) from the low byte of 0x12A6 and SOH (0xB8) from the first byte of
  0x12B8.  The same example reads charge/discharge (0x12C0) and RCV/RFV time
  (0x1504) the other way round; no capture settles those two, and address
  order is kept for every byte field.
Which bytes form a 16- or 32-bit field is the official register map (V1.0/V1.1,
as listed in reference 11.4 and dbus-serialbattery's JKBMS-PB.md): WIDE_FIELDS.
Bytes the map does not list (reserved, unknown) go in address order.
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
# The longest trigger reply accepted: the frame, the ACK and a few 00 bytes of padding around it
# (section 11.6 shows one before and one after the ACK); anything longer is not a reply.
MAX_TRIGGER_REPLY = jk_frames.FRAME_LENGTH + ACK_LENGTH + 16


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


# Multi-byte integer fields of each block, from the official register map:
# (block offset, width in bytes, how many in a row).  Everything else is bytes.
WIDE_FIELDS = {
    SETTINGS_BLOCK: (
        (0x000, 4, 34),  # VolSmartSleep 0x1000 ... VolStartBalan 0x1084
        (0x088, 4, 32),  # CellConWireRes0..31
        (0x108, 4, 2),  # DevAddr, TIMProdischarge
        (0x114, 2, 1),  # control bits
    ),
    LIVE_BLOCK: (
        (0x00, 2, 32),  # CellVol0..31
        (0x40, 4, 1),  # CellSta
        (0x44, 2, 2),  # CellVolAve, CellVdifMax
        (0x4A, 2, 32),  # CellWireRes0..31
        (0x8A, 2, 1),  # TempMos
        (0x8C, 4, 1),  # CellWireResSta
        (0x90, 4, 3),  # BatVol, BatWatt, BatCurrent
        (0x9C, 2, 2),  # TempBat1, TempBat2
        (0xA0, 4, 1),  # alarm bits
        (0xA4, 2, 1),  # BalanCurrent
        (0xA8, 4, 4),  # SOCCapRemain, SOCFullChargeCap, SOCCycleCount, SOCCycleCap
        (0xBA, 2, 1),  # UserAlarm
        (0xBC, 4, 1),  # RunTime
        (0xC2, 2, 7),  # UserAlarm2, six protection release timers
        (0xD2, 2, 5),  # reserved, TimeEmergency, BatCurCorrect, VolChargCur, VolDischargCur
        (0xDC, 4, 1),  # BatVolCorrect (float)
        (0xE0, 2, 4),  # balancer PWM charge/discharge, BatVol 0.01 V, HeatCurrent
        (0xF0, 4, 2),  # SysRunTicks, PVD trigger time
        (0xF8, 2, 3),  # TempBat3..5
        (0x100, 4, 3),  # RTCTicks, detail-log count, TimeEnterSleep
        (0x110, 2, 1),  # charge-status elapsed time
    ),
    DEVICE_BLOCK: ((0x20, 4, 2),),  # ODDRunTime, PWROnTimes; the rest is text and bytes
}


def _wide_field_starts(base):
    """{block offset: width} of every multi-byte field of a block."""
    starts = {}
    for offset, width, count in WIDE_FIELDS.get(base, ()):
        for index in range(count):
            starts[offset + width * index] = width
    return starts


_WIDE_FIELD_STARTS = {base: _wide_field_starts(base) for base in BLOCK_NAMES}


def wire_image(image, base):
    """A block image (little-endian, as in the 55AA frame) in FC 0x03 byte order.

    Multi-byte fields are reversed to big-endian in place; bytes and text stay.
    A field cut by the end of the image stays as it is.
    """
    starts = _WIDE_FIELD_STARTS.get(base, {})
    wire = bytearray(image)
    length = len(wire)
    for offset in starts:
        width = starts[offset]
        if offset + width > length:
            continue
        if width == 2:
            wire[offset] = image[offset + 1]
            wire[offset + 1] = image[offset]
        else:  # 4 (WIDE_FIELDS has no other width)
            wire[offset] = image[offset + 3]
            wire[offset + 1] = image[offset + 2]
            wire[offset + 2] = image[offset + 1]
            wire[offset + 3] = image[offset]
    return bytes(wire)


def registers_from_image(image, register, count, base):
    """The count registers a read at register returns from a block image.

    Each register is the big-endian word of the wire image (see the module
    docstring): a 16-bit field's register holds its value, a 32-bit field's two
    registers hold its high and low word.
    """
    raw = image_slice(wire_image(image, base), register, count, base)
    return tuple((raw[2 * index] << 8) | raw[2 * index + 1] for index in range(count))


def image_from_frame(frame):
    """A block image from a BLE/55AA frame: block offset = frame offset - 6.

    The image is little-endian as stored in the frame; wire_image and
    registers_from_image give the FC 0x03 view of it.
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
    padding and one ACK follows it, or when it is longer than MAX_TRIGGER_REPLY.
    """
    if len(data) > MAX_TRIGGER_REPLY:
        raise RemoteProtocolError("JK-PB trigger reply of %d bytes: at most %d" % (len(data), MAX_TRIGGER_REPLY))
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


def trigger_reply_length(prefix):
    """The length of the reply a trigger write gets, from what has arrived of it, or None.

    A Modbus exception (FC 0x90) is 5 bytes.  A trigger reply is the 300-byte frame, then
    the 8-byte ACK, with one 00 byte between them when the slave pads (section 11.6); the
    byte after the frame tells which.  A 00 after the ACK is not waited for: it arrives
    while the master waits before its next request, and is dropped there.
    """
    if len(prefix) >= 2 and prefix[1] == 0x90:
        return 5
    if len(prefix) < 4 or bytes(prefix[:4]) != jk_frames.HEADER:
        return None
    if len(prefix) <= jk_frames.FRAME_LENGTH:
        return jk_frames.FRAME_LENGTH + ACK_LENGTH
    if prefix[jk_frames.FRAME_LENGTH] == 0:
        return jk_frames.FRAME_LENGTH + 1 + ACK_LENGTH
    return jk_frames.FRAME_LENGTH + ACK_LENGTH
