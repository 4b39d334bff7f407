"""The PTY RS485 bus: pacing, multi-drop delivery, collisions, every fault, capture.

Timing is checked on the bus's own clock (transmit/deliver_due take the time
as an argument), never against the wall clock.
"""

import os
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


def test_bytes_arrive_one_character_time_apart(bus):
    char = bus.char_s
    bus.transmit("inverter", REQUEST, 0.0)
    bus.deliver_due(3.5 * char)
    assert received(bus, "vbms") == REQUEST[:3]
    bus.deliver_due(8 * char)
    assert received(bus, "vbms") == REQUEST[3:]
    assert received(bus, "inverter") == b""  # a sender does not hear itself


def test_a_busy_uart_queues_the_next_bytes(bus):
    char = bus.char_s
    bus.transmit("inverter", REQUEST, 0.0)
    bus.transmit("inverter", REQUEST, 0.0)  # written at once: sent after the first
    bus.deliver_due(12 * char)
    assert received(bus, "vbms") == REQUEST + REQUEST[:4]


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
