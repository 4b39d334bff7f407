"""Runs BlueZoo (the BlueZ D-Bus emulator) with BlueZ's disconnect behaviour.

BlueZ, when a link goes down, stops the notifications it had started on the
peripheral's application (StopNotify) and removes the connection's GATT
objects (device/serviceNNNN/...).  BlueZoo 1.0.2 does neither: the next
connection to the same device fails with "sd_bus_add_obj", and the old
link keeps forwarding every notification, so the central receives each one
twice.  This launcher does what BlueZ does on disconnect, then runs BlueZoo's
own main().  It is pinned to the version it was checked with:
with another version it refuses to start so someone looks again.

    python -m hil.wires.bluezoo_launcher [bluezoo arguments]
"""

import sys
from importlib.metadata import version

CHECKED_VERSION = "1.0.2"


def install_fix() -> None:
    from bluezoo import device as device_module
    from bluezoo import events

    original_disconnect = device_module.Device.disconnect

    async def disconnect(self: device_module.Device, uuid: str | None = None) -> None:
        await original_disconnect(self, uuid)
        mock = self.peer_adapter.mock
        for path in sorted(self.services, reverse=True):  # descriptors, then characteristics, then services
            link = self.services[path]
            # Either BlueZoo's empty Subscription wrapper or, once notifying,
            # the EventSubscriber that forwards the application's values.
            subscription = getattr(link, "client_props_changed_subscription", None)
            if subscription is not None and getattr(subscription, "subscriber", subscription) is not None:
                subscription.unsubscribe()
                link.client_props_changed_subscription = events.Subscription()
                try:
                    await link.client.StopNotify()
                except Exception:  # noqa: BLE001 - the application may be gone already
                    pass
            try:
                mock.remove_object(link)
            except KeyError:
                pass
        self.services.clear()
        await self.ServicesResolved.set_async(False)

    device_module.Device.disconnect = disconnect


def main() -> int:
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
