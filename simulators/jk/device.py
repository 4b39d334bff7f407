"""A JK-BMS: frames from a battery model, served over BLE, JK-PB RS485 and 4E57.

Sans-I/O.  JkBms builds the 300-byte frames (vbms_core.jk_frames encoders) in
JK02_24S, JK02_32S or JK04 layout.  Its handle_modbus / handle_4e57 answer
RS485 frames; JkBleSession turns GATT writes and the passing of time into
notifications, chunked the way real modules chunk them
(jk-protocols.md 1.3, 1.4, 13).

Failure modes (JkBms.failure): silent, garbage, bad_checksum, slow, stuck,
stop_streaming (BLE: the stream stops after the settings frame),
disconnect and refuse_reconnect (acted on by the BLE adapter).
"""

import random
from collections.abc import Callable
from typing import Any, TypedDict

from vbms_core import jk_4e57, jk_ble, jk_frames, jk_pb, modbus
from vbms_core.errors import RemoteProtocolError

from ..battery import BatteryModel
from ..failures import FailureModes

# What real modules of each layout report (jk-protocols.md 4): vendor, hardware, software.
FIRMWARE = {
    "JK02_24S": ("JK-B2A24S20P", "10.XG", "10.07"),
    "JK02_32S": ("JK_PB2A16S20P", "15A", "15.41"),
    "JK04": ("JK-B2A16S", "3.0", "3.3.0"),
}

FAILURES = ("silent", "garbage", "bad_checksum", "slow", "stuck", "stop_streaming", "disconnect", "refuse_reconnect")

# Generic battery flags -> JK error bits (jk-protocols.md 5.1).
FLAG_BITS = {
    "mosfet_overtemperature": 1,
    "cell_overvoltage": 4,
    "pack_overvoltage": 5,
    "charge_overcurrent": 6,
    "charge_overtemperature": 8,
    "charge_undertemperature": 9,
    "cell_undervoltage": 11,
    "pack_undervoltage": 12,
    "discharge_overcurrent": 13,
    "discharge_overtemperature": 15,
    "discharge_undertemperature": 27,
}


class Chunking(TypedDict):
    """How a module chunks a frame into notifications: sizes in turn, and whether keep-alives come too."""

    sizes: tuple[int, ...]
    keepalive: bool


# Notification layouts seen on the air (jk-protocols.md 1.3):
# chunk sizes for a 300-byte frame, and the junk the module adds.
CHUNKING: dict[str, Chunking] = {
    "mtu23": {"sizes": (20,), "keepalive": False},  # JK04 JK-B2A16S: 15 x 20 B
    "mtu131": {"sizes": (128, 22), "keepalive": True},  # JK-PB 14.20: 128+22+128+22, AT\r\n
    "mtu247": {"sizes": (150,), "keepalive": False},  # JK-B1A20S15P 10.07: 150+150
}
STREAM_INTERVAL_S = 0.5
C8_TRAILER = jk_ble.encode_command(jk_ble.TRAILER, b"\x01\x01", 1)


class JkBms(FailureModes):
    FAILURES = FAILURES
    KIND = "JK"

    def __init__(
        self,
        battery: BatteryModel,
        layout: str = "JK02_32S",
        address: int = 1,
        name: str = "JK-BMS",
        serial_number: str = "SIM0001",
        vendor_id: str | None = None,
        sw_version: str | None = None,
        hw_version: str | None = None,
        reply_delay_s: float = 0.04,
        slow_delay_s: float = 1.5,
        seed: int = 0,
    ) -> None:
        if layout not in jk_frames.LAYOUTS:
            raise ValueError("unknown JK layout %r; choose one of %s" % (layout, ", ".join(jk_frames.LAYOUTS)))
        self.battery = battery
        self.layout = layout
        self.address = address
        self.name = name
        self.serial_number = serial_number
        default_vendor, default_hw, default_sw = FIRMWARE[layout]
        self.vendor_id = vendor_id or default_vendor
        self.sw_version = sw_version or default_sw
        self.hw_version = hw_version or default_hw
        self.reply_delay_s = reply_delay_s
        self.slow_delay_s = slow_delay_s
        self.force_error_bits = 0
        self.counter = 0
        self.uptime_s = 0
        self._stuck: dict[str, Any] | None = None  # stuck: the cell-info values, and the 4E57 reply
        self._stuck_4e57: bytes | None = None
        self._random = random.Random(seed)

    def _stick(self) -> None:
        self._stuck, self._stuck_4e57 = self.cell_values(), self.read_all_reply()

    def _unstick(self) -> None:
        self._stuck = self._stuck_4e57 = None

    # --- frames -----------------------------------------------------------------

    def _next_counter(self) -> int:
        self.counter = (self.counter + 1) & 0xFF
        return self.counter

    def error_word(self) -> int:
        _, protections = self.battery.flags()
        word = self.force_error_bits
        for flag in protections:
            if flag in FLAG_BITS:
                word |= 1 << FLAG_BITS[flag]
        if self.layout == jk_frames.JK02_24S:
            word &= 0xFFFF
        return word

    def cell_values(self) -> dict[str, Any]:
        battery = self.battery
        cells = battery.cell_voltages_mv()
        temps = battery.temperatures_ddegc(2)
        return {
            "cell_voltages_mv": cells,
            "cell_wire_resistances_mohm": [60] * len(cells),
            "average_cell_voltage_mv": sum(cells) // len(cells),
            "delta_cell_voltage_mv": max(cells) - min(cells),
            "max_cell_index": cells.index(max(cells)),
            "min_cell_index": cells.index(min(cells)),
            "pack_voltage_mv": sum(cells),
            "pack_power_mw": abs(sum(cells) * battery.current_ma // 1000),
            "current_ma": battery.current_ma,
            "temp1_ddegc": temps[0],
            "temp2_ddegc": temps[1],
            "mosfet_temp_ddegc": battery.mosfet_temp_ddegc,
            "temp_sensor_mask": 0x07 if self.layout == jk_frames.JK02_24S else 0x07,
            "errors": self.error_word(),
            "soc_pct": battery.soc_permille // 10,
            "soh_pct": round(battery.soh * 100),
            "remaining_capacity_mah": battery.remaining_mah,
            "full_charge_capacity_mah": round(battery.full_mah),
            "cycle_count": battery.cycles,
            "runtime_s": self.uptime_s,
            "charge_mosfet_on": battery.charge_enabled,
            "discharge_mosfet_on": battery.discharge_enabled,
        }

    def cell_info_frame(self) -> bytes:
        if self.failure == "stuck":
            if self._stuck is None:  # .failure set to "stuck" directly: stuck at this frame's values
                self._stuck = self.cell_values()
            values = self._stuck
        else:
            values = self.cell_values()
        return jk_frames.encode_cell_info(values, self.layout, self._next_counter())

    def settings_frame(self) -> bytes:
        battery = self.battery
        limits = battery.limits
        values: dict[str, Any]
        if self.layout == jk_frames.JK04:
            values = {"cell_count": battery.cells, "power_off_voltage_mv": limits["uvp"][0], "balancer_switch": 1}
        else:
            values = {
                "cell_uvp_mv": limits["uvp"][0],
                "cell_uvp_recovery_mv": limits["uvp"][1],
                "cell_ovp_mv": limits["ovp"][0],
                "cell_ovp_recovery_mv": limits["ovp"][1],
                "power_off_voltage_mv": limits["uvp"][0] - 100,
                "max_charge_current_ma": battery.max_charge_current_ma,
                "max_discharge_current_ma": battery.max_discharge_current_ma,
                "cell_count": battery.cells,
                "charge_switch": 1,
                "discharge_switch": 1,
                "balancer_switch": 1,
                "nominal_capacity_mah": battery.design_mah,
                "device_address": self.address,
            }
        return jk_frames.encode_settings(values, self.layout, self._next_counter())

    def device_info_frame(self) -> bytes:
        return jk_frames.encode_device_info(
            {
                "vendor_id": self.vendor_id,
                "hw_version": self.hw_version,
                "sw_version": self.sw_version,
                "uptime_s": self.uptime_s,
                "power_on_count": 1,
                "device_name": self.name[:16],
                "device_passcode": "1234",
                "serial_number": self.serial_number[:11],
                "layout": self.layout,
            },
            self._next_counter(),
        )

    def _damaged(self, frame: bytes) -> bytes:
        if self.failure == "garbage":
            return bytes(self._random.randrange(256) for _ in range(len(frame)))
        if self.failure == "bad_checksum":
            return frame[:-1] + bytes(((frame[-1] + 1) & 0xFF,))
        return frame

    def _delay(self) -> float:
        return self.slow_delay_s if self.failure == "slow" else self.reply_delay_s

    # --- JK-PB RS485 (Modbus) -------------------------------------------------------

    def handle_modbus(self, frame: bytes) -> tuple[bytes, float] | None:
        """(reply, delay_s) or None, for a frame heard on a JK-PB RS485 bus."""
        try:
            request = modbus.decode_request(frame)
        except RemoteProtocolError:
            return None  # bad CRC or not a request: no reply (jk-protocols.md 11.1)
        if request.unit != self.address or self.failure == "silent":
            return None
        if isinstance(request, modbus.WriteMultipleRequest):
            trigger = jk_pb.TRIGGERS.get(request.address)
            if trigger is not None:
                frame_type = trigger[1]
                if frame_type == jk_frames.CELL_INFO:
                    payload = self.cell_info_frame()
                elif frame_type == jk_frames.SETTINGS:
                    payload = self.settings_frame()
                else:
                    payload = self.device_info_frame()
                payload = self._damaged(payload)
                return jk_pb.encode_trigger_reply(self.address, request.address, payload), self._delay()
            return modbus.encode_write_multiple_response(
                self.address, request.address, len(request.values)
            ), self._delay()
        if isinstance(request, modbus.ReadRequest) and request.function == modbus.READ_HOLDING:
            base = jk_pb.block_of(request.address)
            images: dict[int, Callable[[], bytes]] = {
                jk_pb.SETTINGS_BLOCK: self.settings_frame,
                jk_pb.LIVE_BLOCK: self.cell_info_frame,
                jk_pb.DEVICE_BLOCK: self.device_info_frame,
            }
            if base not in images or request.address - base + 2 * request.count > jk_frames.FRAME_LENGTH - 7:
                return modbus.encode_exception(self.address, request.function, modbus.ILLEGAL_ADDRESS), self._delay()
            # The block image is the frame's little-endian memory; a register read returns each 16-bit
            # field's value and each 32-bit field high word first (jk_pb module docstring, reference 11.2).
            image = jk_pb.image_from_frame(images[base]())
            registers = jk_pb.registers_from_image(image, request.address, request.count, base)
            return modbus.encode_read_response(self.address, request.function, registers), self._delay()
        return modbus.encode_exception(self.address, request.function, modbus.ILLEGAL_FUNCTION), self._delay()

    # --- legacy 4E57 ------------------------------------------------------------------

    def handle_4e57(self, frame: bytes) -> tuple[bytes, float] | None:
        try:
            envelope = jk_4e57.decode_frame(frame)
        except RemoteProtocolError:
            return None
        if envelope.frame_type != 0 or envelope.command != jk_4e57.READ_ALL or self.failure == "silent":
            return None
        if self.failure == "stuck":
            if self._stuck_4e57 is None:  # .failure set to "stuck" directly: stuck at this reply
                self._stuck_4e57 = self.read_all_reply()
            return self._stuck_4e57, self._delay()
        return self._damaged(self.read_all_reply()), self._delay()

    def read_all_reply(self) -> bytes:
        """The 4E57 answer to "read all" as a healthy module sends it now (no failure applied)."""
        battery = self.battery
        current = battery.current_ma
        raw_current = (0x8000 if current > 0 else 0) | min(abs(current) // 10, 0x7FFF)
        temps = battery.temperatures_ddegc(2)

        def encode_temperature(ddegc: int) -> int:
            degc = round(ddegc / 10)
            return degc if degc >= 0 else 100 - degc

        registers: dict[int, int | str] = {
            0x80: encode_temperature(battery.mosfet_temp_ddegc),
            0x81: encode_temperature(temps[0]),
            0x82: encode_temperature(temps[1]),
            0x83: battery.pack_voltage_mv // 10,
            0x84: raw_current,
            0x85: battery.soc_permille // 10,
            0x86: 2,
            0x87: battery.cycles,
            0x8A: battery.cells,
            0x8B: 0,
            0x8C: (1 if battery.charge_enabled else 0) | (2 if battery.discharge_enabled else 0) | 8,
            0xAA: battery.design_mah // 1000,
            0xB7: ("%s_S%s" % (self.hw_version, self.sw_version))[:15],
            0xC0: 1,
        }
        return jk_4e57.encode_response(battery.cell_voltages_mv(), registers)


class JkBleSession:
    """One BLE connection's protocol: writes in, notifications out.

    on_write(data, now_s) and poll(now_s) return lists of notification
    payloads to send now, already chunked.  The stream of cell-info frames
    starts after 0x96 and repeats every STREAM_INTERVAL_S.

    whole_frames: each frame is one notification, without keep-alives (a
    simulated-time bench whose scenario looks at no chunk); the frames, their
    times and the command trailers stay as they are.  latest(now_s) is poll()
    for a reader that comes late: the newest frame due, the ones before it skipped.
    """

    def __init__(self, device: JkBms, chunking: str = "mtu131", whole_frames: bool = False) -> None:
        if chunking not in CHUNKING:
            raise ValueError("unknown chunking %r; choose one of %s" % (chunking, ", ".join(CHUNKING)))
        self.device = device
        self.chunking = CHUNKING[chunking]
        self.whole_frames = whole_frames
        self.streaming = False
        self.next_frame_s = 0.0
        self.commands: list[int] = []

    def _chunks(self, frame: bytes, trailer: bool = False) -> list[bytes]:
        if self.whole_frames:
            return [frame, C8_TRAILER] if trailer else [frame]
        sizes = self.chunking["sizes"]
        chunks = []
        position = 0
        index = 0
        while position < len(frame):
            size = sizes[index % len(sizes)]
            chunks.append(frame[position : position + size])
            position += size
            index += 1
        if trailer:
            chunks.append(C8_TRAILER + (jk_ble.KEEPALIVE if self.chunking["keepalive"] else b""))
        return chunks

    def on_write(self, data: bytes | bytearray, now_s: float) -> list[bytes]:
        try:
            command = jk_ble.decode_command(bytes(data))
        except RemoteProtocolError:
            return []
        self.commands.append(command.command)
        device = self.device
        if device.failure == "silent":
            return []
        if command.command == jk_ble.GET_DEVICE_INFO:
            return self._chunks(device._damaged(device.device_info_frame()), trailer=True)
        if command.command == jk_ble.GET_SETTINGS:
            notifications = self._chunks(device._damaged(device.settings_frame()), trailer=True)
            if device.failure != "stop_streaming":
                self.streaming = True
                self.next_frame_s = now_s + STREAM_INTERVAL_S
            return notifications
        return [C8_TRAILER]

    def poll(self, now_s: float) -> list[bytes]:
        device = self.device
        if not self.streaming or now_s < self.next_frame_s or device.failure in ("silent", "stop_streaming"):
            return []
        self.next_frame_s = max(self.next_frame_s + STREAM_INTERVAL_S, now_s)
        notifications: list[bytes] = []
        if self.chunking["keepalive"] and not self.whole_frames:
            notifications.append(jk_ble.KEEPALIVE)
        return notifications + self._chunks(device._damaged(device.cell_info_frame()))

    def due_s(self, now_s: float) -> float | None:
        """When the newest frame due by now_s was due (None if none is: not streaming, or not yet)."""
        if not self.streaming or now_s < self.next_frame_s:
            return None
        return self.next_frame_s + STREAM_INTERVAL_S * int((now_s - self.next_frame_s) / STREAM_INTERVAL_S)

    def latest(self, now_s: float) -> list[bytes]:
        """The notifications of the newest frame due by now_s ([] if none is): the stream keeps
        its pace, and the frames due before that one, which nobody read, are skipped."""
        due_s = self.due_s(now_s)
        if due_s is not None:
            self.next_frame_s = due_s
        return self.poll(now_s)
