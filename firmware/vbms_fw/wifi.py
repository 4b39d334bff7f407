"""Wi-Fi: a station on the configured network, or, unconfigured, an access point.

The access point is "BMU-<chip id>" (the original's "BMU-????": the last two
bytes of the chip's MAC) secured with WPA2 and a password made for this device
at its first start, saved in device.json and printed on the console once.  The
original shipped a fixed "12345678"; there is no fixed password here.

state() is what the status LED shows; run() keeps the station connected and
logs changes.  When the station has an address, the clock is set once by NTP
where the board has ntptime.
"""

import asyncio

import machine
import network

from . import store

# what state() returns
STA_DISCONNECTED = "sta_disconnected"
STA_CONNECTING = "sta_connecting"
STA_CONNECTED = "sta_connected"
AP_IDLE = "ap_idle"
AP_CLIENT = "ap_client"

AP_PASSWORD_LENGTH = 16
WPA2_PSK = 3  # network.AUTH_WPA2_PSK on the ESP32


def chip_id():
    return "".join("%02X" % byte for byte in machine.unique_id()[-2:])


class Wifi:
    def __init__(self, device, log, say=print):
        self.device = device
        self.log = log
        self.say = say
        self.sta = None
        self.ap = None
        self.address = None
        self._last_state = None
        self._clock_set = False

    def start(self):
        ssid = self.device["wifi"]["ssid"]
        if ssid:
            self.sta = network.WLAN(network.STA_IF)
            self.sta.active(True)
            self.sta.connect(ssid, self.device["wifi"]["password"])
            self.log("wifi_connecting", ssid=ssid)
            return
        password = self.device["ap_password"]
        if not password:
            password = self.device["ap_password"] = store.random_text(AP_PASSWORD_LENGTH)
            store.save_device(self.device)
            self.say("vbms: Wi-Fi is not configured; access point %s, password (saved in %s):\n  %s"
                     % (self.ap_name(), store.DEVICE_FILE, password))  # fmt: skip
        self.ap = network.WLAN(network.AP_IF)
        self.ap.active(True)
        self.ap.config(ssid=self.ap_name(), key=password, security=WPA2_PSK)
        self.address = self.ap.ifconfig()[0]
        self.log("wifi_access_point", ssid=self.ap_name(), address=self.address)

    @staticmethod
    def ap_name():
        return "BMU-" + chip_id()

    def state(self):
        if self.ap is not None:
            try:
                return AP_CLIENT if self.ap.status("stations") else AP_IDLE
            except (OSError, ValueError):
                return AP_IDLE
        if self.sta is None:
            return STA_DISCONNECTED
        if self.sta.isconnected():
            return STA_CONNECTED
        return STA_CONNECTING if self.sta.status() == network.STAT_CONNECTING else STA_DISCONNECTED

    async def run(self):
        while True:
            state = self.state()
            if state != self._last_state:
                fields = {}
                if state == STA_CONNECTED:
                    self.address = fields["address"] = self.sta.ifconfig()[0]
                self.log("wifi_" + state, **fields)
                self._last_state = state
            if state == STA_CONNECTED and not self._clock_set:
                self._clock_set = True
                self._set_clock()
            if state == STA_DISCONNECTED and self.sta is not None:
                try:
                    self.sta.connect(self.device["wifi"]["ssid"], self.device["wifi"]["password"])
                except OSError:
                    pass
            await asyncio.sleep(1 if state != STA_DISCONNECTED else 5)

    def _set_clock(self):
        try:
            import ntptime
        except ImportError:
            return
        try:
            ntptime.settime()
            self.log("clock_set", source="ntp")
        except (OSError, OverflowError) as error:
            self.log("clock_not_set", level="warning", error=str(error))

    def close(self):
        for interface in (self.sta, self.ap):
            if interface is not None:
                try:
                    interface.active(False)
                except OSError:
                    pass
