"""One frame of any supported protocol to a JSON-serializable dict.

dissect(protocol, frame, layout=None) with protocol one of PROTOCOLS.  Invalid
input raises RemoteProtocolError (and nothing else); an unknown protocol or
layout name raises LocalProtocolError.  Runs on MicroPython too.

Every result has "protocol" and "frame_length" (bytes dissected); field names
are documented in docs/fields.md and are part of the interface.

guess_protocol(frame) names the protocol a frame belongs to by its structure
alone (for buses that carry several protocols), or None.
"""

from . import byd, deye, jk_4e57, jk_ble, jk_frames, jk_pb, modbus
from .compat import hexlify
from .errors import LocalProtocolError, RemoteProtocolError

PROTOCOLS = ("jk-ble", "jk-pb", "jk-4e57", "byd-pro", "deye", "modbus")
MAX_FRAME = 1024


def dissect(protocol, frame, layout=None):
    if protocol not in _DISSECTORS:
        raise LocalProtocolError("unknown protocol %r; choose one of %s" % (protocol, ", ".join(PROTOCOLS)))
    if layout is not None and layout != "auto" and layout not in jk_frames.LAYOUTS:
        raise LocalProtocolError("unknown layout %r; choose auto or one of %s" % (layout, ", ".join(jk_frames.LAYOUTS)))
    if layout == "auto":
        layout = None
    if not isinstance(frame, (bytes, bytearray, memoryview)):
        raise LocalProtocolError("frame must be bytes")
    frame = bytes(frame)
    if not frame:
        raise RemoteProtocolError("empty frame", raw=frame)
    if len(frame) > MAX_FRAME:
        raise RemoteProtocolError(
            "frame of %d bytes exceeds the %d-byte limit" % (len(frame), MAX_FRAME), raw=frame[:64]
        )
    result = _DISSECTORS[protocol](frame, layout)
    result["protocol"] = protocol
    result["frame_length"] = len(frame)
    return result


# --- JK ------------------------------------------------------------------------


def _command(frame):
    command = jk_ble.decode_command(frame)
    return {
        "frame_type": "command",
        "command": command.command,
        "command_name": jk_ble.COMMAND_NAMES.get(command.command, "write_register_%02x" % command.command),
        "length": command.length,
        "value": command.value,
        "value_hex": hexlify(command.value_bytes),
        "padding_hex": hexlify(command.padding),
    }


def _jk_frame(frame, layout):
    result = jk_frames.decode_frame(frame, layout)
    if len(frame) > jk_frames.FRAME_LENGTH:
        result["trailing_hex"] = hexlify(frame[jk_frames.FRAME_LENGTH :])
    return result


def _jk_ble(frame, layout):
    if frame[:4] == jk_ble.COMMAND_HEADER:
        return _command(frame)
    if frame[:4] == jk_frames.HEADER:
        return _jk_frame(frame, layout)
    raise RemoteProtocolError("neither a JK command (AA5590EB) nor a JK frame (55AAEB90)", raw=frame, offset=0)


def _jk_pb(frame, layout):
    if frame[:4] == jk_frames.HEADER:
        reply = jk_pb.decode_trigger_reply(frame)
        result = jk_frames.decode_frame(reply.frame, layout or jk_frames.JK02_32S)
        if reply.ack is not None:
            result["ack"] = {"unit": reply.ack.unit, "register": reply.ack.address, "count": reply.ack.count}
            result["padding_bytes"] = reply.padding
        return result
    result = _modbus(frame, None)
    register = result.get("address")
    if register is not None:
        if register in jk_pb.TRIGGERS and result["function"] == modbus.WRITE_MULTIPLE:
            result["trigger"] = jk_pb.TRIGGERS[register][0]
        block = jk_pb.block_of(register)
        if block is not None:
            result["block"] = jk_pb.BLOCK_NAMES[block]
            result["block_offset"] = register - block
    return result


def _jk_4e57(frame, layout):
    return jk_4e57.decode(frame)


# --- BYD -----------------------------------------------------------------------


def _byd(frame, layout):
    if len(frame) == byd.REQUEST_LENGTH:
        request = byd.decode_request(frame)
        return {"direction": "request", "address": request.address, "command": request.command}
    status = byd.decode_response(frame)
    result = {"direction": "response", "address": status.address, "result": status.result}
    if status.fields is not None:
        for name in status.fields:
            result[name] = status.fields[name]
        described = byd.describe(status.fields)
        for name in described:
            result[name] = described[name]
    return result


# --- Modbus and DEYE -------------------------------------------------------------


def _modbus_request(frame):
    event = modbus.decode_request(frame)
    result = {"direction": "request", "unit": event.unit, "function": event.function}
    if isinstance(event, modbus.ReadRequest):
        result["address"] = event.address
        result["count"] = event.count
    elif isinstance(event, modbus.WriteSingle):
        result["address"] = event.address
        result["value"] = event.value
    elif isinstance(event, modbus.WriteMultipleRequest):
        result["address"] = event.address
        result["values"] = list(event.values)
    elif isinstance(event, modbus.UnknownRequest):
        result["data_hex"] = hexlify(event.data)
    return result


def _modbus_response(frame):
    event = modbus.decode_response(frame)
    result = {"direction": "response", "unit": event.unit, "function": event.function}
    if isinstance(event, modbus.ExceptionResponse):
        result["direction"] = "exception"
        result["exception_code"] = event.code
        result["exception"] = modbus.EXCEPTION_NAMES.get(event.code, "unknown")
    elif isinstance(event, modbus.ReadResponse):
        result["registers"] = list(event.registers)
    elif isinstance(event, modbus.WriteMultipleResponse):
        result["address"] = event.address
        result["count"] = event.count
    elif isinstance(event, modbus.ReportIdResponse):
        result["data_hex"] = hexlify(event.data)
    return result


def _looks_like_response(frame):
    """Tell a request from a response by the frame's own structure."""
    function = frame[1]
    if function & 0x80:
        return True
    if function in (modbus.READ_HOLDING, modbus.READ_INPUT):
        # A response is 5 bytes plus an even byte count; a request (8 bytes)
        # could only match with an odd byte 2, which no response has.
        return len(frame) == 5 + frame[2] and frame[2] % 2 == 0
    if function == modbus.REPORT_ID:
        return len(frame) != 4
    if function == modbus.WRITE_MULTIPLE:
        return len(frame) == 8
    return False


def _modbus(frame, layout):
    modbus.check_crc(frame)
    if len(frame) >= 3 and _looks_like_response(frame):
        result = _modbus_response(frame)
    else:
        result = _modbus_request(frame)
    result["function_name"] = modbus.FUNCTION_NAMES.get(result["function"], "function_%02x" % result["function"])
    return result


def _deye(frame, layout):
    result = _modbus(frame, None)
    function = result["function"]
    if result["direction"] == "request" and function == modbus.READ_INPUT:
        result["battery"] = result["unit"] + 1
        result["registers_named"] = [
            deye.REGISTER_MAP[address - deye.FIRST_REGISTER][2]
            for address in range(result["address"], result["address"] + result["count"])
            if deye.FIRST_REGISTER <= address <= deye.LAST_REGISTER
        ]
    elif result["direction"] == "response" and function == modbus.READ_INPUT:
        # A response does not say where the read started: DEYE reads from 0x1000.
        result["battery"] = result["unit"] + 1
        result["values"] = deye.named_registers(deye.FIRST_REGISTER, result["registers"])
    elif result["direction"] == "response" and function == modbus.REPORT_ID:
        result["battery"] = result["unit"] + 1
        result["identity"] = deye.decode_identity(bytes(frame[3:-2]))
    return result


_DISSECTORS = {
    "jk-ble": _jk_ble,
    "jk-pb": _jk_pb,
    "jk-4e57": _jk_4e57,
    "byd-pro": _byd,
    "deye": _deye,
    "modbus": _modbus,
}


# --- what a frame is, whatever bus it was heard on ----------------------------------

# Registers a JK-PB master writes or reads: the trigger and control block, and the
# three readable blocks (jk-protocols.md 11.3).
_JK_PB_FIRST = jk_pb.SETTINGS_BLOCK
_JK_PB_END = jk_pb.CONTROL_BLOCK + jk_pb.BLOCK_SIZE


def _modbus_register(frame):
    """The register a request or a write acknowledgement names, or None."""
    function = frame[1]
    if len(frame) < 8:
        return None
    if function in (modbus.READ_HOLDING, modbus.READ_INPUT) and not _looks_like_response(frame):
        return (frame[2] << 8) | frame[3]
    if function in (modbus.WRITE_SINGLE, modbus.WRITE_MULTIPLE):
        return (frame[2] << 8) | frame[3]
    return None


def guess_protocol(frame):
    """The protocol a single frame belongs to, by its own structure, or None.

    For a bus that carries several device types (a BMS bus with BYD modules,
    JK-PB and 4E57 packs): "jk-pb" for a 55AA frame (a trigger reply, with or
    without its ACK) and for Modbus frames at JK-PB registers (trigger writes
    and their FC 0x10 ACKs, FC 0x03 reads); "jk-ble" for an AA5590EB command;
    "jk-4e57" for a 4E57 frame; "byd-pro" for a frame with the BYD version and
    marker bytes; "deye" for an FC 0x04 or 0x11 frame; "modbus" for any other
    frame with a valid CRC.  Does not decode: dissect() still judges the frame.
    """
    frame = bytes(frame)
    if frame[:4] == jk_frames.HEADER:
        return "jk-pb"
    if frame[:4] == jk_ble.COMMAND_HEADER:
        return "jk-ble"
    if frame[:2] == jk_4e57.STX:
        return "jk-4e57"
    if len(frame) >= byd.REQUEST_LENGTH and frame[3] == byd.VERSION and frame[5:7] == byd.MARKER:
        return "byd-pro"
    if len(frame) < 4:
        return None
    try:
        modbus.check_crc(frame)
    except RemoteProtocolError:
        return None
    register = _modbus_register(frame)
    function = frame[1] & 0x7F
    if register is not None and _JK_PB_FIRST <= register < _JK_PB_END and function != modbus.READ_INPUT:
        return "jk-pb"
    if function in (modbus.READ_INPUT, modbus.REPORT_ID):
        return "deye"
    return "modbus"
