"""Logs as JSON lines on the console, as `vbms run` writes them:
{"t": <unix time, s>, "level": ..., "event": ..., <fields>}.  Key order is the
interpreter's (MicroPython's dicts are unordered); readers parse the JSON."""

import json
import time

# The ESP32 port counts time from 2000-01-01 on some versions; the logs and the
# RPC's wall clock are Unix time everywhere.
EPOCH_OFFSET_S = 946684800 if time.gmtime(0)[0] == 2000 else 0


def wall_s():
    return time.time() + EPOCH_OFFSET_S


def _plain(value):
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _plain(value[key]) for key in value}
    return str(value)


class Console:
    """log(event, level="info", **fields): one line on the console."""

    def __init__(self, write=print):
        self.write = write

    def __call__(self, event, level="info", **fields):
        record = {"t": round(wall_s(), 3), "level": level, "event": event}
        for key in fields:
            record[key] = fields[key]
        try:
            line = json.dumps(record)
        except TypeError:
            line = json.dumps(_plain(record))
        self.write(line)
