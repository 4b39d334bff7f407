"""Property tests: any bytes either decode or raise RemoteProtocolError; round trips."""

from conftest import JK_FRAMES
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vbms_core import byd, deye, jk_ble, jk_frames, modbus
from vbms_core.dissect import PROTOCOLS, dissect
from vbms_core.errors import RemoteProtocolError
from vbms_core.modbus import NEED_DATA

REAL = [bytes.fromhex(f["hex"]) for f in JK_FRAMES]
PREFIXES = [
    b"",
    b"\x55\xaa\xeb\x90",
    b"\xaa\x55\x90\xeb",
    b"\x4e\x57",
    b"\x01\x00\x65\x01\x83\x55\xaa",
    b"\x00\x04\x10\x00",
]

frames = st.one_of(
    st.binary(max_size=400),
    st.builds(lambda p, b: p + b, st.sampled_from(PREFIXES), st.binary(max_size=400)),
    st.builds(lambda b: modbus.with_crc(b), st.binary(min_size=2, max_size=254)),
    # real frames with a few bytes changed, cut or extended
    st.builds(
        lambda frame, edits, cut: bytes(
            (byte ^ edits.get(index, 0)) for index, byte in enumerate(frame[: cut or len(frame)])
        ),
        st.sampled_from(REAL),
        st.dictionaries(st.integers(0, 320), st.integers(1, 255), max_size=4),
        st.integers(0, 330),
    ),
)


@settings(max_examples=1500, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    protocol=st.sampled_from(PROTOCOLS), frame=frames, layout=st.sampled_from([None, "JK02_24S", "JK02_32S", "JK04"])
)
def test_dissect_returns_or_raises_remote_protocol_error(protocol, frame, layout):
    try:
        result = dissect(protocol, frame, layout)
    except RemoteProtocolError:
        return
    assert result["protocol"] == protocol


@settings(max_examples=300, deadline=None)
@given(chunks=st.lists(st.one_of(st.binary(max_size=160), st.sampled_from(REAL)), max_size=30))
def test_reassembler_never_raises_and_stays_bounded(chunks):
    reassembler = jk_ble.JkReassembler()
    for chunk in chunks:
        reassembler.feed(chunk)
        assert reassembler.pending() < jk_frames.FRAME_LENGTH
        while (event := reassembler.next_event()) is not NEED_DATA:
            if isinstance(event, jk_ble.JkFrame):
                jk_frames.check_frame(event.raw)


@settings(max_examples=300, deadline=None)
@given(adu=st.binary(max_size=300), now=st.integers(0, 20_000_000))
def test_deye_slave_never_raises(adu, now):
    slave = deye.DeyeSlave(10_000_000)
    slave.set_unit(0, [0] * 25, deye.encode_identity("M", "S"), 0)
    reply = slave.handle(adu, now)
    if reply is not None:
        assert modbus.decode_response(bytes(reply)).unit == adu[0]


@given(
    unit=st.integers(0, 255),
    function=st.sampled_from([3, 4]),
    registers=st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=125),
)
def test_modbus_read_response_round_trip(unit, function, registers):
    event = modbus.decode_response(modbus.encode_read_response(unit, function, registers))
    assert (event.unit, event.function, list(event.registers)) == (unit, function, registers)


@given(address=st.integers(0, 0xFFFF), values=st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=123))
def test_modbus_write_round_trip(address, values):
    event = modbus.decode_request(modbus.encode_write_multiple_request(1, address, values))
    assert (event.address, list(event.values)) == (address, values)


cells = st.lists(st.integers(1, 0xFFFF), min_size=1, max_size=24)


@given(
    layout=st.sampled_from(["JK02_24S", "JK02_32S"]),
    cells=cells,
    current=st.integers(-(2**31), 2**31 - 1),
    soc=st.integers(0, 255),
    temperature=st.one_of(st.none(), st.integers(-1999, 1500)),
)
def test_jk02_cell_info_round_trip(layout, cells, current, soc, temperature):
    values = {"cell_voltages_mv": cells, "current_ma": current, "soc_pct": soc, "temp1_ddegc": temperature}
    decoded = jk_frames.decode_frame(jk_frames.encode_cell_info(values, layout), layout)
    assert decoded["cell_voltages_mv"] == cells
    assert decoded["current_ma"] == current and decoded["soc_pct"] == soc and decoded["temp1_ddegc"] == temperature


@given(cells=st.lists(st.integers(1000, 5000), min_size=1, max_size=24))
def test_jk04_cells_round_trip_to_the_millivolt(cells):
    decoded = jk_frames.decode_frame(jk_frames.encode_cell_info({"cell_voltages_mv": cells}, "JK04"))
    assert decoded["layout"] == "JK04" and decoded["cell_voltages_mv"] == cells


@given(
    address=st.integers(0, 255),
    voltage=st.integers(-(2**31), 2**31 - 1),
    temps=st.lists(st.integers(-32768, 32767), min_size=8, max_size=8),
    alarm=st.integers(0, 2**32 - 1),
)
def test_byd_round_trip(address, voltage, temps, alarm):
    frame = byd.encode_response(address, {"pack_voltage_mv": voltage, "cell_temps_degc": temps, "alarm_state": alarm})
    status = byd.decode_response(frame)
    assert status.address == address
    assert (status.fields["pack_voltage_mv"], status.fields["cell_temps_degc"], status.fields["alarm_state"]) == (
        voltage,
        temps,
        alarm,
    )


@given(command=st.integers(0, 255), value=st.integers(0, 2**32 - 1), padding=st.binary(min_size=9, max_size=9))
def test_jk_command_round_trip(command, value, padding):
    decoded = jk_ble.decode_command(jk_ble.encode_command(command, value, 4, padding))
    assert (decoded.command, decoded.value, decoded.padding) == (command, value, padding)
