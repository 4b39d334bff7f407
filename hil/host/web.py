"""The driver's web side: the dashboard's static files, RPC over HTTP (GET|POST
/rpc/<Method>) and a WebSocket at /rpc with Mongoose-OS-style frames, on microdot.

Every call goes through runtime.call() (the core answers it); a body or frame that is not
usable JSON is a 400 / an error frame, never a 500.
"""

import asyncio
import json

from microdot import Microdot

from .config_store import parse_json


class RequestTimeout(Exception):
    """A request that did not arrive whole in time."""


class TimedReader:
    """A stream reader whose reads give up after timeout_s while a request is read: a client
    that announces a longer body than it sends (or sends nothing) cannot hold a connection.
    Once the request is whole the timeout is lifted (a WebSocket may stay quiet for long)."""

    def __init__(self, reader, timeout_s):
        self.reader = reader
        self.timeout_s = timeout_s

    async def _timed(self, coroutine):
        if self.timeout_s is None:
            return await coroutine
        try:
            return await asyncio.wait_for(coroutine, self.timeout_s)
        except TimeoutError:
            # not an OSError, which microdot would take for a dropped socket: a 400 is sent
            raise RequestTimeout("the request was not whole within %g s" % self.timeout_s) from None

    async def readline(self):
        return await self._timed(self.reader.readline())

    async def readexactly(self, count):
        return await self._timed(self.reader.readexactly(count))

    async def read(self, count=-1):
        return await self._timed(self.reader.read(count))

    def __getattr__(self, name):
        return getattr(self.reader, name)


class Server(Microdot):
    """microdot with a read timeout on requests (a slow or short request gets a 400 and the
    connection closes)."""

    def __init__(self, read_timeout_s):
        super().__init__()
        self.read_timeout_s = read_timeout_s

        @self.before_request
        async def request_is_whole(request):
            reader = request.sock[0]
            if isinstance(reader, TimedReader):
                reader.timeout_s = None

    async def handle_request(self, reader, writer):
        return await super().handle_request(TimedReader(reader, self.read_timeout_s), writer)


def parse_frame(text):
    """An RPC frame (WebSocket, MQTT): a JSON object with a method name."""
    frame = parse_json(text)
    if not isinstance(frame, dict) or not isinstance(frame.get("method"), str):
        raise ValueError("a frame is a JSON object with a method")
    return frame


def make_app(runtime, read_timeout_s=10):
    """The web server of the runtime (its call(method, params, token) answers RPC)."""
    from importlib import resources

    from microdot.websocket import with_websocket

    web = Server(read_timeout_s)

    def token_of(request, frame=None):
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

    def page(name):
        headers = {"Content-Type": content_types[name.rsplit(".", 1)[1]], "Cache-Control": "no-cache"}
        return files[name], 200, headers

    @web.route("/")
    async def index(request):
        return page("index.html")

    @web.route("/static/<name>")
    async def asset(request, name):
        if name not in files or name == "index.html":
            return {"error": {"code": 404, "message": "no such file"}}, 404
        return page(name)

    @web.route("/rpc/<method>", methods=["GET", "POST"])
    async def http_rpc(request, method):
        if request.method == "POST" and request.body:
            try:
                params = parse_json(request.body)
            except ValueError as error:
                return {"error": {"code": -32700, "message": "the request body is not JSON: %s" % error}}, 400
        else:
            params = {key: request.args.get(key) for key in request.args}
        result, error = await runtime.call(method, params, token_of(request))
        if error is not None:
            status = {401: 401, -32601: 404, -32000: 503}.get(error["code"], 400)
            return {"error": error}, status
        return result

    @web.route("/rpc")
    @with_websocket
    async def websocket_rpc(request, socket):
        while True:
            text = await socket.receive()
            try:
                frame = parse_frame(text)
            except ValueError as error:
                await socket.send(json.dumps({"id": None, "error": {"code": -32700, "message": str(error)}}))
                continue
            result, error = await runtime.call(frame["method"], frame.get("params") or {}, token_of(request, frame))
            reply = {"id": frame.get("id")}
            if error is None:
                reply["result"] = result
            else:
                reply["error"] = error
            await socket.send(json.dumps(reply))

    return web
