"""`vbms farm`: the places of a labgrid coordinator, who holds them; making and freeing places; a virtual farm.

  vbms farm places [--json]                   every place: idle, reserved or held (by whom), its tags, matches
  vbms farm reservations                      the reservations waiting or holding places
  vbms farm create NAME --match E/G/* --tags board=esp32,bms_byd=1    a place (kept if it exists), tagged
  vbms farm release NAME [--kick]             free a place this host/user holds (--kick: whoever holds it)
  vbms farm virtual [--places N]              N virtual boards as places on a local coordinator, until Ctrl-C

Exit status: 0 done, 1 the coordinator refused or cannot be reached, 2 bad arguments.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from typing import TYPE_CHECKING, Any

from . import FarmError, coordinator_address, parse_tags

if TYPE_CHECKING:
    import argparse

    from .session import Coordinator


def run(args: argparse.Namespace) -> int:
    try:
        if args.farm_command == "virtual":
            return _virtual(args)
        from .session import connect

        coordinator = connect(coordinator_address(args.coordinator))
        try:
            return COMMANDS[args.farm_command](coordinator, args)
        finally:
            coordinator.close()
    except FarmError as error:
        sys.stderr.write("vbms farm: %s\n" % error)
        return 1


def place_rows(coordinator: Coordinator) -> list[dict[str, Any]]:
    """[{"place", "state", "holder", "reservation", "tags", "matches", "comment"}] sorted by name."""
    rows: list[dict[str, Any]] = []
    for name, place in sorted(coordinator.places().items()):
        if place["acquired"]:
            state = "acquired"
        elif place["reservation"]:
            state = "reserved"
        else:
            state = "idle"
        rows.append({
            "place": name, "state": state, "holder": place["acquired"], "reservation": place["reservation"],
            "tags": place["tags"], "matches": place["matches"], "comment": place["comment"],
        })  # fmt: skip
    return rows


def _places(coordinator: Coordinator, args: argparse.Namespace) -> int:
    rows = place_rows(coordinator)
    if args.json:
        print(json.dumps({"coordinator": coordinator.address, "places": rows}))
        return 0
    if not rows:
        print("no places at %s (vbms farm create NAME --match EXPORTER/GROUP/* --tags ...)" % coordinator.address)
        return 0
    table = [("PLACE", "STATE", "HELD BY", "TAGS", "MATCHES")]
    for row in rows:
        tags = ",".join("%s=%s" % item for item in sorted(row["tags"].items()))
        table.append((row["place"], row["state"], row["holder"] or "-", tags or "-", " ".join(row["matches"]) or "-"))
    widths = [max(len(line[column]) for line in table) for column in range(4)]
    for line in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=False)) + "  " + line[4])
    return 0


def _reservations(coordinator: Coordinator, args: argparse.Namespace) -> int:
    reservations = coordinator.reservations()
    if args.json:
        print(json.dumps([dict(reservation.asdict(), token=reservation.token) for reservation in reservations]))
        return 0
    if not reservations:
        print("no reservations")
    for reservation in reservations:
        wanted = ",".join("%s=%s" % item for item in sorted(reservation.filters.get("main", {}).items()))
        places = ",".join(reservation.allocations.get("main", [])) or "-"
        print("%s  %-9s  owner %s  tags %s  place %s" % (reservation.token, reservation.state.name, reservation.owner,
                                                         wanted, places))  # fmt: skip
    return 0


def _create(coordinator: Coordinator, args: argparse.Namespace) -> int:
    tags = parse_tags(args.tags) if args.tags else None
    coordinator.create_place(args.name, args.match or (), tags, args.comment)
    print("place %s at %s" % (args.name, coordinator.address))
    return 0


def _release(coordinator: Coordinator, args: argparse.Namespace) -> int:
    place = coordinator.places().get(args.name)
    if place is None:
        raise FarmError("no place %r at %s" % (args.name, coordinator.address))
    if not place["acquired"]:
        print("place %s is not held" % args.name)
        return 0
    me = coordinator.identity()
    if place["acquired"] != me and not args.kick:
        raise FarmError(
            "place %s is held by %s, not by you (%s): --kick frees it anyway; make sure no run uses it"
            % (args.name, place["acquired"], me)
        )
    coordinator.release(args.name)
    print("released place %s (held by %s)" % (args.name, place["acquired"]))
    return 0


COMMANDS = {"places": _places, "reservations": _reservations, "create": _create, "release": _release}


def _virtual(args: argparse.Namespace) -> int:
    from .local import VirtualFarm

    stop: list[int] = []
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, lambda *_: stop.append(1))
    farm = VirtualFarm(args.places, prefix=args.prefix)
    try:
        farm.start()
        info = {"coordinator": farm.address, "places": farm.places}
        if args.json:
            print(json.dumps(info), flush=True)
        else:
            print("LG_COORDINATOR=%s" % farm.address)
            print("places: %s (virtual boards; stop with Ctrl-C)" % ", ".join(farm.places))
            print("try: pytest features --target esp32 --lg-coordinator %s --lg-place %s"
                  % (farm.address, farm.places[0]), flush=True)  # fmt: skip
        while not stop:
            time.sleep(0.2)
    finally:
        farm.stop()
    return 0
