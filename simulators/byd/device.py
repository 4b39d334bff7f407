"""A BYD Battery-Box PRO (B-Plus 2.5) module on RS485: a sans-I/O model.

handle(frame) answers a status request addressed to this module's DIP address
with the exact 105-byte frame (vbms_core.byd), after reply_delay_s.

Failure modes (set .failure, None for normal):
  silent        never answers
  garbage       answers with random bytes of the right length
  bad_checksum  answers with a wrong sum8
  slow          answers after slow_delay_s
  stuck         keeps answering the values of the moment it got stuck
Alarms are raised with battery.forced (generic flags) or force_alarm_bits.
"""

import random
from collections.abc import Iterable
from typing import Any, cast

from vbms_core import byd
from vbms_core.errors import RemoteProtocolError

from ..battery import BatteryModel
from ..failures import FailureModes

FAILURES = ("silent", "garbage", "bad_checksum", "slow", "stuck")

# Generic battery flags -> BYD state bits (deye-byd-modbus.md 2.3), for both alarm and protect words.
FLAG_BITS = {
    "pack_overvoltage": 0,
    "cell_overvoltage": 2,
    "pack_undervoltage": 3,
    "cell_undervoltage": 5,
    "charge_overcurrent": 6,
    "discharge_overcurrent": 7,
    "charge_overtemperature": 8,
    "discharge_overtemperature": 9,
    "charge_undertemperature": 10,
    "discharge_undertemperature": 11,
    "soc_low": 12,
}


def flag_word(flags: Iterable[str]) -> int:
    word = 0
    for flag in flags:
        if flag in FLAG_BITS:
            word |= 1 << FLAG_BITS[flag]
    return word


class BydModule(FailureModes):
    FAILURES = FAILURES
    KIND = "BYD"
    request_lengths = (byd.REQUEST_LENGTH,)

    def __init__(
        self, address: int, battery: BatteryModel, reply_delay_s: float = 0.02, slow_delay_s: float = 1.5, seed: int = 0
    ) -> None:
        if not 1 <= address <= 63:
            raise ValueError("a BYD PRO DIP address is 1..63, not %r" % (address,))
        self.address = address
        self.battery = battery
        self.reply_delay_s = reply_delay_s
        self.slow_delay_s = slow_delay_s
        self.force_alarm_bits = 0
        self.force_protect_bits = 0
        self.force_fail_bits = 0
        self.requests = 0
        self._stuck: dict[str, Any] | None = None
        self._fields_key: tuple[object, ...] | None = None  # what fields() were made from, and they
        self._fields: dict[str, Any] | None = None
        self._last_fields: dict[str, Any] | None = None  # the latest reply's field values, and its frame
        self._last_reply: bytes | None = None
        self._random = random.Random(seed)

    def _stick(self) -> None:
        self._stuck = self.fields()

    def _unstick(self) -> None:
        self._stuck = None

    def _stuck_fields(self) -> dict[str, Any]:
        """The values it is stuck at: those of set_failure("stuck"), or of the first reply after
        .failure was set to "stuck" directly."""
        if self._stuck is None:
            self._stuck = self.fields()
        return self._stuck

    def fields(self) -> dict[str, Any]:
        """The status frame's values now (a dict nobody may change: the same one is handed out until
        they change; the battery model's state changes in its steps only, see BatteryModel.steps)."""
        battery = self.battery
        key = (battery.steps, self.force_alarm_bits, self.force_protect_bits, self.force_fail_bits,
               tuple(sorted(battery.forced)))  # fmt: skip
        if key != self._fields_key:
            self._fields_key = key
            self._fields = self._make_fields()
        return cast(dict[str, Any], self._fields)  # made above at the first call (no key is None)

    def _make_fields(self) -> dict[str, Any]:
        battery = self.battery
        warnings, protections = battery.flags()
        current = battery.current_ma
        temps_degc = [round(t / 10) for t in battery.temperatures_ddegc(4)] + [round(battery.ambient_c)]
        state = 0
        if current > 0:
            state |= 1
        elif current < 0:
            state |= 2
        else:
            state |= 8
        if battery.soc_permille >= 1000:
            state |= 4
        return {
            "pack_voltage_mv": battery.pack_voltage_mv,
            "battery_voltage_mv": battery.pack_voltage_mv,
            "cell_voltages_mv": battery.cell_voltages_mv()[:16],
            "current_ma": current,
            "cell_temps_degc": temps_degc,
            "alarm_state": flag_word(warnings) | self.force_alarm_bits,
            "protect_state": flag_word(protections) | self.force_protect_bits,
            "fail_state": self.force_fail_bits,
            "battery_state": state,
            "soc_pct": battery.soc_permille // 10,
            "soh_pct": round(battery.soh * 100),
            "discharge_times": battery.cycles,
        }

    def handle(self, frame: bytes) -> tuple[bytes, float] | None:
        """(reply, delay_s) for a frame heard on the bus, or None to stay silent."""
        if not frame or frame[0] != self.address:
            return None  # (what decoding would conclude, for a frame to another address, at a glance)
        try:
            request = byd.decode_request(frame)
        except RemoteProtocolError:
            return None
        if request.address != self.address or request.command != byd.READ_STATUS:
            return None
        self.requests += 1
        if self.failure == "silent":
            return None
        fields = self._stuck_fields() if self.failure == "stuck" else self.fields()
        if fields != self._last_fields:  # the same values encode to the same frame
            self._last_fields = fields
            self._last_reply = byd.encode_response(self.address, fields)
        reply = cast(bytes, self._last_reply)  # made above at the first reply (fields are never None)
        if self.failure == "garbage":
            reply = bytes(self._random.randrange(256) for _ in range(len(reply)))
        elif self.failure == "bad_checksum":
            reply = reply[:-1] + bytes(((reply[-1] + 1) & 0xFF,))
        delay = self.slow_delay_s if self.failure == "slow" else self.reply_delay_s
        return reply, delay
