"""JK modules over BLE (vbms_core.ble_central): timeouts, asking again, frames while streaming,
connection limits, reconfiguration; driven through Proxy.feed and the Wiring driver.

The connection sequence is jk-protocols.md 1.2: connect, write 0x97 (device info), then 0x96
(settings), after which the module streams cell-info frames about every 0.5 s and sends device
info and settings again now and then.  The command bytes are the golden frames C01 and C02 of
jk-protocols.md 14; the logbook frame layout is section 8.  What a slot reads comes from the
battery model (simulators/battery.py) through the JK device model.
"""

import pytest
from conftest import JK_FRAMES
from wiring import Wiring

from simulators.battery import BatteryModel
from simulators.jk.device import JkBms
from vbms_core import app, config, deye, modbus
from vbms_core import events as ev

TOKEN = "s3cret-token"  # rpc.auth_token of these benches

GET_DEVICE_INFO = bytes.fromhex(next(f for f in JK_FRAMES if f["id"] == "C01")["hex"])
GET_SETTINGS = bytes.fromhex(next(f for f in JK_FRAMES if f["id"] == "C02")["hex"])
MAC = "C8:47:8C:10:00:01"


class RecordingWiring(Wiring):
    """Wiring that also records what was written to the modules and every connect's address."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.writes = []  # (time, slot, bytes)
        self.connects = []  # (time, slot, address)
        self.disconnects = []  # (time, slot)

    def ble_connect(self, action):
        self.connects.append((self.now_us, action.slot, action.address))
        super().ble_connect(action)

    def ble_write(self, action):
        self.writes.append((self.now_us, action.slot, bytes(action.data)))
        super().ble_write(action)

    def ble_disconnect(self, action):
        self.disconnects.append((self.now_us, action.slot))
        super().ble_disconnect(action)


class UnansweredConnects(RecordingWiring):
    """A driver whose connection attempts never come back (no BleConnected, no BleConnectFailed)."""

    def ble_connect(self, action):
        self.connects.append((self.now_us, action.slot, action.address))


def jk_bench(battery=None, wiring_class=RecordingWiring, **settings):
    battery = battery or BatteryModel(seed=6, soc_permille=660)
    device = JkBms(battery, name="JK-BLE")
    config = {"bms0.type": 2, "bms0.addr": MAC, "rpc.auth_token": TOKEN}
    config.update(settings)
    return wiring_class(config, [], {0: device}), device, battery


def logbook_frame(counter=7):
    """A type-0x05 frame written from jk-protocols.md 8: two entries, checksum sum8 of bytes 0..298 (3)."""
    frame = bytearray(300)
    frame[0:6] = bytes.fromhex("55AAEB9005") + bytes((counter,))
    frame[6:10] = (2).to_bytes(4, "little")
    frame[10] = 0x03
    frame[11:16] = (0).to_bytes(4, "little") + b"\x01"
    frame[16:21] = (238).to_bytes(4, "little") + b"\x02"
    frame[299] = sum(frame[:299]) & 0xFF
    return bytes(frame)


def test_a_connection_that_never_comes_is_abandoned_after_three_ble_timeouts():
    wiring, _, _ = jk_bench(wiring_class=UnansweredConnects)
    wiring.run_until(15_500_000)
    first_us = wiring.connects[0][0]
    assert wiring.proxy.slots[0].error == "BLE connect failed: no connection within 15 s"
    # the connection comes after all: nobody waits for it any more, so it is let go
    actions = wiring.proxy.feed(ev.BleConnected(0, wiring.now_us))
    assert [ev.describe(action) for action in actions if not isinstance(action, ev.Log)] == [["ble_disconnect", 0]]
    wiring.run_until(17_000_000)
    # 3 x app.ble_timeout_s (5 s) to give up, then the first backoff of 1 s
    assert abs(wiring.connects[1][0] - first_us - 16_000_000) <= 2_000, wiring.connects


def test_an_unanswered_handshake_asks_again_then_drops_the_silent_module():
    battery = BatteryModel(seed=7)
    wiring, device, _ = jk_bench(battery)
    device.set_failure("silent")
    wiring.run_until(5_300_000)
    writes = [(when, data) for when, slot, data in wiring.writes if slot == 0]
    assert writes[0][1] == GET_DEVICE_INFO
    assert GET_SETTINGS in [data for _, data in writes]  # no device info came: the settings are asked for
    gaps_us = [later - earlier for (earlier, _), (later, _) in zip(writes, writes[1:], strict=False)]
    assert gaps_us and all(1_000_000 < gap <= 1_002_000 for gap in gaps_us), gaps_us  # about once a second
    assert wiring.disconnects == [(wiring.disconnects[0][0], 0)]
    assert wiring.disconnects[0][0] - wiring.connects[0][0] <= 5_200_000  # app.ble_timeout_s without a frame
    assert wiring.proxy.slots[0].error == "BLE no frames for 5 s"


def test_a_stream_that_stops_is_dropped_and_reconnected_after_the_first_backoff():
    wiring, device, battery = jk_bench()
    wiring.run_until(3_000_000)
    assert wiring.proxy.slots[0].status == "online"
    device.set_failure("silent")
    stopped_us = wiring.now_us
    wiring.run_until(stopped_us + 7_000_000)
    assert wiring.proxy.slots[0].error == "BLE stream stopped for 5 s"
    ((dropped_us, slot),) = wiring.disconnects
    assert slot == 0 and 4_500_000 <= dropped_us - stopped_us <= 5_100_000
    # frames had flowed, so the backoff starts again at 1 s
    reconnect_us = wiring.connects[1][0]
    assert abs(reconnect_us - dropped_us - 1_000_000) <= 2_000


def test_device_info_and_settings_sent_while_streaming_are_taken():
    wiring, device, battery = jk_bench()
    wiring.run_until(3_000_000)
    assert deye.named_registers(0x1000, wiring.read_unit(0))["max_charge_current_ma"] == 50_000
    device.vendor_id = "JK_PB2A16S20P"
    battery.max_charge_current_ma = 30_000  # the settings frame carries the new charge limit
    wiring.at(wiring.now_us + 10_000, ev.BleNotify(0, device.device_info_frame(), 0))
    wiring.at(wiring.now_us + 20_000, ev.BleNotify(0, device.settings_frame(), 0))
    wiring.run_until(wiring.now_us + 1_500_000)
    identity = wiring.ask_inverter(modbus.encode_report_id_request(0))
    assert deye.decode_identity(modbus.decode_response(identity).data)["model"] == "JK_PB2A16S20P"
    assert deye.named_registers(0x1000, wiring.read_unit(0))["max_charge_current_ma"] == 30_000
    assert not [log for log in wiring.logs if log[1] == "ble_event_refused"]


def test_a_logbook_frame_is_neither_refused_nor_a_failure():
    wiring, device, battery = jk_bench()
    wiring.run_until(2_000_000)
    answers = wiring.proxy.slots[0].answers
    actions = wiring.proxy.feed(ev.BleNotify(0, logbook_frame(), wiring.now_us))
    assert actions == ()
    assert wiring.proxy.slots[0].answers == answers and wiring.proxy.slots[0].failures == 0
    wiring.run_until(wiring.now_us + 1_000_000)
    assert wiring.proxy.slots[0].answers > answers  # the stream goes on
    assert not wiring.logs


def test_with_every_connection_in_use_the_waiting_module_is_not_due_until_one_can_yield():
    battery = BatteryModel(seed=8)
    device = JkBms(battery)
    settings = {"bms0.type": 2, "bms0.addr": MAC, "bms1.type": 2, "bms1.addr": "C8:47:8C:10:00:02"}
    proxy = app.Proxy(dict(settings, **{"app.ble_max_connections": 1}), 0)
    assert [ev.describe(action) for action in proxy.feed(ev.Tick(0))] == [["ble_connect", 0, MAC]]
    # slot 1 waits for a free connection: the next thing to do is slot 0's connect timeout (3 x 5 s)
    assert proxy.next_deadline_us() == 15_000_001
    assert [ev.describe(action) for action in proxy.feed(ev.BleConnected(0, 100_000))] == [
        ["ble_write", 0, GET_DEVICE_INFO.hex().upper()]
    ]
    # connected: the question is asked again after a second unless a frame comes
    assert proxy.next_deadline_us() == 1_100_001
    proxy.feed(ev.BleNotify(0, device.device_info_frame(), 200_000))
    proxy.feed(ev.BleNotify(0, device.settings_frame(), 300_000))
    proxy.feed(ev.BleNotify(0, device.cell_info_frame(), 400_000))
    # slot 0 has its reading and can yield: slot 1 is due now
    assert proxy.next_deadline_us() == 0
    actions = [ev.describe(action) for action in proxy.feed(ev.Tick(500_000))]
    assert actions == [["ble_disconnect", 0], ["ble_connect", 1, "C8:47:8C:10:00:02"]]


def test_a_slot_reconfigured_while_connected_lets_its_connection_go():
    wiring, device, battery = jk_bench()
    wiring.run_until(2_000_000)
    assert 0 in wiring.sessions
    _, error = wiring.rpc("Config.Set", {"config": {"bms0.addr": "C8:47:8C:10:00:09"}}, TOKEN)
    assert error is None and wiring.disconnects[-1][1] == 0
    wiring.run_until(wiring.now_us + 1_000_000)
    assert wiring.connects[-1][1:] == (0, "C8:47:8C:10:00:09")  # the new module, at once
    _, error = wiring.rpc("Config.Set", {"config": {"bms0.type": 0}}, TOKEN)
    assert error is None and len(wiring.disconnects) == 2  # no JK slot any more: let go as well
    wiring.feed(ev.BleNotify(0, device.cell_info_frame(), wiring.now_us))
    assert wiring.logs[-1] == ("warning", "ble_event_refused", {"slot": 0, "state": None, "ble_event": "notify"})


def test_a_slot_reconfigured_while_waiting_to_reconnect_has_nothing_to_let_go():
    wiring, device, battery = jk_bench()
    wiring.refused.add(0)  # the module is not found: the session waits out its backoff, idle
    wiring.run_until(3_500_000)
    assert wiring.proxy.ble.sessions[0].state == "idle" and wiring.proxy.slots[0].failures == 1
    _, error = wiring.rpc("Config.Set", {"config": {"bms0.addr": "C8:47:8C:10:00:09"}}, TOKEN)
    assert error is None and wiring.disconnects == []
    assert wiring.proxy.slots[0].error is None and wiring.proxy.slots[0].status == "waiting"  # a new module


def test_a_connection_that_a_timeout_frees_goes_to_a_waiting_module_in_the_same_tick():
    """Five modules, four connections: when the four attempts time out together, the fifth module
    connects in that tick, and the next deadline is after it (found by tests/test_proxy_stateful.py:
    the connections used to be handed out before the timeouts freed them, leaving a deadline of now)."""
    config = {"bms%d.type" % slot: 2 for slot in range(5)}
    config.update({"bms%d.addr" % slot: "C8:47:8C:10:00:%02X" % (slot + 1) for slot in range(5)})
    proxy = app.Proxy(config, 0)
    asked = [action.slot for action in proxy.feed(ev.Tick(0)) if isinstance(action, ev.BleConnect)]
    assert len(asked) == 4
    timeout_us = 3 * proxy.config["app.ble_timeout_s"] * 1_000_000 + 1  # ble_central.CONNECT_TIMEOUT_FACTOR
    assert proxy.next_deadline_us() == timeout_us
    actions = proxy.feed(ev.Tick(timeout_us))
    waiting = [slot for slot in range(5) if slot not in asked]
    assert [action.slot for action in actions if isinstance(action, ev.BleConnect)] == waiting
    assert proxy.next_deadline_us() > timeout_us


def test_with_one_module_more_than_connections_a_yield_waits_for_the_handover_before_the_next():
    """Five modules, four connections: each yield hands a connection to the module that waited
    longest, and the module that yielded waits until that one has its first reading before it
    makes another module yield (it used to be due again at once: the four connected modules
    yielded one after the other within a millisecond, and none streamed for long)."""
    batteries = {slot: BatteryModel(seed=slot, soc_permille=300 + 100 * slot) for slot in range(5)}
    devices = {slot: JkBms(batteries[slot], name="JK-%d" % slot) for slot in range(5)}
    settings = {"rpc.auth_token": TOKEN}
    for slot in range(5):
        settings.update({"bms%d.type" % slot: 2, "bms%d.addr" % slot: "C8:47:8C:10:00:%02X" % (slot + 1)})
    wiring = RecordingWiring(settings, [], devices)
    wiring.run_until(60_000_000)
    assert wiring.most_connected == 4
    assert all(wiring.proxy.slots[slot].failures == 0 for slot in range(5))  # yielding is not a failure
    yields = [when for when, _ in wiring.disconnects]
    assert len(yields) >= 10  # the connections rotate
    for earlier, later in zip(yields, yields[1:], strict=False):
        # between two yields the module let in connected and had its handshake and first reading
        assert later - earlier >= 100_000, (earlier, later)
    connects = [wiring.proxy.ble.sessions[slot].connects for slot in range(5)]
    assert max(connects) - min(connects) <= 1, connects  # every module in its turn
    for slot in range(5):
        named = deye.named_registers(0x1000, wiring.read_unit(slot))
        assert named["soc_permille"] == batteries[slot].soc_permille // 10 * 10


def five_modules_on_four_connections(count=5, wiring_class=RecordingWiring, configured=None):
    """count JK modules, the first `configured` of them (all by default) in JK BLE slots; four connections."""
    devices = {slot: JkBms(BatteryModel(seed=slot), name="JK-%d" % slot) for slot in range(count)}
    settings = {"rpc.auth_token": TOKEN}
    for slot in range(count if configured is None else configured):
        settings.update({"bms%d.type" % slot: 2, "bms%d.addr" % slot: "C8:47:8C:10:00:%02X" % (slot + 1)})
    return wiring_class(settings, [], devices), devices


def test_a_module_that_never_streams_holds_the_rotation_up_for_a_handover_at_most():
    """A module that answers the handshake but never streams cell info stays in its handshake; when it took
    a yielded connection, the next yield waits for it HANDOVER_US, not for ever (found in review: the module
    left waiting never connected)."""
    wiring, devices = five_modules_on_four_connections()
    devices[0].set_failure("stop_streaming")
    wiring.run_until(60_000_000)
    connects = [wiring.proxy.ble.sessions[slot].connects for slot in range(1, 5)]
    assert min(connects) >= 10, connects  # the other four rotate through the three connections left
    assert all(wiring.proxy.slots[slot].status == "online" for slot in range(1, 5))


class OneLinkAtATime(RecordingWiring):
    """A driver that sets up one link at a time, as a radio does (250 ms each; a module in out_of_range
    fails after 10 s, the firmware's search time), and none while it is busy (a scan, until busy_until_us).
    windows: (start, end) of each attempt at a module out of range."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.queue = []  # BleConnect actions waiting for the radio
        self.pending = None  # (when it completes, the BleConnect) the radio is busy with
        self.busy_until_us = 0
        self.out_of_range = set()
        self.windows = []

    def ble_connect(self, action):
        self.connects.append((self.now_us, action.slot, action.address))
        self.queue.append(action)

    def run_until(self, end_us, step_us=1_000):
        while self.now_us < end_us:
            self._radio()
            super().run_until(min(self.now_us + step_us, end_us), step_us)

    def _radio(self):
        if self.pending is not None and self.now_us >= self.pending[0]:
            action = self.pending[1]
            self.pending = None
            if action.slot in self.out_of_range:
                self.windows[-1] = (self.windows[-1][0], self.now_us)
                self.feed(ev.BleConnectFailed(action.slot, "not found", self.now_us))
            else:
                Wiring.ble_connect(self, action)  # the link is up 50 ms later
        if self.pending is None and self.queue and self.now_us >= self.busy_until_us:
            action = self.queue.pop(0)
            if action.slot in self.out_of_range:
                self.windows.append((self.now_us, None))
                self.pending = (self.now_us + 10_000_000, action)
            else:
                self.pending = (self.now_us + 200_000, action)


def yields_within(wiring, start_us, end_us):
    return [when for when, _ in wiring.disconnects if start_us < when < end_us]


def test_while_the_radio_is_busy_with_a_module_out_of_range_streams_are_not_torn_down():
    """Six modules, four connections, one module out of range, a radio that sets up one link at a time:
    while an attempt at the missing module keeps the radio busy for 10 s, no other module can connect,
    so streams are not given up for nothing (with a 2 s limit from the connect request, one yielded every
    2 s until nothing streamed; found in review)."""
    wiring, _ = five_modules_on_four_connections(6, OneLinkAtATime)
    wiring.out_of_range.add(0)
    wiring.run_until(180_000_000)
    attempts = [window for window in wiring.windows if window[1] is not None]
    assert len(attempts) >= 4
    for start, end in attempts:
        assert len(yields_within(wiring, start, end)) <= 1, (start, end, yields_within(wiring, start, end))
    connects = [wiring.proxy.ble.sessions[slot].connects for slot in range(1, 6)]
    assert min(connects) >= 5, connects  # between the attempts the others rotate
    assert all(wiring.proxy.slots[slot].status == "online" for slot in range(1, 6))


def test_a_scan_that_keeps_the_radio_busy_tears_down_few_streams():
    """Five modules, four connections: during a 20 s scan the driver sets up no link; the module that
    took a yielded connection waits for the radio, and nobody else yields for it until its attempt
    times out (3 x app.ble_timeout_s): two yields in the 20 s at the most (with a 2 s limit from the
    connect request, one every 2 s; found in review)."""
    wiring, _ = five_modules_on_four_connections(5, OneLinkAtATime)
    wiring.run_until(10_000_000)
    wiring.busy_until_us = 30_000_000
    wiring.run_until(60_000_000)
    assert len(yields_within(wiring, 10_000_000, 30_000_000)) <= 2
    assert len(yields_within(wiring, 30_000_000, 60_000_000)) >= 10  # the rotation goes on after the scan
    assert all(wiring.proxy.slots[slot].status == "online" for slot in range(5))


@pytest.mark.parametrize("fifth", [False, True])
def test_a_connection_limit_lowered_at_run_time_is_met_at_the_next_tick(fifth):
    """Four modules streaming, then the limit goes down to one (and a fifth module is configured, or
    not): the next tick brings the connections down to the limit, and no tick leaves a deadline that is
    not after it (it took ticks with a deadline in the past, and without a fifth module the four stayed
    connected; found in review)."""
    wiring, _ = five_modules_on_four_connections(configured=4)
    wiring.run_until(5_000_000)
    assert wiring.proxy.ble.active() == 4
    changes = {"app.ble_max_connections": 1}
    if fifth:
        changes.update({"bms4.type": 2, "bms4.addr": "C8:47:8C:10:00:05"})
    _, error = wiring.rpc("Config.Set", {"config": changes}, TOKEN)
    assert error is None
    now = wiring.now_us
    wiring.feed(ev.Tick(now))
    assert wiring.proxy.ble.active() == 1
    for _ in range(20_000):  # 20 s, a tick a millisecond
        deadline = wiring.proxy.next_deadline_us()
        assert deadline is None or deadline > wiring.now_us, (deadline, wiring.now_us)
        wiring.run_until(wiring.now_us + 1_000)
        assert wiring.proxy.ble.active() <= 1
    connects = [wiring.proxy.ble.sessions[slot].connects for slot in range(5 if fifth else 4)]
    assert min(connects) >= 3, connects  # the one connection rotates


def test_a_module_that_answers_the_handshake_but_never_streams_lets_its_connection_go():
    """Two modules, one connection, the first stops streaming: it answers device info and settings but sends
    no cell info, so it was never silent and held the only connection for ever (found in review); after
    3 x app.ble_timeout_s it is dropped like a silent module, with its backoff, and the other one reads."""
    wiring, devices = five_modules_on_four_connections(2)
    wiring.proxy.reconfigure(config.validate(dict(wiring.proxy.config, **{"app.ble_max_connections": 1})), 0)
    devices[0].set_failure("stop_streaming")
    wiring.run_until(60_000_000)
    assert wiring.proxy.slots[1].status == "online"
    assert wiring.proxy.ble.sessions[1].connects >= 2
    slot = wiring.proxy.slots[0]
    assert slot.failures >= 1 and slot.error == "BLE handshake without cell info for 15 s"
