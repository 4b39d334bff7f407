"""The BMS-side RS485 master (vbms_core.rs485_master), driven through the proxy in simulated time.

Wire facts come from the references: BYD PRO request 8 bytes and status reply 105 bytes, the
sum8 covering every byte but the address (deye-byd-modbus.md 2.2, 2.3), result 0x00 = OK and
any other value an error (2.2); JK-PB trigger writes and their captured bytes, the echo an
adapter may put in front of the reply (jk-protocols.md 11.6); Modbus exception replies are
unit | fc|0x80 | code | CRC (deye-byd-modbus.md 3.1), built here by pymodbus.  What a slot
reads comes from the battery model (simulators/battery.py).
"""

import pytest
from conftest import VECTORS
from pymodbus.framer import FramerRTU
from pymodbus.pdu import DecodePDU, ExceptionResponse
from wiring import Wiring

from simulators.battery import BatteryModel
from simulators.byd.device import BydModule
from simulators.jk.device import JkBms
from vbms_core import deye
from vbms_core import events as ev

TOKEN = "s3cret-token"  # rpc.auth_token of these benches

BYD_REPLY_1 = bytes.fromhex(next(v for v in VECTORS["byd_responses"] if v["id"] == "BYD-R1")["hex"])  # address 1
STATUS_TRIGGER_1 = bytes.fromhex("01 10 16 20 00 01 02 00 00 D6 F1")  # jk-protocols.md 11.6
SETTINGS_TRIGGER_1 = bytes.fromhex("01 10 16 1E 00 01 02 00 00 D2 2F")  # jk-protocols.md 11.6
CHAR_US = 10 * 1_000_000 // 9600  # 9600 8N1: ten bits a character


def sum8(frame):
    """BYD checksum as deye-byd-modbus.md 2.2 states it: bytes 1..n-2, low byte."""
    return sum(frame[1:-1]) & 0xFF


def named(wiring, unit):
    registers = wiring.read_unit(unit)
    return None if registers is None else deye.named_registers(0x1000, registers)


class Port:
    """A device on the bus whose replies a test reshapes: reply(request, answer) -> bytes."""

    def __init__(self, handle, reshape):
        self.handle_device = handle
        self.reshape = reshape
        self.requests = []

    def handle(self, request):
        self.requests.append(request)
        answer = self.handle_device(request)
        if answer is None:
            return None
        reply, delay_s = answer
        return self.reshape(request, reply), delay_s


@pytest.mark.parametrize("kind", [1, 3, 4], ids=["byd", "jk-pb", "jk-4e57"])
def test_an_adapter_that_echoes_the_request_still_reads_the_battery(kind):
    battery = BatteryModel(seed=1, soc_permille=610)
    handle = {
        1: BydModule(1, battery).handle,
        3: JkBms(battery, address=1).handle_modbus,
        4: JkBms(battery, address=1).handle_4e57,
    }[kind]
    port = Port(handle, lambda request, reply: request + reply)
    wiring = Wiring({"bms0.type": kind, "bms0.addr": "1"}, [port])
    wiring.run_until(2_000_000)
    slot = wiring.proxy.slots[0]
    assert slot.failures == 0 and slot.answers >= 2, slot.error
    values = named(wiring, 0)
    assert values["soc_permille"] == 610
    assert abs(values["pack_voltage_mv"] - battery.pack_voltage_mv) <= 10


def test_line_noise_before_a_jk_pb_reply_is_dropped():
    battery = BatteryModel(seed=2, soc_permille=480)
    port = Port(JkBms(battery, address=1).handle_modbus, lambda request, reply: b"\x00\xff\x13\x55" + reply)
    wiring = Wiring({"bms0.type": 3, "bms0.addr": "1"}, [port])
    wiring.run_until(2_000_000)
    assert wiring.proxy.slots[0].failures == 0, wiring.proxy.slots[0].error
    assert named(wiring, 0)["soc_permille"] == 480


def test_jk_pb_settings_are_asked_for_first_and_then_now_and_again():
    battery = BatteryModel(seed=3, soc_permille=700, max_charge_current_ma=40_000)
    port = Port(JkBms(battery, address=1).handle_modbus, lambda request, reply: reply)
    wiring = Wiring({"bms0.type": 3, "bms0.addr": "1"}, [port])
    wiring.run_until(40_000_000)
    assert port.requests[0] == SETTINGS_TRIGGER_1
    assert set(port.requests) == {SETTINGS_TRIGGER_1, STATUS_TRIGGER_1}
    settings_at = [index for index, request in enumerate(port.requests) if request == SETTINGS_TRIGGER_1]
    assert len(settings_at) >= 2 and len(port.requests) > 2 * len(settings_at)  # mostly status
    # the settings frame's charge limit (40 A) is what the inverter is told, below app.max_charge_current_a
    assert named(wiring, 0)["max_charge_current_ma"] == 40_000


def test_a_jk_pb_answering_a_status_trigger_with_device_info_gives_no_reading():
    battery = BatteryModel(seed=4)
    device = JkBms(battery, address=1)

    def device_info_instead(request):
        if request == STATUS_TRIGGER_1:
            request = bytes.fromhex("01 10 16 1C 00 01 02 00 00 D3 CD")  # the device-info trigger (R09, 11.6)
        return device.handle_modbus(request)

    wiring = Wiring({"bms0.type": 3, "bms0.addr": "1"}, [Port(device_info_instead, lambda request, reply: reply)])
    wiring.run_until(3_000_000)
    slot = wiring.proxy.slots[0]
    assert slot.answers > 2 and slot.failures == 0 and slot.reading is None
    assert named(wiring, 0) is None


def test_a_jk_pb_exception_reply_is_a_failed_poll():
    exception = FramerRTU(DecodePDU(False)).buildFrame(ExceptionResponse(0x10, 2, device_id=1))
    assert exception[:3] == b"\x01\x90\x02" and len(exception) == 5
    port = Port(lambda request: (exception, 0.02), lambda request, reply: reply)
    wiring = Wiring({"bms0.type": 3, "bms0.addr": "1", "app.bms_retries": 2}, [port])
    wiring.run_until(1_000_000)
    slot = wiring.proxy.slots[0]
    assert slot.answers == 0 and slot.failures >= 1 and slot.error.startswith("bad reply")
    assert len(port.requests) >= 3  # the first request and two retries before the failure is recorded


def test_a_byd_reply_from_another_address_is_not_taken():
    battery = BatteryModel(seed=5)
    module = BydModule(1, battery)
    # a module at DIP address 2 that hears the request for 1: the sum8 does not cover the address (2.2)
    port = Port(module.handle, lambda request, reply: b"\x02" + reply[1:])
    wiring = Wiring({"bms0.type": 1, "bms0.addr": "1", "app.bms_retries": 0}, [port])
    wiring.run_until(1_000_000)
    slot = wiring.proxy.slots[0]
    assert slot.answers == 0 and slot.error == "bad reply: reply from BYD address 2"
    assert named(wiring, 0) is None


def test_a_byd_error_result_is_not_a_reading():
    with_result = bytearray(BYD_REPLY_1)
    with_result[7] = 0x01  # result byte (2.2): not OK
    with_result[-1] = sum8(with_result)
    short = bytearray(bytes.fromhex("010005018355AA07") + b"\x00")  # an error reply without the data block
    short[-1] = sum8(short)
    for reply, retries, message in ((bytes(with_result), 0, "code 1"), (bytes(short), 1, "code 7")):
        port = Port(lambda request, reply=reply: (reply, 0.02), lambda request, answer: answer)
        wiring = Wiring({"bms0.type": 1, "bms0.addr": "1", "app.bms_retries": retries}, [port])
        wiring.run_until(500_000)
        slot = wiring.proxy.slots[0]
        assert slot.answers == 0 and slot.error == "bad reply: BYD result " + message, slot.error
        assert named(wiring, 0) is None


def test_a_reply_announcing_more_than_any_frame_is_cut_short():
    announced = bytes.fromhex("01FFFF018355AA00")  # a BYD header whose length says 65 539 bytes
    port = Port(lambda request: (announced, 0.02), lambda request, reply: reply)
    wiring = Wiring({"bms0.type": 1, "bms0.addr": "1", "app.bms_retries": 1}, [port])
    wiring.run_until(200_000)
    slot = wiring.proxy.slots[0]
    assert slot.error == "bad reply: announces 65539 bytes"
    # given up on at once, without waiting for the 250 ms timeout: request, retry, then the next poll
    assert len(port.requests) >= 3


def test_the_proxy_sleeps_until_the_reply_is_due_and_forgets_a_slot_taken_off_the_bus():
    proxy_settings = {"bms0.type": 1, "bms0.addr": "1", "rpc.auth_token": TOKEN}
    wiring = Wiring(proxy_settings)  # nothing answers
    wiring.feed(ev.Tick(0))
    request = wiring.bms_log[0][2]
    assert request == bytes.fromhex("010004010355AA07")  # deye-byd-modbus.md 4.4
    # the request out, the 105-byte reply back (2.3), then app.bms_timeout_ms (250 ms)
    assert wiring.proxy.next_deadline_us() == (8 + 105) * CHAR_US + 250_000
    result, error = wiring.rpc("Config.Set", {"config": {"bms0.type": 0}}, TOKEN)
    assert error is None
    assert wiring.proxy.next_deadline_us() is None  # nothing left to poll
    wiring.feed(ev.BmsBytes(BYD_REPLY_1, 50_000))  # the reply to the forgotten request
    assert wiring.proxy.slots[0].answers == 0 and wiring.read_unit(0) is None


def test_a_battery_at_rest_answers_the_same_frame_and_stays_served_past_the_staleness_limit():
    """The master reads an answer byte for byte the same as the slot's last one as that reading
    again (rs485_master.BusKind.same_bytes_same_reading): it is fresh at its new time, so the
    inverter is answered long after app.stale_s, and a frame that differs is decoded anew."""
    battery = BatteryModel(seed=3, soc_permille=550)
    module = BydModule(1, battery)
    wiring = Wiring({"bms0.type": 1, "bms0.addr": "1", "app.stale_s": 5}, [module])
    wiring.run_until(20_000_000)  # four times the staleness limit, the battery never changed
    slot = wiring.proxy.slots[0]
    assert slot.answers >= 20 and slot.failures == 0
    assert wiring.now_us - slot.updated_us < 1_000_000
    assert named(wiring, 0)["soc_permille"] == 550
    battery.charge_mah = [mah * 0.5 for mah in battery.charge_mah]
    battery.advance(0.0, 0)
    wiring.run_until(22_000_000)
    assert named(wiring, 0)["soc_permille"] == battery.soc_permille // 10 * 10 != 550  # (BYD: whole percent)


def test_a_new_setting_takes_effect_even_when_the_battery_answers_the_same_frame():
    """A reading is decoded under the slot's settings (a 4E57 pack without SOC gets one estimated for
    its configured chemistry): after a change of configuration, the next answer is decoded anew
    although its bytes are the same, and the inverter sees the new limit at once."""
    battery = BatteryModel(seed=4, soc_permille=700)
    wiring = Wiring({"bms0.type": 1, "bms0.addr": "1", "rpc.auth_token": TOKEN}, [BydModule(1, battery)])
    wiring.run_until(2_000_000)
    slot = wiring.proxy.slots[0]
    kept = slot.reading
    wiring.run_until(3_000_000)
    assert slot.reading is kept  # the same frame again: the same reading
    assert named(wiring, 0)["max_charge_current_ma"] == 50_000
    result, error = wiring.rpc("Config.Set", {"config": {"bms0.max_charge_a": 20}}, TOKEN)
    assert error is None, error
    assert named(wiring, 0)["max_charge_current_ma"] == 20_000
    wiring.run_until(4_000_000)
    assert slot.reading is not kept and slot.reading.soc_permille == 700
