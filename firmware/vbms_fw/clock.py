"""The firmware's clock: microseconds since boot as one integer that never goes back.

time.ticks_us() wraps: its period is 2**30 us (17.9 minutes) on the ESP32 and
2**62 on the unix port.  The core compares absolute times, so the driver
extends the ticks into a counter that only grows.  It must be read at least
once per half period (the driver's loop reads it every second at the latest).

On the ESP32 a small int has 31 bits: after 2**30 us of uptime the counter is a
big int and every arithmetic on a time allocates a few bytes.  The core takes
microseconds, so this cannot be avoided here (docs/firmware.md, "Memory").
"""

import time


class Clock:
    """now_us(): microseconds since the clock was made.  ticks and diff are injectable
    (time.ticks_us and time.ticks_diff by default) so the wrap can be tested."""

    __slots__ = ("_ticks", "_diff", "_last", "_now_us")

    def __init__(self, ticks=None, diff=None):
        self._ticks = ticks or time.ticks_us
        self._diff = diff or time.ticks_diff
        self._last = self._ticks()
        self._now_us = 0

    def now_us(self):
        ticks = self._ticks()
        step = self._diff(ticks, self._last)
        if step > 0:
            self._now_us += step
            self._last = ticks
        return self._now_us
