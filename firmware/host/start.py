"""Runs the firmware on the MicroPython unix port, as a board runs main.py (never shipped).

  micropython start.py [agent]

The working directory is the flash ($VBMS_FLASH); firmware/host/ is first on
MICROPYPATH so its machine, network and bluetooth stand in for the board's.
machine.reset() ends the firmware's loop; it is started again from the flash,
as a board restarts.  With "agent", the executor conformance agent runs
instead (firmware/host/agent.py).

The unix port's select.poll keeps the file descriptors it polls in an array that grows
by four.  When it grows into a new allocation while an object without a descriptor is
registered (asyncio's ThreadSafeFlag), that object's entry is given a wild pointer and
the next poll crashes (extmod/modselect.c, poll_set_add_fd: its fix-up loop does not
skip entries whose pollfd is NULL).  The ESP32 port does not use that array.  So the
array is made large enough here, before anything registers: POLL_SLOTS descriptors
that are registered and unregistered at once.
"""

import asyncio
import os
import sys
import time

import machine

POLL_SLOTS = 64


def presize_poller():
    poller = asyncio.core._io_queue.poller
    numbers = range(10000, 10000 + POLL_SLOTS)  # never opened: registering does not poll
    for number in numbers:
        poller.register(number, 0)
    for number in reversed(numbers):
        poller.unregister(number)


os.chdir(os.getenv("VBMS_FLASH") or ".")
starts = 0
while True:
    asyncio.new_event_loop()
    presize_poller()
    starts += 1
    try:
        if sys.argv[1:2] == ["agent"]:
            import agent

            asyncio.run(agent.main(starts))
        else:
            from vbms_fw import app

            asyncio.run(app.main())
    except machine.Reset:
        print(
            '{"level": "info", "event": "reset", "ticks_us": %d, "note": "started again from the flash"}'
            % time.ticks_us()
        )
        continue
    break
