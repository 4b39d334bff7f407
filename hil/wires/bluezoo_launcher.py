"""Runs BlueZoo (the BlueZ D-Bus emulator) with BlueZ's disconnect behaviour.

BlueZ removes a connection's GATT objects (device/serviceNNNN/...) when the
link goes down.  BlueZoo 1.0.2 keeps them exported, so the next connection to
the same device fails with "sd_bus_add_obj" and a simulated battery could never
be reconnected.  This launcher removes them on disconnect, as BlueZ does, then
runs BlueZoo's own main().  It is pinned to the version it was checked with:
with another version it refuses to start so someone looks again.

    python -m hil.wires.bluezoo_launcher [bluezoo arguments]
"""

import sys
from importlib.metadata import version

CHECKED_VERSION = "1.0.2"


def install_fix():
    from bluezoo import device as device_module

    original_disconnect = device_module.Device.disconnect

    async def disconnect(self, uuid=None):
        await original_disconnect(self, uuid)
        mock = self.peer_adapter.mock
        for path in sorted(self.services, reverse=True):  # descriptors, then characteristics, then services
            try:
                mock.remove_object(self.services[path])
            except KeyError:
                pass
        self.services.clear()
        await self.ServicesResolved.set_async(False)

    device_module.Device.disconnect = disconnect


def main():
    found = version("bluezoo")
    if found != CHECKED_VERSION:
        sys.stderr.write(
            "bluezoo_launcher: checked with BlueZoo %s, found %s: check whether BlueZoo now removes GATT objects "
            "on disconnect, then update CHECKED_VERSION (or drop the fix)\n" % (CHECKED_VERSION, found)
        )
        return 2
    install_fix()
    from bluezoo import bluezoo

    sys.argv[0] = "bluezoo"
    return bluezoo.main()


if __name__ == "__main__":
    sys.exit(main())
