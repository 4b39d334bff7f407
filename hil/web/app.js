// VBMS dashboard: talks to the device's RPC (POST /rpc/<Method>); no dependencies, works offline.
"use strict";

const TYPES = [["0", "None"], ["1", "BYD PRO (RS485)"], ["2", "JK-BMS (BLE)"], ["3", "JK-PB (RS485)"], ["4", "JK 4E57 (RS485)"]];
const $ = (id) => document.getElementById(id);
let timer = null;
let summary = null;
let selected = null;

async function rpc(method, params, token) {
  const headers = { "Content-Type": "application/json" };
  if (token) headers.Authorization = "Bearer " + token;
  const response = await fetch("/rpc/" + method, { method: "POST", headers, body: JSON.stringify(params || {}) });
  const body = await response.json();
  if (!response.ok) throw new Error(body.error ? body.error.message : "HTTP " + response.status);
  return body;
}

function fixed(value, scale, digits) {
  return value === undefined || value === null ? "" : (value / scale).toFixed(digits);
}

function onOff(value) {
  return value === true ? "on" : value === false ? "off" : "";
}

function cell(text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

function renderHome() {
  const body = $("batteries").querySelector("tbody");
  body.replaceChildren();
  for (const row of summary.bms) {
    const tr = document.createElement("tr");
    tr.dataset.slot = row.slot;
    const known = (value) => value !== undefined && value !== null;
    const capacity = known(row.remain_capacity) ? fixed(row.remain_capacity, 100, 1) + " / " + fixed(row.full_charge_capacity, 100, 1) : "";
    tr.append(
      cell(row.slot + 1), cell(row.name || row.model), cell(row.type + " " + row.addr), cell(row.status, row.status),
      cell(capacity), cell(known(row.SOC) ? fixed(row.SOC, 10, 1) + "%" : ""), cell(known(row.SOH) ? fixed(row.SOH, 10, 0) + "%" : ""),
      cell(known(row.pack_voltage) ? fixed(row.pack_voltage, 100, 2) + " V" : ""),
      cell(known(row.pack_current) ? fixed(row.pack_current, 100, 2) + " A" : ""),
      cell(known(row.cell_temp_avg) ? fixed(row.cell_temp_avg, 10, 1) + " \u00b0C" : ""),
      cell(onOff(row.charge_enabled)), cell(onOff(row.discharge_enabled)),
    );
    tr.title = row.error || "";
    tr.addEventListener("click", () => { selected = row.slot; renderDetail(); });
    body.append(tr);
  }
  const totals = summary.totals;
  const foot = $("totals");
  foot.replaceChildren(
    cell(""), cell("Total"), cell(""), cell(totals.online + " / " + totals.batteries + " online"),
    cell(totals.remain_capacity === undefined ? "" : fixed(totals.remain_capacity, 100, 1) + " / " + fixed(totals.full_charge_capacity, 100, 1)),
    cell(totals.SOC === undefined || totals.SOC === null ? "" : fixed(totals.SOC, 10, 1) + "%"), cell(""),
    cell(totals.pack_voltage_avg === undefined ? "" : fixed(totals.pack_voltage_avg, 100, 2) + " V"),
    cell(totals.pack_current === undefined ? "" : fixed(totals.pack_current, 100, 2) + " A"),
    cell(totals.temp_max === undefined || totals.temp_max === null ? "" : fixed(totals.temp_max, 10, 1) + " \u00b0C"), cell(""), cell(""),
  );
  renderDetail();
}

function renderDetail() {
  const row = summary && summary.bms.find((r) => r.slot === selected);
  $("detail").hidden = !row;
  if (!row) return;
  $("detail-title").textContent = "Battery " + (row.slot + 1) + ": " + (row.name || row.model);
  const cells = row.cells || [];
  const low = Math.min(...cells), high = Math.max(...cells);
  $("detail-summary").textContent = cells.length
    ? cells.length + " cells, min " + low + " mV, max " + high + " mV, delta " + (high - low) + " mV"
    : "no cell data";
  $("cells").replaceChildren(...cells.map((mv) => {
    const bar = document.createElement("div");
    bar.className = "cell";
    bar.style.height = Math.max(10, (mv - 2500) / 12) + "px";
    bar.textContent = mv;
    return bar;
  }));
}

async function refresh() {
  try {
    summary = await rpc("VBMS.GetSummary");
    $("home-error").textContent = "";
    $("updated").textContent = "updated " + new Date().toLocaleTimeString();
    renderHome();
  } catch (error) {
    $("home-error").textContent = "cannot read the summary: " + error.message;
  }
}

function schedule() {
  if (timer) clearInterval(timer);
  const seconds = Number($("refresh").value);
  timer = seconds ? setInterval(refresh, seconds * 1000) : null;
}

// --- settings -----------------------------------------------------------------------

let config = null;

function slotRow(index) {
  const slot = config["bms" + index];
  const tr = document.createElement("tr");
  tr.dataset.slot = index;
  const type = document.createElement("select");
  for (const [value, label] of TYPES) type.append(new Option(label, value, false, String(slot.type) === value));
  type.name = "bms" + index + ".type";
  const inputs = [type];
  for (const [field, kind] of [["name", "text"], ["addr", "text"], ["voltage", "number"]]) {
    const input = document.createElement("input");
    input.type = kind;
    input.name = "bms" + index + "." + field;
    input.value = slot[field];
    if (kind === "number") input.step = "0.1";
    inputs.push(input);
  }
  const message = document.createElement("td");
  message.className = "field-error";
  tr.append(cell(index + 1), ...inputs.map((input) => { const td = document.createElement("td"); td.append(input); return td; }), message);
  return tr;
}

async function loadSettings() {
  config = await rpc("Config.Get");
  const body = $("slots").querySelector("tbody");
  body.replaceChildren(...Array.from({ length: 15 }, (_, index) => slotRow(index)));
}

function changedSettings() {
  const changes = {};
  for (const input of $("slots").querySelectorAll("input, select")) {
    const [slot, field] = input.name.split(".");
    const old = config[slot][field];
    let value = input.value;
    if (field === "type") value = Number(value);
    if (field === "voltage") value = Number(value);
    if (value !== old) changes[input.name] = value;
  }
  return changes;
}

async function save() {
  for (const td of $("slots").querySelectorAll(".field-error")) td.textContent = "";
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
      const li = document.createElement("li");
      const use = document.createElement("button");
      use.textContent = "use";
      use.addEventListener("click", () => {
        const free = Array.from($("slots").querySelectorAll("tbody tr")).find((tr) => tr.querySelector("select").value === "0");
        if (!free) return;
        free.querySelector("select").value = "2";
        free.querySelector('input[name$=".addr"]').value = device.address;
        free.querySelector('input[name$=".name"]').value = device.name;
      });
      li.append(device.address + " " + device.name + (device.connected ? " (connected)" : "") + " ", use);
      return li;
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

$("refresh").addEventListener("change", schedule);
$("save").addEventListener("click", save);
$("scan").addEventListener("click", scan);
$("token").value = localStorage.getItem("vbms-token") || "";
window.addEventListener("hashchange", route);
route();
schedule();
