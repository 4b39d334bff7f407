"""The front panel: the status LED and the factory-reset button (pins.led, pins.button).

LED patterns, as the original firmware blinks them (its wifi_timer_cb, re-set every
second from the Wi-Fi state), in ms on / ms off:
  station disconnected            500 / 500
  station connecting               50 / 950
  station connected                 off
  access point, a client joined   100 / 100
  access point, no client         500 / 500
  factory reset under way           on
The button pulls the pin low (the original's pins.button_pull_up, true by
default).  Held for pins.button_hold_ms it resets the configuration and the
Wi-Fi settings, lights the LED and restarts the board a second later.
"""

import asyncio
import time

import machine

from . import wifi

PATTERNS = {
    wifi.STA_DISCONNECTED: (500, 500),
    wifi.STA_CONNECTING: (50, 950),
    wifi.STA_CONNECTED: (0, 0),
    wifi.AP_CLIENT: (100, 100),
    wifi.AP_IDLE: (500, 500),
}
BUTTON_POLL_MS = 50


class StatusLed:
    def __init__(self, pin_number):
        self.pin = machine.Pin(pin_number, machine.Pin.OUT, value=0)
        self.solid = False

    def pattern(self, state):
        return PATTERNS.get(state, (500, 500))

    async def run(self, state_of):
        """Blinks the pattern of state_of(), looked at again every second."""
        while True:
            on_ms, off_ms = self.pattern(state_of())
            if not on_ms:
                self._show(0)
                await asyncio.sleep_ms(1000)
                continue
            started = time.ticks_ms()
            while time.ticks_diff(time.ticks_ms(), started) < 1000:
                self._show(1)
                await asyncio.sleep_ms(on_ms)
                self._show(0)
                await asyncio.sleep_ms(off_ms)

    def _show(self, level):
        self.pin.value(1 if self.solid else level)

    def on(self):
        self.solid = True
        self.pin.value(1)


class ResetButton:
    """on_held() runs once the button has been held down for hold_ms without a break."""

    def __init__(self, pin_number, hold_ms, on_held):
        self.pin = machine.Pin(pin_number, machine.Pin.IN, machine.Pin.PULL_UP)
        self.hold_ms = hold_ms
        self.on_held = on_held

    async def run(self):
        pressed_at = None
        while True:
            if self.pin.value() == 0:
                now = time.ticks_ms()
                if pressed_at is None:
                    pressed_at = now
                elif time.ticks_diff(now, pressed_at) >= self.hold_ms:
                    await self.on_held()
                    pressed_at = None
            else:
                pressed_at = None
            await asyncio.sleep_ms(BUTTON_POLL_MS)
