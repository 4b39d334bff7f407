"""JK-BMS modules over Bluetooth LE: one session per JK BLE slot, a bounded number connected.

A session's life is the table TRANSITIONS: (state, event) -> (next state, step).  The
step is a method of BleCentral that does what the transition means (ask for a
connection, start a handshake, feed notifications, back off).  An event the table
has no row for is refused explicitly: the state stays, and a Log action says which
event came in which state.

The handshake follows the JK app and esphome: after connecting, ask for the device
info (0x97), then the settings (0x96); the module then streams cell-info frames
about every 0.5 s.  Frames say their layout themselves (jk_frames.detect_layout).
A session without frames for app.ble_timeout_s is dropped; reconnection backs off
from 1 s, doubling up to 30 s, and starts again at 1 s once frames flow.

At most app.ble_max_connections modules are connected at once.  With more JK BLE
slots than that, connections rotate: when a module is due and none is free, the
connected module that got its first reading longest ago yields its connection
(no failure, no backoff), and the module that has waited longest connects.  One
handover at a time: no module yields while a module that took a yielded
connection is connecting (a radio sets up one link at a time, and a driver busy
with a scan sets up none: another yield would gain nothing and tear down a
stream), nor for HANDOVER_US after its link is up while it has not had its first
reading.  A handshake that brings no cell info within CONNECT_TIMEOUT_FACTOR x
app.ble_timeout_s is dropped like a silent one.  A connection limit lowered at
run time is met at the next tick.  Each battery then reads at its turn; with
fewer connections than slots, the age of its data grows with the number of slots
per connection (app.stale_s may need room).
"""

from . import battery, jk_ble, jk_frames
from .config import TYPE_JK_BLE
from .errors import ProtocolError
from .events import BleConnect, BleDisconnect, BleWrite
from .modbus import NEED_DATA

IDLE = "idle"
CONNECTING = "connecting"
HANDSHAKE = "handshake"  # connected, asking for device info and settings
STREAMING = "streaming"  # cell-info frames arrive

# events
DUE = "due"  # the backoff is over and a connection is free
CONNECTED = "connected"
CONNECT_FAILED = "connect_failed"
CONNECT_TIMEOUT = "connect_timeout"
DISCONNECTED = "disconnected"
NOTIFY = "notify"
DEVICE_INFO = "device_info"
SETTINGS = "settings"
CELL_INFO = "cell_info"
ASK_DUE = "ask_due"  # the handshake's last question went unanswered for a second
SILENT = "silent"  # no frames for app.ble_timeout_s
ENDLESS = "endless"  # connected for CONNECT_TIMEOUT_FACTOR x app.ble_timeout_s without a cell-info frame
YIELD = "yield"  # another module waits for this connection

FIRST_BACKOFF_US = 1000000
MAX_BACKOFF_US = 30000000
ASK_EVERY_US = 1000000
CONNECT_TIMEOUT_FACTOR = 3  # a connection attempt, and a handshake, may take 3 x app.ble_timeout_s each
HANDOVER_US = 2000000  # how long after its link is up a module that took a yielded connection holds yields up

TRANSITIONS = {
    (IDLE, DUE): (CONNECTING, "connect"),
    (CONNECTING, CONNECTED): (HANDSHAKE, "start_handshake"),
    (CONNECTING, CONNECT_FAILED): (IDLE, "connect_failed"),
    (CONNECTING, CONNECT_TIMEOUT): (IDLE, "abandon"),
    (CONNECTING, DISCONNECTED): (IDLE, "lost"),
    (HANDSHAKE, NOTIFY): (HANDSHAKE, "feed"),
    (HANDSHAKE, DEVICE_INFO): (HANDSHAKE, "ask_settings"),
    (HANDSHAKE, SETTINGS): (HANDSHAKE, "keep_settings"),
    (HANDSHAKE, CELL_INFO): (STREAMING, "first_reading"),
    (HANDSHAKE, ASK_DUE): (HANDSHAKE, "ask_again"),
    (HANDSHAKE, SILENT): (IDLE, "drop_silent_handshake"),
    (HANDSHAKE, ENDLESS): (IDLE, "drop_endless_handshake"),
    (HANDSHAKE, DISCONNECTED): (IDLE, "lost"),
    (STREAMING, NOTIFY): (STREAMING, "feed"),
    (STREAMING, DEVICE_INFO): (STREAMING, "keep_device_info"),
    (STREAMING, SETTINGS): (STREAMING, "keep_settings"),
    (STREAMING, CELL_INFO): (STREAMING, "reading"),
    (STREAMING, SILENT): (IDLE, "drop_stopped_stream"),
    (STREAMING, DISCONNECTED): (IDLE, "lost"),
    (STREAMING, YIELD): (IDLE, "yield_connection"),
}


class BleSession:
    __slots__ = ("slot", "state", "reassembler", "next_attempt_us", "backoff_us", "last_frame_us", "asked_us",
                 "asks", "connects", "refused", "streamed_us", "linked_us", "handover_until_us")  # fmt: skip

    def __init__(self, slot):
        self.slot = slot
        self.state = IDLE
        self.reassembler = jk_ble.JkReassembler()
        self.next_attempt_us = 0
        self.backoff_us = FIRST_BACKOFF_US
        self.last_frame_us = 0
        self.asked_us = 0
        self.asks = 0
        self.connects = 0
        self.refused = 0  # events that did not fit the state
        self.streamed_us = None  # when this connection's first reading came
        self.linked_us = 0  # when this connection came up
        self.handover_until_us = None  # took a yielded connection: no other yield until its reading or this time


class BleCentral:
    """owner: the Proxy (config, slots, emit(action), answered(slot, reading, now_us), failure(slot, message),
    log(level, event, fields))."""

    __slots__ = ("owner", "sessions")

    def __init__(self, owner):
        self.owner = owner
        self.sessions = {}  # slot index -> BleSession

    def configure(self, slots, replaced):
        """Sessions for the JK BLE slots; a slot that now names another module starts afresh."""
        for slot in slots:
            session = self.sessions.get(slot.index)
            if session is not None and (slot.index in replaced or slot.kind != TYPE_JK_BLE):
                if session.state != IDLE:
                    self.owner.emit(BleDisconnect(slot.index))
                del self.sessions[slot.index]
            if slot.kind == TYPE_JK_BLE and slot.index not in self.sessions:
                self.sessions[slot.index] = BleSession(slot)

    def active(self):
        count = 0
        for session in self.sessions.values():
            if session.state != IDLE:
                count += 1
        return count

    def handle(self, session, event, now_us, data=None):
        """One event for one session, through the table."""
        row = TRANSITIONS.get((session.state, event))
        if row is None:
            session.refused += 1
            self.owner.log("warning", "ble_event_refused", {"slot": session.slot.index, "state": session.state,
                                                             "ble_event": event})  # fmt: skip
            if event == CONNECTED:
                # a connection we no longer wait for (it came after we gave up): let it go
                self.owner.emit(BleDisconnect(session.slot.index))
            return
        session.state = row[0]
        getattr(self, "_" + row[1])(session, now_us, data)

    def event(self, slot_index, event, now_us, data=None):
        """An event from the driver for a slot; a slot without a session is refused too."""
        session = self.sessions.get(slot_index)
        if session is None:
            self.owner.log("warning", "ble_event_refused", {"slot": slot_index, "state": None, "ble_event": event})
            return
        self.handle(session, event, now_us, data)

    def tick(self, now_us):
        """The timeouts first, then the connections due: a connection a timeout frees is handed on
        in the same tick."""
        config = self.owner.config
        timeout_us = config["app.ble_timeout_s"] * 1000000
        for index in sorted(self.sessions):
            session = self.sessions[index]
            state = session.state
            if state == IDLE:
                continue
            if state == CONNECTING:
                if now_us - session.asked_us > CONNECT_TIMEOUT_FACTOR * timeout_us:
                    self.handle(session, CONNECT_TIMEOUT, now_us)
            elif now_us - session.last_frame_us > timeout_us:
                self.handle(session, SILENT, now_us)
            elif state == HANDSHAKE and now_us - session.linked_us > CONNECT_TIMEOUT_FACTOR * timeout_us:
                self.handle(session, ENDLESS, now_us)
            elif state == HANDSHAKE and now_us - session.asked_us > ASK_EVERY_US:
                self.handle(session, ASK_DUE, now_us)
        self._rotate(now_us)

    def _rotate(self, now_us):
        """Connect the modules that are due, longest waiting first; when no connection is
        free, the modules that have had their reading yield theirs."""
        due = [s for s in self.sessions.values() if s.state == IDLE and now_us >= s.next_attempt_us]
        limit = self.owner.config["app.ble_max_connections"]
        free = limit - self.active()
        if not due and free >= 0:
            return
        due.sort(key=_waiting_order)
        handover_until_us = None
        if free < len(due) and self._handover_end_us(now_us) is None:
            done = [s for s in self.sessions.values() if s.state == STREAMING]
            done.sort(key=_streamed_order)
            # a module let in holds the yields up while it connects (no later than its attempt's
            # timeout), then see _start_handshake
            timeout_us = self.owner.config["app.ble_timeout_s"] * 1000000
            # (free < 0: the limit was lowered; the yields bring the connections down to it as well,
            # and a module that yields for that is due again after HANDOVER_US, not at once)
            for index, session in enumerate(done[: len(due) - free]):
                self.handle(session, YIELD, now_us)
                if index < -free:
                    session.next_attempt_us = now_us + HANDOVER_US
                handover_until_us = now_us + CONNECT_TIMEOUT_FACTOR * timeout_us + 1
            free = limit - self.active()
        for session in due[: max(free, 0)]:
            self.handle(session, DUE, now_us)
            session.handover_until_us = handover_until_us

    def _handover_end_us(self, now_us=None):
        """While a module that took a yielded connection connects, and for HANDOVER_US after its
        link is up until its first reading, no module yields: a module that yielded is due again at
        once and would make the next one yield, and so on through every connection.  Returns when
        the handovers in progress (after now_us, if given) stop holding the yields up, or None."""
        end = None
        for session in self.sessions.values():
            until = session.handover_until_us
            if (
                until is not None
                and (session.state == CONNECTING or session.state == HANDSHAKE)
                and (now_us is None or now_us < until)
                and (end is None or until > end)
            ):
                end = until
        return end

    def next_deadline_us(self):
        """The soonest deadline of a session (asked before every wait of the driver: one pass)."""
        timeout_us = self.owner.config["app.ble_timeout_s"] * 1000000
        soonest = None
        soonest_attempt = None  # of the idle sessions: due only if a connection is free or can be freed
        active = 0
        can_yield = False  # a module that has had its reading can make room (once no handover holds it up)
        for session in self.sessions.values():
            state = session.state
            if state == IDLE:
                due = session.next_attempt_us
                if due is not None and (soonest_attempt is None or due < soonest_attempt):
                    soonest_attempt = due
                continue
            active += 1
            if state == CONNECTING:
                due = session.asked_us + CONNECT_TIMEOUT_FACTOR * timeout_us + 1
            else:
                due = session.last_frame_us + timeout_us + 1
                if state == HANDSHAKE:
                    due = min(
                        due,
                        session.asked_us + ASK_EVERY_US + 1,
                        session.linked_us + CONNECT_TIMEOUT_FACTOR * timeout_us + 1,
                    )
                else:
                    can_yield = True
            if soonest is None or due < soonest:
                soonest = due
        limit = self.owner.config["app.ble_max_connections"]
        rotation = None  # when a waiting module connects, or a connected one yields
        if soonest_attempt is not None and active < limit:
            rotation = soonest_attempt  # a connection is free
        elif can_yield and (active > limit or soonest_attempt is not None):
            rotation = 0 if active > limit else soonest_attempt  # over a lowered limit: at once
            handover_end = self._handover_end_us()
            if handover_end is not None and handover_end > rotation:
                rotation = handover_end  # when the handover in progress stops holding the yields up
        if rotation is not None and (soonest is None or rotation < soonest):
            soonest = rotation
        return soonest

    # --- the steps ------------------------------------------------------------------

    def _connect(self, session, now_us, data):
        session.asked_us = now_us
        self.owner.emit(BleConnect(session.slot.index, session.slot.address))

    def _start_handshake(self, session, now_us, data):
        session.connects += 1
        session.streamed_us = None
        session.linked_us = now_us
        if session.handover_until_us is not None:  # it took a yielded connection: now its handshake
            session.handover_until_us = now_us + HANDOVER_US
        session.reassembler = jk_ble.JkReassembler()
        session.last_frame_us = now_us
        session.asks = 0
        self._ask(session, jk_ble.GET_DEVICE_INFO, now_us)

    def _ask(self, session, command, now_us):
        session.asked_us = now_us
        self.owner.emit(BleWrite(session.slot.index, jk_ble.encode_command(command)))

    def _ask_again(self, session, now_us, data):
        # device info or settings not arriving: ask again (esphome sends 0x96 until cells come)
        session.asks += 1
        ask_info = session.slot.model is None and session.asks < 2
        self._ask(session, jk_ble.GET_DEVICE_INFO if ask_info else jk_ble.GET_SETTINGS, now_us)

    def _back_off(self, session, now_us, message):
        self.owner.failure(session.slot, message)
        session.next_attempt_us = now_us + session.backoff_us
        session.backoff_us = min(session.backoff_us * 2, MAX_BACKOFF_US)

    def _connect_failed(self, session, now_us, reason):
        self._back_off(session, now_us, "BLE connect failed: %s" % reason if reason else "BLE connect failed")

    def _lost(self, session, now_us, reason):
        self._back_off(session, now_us, "BLE disconnected: %s" % reason if reason else "BLE disconnected")

    def _abandon(self, session, now_us, data):
        seconds = CONNECT_TIMEOUT_FACTOR * self.owner.config["app.ble_timeout_s"]
        self._back_off(session, now_us, "BLE connect failed: no connection within %d s" % seconds)

    def _drop(self, session, now_us, what):
        self.owner.emit(BleDisconnect(session.slot.index))
        self._back_off(session, now_us, "BLE %s for %d s" % (what, self.owner.config["app.ble_timeout_s"]))

    def _drop_silent_handshake(self, session, now_us, data):
        self._drop(session, now_us, "no frames")

    def _drop_endless_handshake(self, session, now_us, data):
        self.owner.emit(BleDisconnect(session.slot.index))
        seconds = CONNECT_TIMEOUT_FACTOR * self.owner.config["app.ble_timeout_s"]
        self._back_off(session, now_us, "BLE handshake without cell info for %d s" % seconds)

    def _drop_stopped_stream(self, session, now_us, data):
        self._drop(session, now_us, "stream stopped")

    def _feed(self, session, now_us, chunk):
        session.reassembler.feed(chunk)
        while True:
            event = session.reassembler.next_event()
            if event is NEED_DATA:
                return
            if isinstance(event, jk_ble.JkFrame):
                self._frame(session, event.raw, now_us)

    def _frame(self, session, raw, now_us):
        try:
            decoded = jk_frames.decode_frame(raw)
        except ProtocolError as error:
            self.owner.failure(session.slot, "bad JK frame: %s" % error)
            return
        session.last_frame_us = now_us
        kind = decoded["frame_type"]
        if kind in (DEVICE_INFO, SETTINGS, CELL_INFO):
            self.handle(session, kind, now_us, decoded)

    def _keep_device_info(self, session, now_us, decoded):
        session.slot.model = decoded["vendor_id"] or None
        session.slot.device_serial = decoded["serial_number"] or None

    def _ask_settings(self, session, now_us, decoded):
        self._keep_device_info(session, now_us, decoded)
        self._ask(session, jk_ble.GET_SETTINGS, now_us)

    def _keep_settings(self, session, now_us, decoded):
        session.slot.settings = decoded

    def _first_reading(self, session, now_us, decoded):
        session.backoff_us = FIRST_BACKOFF_US
        session.streamed_us = now_us
        self._reading(session, now_us, decoded)

    def _yield_connection(self, session, now_us, data):
        self.owner.emit(BleDisconnect(session.slot.index))
        # due again at once, behind the modules that waited longer; it makes another module yield
        # only once the handover to the module it let in is over (_handover_end_us)
        session.next_attempt_us = now_us

    def _reading(self, session, now_us, decoded):
        session.slot.layout = decoded["layout"]
        self.owner.answered(session.slot, battery.from_jk(decoded, session.slot.settings), now_us)


def _waiting_order(session):
    return (session.next_attempt_us, session.slot.index)


def _streamed_order(session):
    return (session.streamed_us, session.slot.index)
