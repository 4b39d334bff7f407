"""Stand-in for MicroPython's `network` on the unix port: Wi-Fi on the loopback.

A station "connects" at once to any network it is given; an access point is up
at once.  Both have the address 127.0.0.1: the web server listens on the host
and port device.json names.  Never shipped to a board.
"""

STA_IF = 0
AP_IF = 1
STAT_IDLE = 1000
STAT_CONNECTING = 1001
STAT_WRONG_PASSWORD = 202
STAT_NO_AP_FOUND = 201
STAT_GOT_IP = 1010
AUTH_OPEN = 0
AUTH_WPA2_PSK = 3

_ADDRESS = ("127.0.0.1", "255.0.0.0", "127.0.0.1", "127.0.0.1")


class WLAN:
    def __init__(self, interface=STA_IF):
        self.interface = interface
        self._active = False
        self._ssid = None
        self._config = {"mac": b"\x24\x0a\xc4\xb1\xe2\xd3", "ssid": "", "key": "", "security": AUTH_OPEN}

    def active(self, on=None):
        if on is not None:
            self._active = bool(on)
            if not on:
                self._ssid = None
        return self._active

    def connect(self, ssid=None, key=None, **options):
        if not self._active:
            raise OSError("Wifi Not Started")
        self._ssid = ssid

    def disconnect(self):
        self._ssid = None

    def isconnected(self):
        return self._active and (self.interface == AP_IF or bool(self._ssid))

    def status(self, parameter=None):
        if parameter == "stations":
            return []
        if parameter == "rssi":
            return -50
        return STAT_GOT_IP if self.isconnected() else STAT_IDLE

    def ifconfig(self, settings=None):
        return _ADDRESS

    def config(self, *names, **values):
        if names:
            return self._config[names[0]]
        self._config.update(values)

    def scan(self):
        return []
