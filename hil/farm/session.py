"""labgrid's coordinator from vbms: Coordinator (the client session) and Lease (a place held for a run).

labgrid has no stable library client: its ClientSession's public methods are the labgrid-client commands
and read their arguments from argparse.  Used here: start_session(), the session's places and resources
(kept up to date by the coordinator's stream), get_target_resources() and sync_with_coordinator(), and the
coordinator's gRPC stub with labgrid's own protobuf messages.

Two ClientSessions of one process to one coordinator share a gRPC connection and the coordinator refuses
the second (`assert peer not in self.clients`): connect() gives each process one Coordinator per address.
The session's asyncio loop runs on a thread of its own, so the stream stays served between calls and calls
may come from any thread.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Coroutine, Iterable
from typing import TYPE_CHECKING, Any, Self, TypeVar

from . import BLE_CLASS, BOARD_CLASS, BOARD_KEYS, PORT_KEYS, SERIAL_CLASSES, FarmError, require_labgrid

CONNECT_S = 20.0
CALL_S = 60.0
PORTS_S = 20.0  # acquire -> every port's ser2net listening (labgrid's exporter starts one per port, ~0.5 s each)
POLL_S = 0.5

if TYPE_CHECKING:
    from .bridge import RemoteSerialBridge

T = TypeVar("T")

_sessions: dict[str, Coordinator] = {}
_sessions_lock = threading.Lock()


def connect(address: str) -> Coordinator:
    """This process's Coordinator for address (shared; close() when done with it)."""
    with _sessions_lock:
        coordinator = _sessions.get(address)
        if coordinator is None or coordinator.closed:
            coordinator = _sessions[address] = Coordinator(address)
        coordinator.users += 1
        return coordinator


class Coordinator:
    """labgrid's ClientSession to the coordinator at address, its loop on a thread of its own."""

    def __init__(self, address: str) -> None:
        require_labgrid()
        self.address = address
        self.users = 0
        self.closed = False
        self.session: Any = None  # labgrid's ClientSession
        # set by the session's thread before __init__ returns (it raises FarmError when it is not)
        self.loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]
        _reachable(address)
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            from labgrid.remote.client import start_session

            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            try:
                self.session = start_session(address, loop=loop)
            except BaseException as error:  # noqa: BLE001 - handed to the caller below
                failure.append(error)
                ready.set()
                loop.close()
                return
            self.loop = loop
            ready.set()
            loop.run_forever()
            # not closed: gRPC's poller may still call into it after the channel closed

        self._thread = threading.Thread(target=run, name="labgrid-session", daemon=True)
        self._thread.start()
        if not ready.wait(CONNECT_S) or failure:
            raise FarmError(
                "no labgrid coordinator answers at %s%s" % (address, ": %s" % failure[0] if failure else "")
            )

    # --- plumbing ---------------------------------------------------------------------------
    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = CALL_S) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def _rpc(self, name: str, request: Any, sync: bool = True) -> Any:
        """A coordinator call; FarmError with the coordinator's words when it refuses."""
        import grpc

        async def call() -> Any:
            try:
                answer = await getattr(self.session.stub, name)(request)
            except grpc.aio.AioRpcError as error:
                return error
            if sync:
                await self.session.sync_with_coordinator()
            return answer

        answer = self.run(call())
        if isinstance(answer, grpc.aio.AioRpcError):
            raise FarmError("the coordinator refused %s: %s" % (name, answer.details()))
        return answer

    def _snapshot(self, read: Callable[[], T]) -> T:
        async def call() -> T:
            await self.session.sync_with_coordinator()
            return read()

        return self.run(call())

    @staticmethod
    def _pb() -> Any:
        from labgrid.remote.generated import labgrid_coordinator_pb2

        return labgrid_coordinator_pb2

    def identity(self) -> str:
        """Who this process is to the coordinator: "host/user" (LG_HOSTNAME, LG_USERNAME override)."""
        return "%s/%s" % (self.session.gethostname(), self.session.getuser())

    # --- places -----------------------------------------------------------------------------
    def places(self) -> dict[str, dict[str, Any]]:
        """{name: {"acquired": "host/user" or None, "tags", "matches", "comment", "reservation",
        "acquired_resources"}}."""

        def read() -> dict[str, dict[str, Any]]:
            return {
                name: {
                    "acquired": place.acquired,
                    "tags": dict(place.tags),
                    "matches": [str(match) for match in place.matches],
                    "comment": place.comment,
                    "reservation": place.reservation,
                    "acquired_resources": ["/".join(path) for path in place.acquired_resources],
                }
                for name, place in self.session.places.items()
            }

        return self._snapshot(read)

    def resources(self) -> dict[str, dict[str, dict[str, dict[str, Any]]]]:
        """{exporter: {group: {name: {"cls", "params", "avail", "acquired"}}}}."""

        def read() -> dict[str, dict[str, dict[str, dict[str, Any]]]]:
            return {
                exporter: {
                    group_name: {
                        name: {"cls": entry.cls, "params": entry.args, "avail": entry.avail, "acquired": entry.acquired}
                        for name, entry in group.items()
                    }
                    for group_name, group in groups.items()
                }
                for exporter, groups in self.session.resources.items()
            }

        return self._snapshot(read)

    def create_place(
        self, name: str, matches: Iterable[str] = (), tags: dict[str, str] | None = None, comment: str | None = None
    ) -> None:
        """A place (kept if it exists) with these matches added and these tags set."""
        pb = self._pb()
        places = self.places()
        if name not in places:
            self._rpc("AddPlace", pb.AddPlaceRequest(name=name))
            places[name] = {"matches": []}
        for pattern in matches:
            if not any(existing.startswith(pattern) for existing in places[name]["matches"]):
                self._rpc("AddPlaceMatch", pb.AddPlaceMatchRequest(placename=name, pattern=pattern))
        if tags is not None:
            self._rpc("SetPlaceTags", pb.SetPlaceTagsRequest(placename=name, tags=dict(tags)))
        if comment is not None:
            self._rpc("SetPlaceComment", pb.SetPlaceCommentRequest(placename=name, comment=comment))

    def delete_place(self, name: str) -> None:
        self._rpc("DeletePlace", self._pb().DeletePlaceRequest(name=name))

    def acquire(self, name: str) -> None:
        place = self.places().get(name)
        if place is None:
            raise FarmError(
                "the coordinator at %s has no place %r (vbms farm places lists them)" % (self.address, name)
            )
        if place["acquired"]:
            mine = place["acquired"] == self.identity()
            raise FarmError(
                "place %s is held by %s%s" % (name, place["acquired"], (
                    ": by you, from another run, or from one that was killed before it could release it; if no run "
                    "of yours uses it, `vbms farm release %s`" % name) if mine else (
                    "; wait for it, or reserve by tags (--lg-tags) to get any free bench")
                )
            )  # fmt: skip
        self._rpc("AcquirePlace", self._pb().AcquirePlaceRequest(placename=name))

    def release(self, name: str, fromuser: str | None = None) -> None:
        """Release a place (fromuser: only while "host/user" holds it)."""
        request = self._pb().ReleasePlaceRequest(placename=name)
        if fromuser:
            request.fromuser = fromuser
        self._rpc("ReleasePlace", request)

    def acquired_resources(self, name: str) -> dict[tuple[str, str], dict[str, Any]]:
        """{(resource name, cls): {"params", "avail"}} of a place this process holds."""

        def read() -> dict[tuple[str, str], dict[str, Any]]:
            place = self.session.places[name]
            return {key: {"params": entry.args, "avail": entry.avail}
                    for key, entry in self.session.get_target_resources(place).items()}  # fmt: skip

        return self._snapshot(read)

    # --- reservations -----------------------------------------------------------------------
    def reserve(self, tags: dict[str, str], prio: float = 0.0) -> str:
        """A reservation for a place with these tags; its token."""
        from labgrid.remote.common import Reservation

        pb = self._pb()
        request = pb.CreateReservationRequest(filters={"main": pb.Reservation.Filter(filter=dict(tags))}, prio=prio)
        answer = self._rpc("CreateReservation", request, sync=False)
        return Reservation.from_pb2(answer.reservation).token

    def poll(self, token: str) -> tuple[str, str | None]:
        """(state name, place or None); polling keeps a reservation alive (it expires 60 s after the last poll
        unless its place was acquired)."""
        from labgrid.remote.common import Reservation

        answer = self._rpc("PollReservation", self._pb().PollReservationRequest(token=token), sync=False)
        reservation = Reservation.from_pb2(answer.reservation)
        places = reservation.allocations.get("main") or [None]
        return reservation.state.name, places[0]

    def cancel(self, token: str) -> None:
        self._rpc("CancelReservation", self._pb().CancelReservationRequest(token=token), sync=False)

    def reservations(self) -> list[Any]:  # labgrid's Reservation objects
        from labgrid.remote.common import Reservation

        answer = self._rpc("GetReservations", self._pb().GetReservationsRequest(), sync=False)
        return [Reservation.from_pb2(item) for item in answer.reservations]

    # --- end ----------------------------------------------------------------------------------
    def close(self) -> None:
        with _sessions_lock:
            self.users -= 1
            if self.users > 0 or self.closed:
                return
            self.closed = True
            if _sessions.get(self.address) is self:
                del _sessions[self.address]

        async def stop() -> None:
            await self.session.stop()
            await self.session.close()

        try:
            self.run(stop(), timeout=10)
        except Exception:  # noqa: BLE001, S110 - a coordinator that went away has nothing left to close
            pass
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)


def _reachable(address: str) -> None:
    host, _, port = address.rpartition(":")
    if not host:
        host, port = address, "20408"
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
    except (OSError, ValueError) as error:
        raise FarmError(
            "no labgrid coordinator at %s (%s): start one (labgrid-coordinator -l HOST:PORT), or name yours with "
            "--lg-coordinator or LG_COORDINATOR" % (address, getattr(error, "strerror", None) or error)
        ) from None


# --- a lease: one place for one run -------------------------------------------------------------


class Lease:
    """A place held by this process: by name, or by reserving one with the given tags.

    start() reserves (waiting up to wait_s for a free place) and acquires; ports() waits until the exporter
    serves every port of the place; esp32_table(bauds) opens a bridge per port and gives the [esp32] entries
    for the place (its ports as local paths, its board settings, its Bluetooth adapters); close() closes the
    bridges, releases the place and cancels the reservation, whatever happened before.
    """

    def __init__(
        self,
        address: str,
        place: str | None = None,
        tags: dict[str, str] | None = None,
        wait_s: float = 600.0,
        say: Callable[[str], None] | None = None,
    ) -> None:
        if (place is None) == (tags is None):
            raise ValueError("a lease is for a place or for tags, one of them")
        self.address = address
        self.wanted = place
        self.tags = tags
        self.wait_s = wait_s
        self.say = say or (lambda text: None)
        self.place: str | None = None
        self.token: str | None = None
        self.coordinator: Coordinator | None = None
        self.bridges: dict[str, RemoteSerialBridge] = {}
        self.acquired_s: float | None = None  # how long reserving and acquiring took
        self._held = False

    def start(self) -> Self:
        started = time.monotonic()
        try:
            self.coordinator = connect(self.address)
            if self.tags is not None:
                self.place = self._reserve()
            else:
                self.place = self.wanted
            # Held from here on, for close(): an interrupt (Ctrl-C, SIGTERM) while the coordinator acquires may
            # leave the place acquired without the answer reaching us.  A refusal says it is not ours.
            self._held = True
            try:
                # a place by now: __init__ took a place, or tags to reserve one
                self.coordinator.acquire(self.place)  # type: ignore[arg-type]
            except FarmError:
                self._held = False
                raise
        except BaseException:
            self.close()
            raise
        self.acquired_s = time.monotonic() - started
        return self

    def _reserve(self) -> str:
        # (type: ignore below: start() calls this with tags, once it has the coordinator)
        coordinator = self.coordinator
        wanted = " ".join("%s=%s" % item for item in sorted(self.tags.items()))  # type: ignore[union-attr]
        self.token = coordinator.reserve(self.tags)  # type: ignore[union-attr, arg-type]
        deadline = time.monotonic() + self.wait_s
        told = False
        while True:
            state, place = coordinator.poll(self.token)  # type: ignore[union-attr]
            if state in ("allocated", "acquired") and place:
                return place
            if state in ("expired", "invalid"):
                raise FarmError("the reservation for %s ended as %s before a place came free" % (wanted, state))
            if time.monotonic() >= deadline:
                raise FarmError(
                    "no place with the tags %s came free within %g s (vbms farm places shows the places, their tags "
                    "and who holds them)" % (wanted, self.wait_s)
                )
            if not told:
                self.say("waiting for a place tagged %s (reservation %s)" % (wanted, self.token))
                told = True
            time.sleep(POLL_S)

    def resources(self, timeout_s: float = PORTS_S) -> dict[tuple[str, str], dict[str, Any]]:
        """The place's resources once every serial port is served: {(name, cls): params}."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                # a started lease has its coordinator and place
                found = self.coordinator.acquired_resources(self.place)  # type: ignore[union-attr, arg-type]
            except Exception as error:  # noqa: BLE001 - labgrid's ServerError: an orphaned resource
                raise FarmError("place %s: %s" % (self.place, error)) from None
            serial = {key: entry for key, entry in found.items() if key[1] in SERIAL_CLASSES}
            if serial and all(entry["params"].get("port") and entry["avail"] for entry in serial.values()):
                return {key: entry["params"] for key, entry in found.items()}
            if time.monotonic() >= deadline:
                raise FarmError(
                    "place %s: its serial ports are not served within %g s (%s). Is its exporter running, and ser2net "
                    "installed on the exporter's host?" % (self.place, timeout_s, sorted(name for name, _ in serial))
                )
            time.sleep(0.05)

    def esp32_table(self, bauds: dict[str, int], base: dict[str, Any] | None = None) -> dict[str, Any]:
        """The [esp32] table (as in a bench file) for the place: base (the bench file's [esp32], if any),
        the place's board settings over it, and its ports as local paths through bridges opened at `bauds`
        ({"console": baud, "inverter": baud, "bms": baud}).  reset = "dtr_rts" becomes a reset_command that
        makes the console's bridge pulse EN."""
        resources = self.resources()
        table = {key: value for key, value in (base or {}).items() if key not in PORT_KEYS.values()}
        table.pop("ble_adapters", None)
        table.pop("ble_dbus_address", None)
        serial = {name: params for (name, cls), params in resources.items() if cls in SERIAL_CLASSES}
        missing = [name for name in PORT_KEYS if name not in serial]
        if missing:
            raise FarmError(
                "place %s has no %s: its exporter group needs the serial ports console, inverter and bms (see "
                "hil/benches/labgrid-exporter.yaml); it has %s"
                % (self.place, ", ".join(missing), ", ".join(sorted(name for name, _ in resources)) or "nothing")
            )
        board = [params for (name, cls), params in resources.items() if cls == BOARD_CLASS]
        if len(board) > 1:
            raise FarmError("place %s has %d %s resources; one board per place" % (self.place, len(board), BOARD_CLASS))
        for key, value in (board[0] if board else {}).items():
            if key not in BOARD_KEYS:
                raise FarmError(
                    "place %s: %s parameter %r is not a board setting (%s)"
                    % (self.place, BOARD_CLASS, key, ", ".join(BOARD_KEYS))
                )
            table[key] = value
        if "console_baud" not in table and serial["console"].get("speed"):
            table["console_baud"] = int(serial["console"]["speed"])
        adapters = sorted((name, params) for (name, cls), params in resources.items() if cls == BLE_CLASS)
        if adapters:
            table["ble_adapters"] = [params["hci"] for _, params in adapters]
            buses = {params.get("dbus_address") for _, params in adapters}
            if len(buses) > 1:
                raise FarmError(
                    "place %s: its Bluetooth adapters are on different D-Bus buses %s" % (self.place, buses)
                )
            if buses != {None}:
                table["ble_dbus_address"] = buses.pop()
        self.exporter_host: str = serial["console"]["host"]
        bauds = dict(bauds, console=table.get("console_baud", 115200))
        self.bridges = _bridges({name: (serial[name], bauds[name]) for name in PORT_KEYS})
        for name, key in PORT_KEYS.items():
            table[key] = self.bridges[name].path
        if table.get("reset", "dtr_rts") == "dtr_rts":
            table["reset"] = "command"
            table["reset_command"] = self.bridges["console"].reset_command()
        return table

    def bridge_errors(self) -> list[str]:
        return [error for bridge in self.bridges.values() for error in bridge.errors]

    def close(self) -> None:
        """Bridges closed, the place released, the reservation cancelled; safe to call more than once."""
        problems: list[str] = []
        for bridge in self.bridges.values():
            bridge.close()
        self.bridges = {}
        coordinator = self.coordinator
        if coordinator is None:
            return
        if self._held:
            try:
                # held: it has a place
                coordinator.release(self.place, fromuser=coordinator.identity())  # type: ignore[arg-type]
            except Exception as error:  # noqa: BLE001 - said below, after the rest is cleaned up
                problems.append("releasing place %s: %s" % (self.place, error))
            self._held = False
        if self.token is not None:
            try:
                coordinator.cancel(self.token)
            except Exception:  # noqa: BLE001, S110 - an acquired reservation may already be gone with its place
                pass
            self.token = None
        self.coordinator = None
        coordinator.close()
        if problems:
            raise FarmError("; ".join(problems))


def _bridges(ports: dict[str, tuple[dict[str, Any], int]]) -> dict[str, RemoteSerialBridge]:
    """{name: RemoteSerialBridge} for {name: (params, baud)}, opened side by side (pyserial's RFC 2217
    negotiation takes about half a second a port); all closed again if one cannot be opened."""
    from concurrent.futures import ThreadPoolExecutor

    from .bridge import RemoteSerialBridge

    def open_one(name: str) -> RemoteSerialBridge:
        params, baud = ports[name]
        modem_lines = (False, False) if name == "console" else None
        return RemoteSerialBridge(name, params["host"], int(params["port"]), baud,
                                  params.get("protocol", "rfc2217"), modem_lines)  # fmt: skip

    with ThreadPoolExecutor(len(ports)) as pool:
        futures = {name: pool.submit(open_one, name) for name in ports}
    bridges: dict[str, RemoteSerialBridge] = {}
    errors: list[Exception] = []
    for name, future in futures.items():
        try:
            bridges[name] = future.result()
        except Exception as error:  # noqa: BLE001 - the first one is raised below, after the others are closed
            errors.append(error)
    if errors:
        for bridge in bridges.values():
            bridge.close()
        raise errors[0]
    return bridges


def is_local(host: str) -> bool:
    """True when host names this machine (so its Bluetooth adapters are this machine's)."""
    if host in ("localhost", socket.gethostname(), socket.getfqdn()):
        return True
    try:
        # str: an AF_INET or AF_INET6 sockaddr starts with the address text (mypy also allows AF_PACKET's int)
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except OSError:
        return False
    for address in addresses:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET  # type: ignore[operator]
        try:
            with socket.socket(family, socket.SOCK_DGRAM) as probe:
                probe.bind((address, 0))  # only an address of one of this machine's interfaces can be bound
            return True
        except OSError:
            continue
    return False
