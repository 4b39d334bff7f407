"""Parity of the application: one recorded session replayed through the firmware's driver on
MicroPython (firmware/host/replay.py) and through `vbms run`'s driver on CPython gives the
same bytes to the inverter, the batteries and the JK modules, at the same times, and the
same RPC answers (compared as parsed JSON: MicroPython's dicts keep no key order).

The session is recorded from the des target (simulated time, deterministic by seed): the
default bench's inverter requests, BYD replies, JK notifications and BLE connections, and RPC
calls at set times, each with the time it came in.
"""

import asyncio
import json
import subprocess
from pathlib import Path

from hil import firmware
from hil.benchfile import load_default
from hil.des import TOKEN, DesBench
from hil.host import runtime as host_runtime
from vbms_core import app
from vbms_core import events as ev

CALLS = (  # (at s, method, params, with the token)
    (4.0, "Sys.GetInfo", None, False),
    (6.0, "VBMS.GetSummary", None, False),
    (
        9.0,
        "Config.Set",
        {"config": {"bms0.voltage": 56.4, "bms1.name": "Renamed", "app.max_charge_current_a": 80}},
        True,
    ),
    (10.0, "Config.Set", {"config": {"bms2.voltage": 99}}, True),
    (11.0, "Config.Set", {"config": {"bms2.voltage": 54.0}}, False),
    (12.0, "Nope.Nothing", None, False),
    (13.0, "Config.Get", None, False),
    (14.0, "Config.Save", {}, True),
    (18.0, "VBMS.GetSummary", None, False),
    (21.0, "Sys.GetInfo", None, False),
)


def record_session(path, seconds=24.0, bench=None, calls=CALLS):
    """The inputs the des target's proxy took, as replay.py reads them."""
    world = DesBench(bench or load_default())
    lines = [{"config": world.proxy.config}]
    take = world.feed

    def feed(event):
        take(event)
        t = event.now_us
        kind = type(event)
        if kind is ev.InvBytes:
            lines.append([t, "inv", bytes(event.data).hex()])
        elif kind is ev.BmsBytes:
            lines.append([t, "bms", bytes(event.data).hex()])
        elif kind is ev.BleConnected:
            lines.append([t, "ble_connected", event.slot])
        elif kind is ev.BleDisconnected:
            lines.append([t, "ble_lost", event.slot, event.reason])
        elif kind is ev.BleNotify:
            lines.append([t, "ble_notify", event.slot, bytes(event.data).hex()])
        elif kind is ev.RpcCall:
            lines.append([t, "rpc", event.call_id, event.method, event.params, event.token, event.wall_s])
        elif kind is not ev.Tick:
            raise AssertionError("the session has no place for %r" % (event,))

    world.feed = feed
    for at, method, params, with_token in calls:
        world.run_for(at - world.env.now)
        world.rpc(method, params, TOKEN if with_token else None)
    world.run_for(seconds - world.env.now)
    with open(path, "w") as out:
        for line in lines:
            out.write(json.dumps(line) + "\n")
    return lines


class Written:
    """A port or BLE link of the host driver's, recording what goes out."""

    def __init__(self, name, clock, out):
        self.name, self.clock, self.out = name, clock, out

    def write(self, data):
        self.out.append([self.name, self.clock[0], bytes(data).hex()])

    def close(self):
        pass


class HostBle:
    def __init__(self, clock, out, addresses):
        self.clock, self.out, self.addresses = clock, out, addresses

    async def connect(self, slot, address):
        pass  # the session says when the module answered

    async def write(self, slot, data):
        self.out.append(["ble", self.clock[0], self.addresses[slot], bytes(data).hex()])

    async def disconnect(self, slot):
        pass

    async def close(self):
        pass


def replay_on_host(path, workdir, monkeypatch):
    """The same session through hil.host.runtime's Runtime and HostExecutor, in CPython."""
    clock = [0]
    monkeypatch.setattr(host_runtime, "now_us", lambda: clock[0])
    out = []
    answers = {}

    async def run():
        lines = [json.loads(line) for line in Path(path).read_text().splitlines()]
        config = lines[0]["config"]
        runtime = host_runtime.Runtime(str(workdir / "host-config.json"), log=lambda *args, **fields: None)
        runtime.wake = asyncio.Event()
        runtime.proxy = app.Proxy(config, 0)
        runtime.links = {"bms": Written("bms", clock, out), "inv": Written("inv", clock, out)}
        addresses = {slot: config["bms%d.addr" % slot] for slot in range(15)}
        runtime.ble = HostBle(clock, out, addresses)
        last_tick = -1
        futures = {}

        def tick():
            nonlocal last_tick
            runtime.feed(ev.Tick(0))
            last_tick = clock[0]

        for item in lines[1:]:
            t, kind = item[0], item[1]
            while True:  # the deadlines before this input, as replay.py services them
                deadline = runtime.proxy.next_deadline_us()
                if deadline is None or deadline > t or max(deadline, last_tick + 1) > t:
                    break
                clock[0] = max(deadline, last_tick + 1)
                tick()
                await asyncio.sleep(0)
            clock[0] = t
            if kind == "inv":
                runtime.feed(ev.InvBytes(bytes.fromhex(item[2]), 0))
            elif kind == "bms":
                runtime.feed(ev.BmsBytes(bytes.fromhex(item[2]), 0))
            elif kind == "ble_connected":
                runtime.feed(ev.BleConnected(item[2], 0))
            elif kind == "ble_lost":
                runtime.feed(ev.BleDisconnected(item[2], item[3], 0))
            elif kind == "ble_notify":
                runtime.feed(ev.BleNotify(item[2], bytes.fromhex(item[3]), 0))
            elif kind == "rpc":
                call_id, method, params, token, wall_s = item[2:7]
                futures[call_id] = runtime.rpc_waiters[call_id] = asyncio.get_running_loop().create_future()
                runtime.feed(ev.RpcCall(call_id, method, params, 0, token, wall_s))
            tick()
            await asyncio.sleep(0)  # what the executor spawned runs (BLE writes)
        for call_id, future in futures.items():
            answers[call_id] = list(future.result()) if future.done() else [None, None]

    asyncio.run(run())
    return out, answers


def replay_on_micropython(path, workdir, measure=False):
    command = [firmware.micropython_command(), str(firmware.HOST / "replay.py"), str(path)]
    if measure:
        command.append("--measure")
    env = {"MICROPYPATH": firmware.micropython_path(firmware.stage(workdir / "tree")), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(command, env=env, cwd=str(workdir), capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    out, answers, memory = [], {}, None
    for line in done.stdout.splitlines():
        item = json.loads(line)
        if item[0] == "rpc":
            answers[item[1]] = [item[2], item[3]]
        elif item[0] == "mem":
            memory = item[1]
        else:
            out.append(item)
    return out, answers, memory


def test_the_firmware_driver_and_the_host_driver_answer_one_session_alike(unix_port, tmp_path, monkeypatch):
    session = tmp_path / "session.jsonl"
    lines = record_session(session)
    assert sum(1 for line in lines[1:] if line[1] == "inv") > 150
    assert sum(1 for line in lines[1:] if line[1] == "ble_notify") > 100
    (tmp_path / "firmware").mkdir()
    ours, our_answers, _ = replay_on_micropython(session, tmp_path / "firmware")
    theirs, their_answers = replay_on_host(session, tmp_path, monkeypatch)

    inverter = [item for item in theirs if item[0] == "inv"]
    assert len(inverter) > 80  # the inverter is answered all along (7 of its 15 units have no battery)
    for kind in ("inv", "bms", "ble"):
        mine = [item for item in ours if item[0] == kind]
        host = [item for item in theirs if item[0] == kind]
        for index, (a, b) in enumerate(zip(mine, host, strict=False)):
            assert a == b, "%s write %d differs:\nfirmware %s\nhost     %s" % (kind, index, a, b)
        assert len(mine) == len(host), kind
    assert sorted(our_answers) == sorted(their_answers) == list(range(1, len(CALLS) + 1))
    for call_id in their_answers:
        assert our_answers[call_id] == json.loads(json.dumps(their_answers[call_id])), call_id
    summary = their_answers[9][0]
    assert any(row.get("status") == "online" for row in summary["bms"])
    assert their_answers[4][1]["code"] == -32602 and their_answers[5][1]["code"] == 401
    saved = json.loads((tmp_path / "firmware" / "config.json").read_text())
    assert saved == json.loads((tmp_path / "host-config.json").read_text())  # Config.Save: the same file
