"""The PTY RS485 bus: pacing, multi-drop delivery, collisions, every fault, capture.

Timing is checked on the bus's own clock (transmit/deliver_due take the time
as an argument), never against the wall clock; the one real-time test measures
the protocol's own property (no silence inside a frame) at a receiver.
"""

import json
import os
import subprocess
import sys
import threading
import time

import pytest
import serial

from hil.trace import Trace
from hil.wires.rs485 import BusError, Fault, Rs485Bus

REQUEST = bytes.fromhex("00041000001934D1")


@pytest.fixture
def bus():
    bus = Rs485Bus("inverter", 9600, trace=Trace(), protocol="deye", seed=1)
    for name in ("inverter", "vbms", "spy"):
        bus.add_endpoint(name)
    yield bus
    bus.stop()


def received(bus, name):
    """What has arrived at an endpoint's port so far (non-blocking)."""
    fd = os.open(bus.endpoint(name).path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    try:
        return os.read(fd, 4096)
    except BlockingIOError:
        return b""
    finally:
        os.close(fd)


def test_a_frame_arrives_whole_when_its_last_byte_is_due(bus):
    char = bus.char_s  # 10 bit times at 9600 baud
    bus.transmit("inverter", REQUEST, 0.0)
    bus.deliver_due(7.9 * char)
    assert received(bus, "vbms") == b""  # no byte before its last bit has arrived
    bus.deliver_due(8 * char)
    assert received(bus, "vbms") == REQUEST  # in one go: no silence inside the frame at the receiver
    assert received(bus, "inverter") == b""  # a sender does not hear itself


def test_a_busy_uart_queues_the_next_bytes(bus):
    char = bus.char_s
    bus.transmit("inverter", REQUEST, 0.0)
    bus.transmit("inverter", REQUEST, 0.0)  # written at once: sent after the first, back to back
    bus.deliver_due(15.9 * char)
    assert received(bus, "vbms") == b""
    bus.deliver_due(16 * char)
    assert received(bus, "vbms") == REQUEST + REQUEST
    assert len(bus.trace.records) == 0  # one burst on the wire, still open


def test_a_frame_written_in_pieces_stays_together(bus):
    char = bus.char_s
    bus.transmit("inverter", REQUEST[:3], 0.0)
    bus.transmit("inverter", REQUEST[3:], 2 * char)  # the UART still sends the first piece
    bus.deliver_due(3 * char)
    assert received(bus, "vbms") == b""
    bus.deliver_due(8 * char)
    assert received(bus, "vbms") == REQUEST
    bus.deliver_due(1.0)
    assert [record["hex"] for record in bus.trace.records] == [REQUEST.hex().upper()]


def test_frames_apart_by_t3_5_are_two_frames(bus):
    char = bus.char_s
    bus.transmit("inverter", REQUEST, 0.0)
    bus.transmit("inverter", REQUEST, 8 * char + bus.gap_s)
    bus.deliver_due(1.0)
    assert len(bus.trace.records) == 2


def test_every_other_endpoint_receives(bus):
    bus.transmit("vbms", REQUEST, 0.0)
    bus.deliver_due(1.0)
    assert received(bus, "inverter") == REQUEST and received(bus, "spy") == REQUEST


def test_overlapping_senders_collide_and_both_are_garbled(bus):
    char = bus.char_s
    bus.transmit("inverter", REQUEST, 0.0)
    bus.transmit("vbms", REQUEST, 2 * char)
    bus.deliver_due(1.0)
    assert bus.collisions and bus.collisions[0][1:] == ("inverter", "vbms")
    heard_by_spy = received(bus, "spy")
    assert len(heard_by_spy) == 16 and heard_by_spy != REQUEST + REQUEST
    assert received(bus, "vbms")[:2] == REQUEST[:2] and received(bus, "vbms")[2:] != REQUEST[2:]
    assert all(record.get("collision") for record in bus.trace.records)


def test_drop_affects_count_frames_then_expires(bus):
    bus.add_fault(Fault("drop", source="inverter", count=1))
    bus.transmit("inverter", REQUEST, 0.0)
    bus.transmit("inverter", REQUEST, 0.1)
    bus.deliver_due(1.0)
    assert received(bus, "vbms") == REQUEST
    assert bus.faults == []


def test_corrupt_flips_one_bit_for_one_receiver(bus):
    bus.add_fault(Fault("corrupt", source="inverter", target="vbms", bit=8 * 5 + 3))
    bus.transmit("inverter", REQUEST, 0.0)
    bus.deliver_due(1.0)
    corrupt = bytearray(REQUEST)
    corrupt[5] ^= 1 << 3
    assert received(bus, "vbms") == bytes(corrupt)
    assert received(bus, "spy") == REQUEST


def test_delay_moves_the_frame_later(bus):
    bus.add_fault(Fault("delay", source="inverter", delay_s=0.5))
    bus.transmit("inverter", REQUEST, 0.0)
    bus.deliver_due(0.49)
    assert received(bus, "vbms") == b""
    bus.deliver_due(0.51)
    assert received(bus, "vbms") == REQUEST


def test_noise_comes_before_the_frame_and_is_captured(bus):
    bus.add_fault(Fault("noise", source="inverter", count=1, noise_bytes=5))
    bus.transmit("inverter", REQUEST, 0.0)
    bus.deliver_due(1.0)
    data = received(bus, "vbms")
    assert len(data) == 13 and data[5:] == REQUEST
    assert [r["from"] for r in bus.trace.records][:1] == ["noise"]


def test_disconnect_cuts_both_ways_and_can_be_switched_off(bus):
    fault = bus.add_fault(Fault("disconnect", source="vbms"))
    bus.transmit("inverter", REQUEST, 0.0)
    bus.transmit("vbms", REQUEST, 0.5)
    bus.deliver_due(1.0)
    assert received(bus, "vbms") == b"" and received(bus, "inverter") == b""
    bus.remove_fault(fault)
    bus.transmit("inverter", REQUEST, 2.0)
    bus.deliver_due(3.0)
    assert received(bus, "vbms") == REQUEST


def test_clear_faults_switches_everything_off(bus):
    bus.add_fault(Fault("drop", source="inverter"))
    bus.add_fault(Fault("disconnect", source="vbms"))
    bus.clear_faults()
    bus.transmit("inverter", REQUEST, 0.0)
    bus.deliver_due(1.0)
    assert received(bus, "vbms") == REQUEST


def test_probability_is_seeded_and_repeatable():
    outcomes = []
    for _ in range(2):
        bus = Rs485Bus("b", 9600, seed=42)
        bus.add_endpoint("a")
        bus.add_endpoint("b")
        bus.add_fault(Fault("drop", source="a", probability=0.5))
        for index in range(20):
            bus.transmit("a", b"\x01", index * 0.1)
        bus.deliver_due(10.0)
        outcomes.append(received(bus, "b"))
        bus.stop()
    assert outcomes[0] == outcomes[1] and 0 < len(outcomes[0]) < 20


def test_capture_records_decoded_frames(bus):
    bus.transmit("inverter", REQUEST, 0.0)
    bus.transmit("vbms", bytes.fromhex("018402C2C1"), 0.1)
    bus.deliver_due(1.0)
    first, second = bus.trace.records
    assert first["from"] == "inverter" and first["hex"] == REQUEST.hex().upper()
    assert first["decoded"]["function_name"] == "read_input_registers"
    assert second["decoded"]["exception"] == "illegal_data_address"


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda b: b.add_fault(Fault("drop", source="nobody")), "no endpoint"),
        (lambda b: Fault("explode"), "unknown fault"),
        (lambda b: Fault("disconnect"), "names the endpoint"),
        (lambda b: Fault("drop", probability=2), "within 0..1"),
        (lambda b: b.add_endpoint("vbms"), "already has"),
    ],
)
def test_misuse_is_explained(bus, make, message):
    with pytest.raises(BusError, match=message):
        make(bus)


def test_real_ports_through_the_bus_thread(bus):
    bus.start()
    with (
        serial.Serial(bus.endpoint("inverter").path, 9600, timeout=2) as inverter,
        serial.Serial(bus.endpoint("vbms").path, 9600, timeout=2) as vbms,
    ):
        payload = bytes(range(256))
        inverter.write(payload)
        assert vbms.read(256) == payload
        time.sleep(0.05)
        vbms.write(REQUEST)
        assert inverter.read(8) == REQUEST


# --- timing on a loaded host ---------------------------------------------------------------

READER = """
import json, os, select, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_NOCTTY)
wanted, data, reads = int(sys.argv[2]), bytearray(), []
print("ready", flush=True)
deadline = time.monotonic() + 60
while len(data) < wanted and time.monotonic() < deadline:
    if select.select([fd], [], [], 0.5)[0]:
        chunk = os.read(fd, 4096)
        reads.append((time.monotonic(), len(chunk)))
        data.extend(chunk)
print(json.dumps({"reads": reads, "hex": data.hex()}))
"""


def silences_inside_frames(reads, lengths, char_s):
    """The silence between consecutive reads inside each frame (less the character the later read
    completes), from a receiver's timestamped reads and the lengths of the frames sent."""
    silences = []
    frame, left, last_s = 0, lengths[0], None
    for t_s, count in reads:
        while count and frame < len(lengths):
            if last_s is not None:
                silences.append(t_s - last_s - char_s)
            taken = min(count, left)
            count, left, last_s = count - taken, left - taken, t_s
            if left == 0:
                frame += 1
                left = lengths[frame] if frame < len(lengths) else 0
                last_s = None
    return silences, frame


def test_no_silence_inside_a_frame_under_load_with_tracing(tmp_path):
    """Modbus RTU allows at most 1.5 character times of silence inside a frame, and a receiver
    drops a frame at t3.5.  Measured by a receiver in a process of its own (as the device under
    test is), with its own clock, while a busy process per core and a busy thread in the bus's
    process (the bench's other threads) compete with the bus thread, and the trace goes to a file."""
    lengths = [8, 55, 105, 308] * 5  # a DEYE request and reply, a BYD reply, a JK-PB reply
    frames = [bytes((index * 7 + length) & 0xFF for index in range(length)) for length in lengths]
    trace = Trace(str(tmp_path / "trace.jsonl"), {"inverter": "deye"})
    bus = Rs485Bus("inverter", 9600, trace=trace, protocol="deye").start()
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(max(2, os.cpu_count() or 2))]
    stop = threading.Event()

    def spin():  # holds the GIL as a decoding or pymodbus thread would
        while not stop.is_set():
            sum(range(10_000))

    spinner = threading.Thread(target=spin, daemon=True)
    spinner.start()
    try:
        sender = os.open(bus.add_endpoint("inverter").path, os.O_RDWR | os.O_NOCTTY)
        path = bus.add_endpoint("vbms").path
        reader = subprocess.Popen(
            [sys.executable, "-c", READER, path, str(sum(lengths))], stdout=subprocess.PIPE, text=True
        )
        assert reader.stdout.readline().strip() == "ready"
        for count, frame in enumerate(frames, 1):
            os.write(sender, frame)
            time.sleep(len(frame) * bus.char_s + 0.015)  # then a silence of several t3.5
            # as a UART's sender waits for its frame to leave: a bus thread that the load holds up
            # must not get the next frame before this one is on the wire and closed
            deadline = time.monotonic() + 5
            while bus.frames < count and time.monotonic() < deadline:
                time.sleep(0.002)
        result = json.loads(reader.communicate(timeout=60)[0])
        os.close(sender)
    finally:
        stop.set()
        for hog in hogs:
            hog.kill()
            hog.wait()
        spinner.join()
        bus.stop()
        trace.close()
    assert bytes.fromhex(result["hex"]) == b"".join(frames)
    silences, whole = silences_inside_frames(result["reads"], lengths, bus.char_s)
    assert whole == len(frames)
    assert max(silences, default=0.0) < 0.5 * 1.5 * bus.char_s, sorted(silences)[-5:]
    assert len(trace.records) == len(frames)  # and the trace kept up
