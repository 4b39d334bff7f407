"""The firmware's driver: vbms_core's proxy on MicroPython's asyncio (ARCHITECTURE.md, "Drivers").

feed(event) stamps an input with the clock, hands it to the proxy and carries
out the actions that come back through the executor, in order.  Inputs that
arise where the proxy must not be entered (a BLE irq, an executor's method:
vbms_core.events) are post()ed and fed by run(), the loop that also ticks the
proxy at its next deadline and feeds the watchdog.

RPC: call(method, params, token) is what the web server and MQTT use; the
proxy's RpcReply wakes the caller.  Frames (WebSocket, MQTT) follow Mongoose
OS: {"id", "method", "params", "auth": {"token"}} -> {"id", "result" | "error"}.
"""

import asyncio
import json

from vbms_core import events as ev

from .log import wall_s

RPC_TIMEOUT_S = 60  # no call waits longer (a scan is at most 30 s plus the core's grace)
LONGEST_WAIT_MS = 1000  # the loop looks at least this often (clock extension, watchdog)


class Waiter:
    __slots__ = ("event", "answer")

    def __init__(self):
        self.event = asyncio.Event()
        self.answer = None


class Driver:
    def __init__(self, proxy, clock, executor, watchdog=None):
        self.proxy = proxy
        self.clock = clock
        self.executor = executor
        self.watchdog = watchdog
        self.inbox = []
        self.wake = asyncio.ThreadSafeFlag()
        self.tick = ev.Tick(0)  # one Tick, reused: the core keeps no input object
        self.waiters = {}
        self.calls = 0
        # each action's method, bound once: events.execute's getattr would make a bound method per action
        self.methods = {}
        for kind in ev.ACTIONS:
            self.methods[kind] = getattr(executor, kind.method)

    def execute(self, actions):
        methods = self.methods
        for action in actions:
            methods[type(action)](action)

    def feed(self, event, wake=True):
        """One input into the core now; its actions carried out in order.  wake=False leaves the
        loop asleep: for inverter bytes, which are answered as they arrive and move no deadline the
        loop must keep (a frame left open is closed by the gap before the next bytes, or at the
        loop's next look, a second later at most)."""
        event.now_us = self.clock.now_us()
        self.execute(self.proxy.feed(event))
        if wake:
            self.wake.set()  # the next deadline may have moved

    def post(self, event):
        """An input to feed from the loop (safe from a BLE irq and from an executor's method)."""
        self.inbox.append(event)
        self.wake.set()

    def service(self):
        """Feeds what was posted, then a Tick; returns how long the loop may sleep (ms)."""
        while self.inbox:
            self.feed(self.inbox.pop(0))
        tick = self.tick
        tick.now_us = now_us = self.clock.now_us()
        self.execute(self.proxy.feed(tick))
        if self.watchdog is not None:
            self.watchdog.feed()
        deadline = self.proxy.next_deadline_us()
        wait_ms = LONGEST_WAIT_MS if deadline is None else (deadline - now_us + 999) // 1000
        if wait_ms > LONGEST_WAIT_MS:
            return LONGEST_WAIT_MS
        return wait_ms if wait_ms > 1 else 1  # a deadline that does not move on cannot make the loop spin

    async def run(self):
        while True:
            try:
                await asyncio.wait_for_ms(self.wake.wait(), self.service())
            except asyncio.TimeoutError:  # noqa: UP041 - MicroPython has no builtin TimeoutError
                pass

    # --- RPC ---------------------------------------------------------------------------

    async def call(self, method, params, token):
        """(result, error) of one call, when its RpcReply comes."""
        self.calls += 1
        call_id = self.calls
        waiter = self.waiters[call_id] = Waiter()
        self.feed(ev.RpcCall(call_id, method, params, 0, token, int(wall_s())))
        try:
            await asyncio.wait_for(waiter.event.wait(), RPC_TIMEOUT_S)
        except asyncio.TimeoutError:  # noqa: UP041 - MicroPython has no builtin TimeoutError
            self.waiters.pop(call_id, None)
            return None, {"code": -32000, "message": "%s got no answer within %d s" % (method, RPC_TIMEOUT_S)}
        return waiter.answer

    def answer(self, call_id, result, error):
        waiter = self.waiters.pop(call_id, None)
        if waiter is not None:
            waiter.answer = (result, error)
            waiter.event.set()

    def abandon_calls(self, message):
        for call_id in list(self.waiters):
            self.answer(call_id, None, {"code": -32000, "message": message})

    async def answer_frame(self, text, token=None):
        """The reply to one RPC frame (a dict to send as JSON)."""
        try:
            frame = parse_frame(text)
        except ValueError as error:
            return {"id": None, "error": {"code": -32700, "message": str(error)}}
        return await self.answer_parsed(frame, token)

    async def answer_parsed(self, frame, token=None):
        auth = frame.get("auth")
        if token is None and isinstance(auth, dict):
            token = auth.get("token")  # a transport's own token (an Authorization header) comes first
        result, error = await self.call(frame["method"], frame.get("params") or {}, token)
        reply = {"id": frame.get("id")}
        if error is None:
            reply["result"] = result
        else:
            reply["error"] = error
        return reply


def parse_json(text):
    """JSON from a request body or frame; ValueError with a reason for anything unusable."""
    try:
        if isinstance(text, (bytes, bytearray, memoryview)):
            text = bytes(text).decode()
        return json.loads(text)
    except UnicodeError:
        raise ValueError("not UTF-8 text") from None
    except RuntimeError:
        raise ValueError("nested too deeply") from None


def parse_frame(text):
    frame = parse_json(text)
    if not isinstance(frame, dict) or not isinstance(frame.get("method"), str):
        raise ValueError("a frame is a JSON object with a method")
    return frame
