"""`vbms ble env`: a BLE environment for programs outside this process."""

import argparse
import json
import signal
import sys
import threading
import time

from .procs import STOP_SIGNALS
from .wires.ble import BleEnvironment, BleEnvironmentError

MAC_HELP = "adapter MAC address (repeat for more adapters; default two)"


def run(args: argparse.Namespace) -> int:
    addresses = args.address or ["00:11:22:33:44:55", "00:AA:BB:CC:DD:EE"]
    stop = threading.Event()
    for signal_number in STOP_SIGNALS:
        signal.signal(signal_number, lambda *_: stop.set())
    try:
        environment = BleEnvironment(adapters=addresses).start()
    except BleEnvironmentError as error:
        sys.stderr.write("vbms ble env: %s\n" % error)
        return 1
    try:
        print(
            json.dumps(
                {
                    "event": "started",
                    "dbus_system_bus_address": environment.address,
                    "adapters": [
                        {"name": n, "address": a} for n, a in zip(environment.adapters, addresses, strict=True)
                    ],
                    "shell": "export DBUS_SYSTEM_BUS_ADDRESS='%s'" % environment.address,
                    "pids": environment.pids,
                }
            ),
            flush=True,
        )
        deadline = None if args.duration is None else time.monotonic() + args.duration
        while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
            stop.wait(0.2)
    finally:
        environment.stop()
    print(json.dumps({"event": "stopped"}), flush=True)
    return 0
