"""MQTT telemetry of the proxy core (vbms_core.telemetry), driven through Proxy.feed.

Expected values come from outside the code under test:
- the battery model (simulators/battery.py) for what a slot reports, through the BYD
  and JK device models; BYD carries whole percent and whole degrees C
  (deye-byd-modbus.md 2.3) and a B-Plus 2.5 module's remaining capacity is
  SOC x 50 Ah x SOH (deye-byd-modbus.md 1.3.4: "49.5 Ah = SOC*5000*SOH/100/100");
- Home Assistant's MQTT discovery documentation (home-assistant.io/integrations/mqtt,
  "Discovery topic"): the config topic is <discovery_prefix>/<component>/[<node_id>/]<object_id>/config,
  prefix "homeassistant" by default, object_id only of [a-zA-Z0-9_-]; config messages are
  retained so Home Assistant finds them after a restart; an entity names its state_topic,
  unique_id and availability_topic;
- Home Assistant's sensor device classes and their units (developers.home-assistant.io,
  docs/core/entity/sensor.md, "Available device classes"): battery %, voltage V,
  current A, power W, temperature degC.
"""

import json
import re

import pytest
from wiring import Wiring

from simulators.battery import BatteryModel
from simulators.byd.device import BydModule
from simulators.jk.device import JkBms
from vbms_core import app
from vbms_core import events as ev

MQTT = {
    "mqtt.enable": True,
    "mqtt.server": "broker.local:1883",
    "mqtt.topic_prefix": "home/vbms",
    "device.id": "garage",
}
STATUS_TOPIC = "home/vbms/garage/status"
DISCOVERY_TOPIC = re.compile(r"^homeassistant/(sensor|binary_sensor)/([a-zA-Z0-9_-]+)/config$")
HA_DEVICE_CLASS_UNITS = {"battery": "%", "voltage": "V", "current": "A", "power": "W", "temperature": "\u00b0C"}


class MqttWiring(Wiring):
    """Wiring that records when each message was published, with its payload parsed."""

    def publish(self, action):
        payload = action.payload if action.payload == "online" else json.loads(action.payload)
        self.published.append((self.now_us, action.topic, payload, action.retain))

    def states(self, topic):
        return [(when, payload) for when, name, payload, _ in self.published if name == topic]


def byd_bench(battery, **settings):
    config = dict(MQTT, **{"bms0.type": 1, "bms0.addr": "1", "bms0.name": "Rack A"})
    config.update(settings)
    return MqttWiring(config, [BydModule(1, battery)])


def test_connecting_announces_online_then_retained_discovery_for_configured_slots_only():
    config = dict(MQTT)
    config.update({"bms0.type": 1, "bms0.addr": "1", "bms0.name": "Rack A"})
    config.update({"bms2.type": 2, "bms2.addr": "C8:47:8C:10:00:02"})
    proxy = app.Proxy(config, 0)
    proxy.feed(ev.Tick(0))  # the first telemetry goes out; the next is due a refresh period (1 s) later
    actions = proxy.feed(ev.MqttConnected(500_000))
    assert all(isinstance(action, ev.Publish) for action in actions)
    assert (actions[0].topic, actions[0].payload, actions[0].retain) == (STATUS_TOPIC, "online", True)
    configs = {}
    for action in actions[1:]:
        match = DISCOVERY_TOPIC.match(action.topic)
        assert match, action.topic
        assert action.retain, action.topic
        entity = json.loads(action.payload)
        configs[action.topic] = (match.group(1), entity)
    unique_ids = [entity["unique_id"] for _, entity in configs.values()]
    assert len(unique_ids) == len(set(unique_ids)) == len(configs)
    by_state_topic = {}
    for component, entity in configs.values():
        assert entity["availability_topic"] == STATUS_TOPIC
        by_state_topic.setdefault(entity["state_topic"], []).append((component, entity))
    # slot 1 is not configured: nothing is announced for it
    assert sorted(by_state_topic) == ["home/vbms/garage/slot/0/state", "home/vbms/garage/slot/2/state"]
    for entities in by_state_topic.values():
        assert [component for component, _ in entities].count("binary_sensor") == 1
        assert len({json.dumps(entity["device"], sort_keys=True) for _, entity in entities}) == 1
    rack = by_state_topic["home/vbms/garage/slot/0/state"][0][1]["device"]
    ble = by_state_topic["home/vbms/garage/slot/2/state"][0][1]["device"]
    assert rack["name"] == "Rack A" and rack["identifiers"] != ble["identifiers"]
    # the inverter's screen counts batteries from 1 (deye-byd-modbus.md 1.3.1): slot 2 is battery 3
    assert ble["name"] == "Battery 3"
    # after a (re)connection the telemetry goes out at once, not at the end of the refresh period
    published = [action.topic for action in proxy.feed(ev.Tick(500_000)) if isinstance(action, ev.Publish)]
    assert "home/vbms/garage/slot/0/state" in published and "home/vbms/garage/totals/state" in published


def test_discovered_sensors_use_home_assistant_units_and_name_keys_the_state_carries():
    battery = BatteryModel(seed=2, soc_permille=640)
    wiring = byd_bench(battery)
    wiring.run_until(1_500_000)
    wiring.feed(ev.MqttConnected(wiring.now_us))
    wiring.run_until(wiring.now_us + 2_000)
    entities = [payload for _, topic, payload, _ in wiring.published if DISCOVERY_TOPIC.match(topic)]
    state = wiring.states("home/vbms/garage/slot/0/state")[-1][1]
    classes = set()
    for entity in entities:
        key = re.fullmatch(r"\{\{ value_json\.(\w+) \}\}", entity["value_template"]).group(1)
        assert key in state, key
        if entity["unique_id"].endswith("alarm"):
            assert entity["device_class"] == "problem"
            assert state[key] in (entity["payload_on"], entity["payload_off"])
            continue
        assert isinstance(state[key], float), (key, state[key])
        if entity.get("device_class"):
            classes.add(entity["device_class"])
            assert entity["unit_of_measurement"] == HA_DEVICE_CLASS_UNITS[entity["device_class"]], entity
    assert classes == set(HA_DEVICE_CLASS_UNITS)


def test_slot_state_is_the_battery_in_si_units_every_refresh_period():
    battery = BatteryModel(seed=5, soc_permille=730)
    battery.advance(1.0, -12_000)  # discharging 12 A
    wiring = byd_bench(battery, **{"app.refresh_ms": 2000})
    wiring.run_until(6_500_000)
    states = wiring.states("home/vbms/garage/slot/0/state")
    times = [when for when, _ in states]
    assert times == [1_000, 2_001_000, 4_001_000, 6_001_000]  # the first tick, then every 2 s
    _, state = states[-1]
    cells_mv = battery.cell_voltages_mv()
    temps_degc = [round(t / 10) for t in battery.temperatures_ddegc(4)]  # BYD: whole degrees C
    soc_pct = battery.soc_permille // 10
    assert state["status"] == "online" and state["name"] == "Rack A"
    assert abs(state["voltage"] - battery.pack_voltage_mv / 1000) <= 0.005
    assert state["current"] == -12.0
    assert state["power"] == pytest.approx(battery.pack_voltage_mv / 1000 * -12.0, abs=0.1)
    assert state["soc"] == soc_pct and state["soh"] == 100.0 and state["soc_estimated"] is False
    assert state["remaining_ah"] == soc_pct * 50 * 100 / 100 / 100
    assert (state["cell_min"], state["cell_max"]) == (min(cells_mv) / 1000, max(cells_mv) / 1000)
    assert state["cell_delta"] == pytest.approx((max(cells_mv) - min(cells_mv)) / 1000)
    assert (state["temperature_max"], state["temperature_min"]) == (max(temps_degc), min(temps_degc))
    assert state["temperature"] == pytest.approx(sum(temps_degc) / 4, abs=0.05)
    assert (state["warning"], state["protection"], state["fault"], state["alarm"]) == (0, 0, 0, "off")
    totals = wiring.states("home/vbms/garage/totals/state")[-1][1]
    assert totals == {
        "batteries": 1,
        "online": 1,
        "current": -12.0,
        "soc": soc_pct,
        "remaining_ah": state["remaining_ah"],
        "power": pytest.approx(state["power"], abs=0.1),
    }


def test_a_battery_warning_turns_the_alarm_on():
    battery = BatteryModel(seed=1, soc_permille=500)
    battery.forced = {"soc_low"}  # BYD alarm bit 12, DEYE warning bit 11 "capacity (SOC) low" (1.3.2)
    wiring = byd_bench(battery)
    wiring.run_until(1_500_000)
    state = wiring.states("home/vbms/garage/slot/0/state")[-1][1]
    assert state["warning"] == 1 << 11 and state["alarm"] == "on"


def test_a_slot_without_a_reading_reports_only_its_status():
    config = dict(MQTT, **{"bms3.type": 1, "bms3.addr": "9"})
    wiring = MqttWiring(config)  # nothing answers on the bus
    wiring.run_until(1_000)
    assert wiring.states("home/vbms/garage/slot/3/state") == [(1_000, {"status": "waiting", "name": "slot 3"})]
    assert wiring.states("home/vbms/garage/totals/state") == [(1_000, {"batteries": 1, "online": 0})]


def test_a_jk04_pack_reports_what_it_does_not_measure_as_null():
    # JK04 frames carry cell voltages but no current, SOC, capacity or temperatures (jk-protocols.md 9.1)
    battery = BatteryModel(seed=3, soc_permille=550)
    config = dict(MQTT, **{"bms0.type": 2, "bms0.addr": "C8:47:8C:10:00:04"})
    wiring = MqttWiring(config, ble_devices={0: JkBms(battery, layout="JK04")})
    wiring.run_until(3_000_000)
    state = wiring.states("home/vbms/garage/slot/0/state")[-1][1]
    assert state["status"] == "online"
    for key in ("current", "power", "temperature", "temperature_max", "temperature_min", "remaining_ah"):
        assert state[key] is None, key
    assert state["soc_estimated"] is True and 0 < state["soc"] <= 100
    assert state["cell_max"] == max(battery.cell_voltages_mv()) / 1000
    totals = wiring.states("home/vbms/garage/totals/state")[-1][1]
    assert totals["online"] == 1 and totals["soc"] is None


def test_totals_do_not_turn_a_current_nobody_measures_into_zero():
    battery = BatteryModel(seed=3, soc_permille=550)
    config = dict(MQTT, **{"bms0.type": 2, "bms0.addr": "C8:47:8C:10:00:04"})
    wiring = MqttWiring(config, ble_devices={0: JkBms(battery, layout="JK04")})
    wiring.run_until(3_000_000)
    totals = wiring.states("home/vbms/garage/totals/state")[-1][1]
    assert totals["online"] == 1
    assert totals["current"] is None and totals["power"] is None


def test_with_mqtt_disabled_nothing_is_published():
    proxy = app.Proxy({"bms0.type": 1, "bms0.addr": "1"}, 0)
    assert proxy.feed(ev.MqttConnected(0)) == ()
    actions = proxy.feed(ev.Tick(10_000_000))
    assert not [action for action in actions if isinstance(action, ev.Publish)]
    assert proxy.telemetry.next_deadline_us() is None
