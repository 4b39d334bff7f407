"""The VBMS firmware for the ESP32 (MicroPython): the driver that runs vbms_core's proxy
against the board's UARTs, Bluetooth LE, Wi-Fi, flash, LED and button (docs/firmware.md)."""
