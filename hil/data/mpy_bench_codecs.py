# Run on MicroPython by `vbms bench codecs`: heap allocated per decode
# (gc.mem_alloc() deltas, no collection in between) and, where the port has
# a microsecond clock, decodes per second.  Prints one JSON object.
import gc
import json

from vbms_core import byd, deye, jk_ble, jk_frames, modbus
from vbms_core.dissect import dissect

# MicroPython has no typing module: the hints are type comments, and mypy alone (which takes MYPY
# for true) imports the names they use (ruff does not read type comments: the noqa).
MYPY = False
if MYPY:
    from collections.abc import Callable  # noqa: F401
    from typing import Any  # noqa: F401

with open("/bench/inputs.json") as handle:
    INPUTS = json.load(handle)


def unhex(text):
    # type: (str) -> bytes
    return bytes(int(text[i : i + 2], 16) for i in range(0, len(text), 2))


def allocated(function, *args):
    # type: (Callable[..., object], *Any) -> int
    function(*args)  # warm up: first calls may intern strings or grow tables
    gc.collect()
    before = gc.mem_alloc()  # type: ignore[attr-defined]  # MicroPython's gc
    function(*args)
    return gc.mem_alloc() - before  # type: ignore[attr-defined]


def rate(function, *args):
    # type: (Callable[..., object], *Any) -> int | None
    try:
        from time import ticks_diff, ticks_us  # type: ignore[attr-defined]  # MicroPython's time
    except ImportError:
        return None
    count = 0
    start = ticks_us()
    while ticks_diff(ticks_us(), start) < 300000:
        for _ in range(20):
            function(*args)
        count += 20
    return count * 1000000 // ticks_diff(ticks_us(), start)


cell_32s = unhex(INPUTS["cell_32s"])
cell_24s = unhex(INPUTS["cell_24s"])
cell_jk04 = unhex(INPUTS["cell_jk04"])
byd_reply = unhex(INPUTS["byd_reply"])
request = unhex(INPUTS["deye_request"])
identity_request = unhex(INPUTS["deye_identity_request"])
slave = deye.DeyeSlave(10000000)
slave.set_unit(0, list(range(25)), deye.encode_identity("BYD PRO 2.5", "BYD12345678901234567"), 0)
chunks = [cell_32s[0:128], cell_32s[128:150], cell_32s[150:278], cell_32s[278:300]]


def reassemble():
    # type: () -> object
    reassembler = jk_ble.JkReassembler()
    for chunk in chunks:
        reassembler.feed(chunk)
    return reassembler.next_event()


results = {}
for name, function, args in (
    ("jk_cell_info_32s", jk_frames.decode_frame, (cell_32s,)),
    ("jk_cell_info_24s", jk_frames.decode_frame, (cell_24s,)),
    ("jk_cell_info_jk04", jk_frames.decode_frame, (cell_jk04,)),
    ("jk_reassemble_300b_in_4_chunks", reassemble, ()),
    ("byd_response", byd.decode_response, (byd_reply,)),
    ("modbus_decode_request", modbus.decode_request, (request,)),
    ("deye_request_answered_25_registers", slave.handle, (request, 5)),
    ("deye_identity_answered", slave.handle, (identity_request, 5)),
    ("dissect_deye_request", dissect, ("deye", request)),
):
    results[name] = {"bytes_allocated": allocated(function, *args), "per_second": rate(function, *args)}
print(json.dumps(results))
