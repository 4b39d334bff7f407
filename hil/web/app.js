// VBMS dashboard: reads the device's RPC (/rpc/<Method>); no dependencies, no build step, works offline.
// Served by `vbms run` and, gzipped, from the ESP32's flash: keep it small.
"use strict";

const TYPES = [["0", "None"], ["1", "BYD PRO (RS485)"], ["2", "JK-BMS (BLE)"], ["3", "JK-PB (RS485)"], ["4", "JK 4E57 (RS485)"]];
const HOUR_MS = 3600000;
const ICON_BUS = '<svg class="i" viewBox="0 0 16 16" aria-label="RS485 bus"><path d="M6 1h4v4H6zM1 11h4v4H1zM6 11h4v4H6zM11 11h4v4h-4zM8 5v6M3 11V8h10v3"/></svg>';
const ICON_BLE = '<svg class="i" viewBox="0 0 16 16" aria-label="Bluetooth"><path d="M4 4.5l8 7-4 3.5V1l4 3.5-8 7"/></svg>';
// [key in a history sample, chart title, unit, digits]
const SERIES = [["soc", "SOC", "%", 1], ["v", "Pack voltage", "V", 2], ["a", "Current", "A", 2], ["age", "Data age", "s", 0]];
const $ = (id) => document.getElementById(id);
const known = (value) => value !== null && value !== undefined;
let timer = null;
let summary = null;
const history = {}; // slot -> [{t, soc, v, a, age}], the last hour, oldest first
const opened = new Set(); // slots whose detail is shown

async function rpc(method, params, token) {
  const headers = { "Content-Type": "application/json" };
  if (token) headers.Authorization = "Bearer " + token;
  const response = await fetch("/rpc/" + method, { method: "POST", headers, body: JSON.stringify(params || {}) });
  const body = await response.json();
  if (!response.ok) throw new Error(body.error ? body.error.message : "HTTP " + response.status);
  return body;
}

function el(tag, className, ...content) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  node.append(...content);
  return node;
}

// A value in its unit, or the word "unknown" where the source reports nothing (never 0).
function value(raw, scale, digits, unit) {
  return known(raw) ? (raw / scale).toFixed(digits) + (unit || "") : el("span", "unknown", "unknown");
}

function percent(permille) {
  return (permille / 10).toFixed(permille % 10 ? 1 : 0) + "%";
}

function badge(kind, permille, estimated) {
  if (!known(permille)) return el("span", "badge none", "unknown");
  const level = kind === "soh" ? "" : permille < 200 ? " low" : permille < 500 ? " mid" : "";
  const node = el("span", "badge " + kind + level, (estimated ? "~" : "") + percent(permille));
  if (estimated) node.title = "estimated from the cell voltages";
  return node;
}

function pill(enabled, what) {
  const node = el("span", "pill " + (enabled === true ? "on " + what : enabled === false ? "off" : "none"));
  node.title = what + (enabled === true ? " enabled" : enabled === false ? " disabled" : ": unknown");
  node.setAttribute("aria-label", node.title);
  return node;
}

function td(label, ...content) {
  const cell = el("td", "", ...content);
  cell.dataset.label = label;
  return cell;
}

function statusWords(row) {
  const age = known(row.age_s) ? row.age_s + " s" : "";
  const detail = row.error || { online: "data " + age + " old", stale: "no fresh data for " + age, waiting: "no data yet" }[row.status] || "";
  return [el("span", "status " + row.status, row.status), el("small", "", detail)];
}

function batteryRow(row) {
  const tr = el("tr", "battery");
  tr.dataset.slot = row.slot;
  tr.dataset.status = row.status;
  const name = el("button", "name", row.name || row.model);
  name.type = "button";
  name.addEventListener("click", () => { opened.has(row.slot) ? opened.delete(row.slot) : opened.add(row.slot); renderHome(); });
  const where = el("span", "addr");
  where.innerHTML = row.type === "jk_ble" ? ICON_BLE : ICON_BUS;
  where.append(" " + row.addr);
  const capacity = known(row.remain_capacity)
    ? [el("b", "", value(row.remain_capacity, 100, 2)), " / ", value(row.full_charge_capacity, 100, 2)]
    : [value(null)];
  tr.append(
    td("#", String(row.slot)),
    td("Name", name, where, el("small", "model", row.model)),
    td("Status", ...statusWords(row)),
    td("Cap, Ah", ...capacity),
    td("SOC", badge("soc", row.SOC, row.SOC_estimated === true)),
    td("SOH", badge("soh", row.SOH)),
    td("Volt", value(row.pack_voltage, 100, 2)),
    td("Cur", value(row.pack_current, 100, 2)),
    td("Temp", el("b", "", value(row.cell_temp_avg, 10, 1))),
    td("ChE", pill(row.charge_enabled, "charge")),
    td("DcE", pill(row.discharge_enabled, "discharge")),
  );
  return tr;
}

function totalsRow(totals, rows) {
  const soh = rows.filter((r) => r.status === "online" && known(r.SOH)).map((r) => r.SOH);
  const foot = $("totals");
  foot.replaceChildren(
    td("", ""), td("", el("b", "", "Total")), td("", totals.online + " / " + totals.batteries + " online"),
    td("Cap, Ah", known(totals.remain_capacity) ? value(totals.remain_capacity, 100, 0) + " / " + value(totals.full_charge_capacity, 100, 0) + " Ah" : ""),
    td("SOC", badge("soc", totals.SOC)),
    td("SOH", soh.length ? badge("soh", Math.round(soh.reduce((a, b) => a + b) / soh.length)) : ""),
    td("Volt", known(totals.pack_voltage_avg) ? value(totals.pack_voltage_avg, 100, 2, " V") : ""),
    td("Cur", known(totals.pack_current) ? value(totals.pack_current, 100, 2, " A") : ""),
    td("Temp", known(totals.temp_max) ? "max " + value(totals.temp_max, 10, 1) : ""), td("", ""), td("", ""),
  );
}

// --- charts: small SVG drawn here, no library ---------------------------------------------

function lineChart(samples, key, title, unit, digits) {
  const W = 240, H = 110, L = 40, R = 6, T = 22, B = 16;
  const points = samples.filter((s) => known(s[key]));
  const last = points.length ? points[points.length - 1][key].toFixed(digits) + " " + unit : "unknown";
  let svg = '<text class="t" x="4" y="14">' + title + ": " + last + "</text>";
  if (points.length) {
    const now = samples[samples.length - 1].t;
    const span = Math.min(HOUR_MS, Math.max(60000, now - samples[0].t));
    const values = points.map((s) => s[key]);
    const lo = Math.min(...values), hi = Math.max(...values);
    const x = (t) => (L + (W - L - R) * (1 - (now - t) / span)).toFixed(1);
    const y = (v) => (hi === lo ? (T + H - B) / 2 : T + ((hi - v) / (hi - lo)) * (H - T - B)).toFixed(1);
    let lines = "", segment = [];
    for (const s of samples.concat([{}])) {
      if (known(s[key])) segment.push(x(s.t) + "," + y(s[key]));
      else if (segment.length) { lines += '<polyline points="' + segment.join(" ") + '"/>'; segment = []; }
    }
    const end = points[points.length - 1];
    svg += '<path class="g" d="M' + L + " " + T + "H" + (W - R) + "M" + L + " " + (H - B) + "H" + (W - R) + '"/>'
      + '<text x="' + (L - 4) + '" y="' + (T + 4) + '" class="y">' + hi.toFixed(digits) + "</text>"
      + '<text x="' + (L - 4) + '" y="' + (H - B + 4) + '" class="y">' + lo.toFixed(digits) + "</text>"
      + '<text x="' + L + '" y="' + (H - 3) + '">-' + Math.round(span / 60000) + ' min</text><text x="' + (W - R) + '" y="' + (H - 3) + '" class="y">now</text>'
      + lines + '<circle r="2.5" cx="' + x(end.t) + '" cy="' + y(end[key]) + '"/>';
  }
  return '<svg class="chart" data-series="' + key + '" viewBox="0 0 ' + W + " " + H + '">' + svg + "</svg>";
}

function cellChart(cells) {
  const W = 240, H = 110, L = 34, T = 8, B = 16;
  const lo = Math.min(...cells), hi = Math.max(...cells);
  // Bars start below the lowest cell, so that a delta of a few mV is visible.
  const base = Math.floor((lo - Math.max(20, hi - lo)) / 10) * 10;
  const width = (W - L) / cells.length;
  let bars = "";
  cells.forEach((mv, index) => {
    const height = ((mv - base) / (hi - base)) * (H - T - B);
    const kind = mv === hi && hi !== lo ? "max" : mv === lo && hi !== lo ? "min" : "";
    bars += '<rect class="cell ' + kind + '" x="' + (L + index * width + 1).toFixed(1) + '" y="' + (H - B - height).toFixed(2)
      + '" width="' + (width - 2).toFixed(1) + '" height="' + height.toFixed(2) + '"><title>cell ' + (index + 1) + ": " + mv + " mV</title></rect>";
  });
  return '<svg class="chart cells" viewBox="0 0 ' + W + " " + H + '"><text x="' + (L - 4) + '" y="' + (T + 4) + '" class="y">' + hi
    + '</text><text x="' + (L - 4) + '" y="' + (H - B + 4) + '" class="y">' + base + '</text><text x="' + L + '" y="' + (H - 3) + '">1</text><text x="'
    + W + '" y="' + (H - 3) + '" class="y">' + cells.length + "</text>" + bars + "</svg>";
}

function detailRow(row) {
  const cells = row.cells || [];
  const lo = Math.min(...cells), hi = Math.max(...cells);
  const facts = ["slot " + row.slot + ", the inverter's battery " + (row.unit + 1)];
  if (row.serial_no) facts.push("serial " + row.serial_no);
  if (known(row.cycle_count)) facts.push(row.cycle_count + " cycles");
  if (known(row.max_charge_current)) facts.push("charge limit " + (row.max_charge_current / 100).toFixed(1) + " A");
  const hex = (bits) => "0x" + bits.toString(16).toUpperCase().padStart(4, "0");
  if (known(row.warning)) facts.push("DEYE warning " + hex(row.warning) + ", protection " + hex(row.protection) + ", fault/status " + hex(row.fault_status));
  const body = el("td");
  body.colSpan = 11;
  body.append(el("p", "facts", facts.join(" \u00b7 ")));
  const charts = el("div", "charts");
  charts.innerHTML = SERIES.map(([key, title, unit, digits]) => lineChart(history[row.slot] || [], key, title, unit, digits)).join("");
  const summaryText = cells.length
    ? cells.length + " cells: min " + lo + " mV (cell " + (cells.indexOf(lo) + 1) + "), max " + hi + " mV (cell " + (cells.indexOf(hi) + 1) + "), delta " + (hi - lo) + " mV"
    : "cell voltages unknown";
  const cellBox = el("div", "cellbox", el("p", "cell-summary", summaryText));
  if (cells.length) cellBox.insertAdjacentHTML("beforeend", cellChart(cells));
  charts.append(cellBox);
  body.append(charts);
  const tr = el("tr", "detail", body);
  tr.dataset.slot = row.slot;
  return tr;
}

function renderHome() {
  if (!summary) return;
  const rows = [];
  for (const row of summary.bms) {
    rows.push(batteryRow(row));
    if (opened.has(row.slot)) rows.push(detailRow(row));
  }
  $("batteries").tBodies[0].replaceChildren(...rows);
  totalsRow(summary.totals, summary.bms);
}

function remember(rows, now) {
  for (const row of rows) {
    const samples = history[row.slot] || (history[row.slot] = []);
    // Only fresh data is plotted: a stale slot still carries its last registers, which are not the present.
    const fresh = row.status === "online";
    const pick = (raw, scale) => (fresh && known(raw) ? raw / scale : null);
    samples.push({ t: now, soc: pick(row.SOC, 10), v: pick(row.pack_voltage, 100), a: pick(row.pack_current, 100), age: known(row.age_s) ? row.age_s : null });
    while (samples.length && samples[0].t < now - HOUR_MS) samples.shift();
  }
}

async function refresh() {
  try {
    const response = await fetch("/rpc/VBMS.GetSummary");
    if (!response.ok) throw new Error("HTTP " + response.status);
    summary = await response.json();
    remember(summary.bms, Date.now());
    $("home-error").textContent = "";
    $("updated").textContent = "Last updated: " + new Date().toLocaleTimeString();
    renderHome();
  } catch (error) {
    $("home-error").textContent = "cannot read the summary: " + error.message;
  }
}

function schedule() {
  if (timer) clearInterval(timer);
  const seconds = Number(document.querySelector('input[name="refresh"]:checked').value);
  timer = seconds ? setInterval(refresh, seconds * 1000) : null;
}

// --- settings -----------------------------------------------------------------------

let config = null;

function slotRow(index) {
  const slot = config["bms" + index];
  const tr = el("tr");
  tr.dataset.slot = index;
  const type = el("select");
  for (const [code, label] of TYPES) type.append(new Option(label, code, false, String(slot.type) === code));
  type.name = "bms" + index + ".type";
  const inputs = { type };
  for (const [field, kind] of [["name", "text"], ["addr", "text"], ["voltage", "number"]]) {
    const input = el("input");
    input.type = kind;
    input.name = "bms" + index + "." + field;
    input.value = slot[field];
    if (kind === "number") input.step = "0.1";
    inputs[field] = input;
  }
  const icon = el("span", "addr");
  const showIcon = () => { icon.innerHTML = type.value === "0" ? "" : type.value === "2" ? ICON_BLE : ICON_BUS; };
  type.addEventListener("change", showIcon);
  showIcon();
  tr.append(td("#", String(index)), td("Name", inputs.name), td("Type", type), td("Addr", icon, inputs.addr),
    td("Charge voltage, V", inputs.voltage), el("td", "field-error"));
  return tr;
}

async function loadSettings() {
  config = await rpc("Config.Get");
  $("slots").tBodies[0].replaceChildren(...Array.from({ length: 15 }, (_, index) => slotRow(index)));
}

function changedSettings() {
  const changes = {};
  for (const input of $("slots").querySelectorAll("input, select")) {
    const [slot, field] = input.name.split(".");
    const value = field === "type" || field === "voltage" ? Number(input.value) : input.value;
    if (value !== config[slot][field]) changes[input.name] = value;
  }
  return changes;
}

async function save() {
  for (const cell of $("slots").querySelectorAll(".field-error")) cell.textContent = "";
  const token = $("token").value;
  localStorage.setItem("vbms-token", token);
  const changes = changedSettings();
  if (!Object.keys(changes).length) { $("settings-status").textContent = "nothing changed"; return; }
  try {
    await rpc("Config.Set", { config: changes }, token);
    await rpc("Config.Save", {}, token);
    $("settings-status").textContent = "saved";
    await loadSettings();
  } catch (error) {
    $("settings-status").textContent = error.message;
    const match = /^bms(\d+)\./.exec(error.message);
    if (match) $("slots").querySelector('tr[data-slot="' + match[1] + '"] .field-error').textContent = error.message;
  }
}

async function scan() {
  $("settings-status").textContent = "scanning...";
  try {
    const result = await rpc("VBMS.ScanBLE", { seconds: 3 });
    $("settings-status").textContent = result.devices.length + " device(s) found";
    $("scan-results").replaceChildren(...result.devices.map((device) => {
      const use = el("button", "", "use");
      use.type = "button";
      use.addEventListener("click", () => {
        const free = Array.from($("slots").tBodies[0].rows).find((tr) => tr.querySelector("select").value === "0");
        if (!free) return;
        free.querySelector("select").value = "2";
        free.querySelector("select").dispatchEvent(new Event("change"));
        free.querySelector('input[name$=".addr"]').value = device.address;
        free.querySelector('input[name$=".name"]').value = device.name;
      });
      return el("li", "", device.address + " " + device.name + (device.connected ? " (connected)" : "") + " ", use);
    }));
  } catch (error) {
    $("settings-status").textContent = error.message;
  }
}

// --- views ----------------------------------------------------------------------------

function route() {
  const settings = location.hash === "#settings";
  $("home").hidden = settings;
  $("settings").hidden = !settings;
  if (settings) loadSettings().catch((error) => { $("settings-status").textContent = error.message; });
  else refresh();
}

// Dark as the original, unless the system asks for light; a choice made here is remembered.
const root = document.documentElement;
root.dataset.theme = localStorage.getItem("vbms-theme") || (matchMedia("(prefers-color-scheme: light)").matches ? "light" : "dark");
$("theme").addEventListener("click", () => {
  root.dataset.theme = root.dataset.theme === "dark" ? "light" : "dark";
  localStorage.setItem("vbms-theme", root.dataset.theme);
});
$("refresh").addEventListener("change", schedule);
$("save").addEventListener("click", save);
$("scan").addEventListener("click", scan);
$("token").value = localStorage.getItem("vbms-token") || "";
window.addEventListener("hashchange", route);
route();
schedule();
