"""What `vbms sim` shows on a terminal: the inverter's "Li-BMS" screen as a rich Table.

Presentation lives here, in the harness; the rows come from the DEYE master model
(simulators/deye/master.py)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from rich.table import Table

HEADINGS = ("#", "Volt", "Curr", "Temp", "SOC", "Energy", "Charge Volt", "Charge Curr", "Fault", "Model")
EMPTY_ROW = ("0.00V", "0.00A", "0.0C", "0.0%", "0.0Ah", "0.0V", "0.0A", "0|0|0")  # as the screen shows a silent slot


class LiBmsScreen(Protocol):
    """What render_table reads: the DEYE master model or an adapter around it."""

    @property
    def cycles(self) -> int: ...

    def rows(self) -> Iterable[Mapping[str, Any]]: ...


def render_table(inverter: LiBmsScreen) -> Table:
    """A rich Table of the Li-BMS screen of inverter (anything with cycles and rows(): the model or an adapter)."""
    from rich.table import Table

    table = Table(title="DEYE Li-BMS (cycle %d)" % inverter.cycles)
    for heading in HEADINGS:
        table.add_column(heading, justify="right")
    for row in inverter.rows():
        if "volt_v" not in row:
            table.add_row(str(row["battery"]), *EMPTY_ROW, "[red]W31[/red]" if row["comm_warning"] else "")
            continue
        table.add_row(
            str(row["battery"]),
            "%.2fV" % row["volt_v"],
            "%.2fA" % row["curr_a"],
            "%.1fC" % row["temp_c"],
            "%.1f%%" % row["soc_pct"],
            "%.1fAh" % row["energy_ah"],
            "%.1fV" % row["charge_volt_v"],
            "%.1fA" % row["charge_curr_a"],
            row["fault"],
            ("[red]W31[/red] " if row["comm_warning"] else "") + (row["model"] or ""),
        )
    return table
