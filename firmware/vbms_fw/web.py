"""The web server (microdot): the dashboard and RPC, as `vbms run` serves them.

  GET  /                    the dashboard (hil/web/index.html)
  GET  /static/<name>       app.js, style.css
  GET|POST /rpc/<Method>    RPC over HTTP: params from the JSON body or the query,
                            the token from "Authorization: Bearer"
  GET  /rpc                 a WebSocket of Mongoose-OS-style frames

The files are stored gzipped in flash (web/<name>.gz, written by `vbms firmware
build`) and sent as they are, with Content-Encoding: gzip: nothing is
decompressed or held in RAM.
"""

import json

from microdot import Microdot, Response
from microdot.websocket import with_websocket

from .driver import parse_json

WEB_DIR = "web/"
FILES = {"index.html": "text/html; charset=utf-8", "app.js": "text/javascript", "style.css": "text/css"}
STATUS_OF_CODE = {401: 401, -32601: 404, -32000: 503}


def _token(request):
    header = request.headers.get("Authorization", "")
    return header[7:] if header.startswith("Bearer ") else None


def _page(name):
    headers = {"Content-Type": FILES[name], "Cache-Control": "no-cache", "Content-Encoding": "gzip"}
    try:
        stream = open(WEB_DIR + name + ".gz", "rb")
    except OSError:
        return {"error": {"code": 404, "message": "%s is not installed on this board" % name}}, 404
    return Response(body=stream, headers=headers)


def make_app(driver):
    """The microdot application; RPC goes through driver.call."""
    web = Microdot()

    @web.route("/")
    async def index(request):
        return _page("index.html")

    @web.route("/static/<name>")
    async def asset(request, name):
        if name not in FILES or name == "index.html":
            return {"error": {"code": 404, "message": "no such file"}}, 404
        return _page(name)

    @web.route("/rpc/<method>", methods=["GET", "POST"])
    async def http_rpc(request, method):
        if request.method == "POST" and request.body:
            try:
                params = parse_json(request.body)
            except ValueError as error:
                return {"error": {"code": -32700, "message": "the request body is not JSON: %s" % error}}, 400
        else:
            params = {}
            for key in request.args:
                params[key] = request.args.get(key)
        result, error = await driver.call(method, params, _token(request))
        if error is not None:
            return {"error": error}, STATUS_OF_CODE.get(error["code"], 400)
        return result

    @web.route("/rpc")
    @with_websocket
    async def websocket_rpc(request, socket):
        token = _token(request)
        while True:
            text = await socket.receive()
            await socket.send(json.dumps(await driver.answer_frame(text, token)))

    return web
