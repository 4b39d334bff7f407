"""One RS485 port: a machine.UART and the transceiver's driver-enable (DE) pin.

Upstream MicroPython's ESP32 UART has no RS485 mode, so the DE line is driven
here: raised just before bytes go into the UART, dropped when the last stop
bit has left.  That moment is the wire time of what was written (10 bit times
per byte at 8N1) and UART.txdone(), whichever is later; a task waits for it,
so a write never blocks the loop.  Writes that follow each other before the
line is dropped extend the same transmission.

Reading: the UART is polled by asyncio (the port supports stream polling) and
whatever arrived is read into one preallocated buffer.
"""

import asyncio
import time

from machine import UART

READ_BUFFER = 256
TX_BUFFER = 1024  # the longest write (a BYD or JK-PB request, an inverter reply) fits many times


def open_uart(number, baud, pins):
    """machine.UART for one port: 8N1, reads that never wait (asyncio waits instead)."""
    uart = UART(number, baudrate=baud, bits=8, parity=None, stop=1, tx=pins["tx"], rx=pins["rx"],
                txbuf=TX_BUFFER, rxbuf=READ_BUFFER * 4, timeout=0, timeout_char=0)  # fmt: skip
    return uart


class Rs485Port:
    """write(data) at once; run_reader(on_bytes) and run_line() are the port's tasks."""

    def __init__(self, uart, de_pin, baud, name):
        self.uart = uart
        self.de = de_pin  # a machine.Pin in OUT mode, or None for an auto-direction transceiver
        self.name = name
        self.char_us = 10 * 1000000 // baud
        self.buffer = bytearray(READ_BUFFER)
        self.view = memoryview(self.buffer)
        self._tx_end = time.ticks_us()
        self._sending = False
        self._wrote = asyncio.ThreadSafeFlag()
        if de_pin is not None:
            de_pin.value(0)

    def write(self, data):
        now = time.ticks_us()
        if self.de is not None:
            self.de.value(1)
        self.uart.write(data)
        start = self._tx_end if self._sending and time.ticks_diff(self._tx_end, now) > 0 else now
        self._tx_end = time.ticks_add(start, len(data) * self.char_us)
        self._sending = True
        self._wrote.set()

    async def run_line(self):
        """Drops DE when the last stop bit has left."""
        while True:
            await self._wrote.wait()
            await self.drain()
            if self.de is not None:
                self.de.value(0)
            self._sending = False

    async def drain(self):
        """Returns when the last byte written has left the wire."""
        while True:
            left_us = time.ticks_diff(self._tx_end, time.ticks_us())
            if left_us > 0:
                await asyncio.sleep_ms((left_us + 999) // 1000)
            elif not self.uart.txdone():
                await asyncio.sleep_ms(1)
            else:
                return

    async def run_reader(self, on_bytes):
        """on_bytes(view): the bytes that arrived (a memoryview, valid until the next read)."""
        reader = asyncio.StreamReader(self.uart)
        view = self.view
        while True:
            count = await reader.readinto(self.buffer)
            if count:
                on_bytes(view[:count])
            elif count == 0:
                raise OSError(5)  # the port went away (EIO): an error for the driver, never a busy loop

    def close(self):
        if self.de is not None:
            self.de.value(0)
        try:
            self.uart.deinit()
        except (AttributeError, OSError):
            pass
