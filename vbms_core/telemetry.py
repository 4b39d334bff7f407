"""MQTT: telemetry per slot and for the totals, Home Assistant discovery, availability.

Topics (prefix = mqtt.topic_prefix, id = device.id):
  <prefix>/<id>/slot/<n>/state    JSON, SI units, every app.refresh_ms
  <prefix>/<id>/totals/state      JSON
  <prefix>/<id>/status            "online" (retained; the driver's last will says "offline")
  homeassistant/sensor/<unique>/config, homeassistant/binary_sensor/<unique>/config  (retained)
RPC frames arrive on <prefix>/<id>/rpc; the driver answers them (events.RpcCall).
"""

import json

from . import config as config_module
from .events import Publish

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


def topic(config, *parts):
    return "/".join((config["mqtt.topic_prefix"], config["device.id"]) + parts)


def _scaled(value, factor):
    return None if value is None else value / factor


def slot_state(row):
    """A summary row as the slot's state payload."""
    state = {"status": row["status"], "name": row["name"] or "slot %d" % row["slot"]}
    if "pack_voltage" not in row:
        return state
    voltage_v = row["pack_voltage"] / 100
    current_a = _scaled(row["pack_current"], 100)
    cells = row["cells"]
    alarm = row["warning"] or row["protection"] or row["fault_status"] & 0xFF
    state.update(
        {
            "soc": _scaled(row["SOC"], 10),
            "soc_estimated": row["SOC_estimated"],
            "soh": _scaled(row["SOH"], 10),
            "voltage": voltage_v,
            "current": current_a,
            "power": None if current_a is None else round(voltage_v * current_a, 1),
            "temperature": _scaled(row["cell_temp_avg"], 10),
            "temperature_max": _scaled(row["max_cell_temp"], 10),
            "temperature_min": _scaled(row["min_cell_temp"], 10),
            "cell_min": min(cells) / 1000 if cells else None,
            "cell_max": max(cells) / 1000 if cells else None,
            "cell_delta": (max(cells) - min(cells)) / 1000 if cells else None,
            "remaining_ah": _scaled(row["remain_capacity"], 100),
            "warning": row["warning"],
            "protection": row["protection"],
            "fault": row["fault_status"] & 0xFF,
            "alarm": "on" if alarm else "off",
        }
    )
    return state


def messages(config, summary):
    """(topic, payload) per configured slot and for the totals."""
    result = []
    for row in summary["bms"]:
        result.append((topic(config, "slot", str(row["slot"]), "state"), slot_state(row)))
    totals = summary["totals"]
    total_state = {"batteries": totals["batteries"], "online": totals["online"]}
    if "pack_current" in totals:
        current_a = _scaled(totals["pack_current"], 100)
        total_state["current"] = current_a
        total_state["soc"] = _scaled(totals["SOC"], 10)
        total_state["remaining_ah"] = totals["remain_capacity"] / 100
        total_state["power"] = None if current_a is None else round(totals["pack_voltage_avg"] / 100 * current_a, 1)
    result.append((topic(config, "totals", "state"), total_state))
    return result


def discovery(config, slots):
    """Home Assistant MQTT discovery messages: (topic, config) per sensor, retained."""
    result = []
    device_id = config["device.id"]
    availability = topic(config, "status")
    for slot in slots:
        if slot.kind == config_module.TYPE_NONE:
            continue
        state_topic = topic(config, "slot", str(slot.index), "state")
        device = {
            "identifiers": ["%s_slot%d" % (device_id, slot.index)],
            "name": slot.name or "Battery %d" % (slot.index + 1),
            "model": slot.model_name(),
            "manufacturer": "vbms",
            "via_device": device_id,
        }
        for key, label, unit, device_class in HA_SENSORS:
            unique = "%s_slot%d_%s" % (device_id, slot.index, key)
            sensor = {
                "name": label,
                "unique_id": unique,
                "object_id": unique,
                "state_topic": state_topic,
                "value_template": "{{ value_json.%s }}" % key,
                "availability_topic": availability,
                "device": device,
                "unit_of_measurement": unit,
            }
            if device_class:
                sensor["device_class"] = device_class
                sensor["state_class"] = "measurement"
            result.append(("homeassistant/sensor/%s/config" % unique, sensor))
        unique = "%s_slot%d_alarm" % (device_id, slot.index)
        alarm = {
            "name": "Alarm",
            "unique_id": unique,
            "state_topic": state_topic,
            "value_template": "{{ value_json.alarm }}",
            "payload_on": "on",
            "payload_off": "off",
            "device_class": "problem",
            "availability_topic": availability,
            "device": device,
        }
        result.append(("homeassistant/binary_sensor/%s/config" % unique, alarm))
    return result


class Telemetry:
    """When to publish: every app.refresh_ms with mqtt.enable, and at once after a (re)connection."""

    __slots__ = ("owner", "next_publish_us")

    def __init__(self, owner, now_us):
        self.owner = owner
        self.next_publish_us = now_us

    def enabled(self):
        return self.owner.config["mqtt.enable"]

    def connected(self, now_us):
        """The driver (re)connected to the broker: announce, then publish at once."""
        if not self.enabled():
            return
        config = self.owner.config
        self.owner.emit(Publish(topic(config, "status"), "online", True))
        for name, payload in discovery(config, self.owner.slots):
            self.owner.emit(Publish(name, json.dumps(payload), True))
        self.next_publish_us = now_us

    def tick(self, now_us):
        if not self.enabled() or now_us < self.next_publish_us:
            return
        self.next_publish_us = now_us + self.owner.config["app.refresh_ms"] * 1000
        for name, payload in messages(self.owner.config, self.owner.summary(now_us)):
            self.owner.emit(Publish(name, json.dumps(payload), False))

    def next_deadline_us(self):
        return self.next_publish_us if self.enabled() else None
