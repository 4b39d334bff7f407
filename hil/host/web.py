"""The driver's web side: the dashboard's static files, RPC over HTTP (GET|POST
/rpc/<Method>) and a WebSocket at /rpc with Mongoose-OS-style frames, on microdot.

Every call goes through runtime.call() (the core answers it); a body or frame that is not
usable JSON is a 400 / an error frame, never a 500.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from microdot import Microdot

from .config_store import parse_json

if TYPE_CHECKING:
    from microdot import Request
    from microdot.websocket import WebSocket

T = TypeVar("T")
RpcAnswer = tuple[Any, dict[str, Any] | None]  # (result, error): one of them is None


class RpcService(Protocol):
    """What answers the web side's RPC (runtime.Runtime)."""

    async def call(self, method: str, params: Any, token: str | None) -> RpcAnswer: ...


class RequestTimeout(Exception):
    """A request that did not arrive whole in time."""


class TimedReader:
    """A stream reader whose reads give up after timeout_s while a request is read: a client
    that announces a longer body than it sends (or sends nothing) cannot hold a connection.
    Once the request is whole the timeout is lifted (a WebSocket may stay quiet for long)."""

    def __init__(self, reader: asyncio.StreamReader, timeout_s: float | None) -> None:
        self.reader = reader
        self.timeout_s = timeout_s

    async def _timed(self, coroutine: Awaitable[T]) -> T:
        if self.timeout_s is None:
            return await coroutine
        try:
            return await asyncio.wait_for(coroutine, self.timeout_s)
        except TimeoutError:
            # not an OSError, which microdot would take for a dropped socket: a 400 is sent
            raise RequestTimeout("the request was not whole within %g s" % self.timeout_s) from None

    async def readline(self) -> bytes:
        return await self._timed(self.reader.readline())

    async def readexactly(self, count: int) -> bytes:
        return await self._timed(self.reader.readexactly(count))

    async def read(self, count: int = -1) -> bytes:
        return await self._timed(self.reader.read(count))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.reader, name)


class Server(Microdot):
    """microdot with a read timeout on requests (a slow or short request gets a 400 and the
    connection closes)."""

    def __init__(self, read_timeout_s: float) -> None:
        super().__init__()
        self.read_timeout_s = read_timeout_s

        @self.before_request
        async def request_is_whole(request: Request) -> None:
            reader = request.sock[0]
            if isinstance(reader, TimedReader):
                reader.timeout_s = None

    async def handle_request(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # a TimedReader stands in for the StreamReader (it has its reads and forwards the rest)
        return await super().handle_request(TimedReader(reader, self.read_timeout_s), writer)  # type: ignore[arg-type]


def parse_frame(text: str | bytes | bytearray) -> dict[str, Any]:
    """An RPC frame (WebSocket, MQTT): a JSON object with a method name."""
    frame = parse_json(text)
    if not isinstance(frame, dict) or not isinstance(frame.get("method"), str):
        raise ValueError("a frame is a JSON object with a method")
    return frame


def make_app(runtime: RpcService, read_timeout_s: float = 10) -> Server:
    """The web server of the runtime (its call(method, params, token) answers RPC)."""
    from importlib import resources

    from microdot.websocket import with_websocket

    web = Server(read_timeout_s)

    def token_of(request: Request, frame: dict[str, Any] | None = None) -> str | None:
        header = request.headers.get("Authorization", "")
        if header.startswith("Bearer "):
            return header[7:]
        if frame and isinstance(frame.get("auth"), dict):
            return frame["auth"].get("token")
        return None

    static = resources.files("hil").joinpath("web")
    content_types = {"html": "text/html; charset=utf-8", "js": "text/javascript", "css": "text/css"}

    # read once at start, not on every request
    files = {name: static.joinpath(name).read_bytes() for name in ("index.html", "app.js", "style.css")}

    def page(name: str) -> tuple[bytes, int, dict[str, str]]:
        headers = {"Content-Type": content_types[name.rsplit(".", 1)[1]], "Cache-Control": "no-cache"}
        return files[name], 200, headers

    @web.route("/")
    async def index(request: Request) -> tuple[bytes, int, dict[str, str]]:
        return page("index.html")

    @web.route("/static/<name>")
    async def asset(request: Request, name: str) -> tuple[dict[str, Any], int] | tuple[bytes, int, dict[str, str]]:
        if name not in files or name == "index.html":
            return {"error": {"code": 404, "message": "no such file"}}, 404
        return page(name)

    @web.route("/rpc/<method>", methods=["GET", "POST"])
    async def http_rpc(request: Request, method: str) -> Any:  # the call's result, or (error, status)
        if request.method == "POST" and request.body:
            try:
                params = parse_json(request.body)
            except ValueError as error:
                return {"error": {"code": -32700, "message": "the request body is not JSON: %s" % error}}, 400
        else:
            params = {key: request.args.get(key) for key in request.args}
        # mypy: `error` named the except's ValueError above; that block returned
        result, error = await runtime.call(method, params, token_of(request))  # type: ignore[misc]
        if error is not None:
            status = {401: 401, -32601: 404, -32000: 503}.get(error["code"], 400)
            return {"error": error}, status
        return result

    @web.route("/rpc")
    @with_websocket
    async def websocket_rpc(request: Request, socket: WebSocket) -> None:
        while True:
            text = await socket.receive()
            try:
                frame = parse_frame(text)
            except ValueError as error:
                await socket.send(json.dumps({"id": None, "error": {"code": -32700, "message": str(error)}}))
                continue
            # mypy: `error` named the except's ValueError above; that block went on to the next frame
            result, error = await runtime.call(frame["method"], frame.get("params") or {}, token_of(request, frame))  # type: ignore[misc]
            reply = {"id": frame.get("id")}
            if error is None:
                reply["result"] = result
            else:
                reply["error"] = error
            await socket.send(json.dumps(reply))

    return web
