"""A stateful property test of the proxy state machine (issue 13), driven through Proxy.feed only.

Hypothesis draws sequences of inputs: bytes on the inverter bus (valid requests, requests with
bad CRCs, truncated, with wrong lengths, counts and addresses, other functions, garbage, floods,
with or without a t3.5 silence before), replies and garbage on the BMS bus (the simulated
modules' own replies to the proxy's polls, truncated, bit-flipped, doubled, from another
address, late), BLE events (connected, failed, disconnected, notifications chunked as the JK
modules send them, bit-flipped, dropped, repeated), ticks (at the next deadline or anywhere),
configuration changes and RPC calls, and the driver's part of a reboot.

After every step:
- feed never raises;
- every InvWrite is a well-formed Modbus reply (its CRC, computed here independently; an
  exception, a register read or an identity of the reference's layout), from a unit that is
  configured, that the inverter asked (a good-CRC frame to that unit was fed), and whose
  data is fresh: a reading for that slot (a module's valid reply, a whole valid JK cell-info
  frame) was fed within app.stale_s;
- every RpcReply answers a call that is waiting, once;
- after a Tick at now, next_deadline_us() is None or later than now;
- buffers stay bounded (the inverter framer, the BMS receive buffer, the BLE reassemblers,
  the decisions kept, the scan callers).
At the end, time passes (a minute of ticks) and every RPC call has had exactly one reply.

A failure shrinks to the shortest script of steps that still fails (hypothesis prints it as
Python), and can be kept as a regression below.  VBMS_STATEFUL_EXAMPLES sets the number of
examples (default 100; long runs on demand).
"""

import os

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from hil.fuzz import grammar
from simulators.battery import BatteryModel
from simulators.byd.device import BydModule
from simulators.jk.device import JkBleSession, JkBms
from vbms_core import app, byd, rs485_master
from vbms_core import config as config_module
from vbms_core import events as ev

TOKEN = "stateful-token"
EXAMPLES = int(os.environ.get("VBMS_STATEFUL_EXAMPLES", "100"))
CHAR_US = 1042  # one character at 9600 baud, 8N1 (reference 3.1)
T35_US = 3646
BLE_MACS = ("C8:47:8C:10:00:%02X" % index for index in range(1, 16))
MACS = tuple(BLE_MACS)
LAYOUTS = ("JK02_24S", "JK02_32S", "JK04")
JK_CELL_INFO = 0x02


def transfer_us(data):
    return len(data) * CHAR_US


# --- what the inverter side sends --------------------------------------------------------------------


@st.composite
def inverter_frames(draw):
    unit = draw(st.one_of(st.integers(0, 5), st.integers(0, 5), st.integers(0, 255)))  # mostly a configured one
    kind = draw(st.sampled_from(("valid", "valid", "valid", "identity", "range", "bad_crc", "truncated", "function",
                                 "garbage", "flood", "oversize")))  # fmt: skip
    if kind == "valid":
        return grammar.read_request(unit)
    if kind == "identity":
        return grammar.identity_request(unit)
    if kind == "range":
        return grammar.read_request(unit, draw(st.integers(0, 0xFFFF)), draw(st.integers(0, 0xFFFF)))
    if kind == "bad_crc":
        frame = bytearray(grammar.read_request(unit))
        bit = draw(st.integers(0, 8 * len(frame) - 1))
        frame[bit // 8] ^= 1 << bit % 8
        return bytes(frame)
    if kind == "truncated":
        frame = grammar.read_request(unit)
        return frame[: draw(st.integers(1, len(frame) - 1))]
    if kind == "function":
        return grammar.with_crc(bytes((unit, draw(st.integers(0, 255)))) + draw(st.binary(max_size=10)))
    if kind == "flood":
        return b"".join(draw(st.lists(st.sampled_from([grammar.read_request(unit), grammar.identity_request(unit),
                                                        b"\x00\x04\x10"]), min_size=2, max_size=8)))  # fmt: skip
    if kind == "oversize":
        return grammar.with_crc(bytes((unit, 4)) + draw(st.binary(min_size=255, max_size=300)))
    return draw(st.binary(min_size=1, max_size=40))


# --- configuration changes -----------------------------------------------------------------------------


@st.composite
def config_changes(draw):
    changes = {}
    for _ in range(draw(st.integers(1, 3))):
        slot = draw(st.integers(0, 14))
        what = draw(
            st.sampled_from(("byd", "jk_ble", "jk_pb", "jk_4e57", "none", "stale", "voltage", "connections", "bad"))
        )
        if what == "byd":
            changes.update({"bms%d.type" % slot: 1, "bms%d.addr" % slot: str(draw(st.integers(1, 8)))})
        elif what == "jk_ble":
            changes.update({"bms%d.type" % slot: 2, "bms%d.addr" % slot: draw(st.sampled_from(MACS[:4]))})
        elif what == "jk_pb":
            changes.update({"bms%d.type" % slot: 3, "bms%d.addr" % slot: str(draw(st.integers(1, 8)))})
        elif what == "jk_4e57":
            changes.update({"bms%d.type" % slot: 4, "bms%d.addr" % slot: str(draw(st.integers(1, 8)))})
        elif what == "none":
            changes["bms%d.type" % slot] = 0
        elif what == "stale":
            changes["app.stale_s"] = draw(st.integers(1, 30))  # 1 is refused: the change must not apply
        elif what == "connections":
            changes["app.ble_max_connections"] = draw(st.sampled_from((1, 2, 4)))  # lowered or raised at run time
        elif what == "voltage":
            changes["bms%d.voltage" % slot] = draw(st.sampled_from((48.0, 55.2, 58.4, 70.0)))
        else:
            changes[draw(st.sampled_from(("app.refresh_ms", "bms3.type", "app.bms_timeout_ms")))] = draw(
                st.one_of(st.integers(-5, 100000), st.text(max_size=3), st.none())
            )
    return changes


RPC_CALLS = st.one_of(
    st.tuples(st.sampled_from(("VBMS.GetSummary", "Config.Get", "Sys.GetInfo", "Nope.Nothing")), st.just({})),
    st.tuples(st.just("VBMS.ScanBLE"), st.one_of(st.just({}), st.fixed_dictionaries({"seconds": st.integers(0, 40)}))),
    st.tuples(st.just("Config.Save"), st.fixed_dictionaries({"reboot": st.sampled_from((False, True, "yes"))})),
    st.tuples(st.sampled_from(("Sys.Reboot", "Sys.FactoryReset")), st.just({})),
    st.tuples(st.sampled_from(("Config.Set",)), st.one_of(st.just({}), st.just({"config": []}))),
)


def initial_config(layout, connections=4):
    """A bench: layout is a list of slot types (0 none, 1 BYD, 2 JK BLE, 3 JK-PB, 4 4E57); connections:
    app.ble_max_connections (fewer than the JK BLE slots: the connections rotate)."""
    config = {"rpc.auth_token": TOKEN, "app.stale_s": 5, "app.ble_max_connections": connections}
    for slot, kind in enumerate(layout):
        config["bms%d.type" % slot] = kind
        config["bms%d.addr" % slot] = MACS[slot] if kind == 2 else str(slot + 1)
    return config_module.validate(dict(config_module.defaults(), **config))


class ProxyMachine(RuleBasedStateMachine):
    """The proxy with this test as its driver: the executor, the devices, the clock."""

    @initialize(
        layout=st.lists(st.sampled_from((0, 1, 2, 2, 3, 4)), min_size=1, max_size=6),
        connections=st.sampled_from((1, 2, 4)),
    )
    def start(self, layout, connections):
        self.now = 0
        self.config = initial_config(layout, connections)
        self.saved = dict(self.config)
        self.proxy = app.Proxy(self.config, 0)
        self.devices = {}  # (slot, type, address) -> device model
        self.fresh_us = {}  # slot -> when a reading for it was last fed
        self.asked = {}  # unit -> good-CRC frames fed to the inverter side for it, not answered yet
        self.inv_open = b""  # what went on the inverter bus since its last t3.5 silence
        self.inv_end_us = 0
        self.config_changes_waiting = {}
        self.bms_request = None  # the latest BmsWrite
        self.ble_asked = set()  # slots the proxy asked to connect
        self.ble_sessions = {}  # slot -> JkBleSession
        self.ble_queue = {}  # slot -> notification chunks not delivered yet
        self.ble_streams = {}  # slot -> the bytes fed as notifications (the tail)
        self.calls = 0
        self.waiting = set()
        self.answered = set()
        self.largest_chunk = 0

    # --- the driver ---------------------------------------------------------------------------------

    def feed(self, event):
        event.now_us = self.now
        actions = self.proxy.feed(event)
        reboot = False
        for action in actions:
            if isinstance(action, ev.InvWrite):
                self.check_inverter_reply(bytes(action.data))
            elif isinstance(action, ev.RpcReply):
                assert action.call_id in self.waiting, "a reply to call %r, which is not waiting" % action.call_id
                self.waiting.discard(action.call_id)
                self.answered.add(action.call_id)
                if action.call_id in self.config_changes_waiting and action.error is None:
                    self.apply_changes(self.config_changes_waiting.pop(action.call_id))
            elif isinstance(action, ev.BmsWrite):
                self.bms_request = (bytes(action.data), self.now)
            elif isinstance(action, ev.BleConnect):
                self.ble_asked.add(action.slot)
            elif isinstance(action, ev.BleWrite):
                session = self.ble_sessions.get(action.slot)
                if session is not None:
                    self.ble_queue.setdefault(action.slot, []).extend(session.on_write(action.data, self.now / 1e6))
            elif isinstance(action, ev.BleDisconnect):
                self.ble_sessions.pop(action.slot, None)
                self.ble_queue.pop(action.slot, None)
            elif isinstance(action, ev.SaveConfig):
                self.saved = dict(action.config)
            elif isinstance(action, ev.Reboot):
                reboot = True
        if reboot:
            self.reboot()
        return actions

    def apply_changes(self, changes):
        before = self.config
        self.config = config_module.merge(before, changes)
        for slot in range(config_module.SLOTS):
            key_type, key_addr = "bms%d.type" % slot, "bms%d.addr" % slot
            if (self.config[key_type], self.config[key_addr]) != (before[key_type], before[key_addr]):
                self.fresh_us.pop(slot, None)  # another battery now: the old reading is gone

    def reboot(self):
        """What a driver does with Reboot: the waiting calls get an error, the core starts from the saved config."""
        self.answered |= self.waiting
        self.waiting = set()
        self.config_changes_waiting = {}
        self.config = config_module.validate(dict(self.saved))
        self.proxy = app.Proxy(self.config, self.now)
        self.fresh_us = {}
        self.ble_sessions = {}
        self.ble_queue = {}
        self.ble_asked = set()
        self.bms_request = None

    def stale_us(self):
        return self.config["app.stale_s"] * 1_000_000

    def check_inverter_reply(self, reply):
        event("an inverter reply checked")
        assert grammar.crc_ok(reply), "an inverter reply with a bad CRC: %s" % reply.hex()
        unit = reply[0]
        assert unit <= grammar.MAX_UNIT, "a reply from unit %d" % unit
        assert self.config["bms%d.type" % unit] != 0, "unit %d answered but not configured: %s" % (unit, reply.hex())
        assert self.asked.get(unit, 0) > 0, "unit %d answered a question nobody asked: %s" % (unit, reply.hex())
        self.asked[unit] -= 1
        fresh = self.fresh_us.get(unit)
        assert fresh is not None and self.now - fresh <= self.stale_us(), (
            "unit %d answered %s at %d us; its last reading was fed at %s (app.stale_s %d)"
            % (unit, reply.hex(), self.now, fresh, self.config["app.stale_s"])
        )
        function = reply[1]
        if function & 0x80:
            assert len(reply) == 5 and reply[2] in (1, 2, 3), "a malformed exception: %s" % reply.hex()
        elif function == grammar.READ_INPUT:
            assert len(reply) == 5 + reply[2] and reply[2] % 2 == 0 and 2 <= reply[2] <= 50, reply.hex()
        elif function == grammar.REPORT_ID:
            assert len(reply) == 5 + reply[2] and grammar.identity_fields(reply[3:-2]) is not None, reply.hex()
        else:
            raise AssertionError("a reply with function %02X: %s" % (function, reply.hex()))

    def device(self, slot, kind, address):
        key = (slot, kind, address)
        if key not in self.devices:
            battery = BatteryModel(seed=slot, soc_permille=300 + 40 * slot)
            if kind == 1:
                self.devices[key] = BydModule(int(address), battery, reply_delay_s=0.0)
            else:
                layout = LAYOUTS[slot % len(LAYOUTS)] if kind == 2 else "JK02_32S"
                self.devices[key] = JkBms(battery, layout=layout, address=int(address) if kind != 2 else 1)
        return self.devices[key]

    # --- time -----------------------------------------------------------------------------------------

    def tick(self, now):
        self.now = now
        self.feed(ev.Tick(now))
        deadline = self.proxy.next_deadline_us()
        assert deadline is None or deadline > now, "next deadline %d is not after the tick at %d" % (deadline, now)

    @rule(dt=st.integers(0, 3_000_000))
    def time_passes(self, dt):
        self.tick(self.now + dt)

    @rule()
    def tick_at_the_deadline(self):
        deadline = self.proxy.next_deadline_us()
        if deadline is not None:
            self.tick(max(deadline, self.now))

    # --- the inverter side ----------------------------------------------------------------------------

    @rule(frame=inverter_frames(), gap=st.sampled_from((0, 500, T35_US + 100, 20_000, 1_000_000)))
    def inverter_sends(self, frame, gap):
        if gap:
            self.tick(self.now + gap)
        start_us = self.now
        self.now += transfer_us(frame)
        self.inv_open = frame if start_us - self.inv_end_us >= T35_US else self.inv_open + frame
        self.inv_end_us = self.now
        # the frame the proxy may close: this write alone, or run together with what came just before
        for candidate in {frame, self.inv_open}:
            if grammar.crc_ok(candidate) and len(candidate) <= grammar.MAX_ADU:
                self.asked[candidate[0]] = self.asked.get(candidate[0], 0) + 1
        self.feed(ev.InvBytes(frame, self.now))
        if self.proxy.inv_framer.pending() == 0:
            self.inv_open = b""  # closed at once (a whole request): what follows starts a new frame
        assert self.proxy.inv_framer.pending() <= grammar.MAX_ADU

    @rule(function=st.sampled_from((grammar.READ_INPUT, grammar.REPORT_ID)))
    def inverter_polls_every_unit(self, function):
        """A round as the DEYE inverter polls: every unit, each after a t3.5 silence."""
        for unit in range(grammar.MAX_UNIT + 1):
            frame = grammar.read_request(unit) if function == grammar.READ_INPUT else grammar.identity_request(unit)
            self.inverter_sends(frame, 20_000)

    # --- the BMS side ---------------------------------------------------------------------------------

    @rule(polls=st.integers(1, 8))
    def modules_answer_their_polls(self, polls):
        """The BMS bus as it should be: each poll answered by its module, whole and at once."""
        for _ in range(polls):
            self.tick_at_the_deadline()
            if self.bms_request is None:
                return
            request, _ = self.bms_request
            self.bms_request = None
            reply, slots = self.module_reply(request)
            if reply is None:
                continue
            self.now += 20_000 + transfer_us(reply)
            self.feed(ev.BmsBytes(reply, self.now))
            for slot in slots:
                event("a module's valid reply fed")
                self.fresh_us[slot] = self.now

    @precondition(lambda self: self.bms_request is not None)
    @rule(kind=st.sampled_from(("valid", "valid", "truncated", "bit_flip", "double", "other", "late", "split")),
          data=st.data())  # fmt: skip
    def bms_answers(self, kind, data):
        request, sent_us = self.bms_request
        self.bms_request = None
        reply, slots = self.module_reply(request)
        if reply is None:
            reply, slots = data.draw(st.binary(min_size=1, max_size=120)), ()
        if kind == "truncated":
            reply, slots = reply[: data.draw(st.integers(1, max(1, len(reply) - 1)))], ()
        elif kind == "bit_flip":
            bit = data.draw(st.integers(8, 8 * len(reply) - 1)) if len(reply) > 1 else 0
            reply = bytearray(reply)
            reply[bit // 8] ^= 1 << bit % 8
            reply, slots = bytes(reply), ()
        elif kind == "double":
            reply = reply + reply
        elif kind == "other":
            other = self.module_reply(request, other=True)[0]
            if other is not None:
                reply, slots = other, ()
        at = max(self.now, sent_us + transfer_us(request)) + (3_000_000 if kind == "late" else 20_000)
        self.now = at + transfer_us(reply)
        if kind == "split":
            middle = len(reply) // 2
            self.feed(ev.BmsBytes(reply[:middle], self.now - transfer_us(reply[middle:])))
            self.feed(ev.BmsBytes(reply[middle:], self.now))
        else:
            self.feed(ev.BmsBytes(reply, self.now))
        for slot in slots:
            event("a module's valid reply fed")
            self.fresh_us[slot] = self.now
        pending = self.proxy.rs485.pending
        assert pending is None or len(pending.rx) <= rs485_master.MAX_RX

    def module_reply(self, request, other=False):
        """The valid reply of the configured module the request is for, and the slots it is the reading of;
        other: a valid reply of a module at another address instead (no slot's reading)."""
        for slot in range(config_module.SLOTS):
            kind, address = self.config["bms%d.type" % slot], self.config["bms%d.addr" % slot]
            if kind not in config_module.RS485_TYPES:
                continue
            handle = {1: "handle", 3: "handle_modbus", 4: "handle_4e57"}[kind]
            answer = getattr(self.device(slot, kind, address), handle)(request)
            if answer is None:
                continue
            if other:
                if kind != 1:
                    return None, ()
                other_address = str(int(address) % 8 + 1)
                stranger = self.device(slot, kind, other_address)
                return stranger.handle(byd.encode_request(int(other_address)))[0], ()
            # the slots this poll can be for: every one whose module answers it (a 4E57 read-all names no module)
            same = [index for index in range(config_module.SLOTS) if self.answers(index, kind, handle, request)]
            return answer[0], same
        return None, ()

    def answers(self, slot, kind, handle, request):
        if self.config["bms%d.type" % slot] != kind:
            return False
        return getattr(self.device(slot, kind, self.config["bms%d.addr" % slot]), handle)(request) is not None

    @rule(noise=st.binary(min_size=1, max_size=64))
    def bms_noise(self, noise):
        self.now += transfer_us(noise) + 5_000
        self.feed(ev.BmsBytes(noise, self.now))

    # --- BLE --------------------------------------------------------------------------------------------

    def ble_slots(self):
        return [slot for slot in range(config_module.SLOTS) if self.config["bms%d.type" % slot] == 2]

    @precondition(lambda self: self.ble_asked)
    @rule(data=st.data(), ok=st.booleans())
    def ble_connect_result(self, data, ok):
        slot = data.draw(st.sampled_from(sorted(self.ble_asked)))
        self.ble_asked.discard(slot)
        self.now += 50_000
        if ok and self.config["bms%d.type" % slot] == 2:
            device = self.device(slot, 2, self.config["bms%d.addr" % slot])
            self.ble_sessions[slot] = JkBleSession(device, data.draw(st.sampled_from(("mtu23", "mtu131", "mtu247"))))
            self.ble_streams[slot] = b""
            self.feed(ev.BleConnected(slot, self.now))
        else:
            self.feed(ev.BleConnectFailed(slot, "not found", self.now))

    @precondition(lambda self: self.ble_asked or self.ble_sessions)
    @rule(data=st.data(), frames=st.integers(1, 3))
    def ble_modules_stream(self, data, frames):
        """The links come up and the modules answer the handshake and stream, nothing mangled."""
        for slot in sorted(self.ble_asked):
            if self.config["bms%d.type" % slot] == 2:
                self.ble_asked.discard(slot)
                device = self.device(slot, 2, self.config["bms%d.addr" % slot])
                self.ble_sessions[slot] = JkBleSession(device, data.draw(st.sampled_from(("mtu23", "mtu131"))))
                self.ble_streams[slot] = b""
                self.now += 50_000
                self.feed(ev.BleConnected(slot, self.now))
        for _ in range(frames):
            for slot in sorted(self.ble_sessions):
                for _ in range(60):
                    if slot not in self.ble_sessions:
                        break
                    self.notify(slot, data, None)
                    if not self.ble_queue.get(slot):
                        break
            self.tick(self.now + 500_000)

    @rule(slot=st.integers(0, 15), kind=st.sampled_from(("connected", "failed", "disconnected")))
    def ble_event_out_of_the_blue(self, slot, kind):
        self.now += 1_000
        self.ble_sessions.pop(slot, None)
        if kind == "connected":
            self.feed(ev.BleConnected(slot, self.now))
        elif kind == "failed":
            self.feed(ev.BleConnectFailed(slot, "no", self.now))
        else:
            self.feed(ev.BleDisconnected(slot, "link lost", self.now))

    @precondition(lambda self: self.ble_sessions)
    @rule(data=st.data(), count=st.integers(1, 24))
    def ble_notifies(self, data, count):
        """The module's next notifications (what it answers, or its stream), one of them perhaps mangled."""
        slot = data.draw(st.sampled_from(sorted(self.ble_sessions)))
        mangled = data.draw(st.integers(0, 2 * count))
        for index in range(count):
            if slot not in self.ble_sessions:
                return
            mangle = data.draw(st.sampled_from(("bit_flip", "drop", "repeat", "junk"))) if index == mangled else None
            self.notify(slot, data, mangle)

    def notify(self, slot, data, mangle):
        queue = self.ble_queue.setdefault(slot, [])
        if not queue:
            queue.extend(self.ble_sessions[slot].poll(self.now / 1e6 + 1.0))
        if not queue:
            return
        chunk = queue.pop(0)
        if mangle == "bit_flip" and chunk:
            bit = data.draw(st.integers(0, 8 * len(chunk) - 1))
            chunk = bytearray(chunk)
            chunk[bit // 8] ^= 1 << bit % 8
            chunk = bytes(chunk)
        elif mangle == "drop":
            return
        elif mangle == "repeat":
            queue.insert(0, chunk)
        elif mangle == "junk":
            queue.insert(0, chunk)
            chunk = data.draw(st.binary(min_size=1, max_size=30))
        self.now += 5_000
        self.largest_chunk = max(self.largest_chunk, len(chunk))
        stream = self.ble_streams.get(slot, b"") + chunk
        self.ble_streams[slot] = stream[-2 * grammar.JK_FRAME_LENGTH :]
        self.feed(ev.BleNotify(slot, chunk, self.now))
        if self.completes_cell_info(stream, len(chunk)):
            event("a whole JK cell-info frame fed")
            self.fresh_us[slot] = self.now

    @staticmethod
    def completes_cell_info(stream, new):
        """Whether the chunk just fed completes a header-started 300-byte window that passes JK's sum8 and is a
        cell-info frame (jk-protocols.md 3): the reading the proxy may take from it."""
        first_new = len(stream) - new
        start = stream.find(grammar.JK_HEADER)
        while start >= 0:
            window = stream[start : start + grammar.JK_FRAME_LENGTH]
            if start + grammar.JK_FRAME_LENGTH > first_new and grammar._is_jk_frame(window):
                if window[4] == JK_CELL_INFO:
                    return True
            start = stream.find(grammar.JK_HEADER, start + 1)
        return False

    @rule(devices=st.lists(st.tuples(st.sampled_from(MACS[:3]), st.text(max_size=5), st.one_of(st.none(),
                                                                                                st.integers(-90, 0)),
                                     st.booleans()), max_size=3))  # fmt: skip
    def ble_scan_result(self, devices):
        self.now += 1_000
        self.feed(ev.BleScanResult([list(device) for device in devices], self.now))

    # --- RPC and configuration ------------------------------------------------------------------------

    def call(self, method, params, token=TOKEN):
        self.calls += 1
        self.waiting.add(self.calls)
        self.feed(ev.RpcCall(self.calls, method, params, self.now, token, 1_700_000_000))
        return self.calls

    @rule(changes=config_changes(), token=st.sampled_from((TOKEN, TOKEN, None, "wrong")))
    def configuration_changes(self, changes, token):
        call_id = self.calls + 1
        self.config_changes_waiting[call_id] = changes  # applied here too when the reply says it was
        self.call("Config.Set", {"config": changes}, token)
        self.config_changes_waiting.pop(call_id, None)

    @rule(call=RPC_CALLS, token=st.sampled_from((TOKEN, None)))
    def rpc_call(self, call, token):
        method, params = call
        self.call(method, params, token)

    # --- bounds ---------------------------------------------------------------------------------------

    @invariant()
    def buffers_are_bounded(self):
        if not hasattr(self, "proxy"):
            return
        proxy = self.proxy
        assert proxy.inv_framer.pending() <= grammar.MAX_ADU
        pending = proxy.rs485.pending
        assert pending is None or len(pending.rx) <= rs485_master.MAX_RX
        for session in proxy.ble.sessions.values():
            # a frame's worth waiting for its end, plus the chunk that came last
            assert session.reassembler.pending() <= grammar.JK_FRAME_LENGTH + max(self.largest_chunk, 300)
        assert len(proxy.last_decisions) <= app.DECISIONS_KEPT
        assert len(proxy.rpc.scan_calls) <= len(self.waiting)

    def teardown(self):
        if not hasattr(self, "proxy"):
            return
        end = self.now + 60_000_000
        while self.now < end:
            deadline = self.proxy.next_deadline_us()
            self.tick(min(max(deadline if deadline is not None else end, self.now + 1), end))
        assert not self.waiting, "RPC calls never answered: %s" % sorted(self.waiting)


ProxyMachine.TestCase.settings = settings(
    max_examples=EXAMPLES, stateful_step_count=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
TestProxyStateMachine = ProxyMachine.TestCase
