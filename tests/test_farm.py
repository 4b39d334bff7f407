"""Bench farms on labgrid (hil/farm, docs/farm.md), without hardware: a labgrid coordinator and an exporter on
127.0.0.1 serve PTYs through ser2net (Debian) as places.

- A place's ports reach this machine as device paths that carry every byte value both ways; a reset the
  bench file gives as "dtr_rts" is the EN pulse (RTS asserted then released, DTR released: esptool's hard
  reset) on the console's RFC 2217 connection; the place's board settings and tags come with it.
- Reservations by tags: a free place with the tags, another place for a second reservation, a wait that
  ends in an error when none is free; a place held elsewhere is refused with how to free it.
- A run releases its place when its scenario fails, on Ctrl-C and on SIGTERM; a run killed with SIGKILL
  cannot, and `vbms farm release` frees the place it left.
- The esp32 scenarios run through a reserved place (two virtual boards, hil/board.py), then the same
  scenarios on both places in parallel (pytest-xdist, one worker per place): every scenario once, the
  reports (per place, JUnit property and Cucumber tag) say which place ran it.  The wall times of both runs
  go to VBMS_FARM_REPORTS/timing.json (tox env farm: reports/farm/).

Runs in the tox env farm only (marker farm; needs the farm extra and ser2net).
"""

import json
import os
import pty
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import tty
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest
from conftest import bench_toml

pytest.importorskip("labgrid", reason="bench farms need the farm extra (tox env farm)")

from hil.farm import BOARD_CLASS, BOARD_KEYS, FarmError, parse_tags  # noqa: E402
from hil.farm.local import Bench, LocalFarm, VirtualFarm  # noqa: E402
from hil.farm.session import Lease, _bridges, connect  # noqa: E402

pytestmark = pytest.mark.farm

ROOT = Path(__file__).resolve().parents[1]
# Four esp32 scenarios of features/inverter_reads.feature: two RS485 batteries' and one BLE battery's values
# at the inverter, the identity replies, the silent units.
SCENARIOS = "identity or units_without or scaled[1] or scaled[5]"
SCENARIO_COUNT = 4
TIMES = {}
BYD_ONLY = bench_toml("byd-only", [{"type": "byd_pro", "address": 1}])


def _pty():
    master, slave = pty.openpty()
    tty.setraw(slave)
    os.set_blocking(master, False)
    return master, slave, os.ttyname(slave)


def _read(fd, count, timeout_s=5.0):
    data = b""
    deadline = time.monotonic() + timeout_s
    while len(data) < count and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            try:
                data += os.read(fd, 4096)
            except BlockingIOError:
                pass
    return data


def _places(address):
    coordinator = connect(address)
    try:
        return coordinator.places()
    finally:
        coordinator.close()


def _wait_held(address, place, timeout_s=60.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if _places(address)[place]["acquired"]:
            return True
        time.sleep(0.2)
    return False


@pytest.fixture(scope="module")
def plain_farm():
    """Two places whose ports are bare PTYs (no board behind them): plain-a (BYD, its board slow to start),
    plain-b (JK BLE, a board that never starts within its 2 s)."""
    ptys = {(bench, port): _pty() for bench in ("plain-a", "plain-b") for port in ("console", "inverter", "bms")}
    benches = [
        Bench("plain-a", *(ptys["plain-a", port][2] for port in ("console", "inverter", "bms")),
              board={"rpc_url": "http://127.0.0.1:9", "reset": "command", "reset_command": "true",
                     "ready_timeout_s": 60},
              tags={"board": "esp32", "bms_byd": "1"}),
        Bench("plain-b", *(ptys["plain-b", port][2] for port in ("console", "inverter", "bms")),
              board={"rpc_url": "http://127.0.0.1:9", "ready_timeout_s": 2},
              tags={"board": "esp32", "jk_ble": "1"}),
    ]  # fmt: skip
    farm = LocalFarm(benches).start()
    farm.masters = {key: fds[0] for key, fds in ptys.items()}
    try:
        yield farm
    finally:
        farm.stop()
        for master, slave, _ in ptys.values():
            os.close(master)
            os.close(slave)


# --- ports, board settings, reset ----------------------------------------------------------------


def test_a_places_ports_carry_every_byte_value_both_ways_as_local_paths(plain_farm):
    lease = Lease(plain_farm.address, place="plain-a").start()
    try:
        table = lease.esp32_table({"inverter": 9600, "bms": 9600})
        for port, key in (("console", "console_port"), ("inverter", "inverter_port"), ("bms", "bms_port")):
            master = plain_farm.masters["plain-a", port]
            _read(master, 1 << 16, timeout_s=0.2)  # whatever opening the port left
            local = os.open(table[key], os.O_RDWR | os.O_NOCTTY)
            try:
                tty.setraw(local)
                sent = bytes(range(256))  # 0xFF too, which telnet would escape
                os.write(local, sent)
                assert _read(master, 256) == sent, port
                os.write(master, sent[::-1])
                assert _read(local, 256) == sent[::-1], port
            finally:
                os.close(local)
    finally:
        lease.close()
    assert _places(plain_farm.address)["plain-a"]["acquired"] is None


def test_the_places_board_settings_come_with_it_and_dtr_rts_becomes_the_bridges_reset(plain_farm):
    lease = Lease(plain_farm.address, place="plain-b").start()
    try:
        table = lease.esp32_table({"inverter": 9600, "bms": 9600}, base={"rpc_token": "from-the-bench-file"})
        assert table["rpc_url"] == "http://127.0.0.1:9"
        assert table["ready_timeout_s"] == 2
        assert table["rpc_token"] == "from-the-bench-file"  # what the place does not say, the bench file does
        assert table["reset"] == "command"  # plain-b says no reset: "dtr_rts", done by the console's bridge
        done = subprocess.run(table["reset_command"], capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
    finally:
        lease.close()


class _RecordingPort:
    """The serial port behind an RFC 2217 server (pyserial's own PortManager): records DTR and RTS."""

    def __init__(self):
        import serial

        self.port = serial.serial_for_url("loop://", timeout=0)
        self.events = []
        owner = self

        class Lines(type(self.port)):
            def _update_rts_state(self):
                owner.events.append(("rts", self._rts_state))

            def _update_dtr_state(self):
                owner.events.append(("dtr", self._dtr_state))

        self.port.__class__ = Lines


def test_the_reset_pulses_en_over_rfc2217_rts_then_released_with_dtr_released():
    from serial import rfc2217

    recording = _RecordingPort()
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    stop = threading.Event()

    def serve():
        connection, _ = server.accept()

        class Writer:
            def write(self, data):
                connection.sendall(data)

        manager = rfc2217.PortManager(recording.port, Writer())
        connection.settimeout(0.1)
        while not stop.is_set():
            try:
                data = connection.recv(1024)
            except TimeoutError:
                continue
            if not data:
                break
            for _ in manager.filter(data):
                pass
        connection.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    # the console as a lease opens it (hil/farm/session.py), from its resource's parameters
    bridge = _bridges({"console": ({"host": "127.0.0.1", "port": server.getsockname()[1]}, 115200)})["console"]
    try:
        opened = list(recording.events)
        assert ("rts", True) not in opened  # opening the console must not hold EN low
        del recording.events[:]
        done = subprocess.run(bridge.reset_command(), capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        deadline = time.monotonic() + 5
        while ("rts", False) not in recording.events and time.monotonic() < deadline:
            time.sleep(0.05)
        events = recording.events
        assert ("rts", True) in events and ("rts", False) in events, events
        assert events.index(("rts", True)) < len(events) - 1 - events[::-1].index(("rts", False))
        assert ("dtr", True) not in events, events  # IO0 stays high: the board boots its firmware
    finally:
        bridge.close()
        stop.set()
        server.close()


# --- reservations ------------------------------------------------------------------------------------


def test_a_reservation_by_tags_gets_a_matching_free_place_and_waits_for_a_busy_one(plain_farm):
    address = plain_farm.address
    for missing in ({"bms_jk": "1"}, {"jk_ble": "2"}):  # no place has the tag; a tag's value must match exactly
        with pytest.raises(FarmError, match="came free within 1 s"):
            Lease(address, tags=missing, wait_s=1.0).start()
    jk = Lease(address, tags={"jk_ble": "1"}).start()
    try:
        assert jk.place == "plain-b"
        other = Lease(address, tags={"board": "esp32"}).start()
        try:
            assert other.place == "plain-a"  # the only free one
            with pytest.raises(FarmError, match="came free within 1 s"):
                Lease(address, tags={"board": "esp32"}, wait_s=1.0).start()
        finally:
            other.close()
    finally:
        jk.close()
    places = _places(address)
    assert [places[name]["acquired"] for name in ("plain-a", "plain-b")] == [None, None]


def test_a_place_held_elsewhere_is_refused_with_how_to_free_it(plain_farm):
    first = Lease(plain_farm.address, place="plain-a").start()
    try:
        with pytest.raises(FarmError, match="vbms farm release plain-a"):
            Lease(plain_farm.address, place="plain-a").start()
    finally:
        first.close()


def test_tags_with_several_values_in_one_key_are_refused_with_the_rule():
    assert parse_tags("board=esp32,bms_byd=1 jk_ble=1") == {"board": "esp32", "bms_byd": "1", "jk_ble": "1"}
    with pytest.raises(FarmError, match="a key of its own: bms_byd=1,bms_jk=1"):
        parse_tags("board=esp32,bms=byd,jk")


# --- a run releases its place ----------------------------------------------------------------------


def _inner_pytest(address, *options, extra_env=None, **popen):
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("PYTEST_", "LG_")) and key != "VBMS_FARM_REPORTS"}  # fmt: skip
    env.update(extra_env or {})
    command = [sys.executable, "-m", "pytest", "features", "--target", "esp32", "--lg-coordinator", address,
               "-p", "no:cacheprovider", *options]  # fmt: skip
    return command, dict(env=env, cwd=str(ROOT), **popen)


@pytest.mark.parametrize("how", ["lg-place", "lg-env"])
def test_a_run_whose_scenario_fails_releases_its_place(plain_farm, tmp_path, how):
    bench = tmp_path / "byd.toml"
    bench.write_text(BYD_ONLY)
    # the place by name, or from the RemotePlace of a labgrid environment (the example, LG_PLACE substituted)
    place = ["--lg-place", "plain-b"] if how == "lg-place" else ["--lg-env", str(ROOT / "hil/benches/labgrid-env.yaml")]
    command, kwargs = _inner_pytest(plain_farm.address, *place, "--bench", str(bench), "-k", "identity", "-q",
                                    extra_env={"LG_PLACE": "plain-b"})  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=180, **kwargs)
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    assert "printed no ready line (the JSON log line" in done.stdout
    assert "within 2 s of its reset" in done.stdout  # plain-b's ready_timeout_s: it ran there
    assert _places(plain_farm.address)["plain-b"]["acquired"] is None


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_an_interrupted_run_releases_its_place(plain_farm, tmp_path, signum):
    bench = tmp_path / "byd.toml"
    bench.write_text(BYD_ONLY)
    command, kwargs = _inner_pytest(plain_farm.address, "--lg-place", "plain-a", "--bench", str(bench), "-k",
                                    "identity", "-q")  # fmt: skip
    # a process started from a non-interactive shell may inherit SIGINT ignored: give it Ctrl-C back
    run = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL), **kwargs)  # fmt: skip
    try:
        assert _wait_held(plain_farm.address, "plain-a"), "the run never acquired plain-a"
        time.sleep(1.0)  # the run is in its scenario now, waiting for the board's ready line
        run.send_signal(signum)
        output, _ = run.communicate(timeout=60)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    assert run.returncode == 2, output[-3000:]  # pytest's "interrupted"
    assert _places(plain_farm.address)["plain-a"]["acquired"] is None, output[-3000:]


def test_a_killed_run_leaves_its_place_held_and_vbms_farm_release_frees_it(plain_farm, tmp_path):
    bench = tmp_path / "byd.toml"
    bench.write_text(BYD_ONLY)
    command, kwargs = _inner_pytest(plain_farm.address, "--lg-place", "plain-a", "--bench", str(bench), "-k",
                                    "identity", "-q")  # fmt: skip
    run = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kwargs)
    try:
        assert _wait_held(plain_farm.address, "plain-a")
    finally:
        run.kill()
        run.wait()
    vbms = [sys.executable, "-m", "hil.cli", "farm"]
    listing = subprocess.run(vbms + ["places", "--json", "--coordinator", plain_farm.address], capture_output=True,
                             text=True, timeout=60, cwd=str(ROOT))  # fmt: skip
    rows = {row["place"]: row for row in json.loads(listing.stdout)["places"]}
    assert rows["plain-a"]["state"] == "acquired"
    assert rows["plain-a"]["holder"] == "%s/%s" % (socket.gethostname(), os.environ.get("LG_USERNAME") or _user())
    assert rows["plain-a"]["tags"] == {"board": "esp32", "bms_byd": "1"}
    freed = subprocess.run(vbms + ["release", "plain-a", "--coordinator", plain_farm.address], capture_output=True,
                           text=True, timeout=60, cwd=str(ROOT))  # fmt: skip
    assert freed.returncode == 0, freed.stderr
    assert _places(plain_farm.address)["plain-a"]["acquired"] is None


def _user():
    import getpass

    return getpass.getuser()


# --- the examples ------------------------------------------------------------------------------------


def test_the_exporter_and_environment_examples_load_with_labgrids_own_readers(monkeypatch):
    from labgrid import Environment
    from labgrid.remote.config import ResourceConfig

    config = ResourceConfig(str(ROOT / "hil/benches/labgrid-exporter.yaml"), {"env": {}, "isolated": False})
    assert set(config.data) == {"bench-1", "bench-2"}
    for group in config.data.values():
        assert {"console", "inverter", "bms", "board"} <= set(group)
        assert group["board"]["cls"] == BOARD_CLASS
        assert set(group["board"]) - {"cls"} <= set(BOARD_KEYS)
    monkeypatch.setenv("LG_PLACE", "bench-1")
    environment = Environment(config_file=str(ROOT / "hil/benches/labgrid-env.yaml"))
    assert environment.config.get_targets()["main"]["resources"]["RemotePlace"]["name"] == os.environ["LG_PLACE"]


# --- the esp32 scenarios through places -----------------------------------------------------------------


@pytest.fixture(scope="module")
def virtual_farm():
    """Two virtual boards (the default bench: BYD modules on RS485, JK modules over BlueZoo) as places
    virtual-a and virtual-b."""
    with VirtualFarm(2) as farm:
        yield farm


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    directory = os.environ.get("VBMS_FARM_REPORTS")
    path = Path(directory) if directory else tmp_path_factory.mktemp("farm-reports")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _junit(path):
    """[(testcase name, outcome, {property: value})] and the testsuite's properties."""
    root = ElementTree.parse(path).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    cases = []
    for case in suite.iter("testcase"):
        outcome = next((kind for kind in ("failure", "error", "skipped") if case.find(kind) is not None), "passed")
        cases.append((case.get("name"), outcome, {p.get("name"): p.get("value") for p in case.iter("property")}))
    suite_properties = {p.get("name"): p.get("value") for p in suite.findall("properties/property")}
    return cases, suite_properties


def _cucumber(path):
    """[(scenario name, tags, description)]."""
    with open(path) as handle:
        features = json.load(handle)
    return [(element["name"], [tag["name"] for tag in element["tags"]], element["description"])
            for feature in features for element in feature["elements"]]  # fmt: skip


def _run_scenarios(farm, reports, stem, *options):
    command, kwargs = _inner_pytest(
        farm.address, "-m", "not slow", "-k", SCENARIOS, "--junitxml", str(reports / (stem + ".xml")),
        "--cucumberjson", str(reports / (stem + ".json")), *options,
    )  # fmt: skip
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, **kwargs)
    wall_s = time.monotonic() - started
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    places = _places(farm.address)
    assert all(place["acquired"] is None for place in places.values()), places
    return wall_s, done.stdout


def test_the_esp32_scenarios_run_through_a_reserved_place(virtual_farm, reports):
    wall_s, _ = _run_scenarios(virtual_farm, reports, "one-place", "--lg-tags", "board=esp32,virtual=1")
    TIMES["one_place_s"] = round(wall_s, 1)
    cases, _ = _junit(reports / "one-place.xml")
    assert len(cases) == SCENARIO_COUNT and {outcome for _, outcome, _ in cases} == {"passed"}, cases
    held = {properties.get("lg_place") for _, _, properties in cases}
    assert len(held) == 1 and held <= set(virtual_farm.places), held
    place = held.pop()
    scenarios = _cucumber(reports / "one-place.json")
    assert len(scenarios) == SCENARIO_COUNT
    for _, tags, description in scenarios:
        assert "lg_place:%s" % place in tags
        assert "ran on labgrid place %s" % place in description


def test_the_same_scenarios_run_on_two_places_in_parallel_one_worker_each(virtual_farm, reports):
    wall_s, _ = _run_scenarios(virtual_farm, reports, "two-places", "-n", "2", "--lg-place", "virtual-a,virtual-b")
    TIMES["two_places_s"] = round(wall_s, 1)
    cases, _ = _junit(reports / "two-places.xml")  # the controller's: every scenario, with its place
    assert len(cases) == SCENARIO_COUNT and {outcome for _, outcome, _ in cases} == {"passed"}, cases
    ran = {}
    for place, worker in (("virtual-a", "gw0"), ("virtual-b", "gw1")):
        own, suite = _junit(reports / ("two-places-%s.xml" % place))
        assert suite == {"lg_worker": worker, "lg_place": place}
        assert all(properties == {"lg_place": place, "lg_worker": worker} for _, _, properties in own), own
        for _, tags, _ in _cucumber(reports / ("two-places-%s.json" % place)):
            assert "lg_place:%s" % place in tags
        ran[place] = sorted(name for name, _, _ in own)
    assert sorted(ran["virtual-a"] + ran["virtual-b"]) == sorted(name for name, _, _ in cases)  # each once
    assert ran["virtual-a"] and ran["virtual-b"], ran  # both places worked
    by_place = {name: properties["lg_place"] for name, _, properties in cases}
    assert all(by_place[name] == place for place, names in ran.items() for name in names)
    TIMES["distribution"] = ran
    (reports / "timing.json").write_text(json.dumps(TIMES, indent=1) + "\n")
    print("farm timing: %s" % json.dumps(TIMES))
