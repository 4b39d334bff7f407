"""Golden transcript: bytes in, results out, through vbms_core.

Runs unchanged on CPython and on MicroPython (the parity test runs it on both
and requires identical output).  main(golden_dir, emit) calls emit(line) once
per case with a canonical JSON line: sorted keys, ASCII only, so that both
interpreters must produce the very same text.
"""

import json

from vbms_core import app, battery, byd, compat, deye, events, jk_ble, jk_frames, jk_pb, modbus, soc
from vbms_core.dissect import dissect, guess_protocol
from vbms_core.errors import ProtocolError, RemoteProtocolError


def canon(value):
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        # 12 significant digits: MicroPython's repr is not the shortest round trip (0.009 prints as
        # 0.008999999999999999 there), so the same double must not be compared by its repr
        return "%.12g" % value
    if isinstance(value, str):
        out = ['"']
        for char in value:
            code = ord(char)
            if char == '"' or char == "\\":
                out.append("\\" + char)
            elif 0x20 <= code < 0x7F:
                out.append(char)
            else:
                out.append("\\u%04x" % code)
        out.append('"')
        return "".join(out)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(canon(item) for item in value) + "]"
    if isinstance(value, dict):
        keys = sorted(value)
        return "{" + ",".join(canon(str(key)) + ":" + canon(value[key]) for key in keys) + "}"
    if isinstance(value, (bytes, bytearray, memoryview)):
        return canon(hexs(value))
    raise TypeError("value of type %s has no canonical form" % type(value).__name__)


def hexs(raw):
    return "".join("%02X" % byte for byte in bytes(raw))


def unhex(text):
    return bytes(int(text[i : i + 2], 16) for i in range(0, len(text), 2))


def outcome(function, *args):
    """A function's result, or its protocol error as data."""
    try:
        return {"ok": function(*args)}
    except ProtocolError as error:
        return {"error": type(error).__name__, "message": str(error)}


class Lcg:
    """A portable pseudo-random generator (same numbers on every interpreter)."""

    def __init__(self, seed):
        self.state = seed & 0x7FFFFFFF

    def next(self):
        self.state = (1103515245 * self.state + 12345) & 0x7FFFFFFF
        return self.state >> 8

    def below(self, limit):
        return self.next() % limit

    def randbytes(self, count):
        return bytes(self.below(256) for _ in range(count))


def reassemble(chunks):
    """Run chunks through a JkReassembler; events as data."""
    reassembler = jk_ble.JkReassembler()
    events = []
    for chunk in chunks:
        reassembler.feed(chunk)
        while True:
            event = reassembler.next_event()
            if event is modbus.NEED_DATA:
                break
            if isinstance(event, jk_ble.JkFrame):
                events.append(["frame", hexs(event.raw[:6]), event.raw[299]])
            else:
                events.append(["junk", event.length, event.kinds])
    reassembler.flush()
    event = reassembler.next_event()
    if event is not modbus.NEED_DATA:
        events.append(["junk_at_end", event.length, event.kinds])
    events.append(
        ["pending", reassembler.pending(), "frames", reassembler.frames, "junk_bytes", reassembler.junk_bytes]
    )
    return events


def protocol_for(frame_id, kind):
    if frame_id[0] == "U":
        return "jk-4e57"
    if frame_id[0] == "R":
        return "jk-pb"
    return "jk-ble"


def jk_cases(golden_dir, emit):
    with open(golden_dir + "/jk_frames.json") as handle:
        frames = json.load(handle)["frames"]
    for frame in frames:
        raw = unhex(frame["hex"])
        protocol = protocol_for(frame["id"], frame["kind"])
        emit({"case": "dissect", "id": frame["id"], "result": outcome(dissect, protocol, raw)})
        if protocol == "jk-ble" and raw[:4] == jk_frames.HEADER:
            for layout in jk_frames.LAYOUTS:
                emit(
                    {
                        "case": "dissect_layout",
                        "id": frame["id"],
                        "layout": layout,
                        "result": outcome(dissect, protocol, raw[:300], layout),
                    }
                )
            emit(
                {"case": "bytewise", "id": frame["id"], "events": reassemble([raw[i : i + 1] for i in range(len(raw))])}
            )
            emit({"case": "trailing", "id": frame["id"], "events": reassemble([b"AT\r\n" + raw + b"\x00\x01\x02"])})
            decoded = jk_frames.decode_frame(raw)
            if decoded["frame_type"] == "cell_info":
                emit({"case": "reading", "id": frame["id"], "reading": battery.from_jk(decoded).as_dict()})
        # every single-byte corruption of the first 40 bytes and the checksum area
        rejected = []
        for position in list(range(min(len(raw), 40))) + [len(raw) - 1]:
            corrupt = bytearray(raw)
            corrupt[position] ^= 0x5A
            result = outcome(dissect, protocol, bytes(corrupt))
            rejected.append(result.get("message", "accepted"))
        emit({"case": "corrupt", "id": frame["id"], "results": rejected})


def byd_deye_cases(golden_dir, emit):
    with open(golden_dir + "/byd_deye_vectors.json") as handle:
        vectors = json.load(handle)
    for vector in vectors["byd_responses"] + vectors["byd_requests"]:
        emit({"case": "dissect", "id": vector["id"], "result": outcome(dissect, "byd-pro", unhex(vector["hex"]))})
    for vector in vectors["deye"]:
        emit({"case": "dissect", "id": vector["id"], "result": outcome(dissect, "deye", unhex(vector["hex"]))})
    for vector in vectors["modbus"]:
        emit({"case": "dissect", "id": vector["id"], "result": outcome(dissect, "modbus", unhex(vector["hex"]))})
        emit({"case": "dissect_jkpb", "id": vector["id"], "result": outcome(dissect, "jk-pb", unhex(vector["hex"]))})

    # The DEYE slave answering from BYD and JK readings.
    slave = deye.DeyeSlave(stale_us=10000000)
    first = byd.decode_response(unhex(vectors["byd_responses"][0]["hex"]))
    second = byd.decode_response(unhex(vectors["byd_responses"][1]["hex"]))
    identity = deye.encode_identity("BYD PRO 2.5", "BYD12345678901234567")
    for unit, status in ((0, first), (1, second)):
        reading = battery.from_byd(status.fields)
        emit({"case": "reading", "id": "byd-unit-%d" % unit, "reading": reading.as_dict()})
        registers = deye.registers_from_reading(reading, 55800, 50000)
        emit({"case": "registers", "id": "byd-unit-%d" % unit, "registers": registers})
        slave.set_unit(unit, registers, identity, 1000000)
    with open(golden_dir + "/jk_frames.json") as handle:
        frames = json.load(handle)["frames"]
    unit = 2
    for frame in frames:
        if frame["kind"] in ("cell24", "cell32", "cell04"):
            reading = battery.from_jk(jk_frames.decode_frame(unhex(frame["hex"])))
            registers = deye.registers_from_reading(reading, 55200, 100000)
            emit({"case": "registers", "id": "jk-" + frame["id"], "registers": registers})
            if unit <= deye.MAX_UNIT:
                slave.set_unit(unit, registers, deye.encode_identity("JK " + frame["id"], frame["id"]), 2000000)
                unit += 1
    requests = []
    for unit in range(0, 17):
        requests.append(modbus.encode_read_request(unit, modbus.READ_INPUT, 0x1000, 25))
        requests.append(modbus.encode_report_id_request(unit))
    for address, count in ((0x1000, 1), (0x1018, 1), (0x1018, 2), (0x0FFF, 2), (0x1005, 3), (0x1000, 125)):
        requests.append(modbus.encode_read_request(0, modbus.READ_INPUT, address, count))
    requests.append(modbus.with_crc(bytes((0, 4, 0x10, 0, 0, 0))))  # quantity 0
    requests.append(modbus.with_crc(bytes((0, 4, 0x10, 0, 0, 126))))  # quantity 126
    requests.append(modbus.encode_read_request(0, modbus.READ_HOLDING, 0x1000, 25))
    requests.append(modbus.encode_write_single(1, 0x1000, 5))
    requests.append(modbus.with_crc(bytes((0, 0x2B, 0x0E, 1, 0))))
    requests.append(unhex("00041000001934D0"))  # bad CRC
    requests.append(unhex("0004"))
    for now_us in (1500000, 11000000, 12500000):
        for request in requests:
            reply = slave.handle(request, now_us)
            emit(
                {
                    "case": "deye_slave",
                    "now_us": now_us,
                    "request": hexs(request),
                    "reply": None if reply is None else hexs(reply),
                    "reason": slave.reason,
                    "exception": slave.exception_code,
                }
            )


def framer_cases(emit):
    framer = modbus.RtuFramer(9600)
    request = unhex("00041000001934D1")
    schedule = [
        (request, 8 * 1042),
        (request[:3], 30000),
        (request[3:], 30000 + 5 * 1042),
        (request, 32000 + 5 * 1042 + 8 * 1042),  # no gap: merged with the previous frame
        (b"\xff" * 300, 100000 + 300 * 1042),  # 300 bytes back to back: overflow
        (request, 800000),
    ]
    events = []
    for data, end_us in schedule:
        framer.feed(data, end_us)
        while True:
            event = framer.next_event(end_us)
            if event is modbus.NEED_DATA:
                break
            events.append([hexs(event.raw), event.start_us, event.end_us, event.ok])
    event = framer.next_event(10000000)
    if event is not modbus.NEED_DATA:
        events.append([hexs(event.raw), event.start_us, event.end_us, event.ok])
    emit({"case": "framer", "events": events})


def fuzz_cases(emit):
    generator = Lcg(20261125)
    protocols = ("jk-ble", "jk-pb", "jk-4e57", "byd-pro", "deye", "modbus")
    prefixes = (
        b"",
        b"\x55\xaa\xeb\x90",
        b"\xaa\x55\x90\xeb",
        b"\x4e\x57",
        b"\x01\x00\x65\x01\x83\x55\xaa",
        b"\x00\x04",
    )
    for index in range(240):
        protocol = protocols[index % len(protocols)]
        prefix = prefixes[generator.below(len(prefixes))]
        body = generator.randbytes(generator.below(330))
        frame = prefix + body
        if frame and generator.below(3) == 0 and len(frame) >= 4:
            frame = modbus.with_crc(frame[:-2])
        result = outcome(dissect, protocol, frame)
        emit({"case": "fuzz", "index": index, "protocol": protocol, "result": result.get("message", "accepted")})
    chunks = [generator.randbytes(generator.below(40)) for _ in range(60)]
    emit({"case": "fuzz_reassembler", "events": reassemble(chunks)})


def reading_cases(golden_dir, emit):
    """The SOC estimate, JK-PB register reads, what a frame is, and every alarm translation."""
    with open(golden_dir + "/jk_frames.json") as handle:
        frames = dict((f["id"], unhex(f["hex"])) for f in json.load(handle)["frames"])
    for chemistry in ("lfp", "nmc", "lto"):
        emit({"case": "ocv", "chemistry": chemistry,
              "socs": [soc.soc_from_ocv(mv, chemistry) for mv in range(1800, 4400, 37)]})  # fmt: skip
    for cells in (4, 8, 13, 14, 15, 16, 20, 24):
        emit({"case": "chemistry", "cells": cells,
              "detected": [soc.detect_chemistry([mv] * cells) for mv in range(2000, 4300, 100)]})  # fmt: skip
    jk04 = battery.from_jk(jk_frames.decode_frame(frames["B42"]))
    emit({"case": "estimate", "reading": soc.estimate_soc(jk04, "auto").as_dict()})
    generator = Lcg(7)
    for _ in range(12):
        bits = [generator.next() & 0xFFFFFFFF for _ in range(1 + generator.below(24))]
        emit({"case": "f32_sum", "bits": bits, "sum": compat.f32_sum_scaled(bits, 1000)})
    for frame_id, base in (("R02", jk_pb.LIVE_BLOCK), ("R04", jk_pb.SETTINGS_BLOCK), ("B10", jk_pb.DEVICE_BLOCK)):
        image = jk_pb.image_from_frame(frames[frame_id])
        emit({"case": "jk_pb_registers", "id": frame_id, "wire": jk_pb.wire_image(image, base),
              "first": list(jk_pb.registers_from_image(image, base, 40, base))})  # fmt: skip
    for frame_id in sorted(frames):
        emit({"case": "guess", "id": frame_id, "protocol": guess_protocol(frames[frame_id])})
    for table in ("BYD_ALARM_TO_DEYE", "BYD_PROTECT_TO_DEYE", "BYD_FAIL_TO_DEYE", "JK_ERROR_TO_DEYE",
                  "JK4E57_WARNING_TO_DEYE"):  # fmt: skip
        rows = getattr(battery, table)
        emit({"case": "translate", "table": table,
              "words": [list(battery.translate(1 << bit, rows)) for bit in range(32)]})  # fmt: skip


def app_cases(golden_dir, emit):
    """The proxy state machine fed golden bytes; every action and answer recorded."""
    with open(golden_dir + "/byd_deye_vectors.json") as handle:
        vectors = json.load(handle)
    with open(golden_dir + "/jk_frames.json") as handle:
        frames = dict((f["id"], unhex(f["hex"])) for f in json.load(handle)["frames"])
    replies = [unhex(v["hex"]) for v in vectors["byd_responses"][:2]]
    settings = {
        "rpc.auth_token": "token",
        "app.stale_s": 3,
        "bms0.type": 1,
        "bms0.addr": "1",
        "bms1.type": 1,
        "bms1.addr": "2",
        "bms2.type": 2,
        "bms2.addr": "c8:47:8c:00:00:02",
        "bms2.voltage": 56.4,
        "bms3.type": 3,
        "bms3.addr": "9",
        "mqtt.enable": True,
        "mqtt.server": "broker:1883",
    }
    proxy = app.Proxy(settings, 0)
    calls = [0]

    def record(label, now_us, actions):
        described = []
        for action in actions:
            items = [item for item in events.describe(action) if not isinstance(item, dict)]
            if isinstance(action, events.Publish) and action.payload[:1] == "{":
                # JSON text: its key order is the port's own (MicroPython's dicts are not ordered); compare values
                items[2] = json.loads(action.payload)
            described.append(items)
        emit({"case": "app", "step": label, "now_us": now_us, "actions": described,
              "deadline": proxy.next_deadline_us()})  # fmt: skip

    def feed(label, event):
        record(label, event.now_us, proxy.feed(event))

    now = 0
    for _ in range(2):
        for reply in replies:
            now += 10000  # past app.bms_gap_ms: the next request goes out
            feed("tick", events.Tick(now))
            now += 140000
            feed("bms reply part", events.BmsBytes(reply[:50], now - 1000))
            feed("bms reply", events.BmsBytes(reply[50:], now))
        # the JK-PB slot: a padded trigger reply (frame, 00, ack, 00), byte by byte
        now += 10000
        feed("tick", events.Tick(now))
        padded = frames["B19"] + b"\x00" + modbus.encode_write_multiple_response(9, 0x1620, 1) + b"\x00"
        for index in range(len(padded)):
            actions = proxy.feed(events.BmsBytes(padded[index : index + 1], now + index * 1042))
            if actions:
                record("jk-pb byte %d" % index, now, actions)
        now += 400000
        emit({"case": "app_jk_pb", "answers": proxy.slots[3].answers, "error": proxy.slots[3].error})
    feed("ble event in the wrong state", events.BleNotify(2, b"AT\r\n", now))
    feed("ble due", events.Tick(now))
    feed("ble connected", events.BleConnected(2, now))
    for frame_id in ("B10", "B11", "B12"):
        frame = frames[frame_id]
        feed("keep-alive", events.BleNotify(2, b"AT\r\n", now))  # keep-alives come between frames
        for start in range(0, 300, 128):
            feed("ble frame " + frame_id, events.BleNotify(2, frame[start : start + 128], now))
    for unit in range(4):
        feed("inverter reads unit %d" % unit,
             events.InvBytes(modbus.encode_read_request(unit, modbus.READ_INPUT, 0x1000, 25), now))  # fmt: skip
        feed("tick", events.Tick(now + 5000))
        feed("inverter identity unit %d" % unit, events.InvBytes(modbus.encode_report_id_request(unit), now + 10000))
        feed("tick", events.Tick(now + 15000))
        now += 20000
    feed("mqtt connected", events.MqttConnected(now))
    rpc_calls = (
        ("VBMS.GetSummary", {}, None),
        ("Sys.GetInfo", {}, None),
        ("Config.Get", {}, None),
        ("Config.Set", {"config": {"bms0.voltage": 99.0}}, "token"),
        ("Config.Set", {"config": {"bms0": {"voltage": 53.2}}}, "token"),
        ("Config.Set", {"config": {"bms0.voltage": 53.2}}, "wrong"),
        ("Config.Set", {"config": {"bms0.serial": "\u00c4\u00d6"}}, "token"),
        ("Config.Set", {"config": {"bms1.addr": "\u00b2"}}, "token"),
        ("Config.Set", {"config": {"a": {"b": {"c": {"d": 1}}}}}, "token"),
        ("Config.Set", {"config": {"bms2.chemistry": "lfp"}}, "token"),
        ("Config.Save", {"reboot": False}, "token"),
        ("VBMS.ScanBLE", {"seconds": 3}, None),
        ("No.Such", {}, None),
    )
    for method, params, token in rpc_calls:
        calls[0] += 1
        actions = proxy.feed(events.RpcCall(calls[0], method, params, now, token, 1700000000))
        for action in actions:
            if isinstance(action, events.RpcReply):
                result = action.result
                if isinstance(result, dict) and "bms" in result:
                    for row in result["bms"]:
                        row.pop("voltage", None)
                emit({"case": "app_rpc", "method": method, "result": result, "error": action.error})
        record("after " + method, now, actions)
    feed("scan result", events.BleScanResult([["C8:47:8C:00:00:09", "JK", -70, False]], now + 3000000))
    now += 5000000
    feed("stale read", events.InvBytes(modbus.encode_read_request(0, modbus.READ_INPUT, 0x1000, 25), now))
    feed("tick", events.Tick(now + 5000))
    emit({"case": "app_stale", "reason": proxy.deye.reason})


def main(golden_dir, emit_line):
    def emit(record):
        emit_line(canon(record))

    jk_cases(golden_dir, emit)
    byd_deye_cases(golden_dir, emit)
    framer_cases(emit)
    fuzz_cases(emit)
    reading_cases(golden_dir, emit)
    app_cases(golden_dir, emit)
    try:
        dissect("no-such-protocol", b"\x00")
    except RemoteProtocolError:
        emit({"case": "bad_protocol", "result": "remote"})
    except ProtocolError as error:
        emit({"case": "bad_protocol", "result": str(error)})
