"""BYD PRO: hand-built vectors, requests, checks, and the simulator's encoder."""

import pytest
from conftest import VECTORS

from vbms_core import byd
from vbms_core.dissect import dissect
from vbms_core.errors import RemoteProtocolError


@pytest.mark.parametrize("vector", VECTORS["byd_responses"], ids=lambda v: v["id"])
def test_hand_built_responses(vector):
    result = dissect("byd-pro", bytes.fromhex(vector["hex"]))
    assert result["direction"] == "response"
    for name, value in vector["expect"].items():
        assert result[name] == value, name


def test_alarm_bits_are_named():
    vector = next(v for v in VECTORS["byd_responses"] if v["id"] == "BYD-R2")
    result = dissect("byd-pro", bytes.fromhex(vector["hex"]))
    assert result["alarm_names"] == ["cell_voltage_low", "soc_low"]
    assert result["protect_names"] == ["discharge_short_circuit"]
    assert result["fail_names"] == ["temperature_sensor"]
    assert result["battery_state_names"] == ["discharging"]


@pytest.mark.parametrize("vector", VECTORS["byd_requests"], ids=lambda v: v["id"])
def test_requests_match_the_reference(vector):
    address = int(vector["hex"][:2], 16)
    assert byd.encode_request(address).hex().upper() == vector["hex"]
    assert dissect("byd-pro", bytes.fromhex(vector["hex"])) == {
        "direction": "request",
        "address": address,
        "command": 3,
        "protocol": "byd-pro",
        "frame_length": 8,
    }


def test_encoder_round_trip_through_the_decoder():
    fields = byd.decode_response(bytes.fromhex(VECTORS["byd_responses"][1]["hex"])).fields
    again = byd.encode_response(2, fields)
    assert again.hex().upper() == VECTORS["byd_responses"][1]["hex"]


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda f: f[:-1], "length field"),
        (lambda f: f[:-1] + bytes([(f[-1] + 1) & 0xFF]), "checksum"),
        (lambda f: f[:3] + b"\x02" + f[4:], "version"),
        (lambda f: f[:50], "length field"),
        (lambda f: f[:4] + b"\x84" + f[5:-1] + bytes([(f[-1] + 1) & 0xFF]), "not a status reply"),
    ],
)
def test_bad_responses_are_rejected(mutate, message):
    frame = bytes.fromhex(VECTORS["byd_responses"][0]["hex"])
    with pytest.raises(RemoteProtocolError, match=message):
        byd.decode_response(mutate(frame))
