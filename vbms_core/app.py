"""The VBMS proxy as a state machine (ARCHITECTURE.md, layer 1).

Driven by inputs, it returns actions; it never sleeps, reads a clock or does
I/O, so the same code runs on asyncio (CPython, MicroPython) and on simpy.

Inputs (now_us: a monotonic clock in microseconds, given by the driver):
  bms_bytes(data, now_us)       bytes from the BMS-side RS485 port
  inv_bytes(data, now_us)       bytes from the inverter-side RS485 port
  ble_event(kind, slot, data, now_us)
        kind: "connected", "connect_failed", "disconnected", "notify",
              "scan_result" (data: list of [address, name, rssi, connected])
  tick(now_us)                  call often (every few ms while a bus is busy)
  rpc(method, params, now_us, token=None, wall_s=None) -> (result, error)
Output: take_actions() returns and clears the list of actions, tuples:
  ("bms_write", bytes) ("inv_write", bytes)
  ("ble_connect", slot, address) ("ble_write", slot, bytes) ("ble_disconnect", slot)
  ("ble_scan", seconds) ("save_config", flat_config) ("reboot",)
  ("publish", topic, text, retain)       with mqtt.enable: telemetry every
        app.refresh_ms, Home Assistant discovery once (mqtt_connected())
"""

import json

from . import battery, byd, deye, jk_4e57, jk_ble, jk_frames, jk_pb, modbus
from . import config as config_module
from .errors import ProtocolError
from .modbus import NEED_DATA

VERSION = "0.1.0"

STATUS_UNCONFIGURED = "unconfigured"
STATUS_WAITING = "waiting"
STATUS_ONLINE = "online"
STATUS_STALE = "stale"
STATUS_ERROR = "error"

MAX_RX = 700  # the longest reply (JK-PB 300 + padding + ack) fits with room for an echo
# The longest reply of each RS485 type, bytes: BYD status; JK-PB frame + 00 + ack + 00; 4E57 read-all.
REPLY_LENGTHS = {config_module.TYPE_BYD_PRO: 105, config_module.TYPE_JK_PB: 310, config_module.TYPE_JK_4E57: 320}
SETTINGS_EVERY = 30  # JK-PB: ask for settings again every N status polls

BLE_IDLE = 0
BLE_CONNECTING = 1
BLE_CONNECTED = 2
BLE_STREAMING = 3


class Slot:
    __slots__ = (
        "index", "kind", "address", "name", "serial", "voltage_mv", "max_charge_ma", "reading", "updated_us",
        "status", "error", "model", "device_serial", "settings", "layout", "polls", "answers", "failures",
    )  # fmt: skip

    def __init__(self, index):
        self.index = index
        self.kind = config_module.TYPE_NONE
        self.address = ""
        self.name = ""
        self.serial = ""
        self.voltage_mv = 55200
        self.max_charge_ma = 0
        self.reading = None
        self.updated_us = None
        self.status = STATUS_UNCONFIGURED
        self.error = None
        self.model = None
        self.device_serial = None
        self.settings = None
        self.layout = None
        self.polls = 0
        self.answers = 0
        self.failures = 0


class BleSession:
    __slots__ = (
        "slot",
        "state",
        "reassembler",
        "next_attempt_us",
        "backoff_us",
        "last_frame_us",
        "asked_us",
        "asks",
        "connects",
    )

    def __init__(self, slot):
        self.slot = slot
        self.state = BLE_IDLE
        self.reassembler = jk_ble.JkReassembler()
        self.next_attempt_us = 0
        self.backoff_us = 1000000
        self.last_frame_us = 0
        self.asked_us = 0
        self.asks = 0
        self.connects = 0


class Proxy:
    def __init__(self, config, now_us=0):
        self.config = config_module.validate(config)
        self.started_us = now_us
        self.actions = []
        self.slots = [Slot(index) for index in range(config_module.SLOTS)]
        self.deye = deye.DeyeSlave(self.config["app.stale_s"] * 1000000)
        self.inv_framer = modbus.RtuFramer(self.config["app.inv_baud"])
        self.inverter_requests = 0
        self.inverter_replies = 0
        self.last_decisions = []
        self.ble = {}
        # BMS bus master
        self._rs485_order = []
        self._next_rs485 = 0
        self._waiting = None  # [slot, request, deadline_us, attempts]
        self._rx = bytearray()
        self._next_send_us = now_us
        self._status_polls = {}
        self.bms_cycles = 0
        self.cycle_started_us = now_us
        self.last_cycle_us = None
        self._next_publish_us = now_us
        self._apply_slots()

    # --- configuration --------------------------------------------------------------

    def _apply_slots(self):
        config = self.config
        for slot in self.slots:
            prefix = "bms%d." % slot.index
            kind = config[prefix + "type"]
            address = config[prefix + "addr"]
            if kind != slot.kind or address != slot.address:
                if slot.index in self.ble and self.ble[slot.index].state != BLE_IDLE:
                    self.actions.append(("ble_disconnect", slot.index))
                self.ble.pop(slot.index, None)
                slot.reading = None
                slot.updated_us = None
                slot.model = slot.device_serial = slot.settings = slot.layout = None
                self.deye.clear_unit(slot.index)
                slot.status = STATUS_UNCONFIGURED if kind == config_module.TYPE_NONE else STATUS_WAITING
            slot.kind = kind
            slot.address = address
            slot.name = config[prefix + "name"]
            slot.serial = config[prefix + "serial"]
            slot.voltage_mv = int(config[prefix + "voltage"] * 1000 + 0.5)
            slot.max_charge_ma = config[prefix + "max_charge_a"] * 1000
            if kind == config_module.TYPE_JK_BLE and slot.index not in self.ble:
                self.ble[slot.index] = BleSession(slot.index)
        self._rs485_order = [s.index for s in self.slots if s.kind in config_module.RS485_TYPES]
        if self._waiting is not None and self._waiting[0] not in self._rs485_order:
            self._waiting = None
        self.deye.stale_us = config["app.stale_s"] * 1000000
        for slot in self.slots:
            if slot.reading is not None:
                self._publish(slot, slot.updated_us)

    def take_actions(self):
        actions = self.actions
        self.actions = []
        return actions

    # --- readings -> the DEYE registers ------------------------------------------------

    def charge_limit_ma(self, slot):
        """What the inverter may push into this battery: conservative."""
        reading = slot.reading
        limit = self.config["app.max_charge_current_a"] * 1000
        if reading.max_charge_current_ma:
            limit = min(limit, reading.max_charge_current_ma)
        elif slot.kind == config_module.TYPE_BYD_PRO:
            limit = min(limit, 50000)  # B-Plus 2.5: 50 A
        if slot.max_charge_ma:
            limit = min(limit, slot.max_charge_ma)
        if reading.charge_enabled is False or reading.protection & (
            (1 << battery.P_CELL_HIGH) | (1 << battery.P_PACK_HIGH)
        ):
            return 0
        if reading.warning & (1 << battery.W_CELL_HIGH):
            return limit // 10  # nearly full: trickle
        return limit

    def _model(self, slot):
        if slot.model:
            return slot.model
        return "BYD PRO 2.5" if slot.kind == config_module.TYPE_BYD_PRO else "JK-BMS"

    def _publish(self, slot, now_us):
        registers = deye.registers_from_reading(slot.reading, slot.voltage_mv, self.charge_limit_ma(slot))
        serial = slot.serial or slot.device_serial or ("VBMS-SLOT-%02d" % slot.index)
        identity = deye.encode_identity(self._model(slot)[:15], serial[:20])
        self.deye.set_unit(slot.index, registers, identity, now_us)

    def _update(self, slot, reading, now_us):
        slot.reading = reading
        slot.updated_us = now_us
        slot.status = STATUS_ONLINE
        slot.error = None
        slot.answers += 1
        self._publish(slot, now_us)

    def _fail(self, slot, message):
        slot.failures += 1
        slot.error = message

    def refresh_status(self, now_us):
        stale_us = self.config["app.stale_s"] * 1000000
        for slot in self.slots:
            if slot.kind == config_module.TYPE_NONE:
                slot.status = STATUS_UNCONFIGURED
            elif slot.updated_us is None:
                slot.status = STATUS_ERROR if slot.error else STATUS_WAITING
            elif now_us - slot.updated_us > stale_us:
                slot.status = STATUS_STALE
            else:
                slot.status = STATUS_ONLINE

    # --- the inverter side ---------------------------------------------------------------

    def inv_bytes(self, data, now_us):
        self.inv_framer.feed(data, now_us)
        # A whole request with a good CRC is answered at once, not after t3.5.
        self.inv_framer.close_if_complete(modbus.request_frame_length)
        self._serve_inverter(now_us)

    def _serve_inverter(self, now_us):
        while True:
            frame = self.inv_framer.next_event(now_us)
            if frame is NEED_DATA:
                return
            if not frame.ok:
                continue
            self.inverter_requests += 1
            reply = self.deye.handle(frame.raw, now_us)
            decision = (frame.raw[0] if frame.raw else None, self.deye.reason)
            self.last_decisions.append(decision)
            if len(self.last_decisions) > 32:
                self.last_decisions.pop(0)
            if reply is not None:
                self.inverter_replies += 1
                self.actions.append(("inv_write", bytes(reply)))

    # --- the BMS bus ---------------------------------------------------------------------

    def _request_for(self, slot):
        address = int(slot.address)
        if slot.kind == config_module.TYPE_BYD_PRO:
            return byd.encode_request(address)
        if slot.kind == config_module.TYPE_JK_PB:
            count = self._status_polls.get(slot.index, 0)
            self._status_polls[slot.index] = count + 1
            return jk_pb.encode_trigger(address, "settings" if count % SETTINGS_EVERY == 0 else "status")
        return jk_4e57.encode_read_all_request()

    def _expected_length(self, slot, rx):
        if slot.kind == config_module.TYPE_BYD_PRO:
            return byd.frame_length(rx)
        if slot.kind == config_module.TYPE_JK_4E57:
            return jk_4e57.frame_length(rx)
        return jk_frames.FRAME_LENGTH + jk_pb.ACK_LENGTH

    def _start_request(self, now_us):
        if not self._rs485_order:
            return
        if self._next_rs485 >= len(self._rs485_order):
            self._next_rs485 = 0
            self.bms_cycles += 1
            self.last_cycle_us = now_us - self.cycle_started_us
            self.cycle_started_us = now_us
        slot = self.slots[self._rs485_order[self._next_rs485]]
        request = self._request_for(slot)
        self._send(slot, request, 0, now_us)

    def _send(self, slot, request, attempts, now_us):
        baud = self.config["app.bms_baud"]
        # wire time of the request and of the reply this battery type sends, then the timeout
        transfer_us = (len(request) + REPLY_LENGTHS[slot.kind]) * 10 * 1000000 // baud
        self._waiting = [slot.index, request, now_us + transfer_us + self.config["app.bms_timeout_ms"] * 1000, attempts]
        self._rx = bytearray()
        slot.polls += 1
        self.actions.append(("bms_write", request))

    def _finish_request(self, now_us):
        self._waiting = None
        self._rx = bytearray()
        self._next_rs485 += 1
        self._next_send_us = now_us + self.config["app.bms_gap_ms"] * 1000

    def bms_bytes(self, data, now_us):
        if self._waiting is None:
            return  # unsolicited bytes (another master, noise): ignored
        room = MAX_RX - len(self._rx)
        if room > 0:
            self._rx.extend(data[:room])
        slot = self.slots[self._waiting[0]]
        request = self._waiting[1]
        rx = self._rx
        if rx[: len(request)] == request:
            rx[0 : len(request)] = b""  # an adapter that echoes what it sends
        if slot.kind == config_module.TYPE_JK_PB:
            start = rx.find(jk_frames.HEADER)
            if start > 0:
                rx[0:start] = b""
        expected = self._expected_length(slot, rx)
        if expected is None or len(rx) < expected:
            return
        self._complete(slot, bytes(rx), now_us)

    def _complete(self, slot, raw, now_us):
        try:
            if slot.kind == config_module.TYPE_BYD_PRO:
                status = byd.decode_response(raw[: byd.frame_length(raw)])
                if status.address != int(slot.address):
                    raise ProtocolError("reply from BYD address %d" % status.address)
                if status.result != 0 or status.fields is None:
                    raise ProtocolError("BYD result code %d" % status.result)
                self._update(slot, battery.from_byd(status.fields), now_us)
            elif slot.kind == config_module.TYPE_JK_PB:
                reply = jk_pb.decode_trigger_reply(raw)
                decoded = jk_frames.decode_frame(reply.frame, jk_frames.JK02_32S)
                if decoded["frame_type"] == "settings":
                    slot.settings = decoded
                    slot.answers += 1
                elif decoded["frame_type"] == "cell_info":
                    slot.layout = jk_frames.JK02_32S
                    self._update(slot, battery.from_jk(decoded, slot.settings), now_us)
            else:
                response = jk_4e57.decode_response(raw[: jk_4e57.frame_length(raw)])
                self._update(slot, battery.from_jk_4e57(response), now_us)
        except ProtocolError as error:
            self._retry_or_give_up(slot, "bad reply: %s" % error, now_us)
            return
        self._finish_request(now_us)

    def _retry_or_give_up(self, slot, message, now_us):
        attempts = self._waiting[3] + 1
        if attempts <= self.config["app.bms_retries"]:
            self._send(slot, self._waiting[1], attempts, now_us)
            return
        self._fail(slot, message)
        self._finish_request(now_us)

    # --- JK over BLE -------------------------------------------------------------------

    def _ble_active(self):
        return sum(1 for s in self.ble.values() if s.state != BLE_IDLE)

    def ble_event(self, kind, slot_index, data, now_us):
        if kind == "scan_result":
            return  # the driver hands the devices to the RPC caller; the core keeps no state for it
        session = self.ble.get(slot_index)
        if session is None:
            return
        slot = self.slots[slot_index]
        if kind == "connected":
            session.state = BLE_CONNECTED
            session.connects += 1
            session.reassembler = jk_ble.JkReassembler()
            session.last_frame_us = now_us
            session.asked_us = now_us
            session.asks = 0
            self.actions.append(("ble_write", slot_index, jk_ble.encode_command(jk_ble.GET_DEVICE_INFO)))
        elif kind in ("connect_failed", "disconnected"):
            self._fail(slot, "BLE %s%s" % (kind.replace("_", " "), (": %s" % data) if data else ""))
            session.state = BLE_IDLE
            session.next_attempt_us = now_us + session.backoff_us
            session.backoff_us = min(session.backoff_us * 2, 30000000)
        elif kind == "notify" and session.state != BLE_IDLE:
            session.reassembler.feed(data)
            while True:
                event = session.reassembler.next_event()
                if event is NEED_DATA:
                    break
                if isinstance(event, jk_ble.JkFrame):
                    self._jk_frame(slot, session, event.raw, now_us)

    def _jk_frame(self, slot, session, raw, now_us):
        # Each frame says its layout (jk_frames.detect_layout); the firmware
        # version in the device info is only a hint and is not trusted over it.
        try:
            decoded = jk_frames.decode_frame(raw)
        except ProtocolError as error:
            self._fail(slot, "bad JK frame: %s" % error)
            return
        session.last_frame_us = now_us
        kind = decoded["frame_type"]
        if kind == "device_info":
            slot.model = decoded["vendor_id"] or None
            slot.device_serial = decoded["serial_number"] or None
            if session.state == BLE_CONNECTED:
                session.asked_us = now_us
                self.actions.append(("ble_write", slot.index, jk_ble.encode_command(jk_ble.GET_SETTINGS)))
        elif kind == "settings":
            slot.settings = decoded
        elif kind == "cell_info":
            session.state = BLE_STREAMING
            session.backoff_us = 1000000
            slot.layout = decoded["layout"]
            self._update(slot, battery.from_jk(decoded, slot.settings), now_us)

    def _tick_ble(self, now_us):
        timeout_us = self.config["app.ble_timeout_s"] * 1000000
        for index in sorted(self.ble):
            session = self.ble[index]
            if session.state == BLE_IDLE:
                if now_us >= session.next_attempt_us and self._ble_active() < self.config["app.ble_max_connections"]:
                    session.state = BLE_CONNECTING
                    session.asked_us = now_us
                    self.actions.append(("ble_connect", index, self.slots[index].address))
            elif session.state == BLE_CONNECTING:
                if now_us - session.asked_us > 3 * timeout_us:
                    self.ble_event("connect_failed", index, "timeout", now_us)
            elif session.state == BLE_CONNECTED:
                # device info or settings not arriving: ask again (esphome sends 0x96 until cells come)
                if now_us - session.asked_us > 1000000:
                    session.asked_us = now_us
                    session.asks += 1
                    command = (
                        jk_ble.GET_DEVICE_INFO
                        if self.slots[index].model is None and session.asks < 2
                        else jk_ble.GET_SETTINGS
                    )
                    self.actions.append(("ble_write", index, jk_ble.encode_command(command)))
                if now_us - session.last_frame_us > timeout_us:
                    self._drop_ble(session, "no frames for %d s" % self.config["app.ble_timeout_s"], now_us)
            elif now_us - session.last_frame_us > timeout_us:
                self._drop_ble(session, "stream stopped for %d s" % self.config["app.ble_timeout_s"], now_us)

    def _drop_ble(self, session, message, now_us):
        self.actions.append(("ble_disconnect", session.slot))
        self.ble_event("disconnected", session.slot, message, now_us)

    # --- time -----------------------------------------------------------------------------

    def tick(self, now_us):
        self._serve_inverter(now_us)
        if self._waiting is not None and now_us >= self._waiting[2]:
            slot = self.slots[self._waiting[0]]
            self._retry_or_give_up(slot, "no reply within %d ms" % self.config["app.bms_timeout_ms"], now_us)
        if self._waiting is None and now_us >= self._next_send_us:
            self._start_request(now_us)
        self._tick_ble(now_us)
        if self.config["mqtt.enable"] and now_us >= self._next_publish_us:
            self._next_publish_us = now_us + self.config["app.refresh_ms"] * 1000
            self._publish_telemetry(now_us)

    # --- MQTT: telemetry and Home Assistant discovery ------------------------------------

    def topic(self, *parts):
        return "/".join((self.config["mqtt.topic_prefix"], self.config["device.id"]) + parts)

    def telemetry(self, now_us):
        """(topic, payload) per configured slot and for the totals, in SI units."""
        summary = self.summary(now_us)
        messages = []
        for row in summary["bms"]:
            state = {"status": row["status"], "name": row["name"] or "slot %d" % row["slot"]}
            if "pack_voltage" in row:

                def scaled(value, factor):
                    return None if value is None else value / factor

                voltage_v = row["pack_voltage"] / 100
                current_a = scaled(row["pack_current"], 100)
                cells = row["cells"]
                state.update(
                    {
                        "soc": scaled(row["SOC"], 10),
                        "soh": scaled(row["SOH"], 10),
                        "voltage": voltage_v,
                        "current": current_a,
                        "power": None if current_a is None else round(voltage_v * current_a, 1),
                        "temperature": scaled(row["cell_temp_avg"], 10),
                        "temperature_max": scaled(row["max_cell_temp"], 10),
                        "temperature_min": scaled(row["min_cell_temp"], 10),
                        "cell_min": min(cells) / 1000 if cells else None,
                        "cell_max": max(cells) / 1000 if cells else None,
                        "cell_delta": (max(cells) - min(cells)) / 1000 if cells else None,
                        "remaining_ah": scaled(row["remain_capacity"], 100),
                        "warning": row["warning"],
                        "protection": row["protection"],
                        "fault": row["fault_status"] & 0xFF,
                        "alarm": "on" if row["warning"] or row["protection"] or row["fault_status"] & 0xFF else "off",
                    }
                )
            messages.append((self.topic("slot", str(row["slot"]), "state"), state))
        totals = summary["totals"]
        total_state = {"batteries": totals["batteries"], "online": totals["online"]}
        if "pack_current" in totals:
            total_state["current"] = totals["pack_current"] / 100
            total_state["soc"] = None if totals["SOC"] is None else totals["SOC"] / 10
            total_state["remaining_ah"] = totals["remain_capacity"] / 100
            total_state["power"] = round(totals["pack_voltage_avg"] / 100 * totals["pack_current"] / 100, 1)
        messages.append((self.topic("totals", "state"), total_state))
        return messages

    def _publish_telemetry(self, now_us):
        for topic, payload in self.telemetry(now_us):
            self.actions.append(("publish", topic, json.dumps(payload), False))

    def discovery(self):
        """Home Assistant MQTT discovery messages: (topic, config) per sensor, retained."""
        messages = []
        device_id = self.config["device.id"]
        availability = self.topic("status")
        for slot in self.slots:
            if slot.kind == config_module.TYPE_NONE:
                continue
            name = slot.name or "Battery %d" % (slot.index + 1)
            state_topic = self.topic("slot", str(slot.index), "state")
            device = {
                "identifiers": ["%s_slot%d" % (device_id, slot.index)],
                "name": name,
                "model": self._model(slot),
                "manufacturer": "vbms",
                "via_device": device_id,
            }
            for key, label, unit, device_class in HA_SENSORS:
                unique = "%s_slot%d_%s" % (device_id, slot.index, key)
                config = {
                    "name": label,
                    "unique_id": unique,
                    "object_id": unique,
                    "state_topic": state_topic,
                    "value_template": "{{ value_json.%s }}" % key,
                    "availability_topic": availability,
                    "device": device,
                }
                if unit:
                    config["unit_of_measurement"] = unit
                if device_class:
                    config["device_class"] = device_class
                    config["state_class"] = "measurement"
                messages.append(("homeassistant/sensor/%s/config" % unique, config))
            unique = "%s_slot%d_alarm" % (device_id, slot.index)
            messages.append(
                (
                    "homeassistant/binary_sensor/%s/config" % unique,
                    {
                        "name": "Alarm",
                        "unique_id": unique,
                        "state_topic": state_topic,
                        "value_template": "{{ value_json.alarm }}",
                        "payload_on": "on",
                        "payload_off": "off",
                        "device_class": "problem",
                        "availability_topic": availability,
                        "device": device,
                    },
                )
            )
        return messages

    def mqtt_connected(self):
        """The driver reconnected to the broker: announce, then publish at once."""
        if not self.config["mqtt.enable"]:
            return
        self.actions.append(("publish", self.topic("status"), "online", True))
        for topic, config in self.discovery():
            self.actions.append(("publish", topic, json.dumps(config), True))
        self._next_publish_us = 0

    def next_deadline_us(self):
        """When tick() next has something to do (the driver may sleep until then)."""
        if self._waiting is not None:
            return self._waiting[2]
        return self._next_send_us

    # --- RPC ------------------------------------------------------------------------------

    def rpc(self, method, params, now_us, token=None, wall_s=None):
        """(result, None) or (None, {"code": ..., "message": ...}); see RPC_METHODS."""
        if params is None:
            params = {}
        if not isinstance(params, dict):
            return None, {"code": -32602, "message": "params must be an object"}
        entry = RPC_METHODS.get(method)
        if entry is None:
            return None, {
                "code": -32601,
                "message": "unknown method %s; methods: %s" % (method, ", ".join(sorted(RPC_METHODS))),
            }
        handler, changes_state = entry
        if changes_state:
            expected = self.config["rpc.auth_token"]
            if not expected:
                return None, {
                    "code": 401,
                    "message": "no rpc.auth_token is set on this device: set one on its console first",
                }
            if token != expected:
                return None, {"code": 401, "message": "%s changes the device: a valid token is required" % method}
        try:
            return handler(self, params, now_us, wall_s), None
        except config_module.ConfigError as error:
            return None, {"code": -32602, "message": str(error)}
        except RpcError as error:
            return None, {"code": error.code, "message": error.message}

    def summary(self, now_us, wall_s=None):
        self.refresh_status(now_us)
        rows = []
        for slot in self.slots:
            if slot.kind == config_module.TYPE_NONE:
                continue
            rows.append(self._slot_summary(slot, now_us, wall_s))
        return {"timestamp": wall_s, "bms": rows, "totals": self._totals(rows)}

    def _slot_summary(self, slot, now_us, wall_s):
        row = {
            "slot": slot.index,
            "unit": slot.index,
            "type": config_module.TYPE_NAMES[slot.kind],
            "addr": int(slot.address) if slot.address.isdigit() else slot.address,
            "name": slot.name,
            "serial_no": slot.serial or slot.device_serial or "",
            "model": self._model(slot),
            "status": slot.status,
            "error": slot.error,
            "last_update": None,
            "age_s": None,
        }
        if slot.index in self.ble:
            row["ble_connects"] = self.ble[slot.index].connects
        if slot.reading is None:
            return row
        age_s = (now_us - slot.updated_us) // 1000000
        row["age_s"] = age_s
        row["last_update"] = None if wall_s is None else wall_s - age_s
        registers = deye.registers_from_reading(slot.reading, slot.voltage_mv, self.charge_limit_ma(slot))
        for index in range(deye.REGISTER_COUNT):
            _, name, _, signed, _ = deye.REGISTER_MAP[index]
            if name.startswith("reserved"):
                continue
            value = registers[index]
            if signed and value >= 0x8000:
                value -= 0x10000
            row[name] = value
        # The registers must hold a number; the summary says null where the source reports nothing (JK04: SOC...).
        reading = slot.reading
        for name, value in (
            ("SOC", reading.soc_permille), ("SOH", reading.soh_permille), ("pack_current", reading.current_ma),
            ("remain_capacity", reading.remaining_mah), ("full_charge_capacity", reading.full_charge_mah),
            ("cycle_count", reading.cycle_count), ("mosfet_temp", reading.mosfet_temp_ddegc),
        ):  # fmt: skip
            if value is None:
                row[name] = None
        if not reading.cell_temps_ddegc:
            for name in ("cell_temp_avg", "max_cell_temp", "min_cell_temp"):
                row[name] = None
            if reading.env_temp_ddegc is None:
                row["env_temp"] = None
        row["cells"] = list(slot.reading.cell_voltages_mv)
        row["charge_enabled"] = slot.reading.charge_enabled
        row["discharge_enabled"] = slot.reading.discharge_enabled
        return row

    def _totals(self, rows):
        online = [r for r in rows if r["status"] == STATUS_ONLINE and "pack_voltage" in r]
        totals = {"batteries": len(rows), "online": len(online)}
        if not online:
            return totals
        capacity = sum(r["full_charge_capacity"] or 0 for r in online)
        remain = sum(r["remain_capacity"] or 0 for r in online)
        cells = [c for r in online for c in r["cells"]]
        totals["pack_current"] = sum(r["pack_current"] or 0 for r in online)
        totals["remain_capacity"] = remain
        totals["full_charge_capacity"] = capacity
        totals["SOC"] = remain * 1000 // capacity if capacity else None
        totals["pack_voltage_avg"] = sum(r["pack_voltage"] for r in online) // len(online)
        totals["cell_voltage_min"] = min(cells) if cells else None
        totals["cell_voltage_max"] = max(cells) if cells else None
        temps_max = [r["max_cell_temp"] for r in online if r["max_cell_temp"] is not None]
        temps_min = [r["min_cell_temp"] for r in online if r["min_cell_temp"] is not None]
        totals["temp_max"] = max(temps_max) if temps_max else None
        totals["temp_min"] = min(temps_min) if temps_min else None
        return totals


class RpcError(Exception):
    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.message = message


def _get_summary(proxy, params, now_us, wall_s):
    return proxy.summary(now_us, wall_s)


def _scan_ble(proxy, params, now_us, wall_s):
    seconds = params.get("seconds", 5)
    if not isinstance(seconds, int) or not 1 <= seconds <= 30:
        raise RpcError(-32602, "seconds must be a whole number within 1..30")
    proxy.actions.append(("ble_scan", seconds))
    return {"scanning": True, "seconds": seconds}


def _config_get(proxy, params, now_us, wall_s):
    return config_module.nest(config_module.public(proxy.config))


def _config_set(proxy, params, now_us, wall_s):
    changes = params.get("config")
    if not isinstance(changes, dict) or not changes:
        raise RpcError(-32602, 'params.config must be an object of settings, e.g. {"config": {"bms0.name": "A"}}')
    proxy.config = config_module.merge(proxy.config, changes)
    proxy._apply_slots()
    return {"applied": sorted(config_module.flatten(changes)), "saved": False}


def _config_save(proxy, params, now_us, wall_s):
    reboot = params.get("reboot", False)
    if reboot is not True and reboot is not False:
        raise RpcError(-32602, "reboot must be true or false")
    proxy.actions.append(("save_config", dict(proxy.config)))
    if reboot:
        proxy.actions.append(("reboot",))
    return {"saved": True, "reboot": reboot}


def _sys_info(proxy, params, now_us, wall_s):
    return {
        "app": "vbms",
        "version": VERSION,
        "id": proxy.config["device.id"],
        "uptime_s": (now_us - proxy.started_us) // 1000000,
        "slots": sum(1 for s in proxy.slots if s.kind != config_module.TYPE_NONE),
        "inverter_requests": proxy.inverter_requests,
        "inverter_replies": proxy.inverter_replies,
        "bms_cycles": proxy.bms_cycles,
        "last_bms_cycle_ms": None if proxy.last_cycle_us is None else proxy.last_cycle_us // 1000,
    }


def _sys_reboot(proxy, params, now_us, wall_s):
    proxy.actions.append(("reboot",))
    return {"rebooting": True}


def _factory_reset(proxy, params, now_us, wall_s):
    """Every setting back to its default (the token too: the driver makes a new one), then reboot.

    The firmware does the same when pins.button is held for pins.button_hold_ms.
    """
    proxy.actions.append(("save_config", config_module.defaults()))
    proxy.actions.append(("reboot",))
    return {"reset": True, "rebooting": True}


# Home Assistant sensors per slot: (key in the state payload, name, unit, device class)
HA_SENSORS = (
    ("soc", "SOC", "%", "battery"),
    ("voltage", "Voltage", "V", "voltage"),
    ("current", "Current", "A", "current"),
    ("power", "Power", "W", "power"),
    ("temperature", "Temperature", "\u00b0C", "temperature"),
    ("temperature_max", "Temperature max", "\u00b0C", "temperature"),
    ("temperature_min", "Temperature min", "\u00b0C", "temperature"),
    ("cell_min", "Cell min", "V", "voltage"),
    ("cell_max", "Cell max", "V", "voltage"),
    ("cell_delta", "Cell delta", "V", "voltage"),
    ("remaining_ah", "Remaining", "Ah", None),
)

# method: (handler, changes state -> needs the token)
RPC_METHODS = {
    "VBMS.GetSummary": (_get_summary, False),
    "VBMS.ScanBLE": (_scan_ble, False),
    "Config.Get": (_config_get, False),
    "Config.Set": (_config_set, True),
    "Config.Save": (_config_save, True),
    "Sys.GetInfo": (_sys_info, False),
    "Sys.Reboot": (_sys_reboot, True),
    "Sys.FactoryReset": (_factory_reset, True),
}
