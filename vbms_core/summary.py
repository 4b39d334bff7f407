"""VBMS.GetSummary: every configured slot as the original firmware's JSON showed it, and totals.

The register fields keep the original's names and scaling (pack_voltage in 10 mV,
SOC in 0.1 %, ...).  Where the source reports nothing the registers must still hold a
number, but the summary says null; a SOC estimated from the cell voltages (a JK04
frame carries none) is flagged with SOC_estimated.
"""

from . import config as config_module
from . import deye, slots

# Reading attributes that make a summary field null when the source does not report them.
NULL_WHEN_UNKNOWN = (
    ("SOC", "soc_permille"), ("SOH", "soh_permille"), ("pack_current", "current_ma"),
    ("remain_capacity", "remaining_mah"), ("full_charge_capacity", "full_charge_mah"),
    ("cycle_count", "cycle_count"), ("mosfet_temp", "mosfet_temp_ddegc"),
)  # fmt: skip


def summary(proxy, now_us, wall_s=None):
    stale_us = proxy.config["app.stale_s"] * 1000000
    rows = []
    for slot in proxy.slots:
        slot.refresh_status(now_us, stale_us)
        if slot.kind == config_module.TYPE_NONE:
            continue
        rows.append(slot_row(proxy, slot, now_us, wall_s))
    return {"timestamp": wall_s, "bms": rows, "totals": totals(rows)}


def slot_row(proxy, slot, now_us, wall_s):
    row = {
        "slot": slot.index,
        "unit": slot.index,
        "type": config_module.TYPE_NAMES[slot.kind],
        "addr": int(slot.address) if config_module.is_ascii_digits(slot.address) else slot.address,
        "name": slot.name,
        "serial_no": slot.serial or slot.device_serial or "",
        "model": slot.model_name(),
        "status": slot.status,
        "error": slot.error,
        "last_update": None,
        "age_s": None,
    }
    session = proxy.ble.sessions.get(slot.index)
    if session is not None:
        row["ble_connects"] = session.connects
    reading = slot.reading
    if reading is None:
        return row
    age_s = (now_us - slot.updated_us) // 1000000
    row["age_s"] = age_s
    row["last_update"] = None if wall_s is None else wall_s - age_s
    registers = slots.registers(slot, proxy.config["app.max_charge_current_a"])
    for index in range(deye.REGISTER_COUNT):
        _, name, _, signed, _ = deye.REGISTER_MAP[index]
        if name.startswith("reserved"):
            continue
        value = registers[index]
        if signed and value >= 0x8000:
            value -= 0x10000
        row[name] = value
    for name, attribute in NULL_WHEN_UNKNOWN:
        if getattr(reading, attribute) is None:
            row[name] = None
    if not reading.cell_temps_ddegc:
        for name in ("cell_temp_avg", "max_cell_temp", "min_cell_temp"):
            row[name] = None
        if reading.env_temp_ddegc is None:
            row["env_temp"] = None
    row["SOC_estimated"] = reading.soc_estimated
    row["cells"] = list(reading.cell_voltages_mv)
    row["charge_enabled"] = reading.charge_enabled
    row["discharge_enabled"] = reading.discharge_enabled
    return row


def totals(rows):
    online = [r for r in rows if r["status"] == slots.STATUS_ONLINE and "pack_voltage" in r]
    result = {"batteries": len(rows), "online": len(online)}
    if not online:
        return result
    capacity = sum(r["full_charge_capacity"] or 0 for r in online)
    remain = sum(r["remain_capacity"] or 0 for r in online)
    cells = [c for r in online for c in r["cells"]]
    currents = [r["pack_current"] for r in online if r["pack_current"] is not None]
    result["pack_current"] = sum(currents) if currents else None  # nobody measures it: unknown, not 0 A
    result["remain_capacity"] = remain
    result["full_charge_capacity"] = capacity
    result["SOC"] = remain * 1000 // capacity if capacity else None
    result["pack_voltage_avg"] = sum(r["pack_voltage"] for r in online) // len(online)
    result["cell_voltage_min"] = min(cells) if cells else None
    result["cell_voltage_max"] = max(cells) if cells else None
    temps_max = [r["max_cell_temp"] for r in online if r["max_cell_temp"] is not None]
    temps_min = [r["min_cell_temp"] for r in online if r["min_cell_temp"] is not None]
    result["temp_max"] = max(temps_max) if temps_max else None
    result["temp_min"] = min(temps_min) if temps_min else None
    return result
