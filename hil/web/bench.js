// VBMS bench control: the simulated bench's own page (hil/bench_control.py serves it and its /api/).
// No dependencies, no build step.  The state is read every second; the traffic is polled from where it left off.
"use strict";

const $ = (id) => document.getElementById(id);
const known = (value) => value !== null && value !== undefined;
const POLL_MS = 1000;
const TRAFFIC_ROWS = 200; // kept in the page, newest first
let state = null;
let trafficNext = null; // the `after` of the next /api/traffic call (null: start from the last records)
let trafficTimer = null;
const rows = {}; // slot -> {tr, cells}

function el(tag, className, ...content) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  node.append(...content);
  return node;
}

function td(label, ...content) {
  const cell = el("td", "", ...content);
  cell.dataset.label = label;
  return cell;
}

function say(text, bad) {
  $("status").textContent = text;
  $("status").className = bad ? "error" : "done";
}

function words(params) {
  return Object.entries(params).filter(([, v]) => known(v)).map(([k, v]) => k + "=" + v).join(" ");
}

async function op(name, params) {
  try {
    const response = await fetch("/api/" + name, {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(params),
    });
    const body = await response.json();
    if (!response.ok) throw new Error(body.error || "HTTP " + response.status);
    say("t = " + body.t.toFixed(1) + " s: " + name + " " + words(params) + (body.result.id ? " (fault " + body.result.id + ")" : ""));
    await refresh();
    return body;
  } catch (error) {
    say(error.message, true);
    return null;
  }
}

function fill(select, options, keep) {
  const previous = keep ? select.value : null;
  select.replaceChildren(...options.map(([value, label]) => new Option(label, value)));
  if (previous !== null && options.some(([value]) => value === previous)) select.value = previous;
}

// --- batteries ---------------------------------------------------------------------------------

function setter(slot, operation, key, scale, step) {
  const input = el("input");
  input.type = "number";
  input.step = step;
  input.name = operation + "." + slot;
  input.addEventListener("keydown", async (event) => {
    if (event.key !== "Enter" || input.value === "") return;
    event.preventDefault();
    if (await op(operation, { slot, [key]: Number(input.value) * scale })) input.value = "";
  });
  return input;
}

function batteryRow(battery) {
  const slot = battery.slot;
  const failure = el("select");
  failure.name = "failure." + slot;
  fill(failure, [["", "none"]].concat(battery.failures.map((f) => [f, f])));
  failure.addEventListener("change", () => op("device_failure", { slot, failure: failure.value || null }));
  const cells = {
    name: el("small", ""), seen: td("Inverter sees"), alarms: td("Alarms"), failure,
    soc: setter(slot, "set_soc", "soc_pct", 1, "0.1"),
    temperature: setter(slot, "set_temperature", "temperature_c", 1, "0.5"),
    spread: setter(slot, "set_cell_spread", "cell_spread_mv", 1, "1"),
  };
  const tr = el("tr", "battery",
    td("#", String(slot)), td("Battery", el("b", "", battery.name), cells.name), cells.seen,
    td("SOC, %", cells.soc), td("Temp, \u00b0C", cells.temperature), td("Cell spread, mV", cells.spread),
    td("Failure", failure), cells.alarms);
  tr.dataset.slot = slot;
  return { tr, cells };
}

function seenText(battery) {
  const seen = battery.inverter;
  if (!seen || !seen.values) return [el("span", "unknown", seen && seen.comm_warning ? "W31" : "nothing yet")];
  const v = seen.values;
  const level = v.soc_permille < 200 ? " low" : v.soc_permille < 500 ? " mid" : ""; // as the dashboard's badges
  const parts = [(v.pack_voltage_mv / 1000).toFixed(2) + " V", (v.pack_current_ma / 1000).toFixed(2) + " A",
    (v.cell_temp_avg_ddegc / 10).toFixed(1) + " \u00b0C"];
  const shown = [el("span", "badge soc" + level, (v.soc_permille / 10).toFixed(1) + " %"), " ",
    el("span", "seen", parts.join(" \u00b7 ")),
    el("small", "", "cells " + v.min_cell_voltage_mv + "\u2013" + v.max_cell_voltage_mv + " mV")];
  if (seen.comm_warning) shown.unshift(el("span", "badge low", "W31"), " ");
  return shown;
}

function alarmText(battery) {
  const raised = Object.entries(battery.alarms).filter(([, bits]) => bits)
    .map(([word, bits]) => word + " 0x" + bits.toString(16).toUpperCase());
  const all = raised.concat(battery.conditions);
  return all.length ? all.map((text) => el("span", "tag", text)) : [el("span", "unknown", "none")];
}

function renderBatteries() {
  const body = $("batteries").tBodies[0];
  if (body.rows.length !== state.batteries.length) {
    body.replaceChildren();
    for (const battery of state.batteries) {
      rows[battery.slot] = batteryRow(battery);
      body.append(rows[battery.slot].tr);
    }
    fill($("alarm").slot, state.batteries.map((b) => [String(b.slot), b.slot + " " + b.name]), true);
    fill($("alarm").condition, state.conditions.map((c) => [c, c]), true);
    alarmWords();
  }
  for (const battery of state.batteries) {
    const { tr, cells } = rows[battery.slot];
    const where = battery.bus ? battery.bus + " bus, address " + battery.address : "BLE " + battery.address;
    cells.name.textContent = battery.type + " \u00b7 " + where + " \u00b7 " + (battery.current_ma / 1000).toFixed(2) + " A";
    cells.seen.replaceChildren(...seenText(battery));
    cells.alarms.replaceChildren(...alarmText(battery));
    cells.soc.placeholder = battery.soc_pct.toFixed(1);
    cells.temperature.placeholder = battery.temperature_c.toFixed(1);
    cells.spread.placeholder = String(battery.cell_spread_mv);
    if (document.activeElement !== cells.failure) cells.failure.value = battery.failure || "";
    tr.dataset.failure = battery.failure || "";
  }
}

function alarmWords() {
  const battery = state.batteries.find((b) => String(b.slot) === $("alarm").slot.value);
  if (battery) fill($("alarm").word, Object.keys(battery.alarms).map((w) => [w, w]), true);
}

// --- the inverter ----------------------------------------------------------------------------------

function showProfileFields() {
  const kind = $("profile").kind.value;
  for (const label of $("profile").querySelectorAll("[data-kind]")) label.hidden = label.dataset.kind !== kind;
}

function fillProfile(profile) {
  const form = $("profile");
  form.kind.value = profile.kind === "csv" ? "constant" : profile.kind;
  for (const key of ["watts", "peak_solar_w", "base_load_w", "day_length_s"]) {
    if (known(profile[key])) form[key].value = profile[key];
  }
  showProfileFields();
}

function profileWords(profile) {
  if (profile.kind === "constant") return "constant " + profile.watts + " W";
  if (profile.kind === "day") {
    return "a day of " + profile.day_length_s + " s: solar peak " + profile.peak_solar_w + " W, base load " + profile.base_load_w + " W";
  }
  return "recorded, " + profile.samples + " samples";
}

function renderInverter() {
  const inverter = state.inverter;
  $("inverter-section").hidden = !inverter;
  if (!inverter) return;
  if (!$("profile").dataset.filled) {
    fillProfile(inverter.profile);
    $("profile").dataset.filled = "1";
  }
  const currents = Object.entries(inverter.currents_ma).map(([unit, ma]) => "battery " + (Number(unit) + 1) + " " + (ma / 1000).toFixed(1) + " A");
  $("profile-now").textContent = "Now " + inverter.watts_now + " W (" + profileWords(inverter.profile) + ")"
    + " \u00b7 poll cycle " + inverter.cycles + (currents.length ? " \u00b7 " + currents.join(", ") : "");
  const warnings = $("warnings");
  warnings.className = inverter.warnings.length ? "error" : "ok";
  warnings.textContent = inverter.warnings.length ? inverter.warnings.join("; ") : "no inverter warnings";
}

// --- buses and faults -----------------------------------------------------------------------------------

function renderFaults() {
  const body = $("faults").tBodies[0];
  body.replaceChildren(...state.buses.map((bus) => {
    const rules = bus.faults.map((fault) => {
      const remove = el("button", "", "remove");
      remove.type = "button";
      remove.addEventListener("click", () => op("clear_bus_fault", { bus: bus.name, id: fault.id }));
      const left = known(fault.count) ? ", " + (fault.count - fault.hits) + " frames left" : "";
      return el("li", "", "#" + fault.id + " " + fault.text + (fault.probability < 1 ? " (p " + fault.probability + ")" : "") + left + " ", remove);
    });
    const clear = el("button", "", "clear all");
    clear.type = "button";
    clear.hidden = !bus.faults.length;
    clear.addEventListener("click", () => op("clear_bus_faults", { bus: bus.name }));
    const tr = el("tr", "battery", td("Bus", el("b", "", bus.name), el("small", "", bus.baud + " baud " + (bus.protocol || ""))),
      td("Counters", bus.frames + " frames, " + bus.collisions + " collisions"),
      td("Faults", bus.faults.length ? el("ul", "rules", ...rules) : el("span", "unknown", "none"), clear));
    tr.dataset.bus = bus.name;
    return tr;
  }));
  $("counters").textContent = state.buses.map((b) => b.name + ": " + b.frames + " frames, " + b.collisions + " collisions, " + b.faults.length + (b.faults.length === 1 ? " fault" : " faults")).join(" \u00b7 ");
  const form = $("fault");
  if (!form.bus.options.length) {
    fill(form.bus, state.buses.map((b) => [b.name, b.name]));
    fill(form.kind, state.fault_kinds.map((k) => [k, k]));
    faultEndpoints();
    fill($("traffic-bus"), [["", "all"]].concat(state.buses.map((b) => [b.name, b.name]), [["ble", "ble"], ["operator", "operator"]]), true);
  }
}

function faultEndpoints() {
  const form = $("fault");
  const bus = state.buses.find((b) => b.name === form.bus.value);
  const names = bus ? bus.endpoints.map((n) => [n, n]) : [];
  fill(form.source, [["", "anyone"]].concat(names), true);
  fill(form.target, [["", "everyone"]].concat(names), true);
}

// --- traffic ---------------------------------------------------------------------------------------------

function what(record) {
  if (record.operator) return "operator: " + record.operator.op + " " + words(record.operator.params);
  const decoded = record.decoded;
  let text = !decoded ? record.bytes + " bytes" : decoded.error ? "!! " + decoded.error
    : Object.entries(decoded).map(([k, v]) => k + "=" + (typeof v === "object" ? JSON.stringify(v) : v)).join(" ");
  if (record.collision) text += "  [COLLISION]";
  for (const fault of record.faults || []) text += "  [FAULT " + fault + "]";
  return text;
}

function trafficRow(record) {
  const bad = record.collision || (record.faults && record.faults.length) || (record.decoded && record.decoded.error);
  const tr = el("tr", record.operator ? "operator" : bad ? "bad" : "",
    td("t, s", record.t.toFixed(3)), td("Bus", record.bus), td("From", record.from), td("What", what(record)));
  tr.title = record.hex + (record.bytes * 2 > record.hex.length ? "\u2026 (" + record.bytes + " bytes)" : "");
  return tr;
}

async function pollTraffic() {
  clearTimeout(trafficTimer);
  if ($("pause").checked) return;
  const query = new URLSearchParams({ limit: String(TRAFFIC_ROWS) });
  if (trafficNext !== null) query.set("after", String(trafficNext));
  if ($("traffic-bus").value) query.set("bus", $("traffic-bus").value);
  try {
    const response = await fetch("/api/traffic?" + query);
    const body = await response.json();
    if (!response.ok) throw new Error(body.error);
    trafficNext = body.next;
    const tbody = $("traffic").tBodies[0];
    tbody.prepend(...body.records.reverse().map(trafficRow));
    while (tbody.rows.length > TRAFFIC_ROWS) tbody.deleteRow(-1);
    $("traffic-count").textContent = trafficNext + " records in the trace" + (body.skipped ? ", " + body.skipped + " not shown" : "");
  } catch (error) {
    $("traffic-count").textContent = "cannot read the traffic: " + error.message;
  }
  trafficTimer = setTimeout(pollTraffic, POLL_MS);
}

function restartTraffic() {
  trafficNext = null;
  $("traffic").tBodies[0].replaceChildren();
  pollTraffic();
}

// --- the whole page -----------------------------------------------------------------------------------------

async function refresh() {
  try {
    const response = await fetch("/api/state");
    if (!response.ok) throw new Error("HTTP " + response.status);
    state = await response.json();
  } catch (error) {
    $("clock").textContent = "the bench does not answer: " + error.message;
    return;
  }
  $("bench").textContent = "bench " + state.bench + (state.description ? ": " + state.description : "");
  $("clock").textContent = "t = " + state.t_s.toFixed(0) + " s";
  if (state.dashboard) {
    $("dashboard").href = state.dashboard + "/";
    $("dashboard").hidden = false;
  }
  renderInverter();
  renderBatteries();
  renderFaults();
}

function formValue(form, name) {
  const input = form[name];
  return input.value === "" ? null : input.type === "number" ? Number(input.value) : input.value;
}

$("profile").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = $("profile");
  const kind = form.kind.value;
  const params = { kind };
  for (const label of form.querySelectorAll('[data-kind="' + kind + '"] input')) params[label.name] = formValue(form, label.name);
  if (await op("set_profile", params)) delete form.dataset.filled;
});
$("profile").kind.addEventListener("change", showProfileFields);
$("alarm").addEventListener("submit", (event) => {
  event.preventDefault();
  const form = $("alarm");
  op("raise_alarm", { slot: Number(form.slot.value), word: form.word.value, bit: formValue(form, "bit") });
});
$("alarm").slot.addEventListener("change", alarmWords);
$("clear-alarms").addEventListener("click", () => op("clear_alarms", { slot: Number($("alarm").slot.value) }));
for (const [id, on] of [["force", true], ["release", false]]) {
  $(id).addEventListener("click", () => op("force_condition", { slot: Number($("alarm").slot.value), condition: $("alarm").condition.value, on }));
}
$("fault").addEventListener("submit", (event) => {
  event.preventDefault();
  const form = $("fault");
  op("bus_fault", {
    bus: form.bus.value, kind: form.kind.value, source: formValue(form, "source"), target: formValue(form, "target"),
    count: formValue(form, "count"), probability: formValue(form, "probability"),
  });
});
$("fault").bus.addEventListener("change", faultEndpoints);
$("traffic-bus").addEventListener("change", restartTraffic);
$("pause").addEventListener("change", () => ($("pause").checked ? clearTimeout(trafficTimer) : restartTraffic()));

// Dark as the dashboard, unless the system asks for light; a choice made here is remembered.
const root = document.documentElement;
root.dataset.theme = localStorage.getItem("vbms-theme") || (matchMedia("(prefers-color-scheme: light)").matches ? "light" : "dark");
$("theme").addEventListener("click", () => {
  root.dataset.theme = root.dataset.theme === "dark" ? "light" : "dark";
  localStorage.setItem("vbms-theme", root.dataset.theme);
});
refresh().then(pollTraffic);
setInterval(refresh, POLL_MS);
