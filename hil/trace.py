"""Bus traces: one JSON line per frame, and `vbms trace show`.

A line: {"t": seconds since the trace started, "bus": name, "from": sender,
"hex": bytes, "decoded": short summary from vbms_core.dissect (or "error"; with
"decoded_as" when the frame is not of the bus's protocol), "faults": [...],
"collision": bool}.
"""

import collections
import json
import os
import threading
from collections.abc import Iterable, Mapping
from typing import Any, Protocol, TextIO

from vbms_core.dissect import dissect, guess_protocol
from vbms_core.errors import RemoteProtocolError

SUMMARY_KEYS = (
    "decoded_as",
    "direction",
    "unit",
    "address",
    "function_name",
    "count",
    "exception",
    "frame_type",
    "trigger",
    "battery",
    "command_name",
)

# a frame as record() queues it: (t_s, bus, protocol, source, raw, faults, collision)
_Queued = tuple[float, str, str | None, str, bytes, tuple[str, ...], bool]


class TracedBus(Protocol):
    """What record() reads of a bus: its name and the protocol it carries (None: not decoded)."""

    @property
    def name(self) -> str: ...
    @property
    def protocol(self) -> str | None: ...


def ble_summary(raw: bytes | bytearray) -> dict[str, Any]:
    """What a notification chunk starts with: a frame header, a command echo, a keep-alive."""
    raw = bytes(raw)
    if raw.startswith(b"\x55\xaa\xeb\x90") and len(raw) > 4:
        kinds = {1: "settings", 2: "cell_info", 3: "device_info", 5: "logbook"}
        return {"chunk": "frame start", "frame_type": kinds.get(raw[4], raw[4])}
    if raw.startswith(b"AT\r\n"):
        return {"chunk": "keep-alive"}
    if raw.startswith(b"\xaa\x55\x90\xeb"):
        return {"chunk": "command/trailer", "command": raw[4] if len(raw) > 4 else None}
    return {"chunk": "continuation"}


def summarize(protocol: str | None, raw: bytes) -> dict[str, Any] | None:
    """A short dict describing a frame, for traces and failure reports.

    A frame is decoded with the bus's protocol.  A bus may carry several
    protocols (a BMS bus with BYD modules, JK-PB and 4E57 packs): a frame that
    is not one of the bus's protocol is decoded as what it is
    (vbms_core.dissect.guess_protocol), and its summary says which protocol
    that was.  A frame that is neither keeps the bus protocol's error.
    """
    if protocol is None:
        return None
    try:
        result = dissect(protocol, raw)
    except RemoteProtocolError as error:
        guessed = guess_protocol(raw) if raw else None
        if guessed is None or guessed == protocol:
            return {"error": str(error)}
        try:
            result = dissect(guessed, raw)
        except RemoteProtocolError:
            return {"error": str(error)}
        result["decoded_as"] = guessed
    summary = {key: result[key] for key in SUMMARY_KEYS if key in result}
    values = result.get("values")
    if values:
        summary["values"] = {
            key: values[key] for key in ("pack_voltage_mv", "pack_current_ma", "soc_permille") if key in values
        }
    if "pack_voltage_mv" in result:
        summary["pack_voltage_mv"] = result["pack_voltage_mv"]
    return summary


class Trace:
    """Collects frame records in memory and, if given a path, as JSON lines.

    record() and ble() only queue what they are given: the thread that calls them
    (a PTY bus's, whose timing must not wait for decoding or a disk) does no other
    work.  Records are made from the queue by a writer thread when there is a file,
    and by whoever reads `records` or tail(); close() writes what is left.

    decode=False keeps the raw frames only (the simulated-time bench records many
    frames and reads few); with_summary() fills a summary in when asked.

    keep=N makes the trace a ring: it holds the last N records in memory (a week in
    simulated time would not fit), and what is queued past N is dropped before it is
    ever made a record.  A file still gets every record, so keep applies to memory
    only; without a file the queue is the ring.  `records` is then a copy (a list).
    """

    WRITE_EVERY_S = 0.1

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        protocols: Mapping[str, str | None] | None = None,
        decode: bool = True,
        keep: int | None = None,
    ) -> None:
        self.decode = decode
        self.keep = keep
        self.protocols = dict(protocols or {})
        self._records: list[dict[str, Any]] | collections.deque[dict[str, Any]] = (
            [] if keep is None else collections.deque(maxlen=keep)
        )
        # appended by any thread, without a lock; bounded only when nothing must reach a file
        self._queue: collections.deque[_Queued] = collections.deque(maxlen=keep if path is None else None)
        self._lock = threading.Lock()  # the records and the file
        self._file: TextIO | None = open(path, "w", encoding="utf-8") if path else None  # noqa: SIM115 (kept open for the run)
        self._closed = threading.Event()
        self._writer: threading.Thread | None = None
        if self._file is not None:
            self._writer = threading.Thread(target=self._write_loop, name="trace-writer", daemon=True)
            self._writer.start()

    def record(
        self,
        bus: TracedBus,
        t_s: float,
        source: str,
        raw: bytes | bytearray,
        faults: Iterable[str] = (),
        collision: bool = False,
    ) -> None:
        self._queue.append(
            (t_s, bus.name, self.protocols.get(bus.name, bus.protocol), source, bytes(raw), tuple(faults), collision)
        )

    def ble(self, t_s: float, source: str, raw: bytes | bytearray) -> None:
        """A BLE notification (a chunk of a JK frame, or junk) as a trace record on bus "ble"."""
        self._queue.append((t_s, "ble", None, source, bytes(raw), (), False))

    def _entry(self, item: _Queued) -> dict[str, Any]:
        t_s, bus, protocol, source, raw, faults, collision = item
        entry: dict[str, Any] = {"t": round(t_s, 6), "bus": bus, "from": source, "hex": raw.hex().upper()}
        if bus == "ble":
            entry["decoded"] = ble_summary(raw)
        elif self.decode:
            entry["decoded"] = summarize(protocol, raw) if source != "noise" else None
        else:
            entry["protocol"] = protocol
        if faults:
            entry["faults"] = list(faults)
        if collision:
            entry["collision"] = True
        return entry

    def _drain(self) -> None:
        """Make records of everything queued (and write them); holds the lock."""
        entries = []
        while self._queue:
            entries.append(self._entry(self._queue.popleft()))
        if entries:
            self._records.extend(entries)
            if self._file is not None:
                self._file.write("".join(json.dumps(entry) + "\n" for entry in entries))
                self._file.flush()

    def _write_loop(self) -> None:
        while not self._closed.wait(self.WRITE_EVERY_S):
            with self._lock:
                self._drain()

    @property
    def records(self) -> list[dict[str, Any]]:
        with self._lock:
            self._drain()
            # (the ignore: _records is a list when keep is None)
            return self._records if self.keep is None else list(self._records)  # type: ignore[return-value]

    def flush(self) -> None:
        with self._lock:
            self._drain()

    def close(self) -> None:
        self._closed.set()
        if self._writer is not None and self._writer is not threading.current_thread():
            self._writer.join(timeout=5)
        with self._lock:
            self._drain()
            if self._file is not None:
                self._file.close()
                self._file = None

    def tail(self, count: int = 20, ble: int | None = None) -> list[dict[str, Any]]:
        """The last count records, decoded.  ble: at most that many of them BLE notifications, so that
        the chunks of a few JK streams do not push the RS485 frames out of a failure report; the
        records are then the last count of the others and the last BLE ones among them, in time order."""
        with self._lock:
            self._drain()
            kept = len(self._records)
            if ble is None:
                return [with_summary(self._records[index]) for index in range(max(kept - count, 0), kept)]
            chosen = []
            wires = notifications = 0
            for index in range(kept - 1, -1, -1):
                if wires + notifications >= count:
                    break
                entry = self._records[index]
                if entry["bus"] != "ble":
                    wires += 1
                elif notifications < ble:
                    notifications += 1
                else:
                    continue
                chosen.append(entry)
            chosen.sort(key=lambda entry: entry["t"])
            return [with_summary(entry) for entry in chosen]


def with_summary(entry: dict[str, Any]) -> dict[str, Any]:
    """The entry with its summary, decoding it now if it was recorded raw."""
    if "decoded" in entry:
        return entry
    entry = dict(entry)
    protocol = entry.pop("protocol", None)
    entry["decoded"] = summarize(protocol, bytes.fromhex(entry["hex"])) if entry["from"] != "noise" else None
    return entry


def format_record(entry: dict[str, Any], width: int = 48) -> str:
    entry = with_summary(entry)
    hex_text = entry["hex"]
    if len(hex_text) > width:
        hex_text = hex_text[:width] + "...(%d B)" % (len(entry["hex"]) // 2)
    decoded = entry.get("decoded")
    if decoded is None:
        summary = ""
    elif "error" in decoded:
        summary = "!! " + decoded["error"]
    else:
        summary = " ".join("%s=%s" % (key, value) for key, value in decoded.items())
    flags = []
    if entry.get("collision"):
        flags.append("COLLISION")
    for fault in entry.get("faults", ()):
        flags.append("FAULT " + fault)
    return "%10.6f %-10s %-12s %-60s %s%s" % (
        entry["t"],
        entry["bus"],
        entry["from"],
        hex_text,
        summary,
        ("  [" + ", ".join(flags) + "]") if flags else "",
    )


def show(path: str | os.PathLike[str], out: TextIO) -> int:
    """Print a trace file readably; returns the number of unreadable lines."""
    bad = 0
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            line = line.strip()
            if not line:
                continue
            try:
                entry = json.loads(line)
                out.write(format_record(entry) + "\n")
            except (ValueError, KeyError, TypeError) as error:
                bad += 1
                out.write("%s line %d: not a trace record (%s)\n" % (path, number, error))
    return bad
