"""Live campaigns (issue 13): the grammars, the oracle, a short campaign against `vbms run`, proof that
the checks catch a broken device under test, and the replay of findings.

Expected values come from the reference (shared/reference/deye-byd-modbus.md 1.3, 2.2, 3.1; the
vectors in tests/golden/byd_deye_vectors.json are built from it) and from the JK frames captured
from real modules (tests/golden/jk_frames.json), never from the code under test.
"""

import io
import json
import random
import re
import textwrap
from pathlib import Path

import pytest
from conftest import VECTORS

from hil.benchfile import load_default
from hil.cli import main
from hil.fuzz import grammar, replay
from hil.fuzz.wire import FileLog, WireCampaign
from simulators.battery import BatteryModel
from simulators.jk.device import JkBleSession, JkBms

LIVE_FRAMES = 700  # the suite's live campaign: about 15 s against vbms run here
VECTOR = {vector["id"]: bytes.fromhex(vector["hex"]) for group in ("deye", "modbus") for vector in VECTORS[group]}
BYD_REPLIES = [bytes.fromhex(vector["hex"]) for vector in VECTORS["byd_responses"]]
ALL_UNITS = range(15)


# --- the oracle: what a correct slave does, by the reference ---------------------------------------------


def _read(unit, address, count, function=0x04):
    return grammar.with_crc(bytes((unit, function, address >> 8, address & 0xFF, count >> 8, count & 0xFF)))


@pytest.mark.parametrize(
    "frame, served, kind, unit, detail",
    [
        (VECTOR["DEYE-Q0"], ALL_UNITS, grammar.REGISTERS, 0, (0x1000, 25)),  # unit 0 is battery 1 (1.3.1)
        (VECTOR["DEYE-QE"], ALL_UNITS, grammar.REGISTERS, 14, (0x1000, 25)),
        (VECTOR["DEYE-Q1"], (0, 2), grammar.SILENT, None, None),  # not served (stale or unknown): silence
        (VECTOR["DEYE-I0"], ALL_UNITS, grammar.IDENTITY, 0, None),
        (VECTOR["MB-0"], ALL_UNITS, grammar.EXCEPTION, 1, 0x01),  # FC 03: unsupported function (3.1, 1.3.5)
        (VECTOR["MB-3"], ALL_UNITS, grammar.EXCEPTION, 1, 0x01),  # a write: unsupported too
        (VECTOR["MB-EXC"], ALL_UNITS, grammar.SILENT, None, None),  # an exception code is no request
        (VECTOR["DEYE-IR"], ALL_UNITS, grammar.SILENT, None, None),  # a 0x11 reply is no 4-byte request
        (_read(1, 0x1000, 0), ALL_UNITS, grammar.EXCEPTION, 1, 0x03),  # quantity 1..125 (3.1)
        (_read(1, 0x1000, 126), ALL_UNITS, grammar.EXCEPTION, 1, 0x03),
        (_read(1, 0x1000, 26), ALL_UNITS, grammar.EXCEPTION, 1, 0x02),  # beyond the map (3.1)
        (_read(1, 0x0FFF, 2), ALL_UNITS, grammar.EXCEPTION, 1, 0x02),
        (_read(1, 0x1018, 1), ALL_UNITS, grammar.REGISTERS, 1, (0x1018, 1)),
        (_read(0x0F, 0x1000, 25), range(256), grammar.SILENT, None, None),  # units 0x00..0x0E only (1.3.1)
        (VECTOR["DEYE-Q0"][:-1] + b"\x00", ALL_UNITS, grammar.SILENT, None, None),  # bad CRC
        (VECTOR["DEYE-Q0"][:5], ALL_UNITS, grammar.SILENT, None, None),  # truncated
        (grammar.with_crc(VECTOR["DEYE-Q0"][:6] + b"\x00"), ALL_UNITS, grammar.SILENT, None, None),  # 9 bytes
    ],
)
def test_the_oracle_follows_the_reference(frame, served, kind, unit, detail):
    expectation = grammar.expect(frame, set(served))
    assert (expectation.kind, expectation.unit) == (kind, unit)
    if kind == grammar.EXCEPTION:
        assert expectation.code == detail
    if kind == grammar.REGISTERS:
        assert (expectation.address, expectation.count) == detail


def test_an_oversize_frame_is_never_answered():
    frame = grammar.with_crc(bytes((1, 0x2B)) + bytes(255))  # 259 bytes with a good CRC and a function to refuse
    assert grammar.crc_ok(frame) and len(frame) > grammar.MAX_ADU
    assert grammar.expect(frame, set(ALL_UNITS)).kind == grammar.SILENT
    assert grammar.expect(frame[:256], set(ALL_UNITS)).kind == grammar.SILENT  # its CRC no longer fits


def test_replies_are_judged_by_their_shape():
    exception = grammar.Expectation(grammar.EXCEPTION, 1, 0x04, 0x02)
    assert grammar.reply_matches(exception, VECTOR["MB-EXC"])
    assert not grammar.reply_matches(grammar.Expectation(grammar.EXCEPTION, 1, 0x04, 0x03), VECTOR["MB-EXC"])
    assert not grammar.reply_matches(grammar.Expectation(grammar.EXCEPTION, 2, 0x04, 0x02), VECTOR["MB-EXC"])
    identity = VECTOR["DEYE-IR"]
    assert grammar.reply_matches(grammar.Expectation(grammar.IDENTITY, 0, 0x11), identity)
    assert grammar.identity_fields(identity[3:-2]) == ("BYD PRO 2.5", "BYD12345678901234567")
    assert grammar.identity_fields(identity[3:-3] + b"!") is None  # the last '*' is missing
    registers = grammar.Expectation(grammar.REGISTERS, 1, 0x04, address=0x1000, count=2)
    assert grammar.reply_matches(registers, grammar.with_crc(bytes((1, 4, 4, 1, 2, 3, 4))))
    assert not grammar.reply_matches(registers, grammar.with_crc(bytes((1, 4, 2, 1, 2))))


# --- the grammars ------------------------------------------------------------------------------------------


def test_malformed_frames_are_what_their_kind_says():
    inverter = grammar.InverterGrammar(random.Random(7), range(8))
    seen = set()
    for _ in range(3000):
        kind, frame = inverter.malformed()
        seen.add(kind)
        if kind == "bad_crc":
            assert not grammar.crc_ok(frame)
        elif kind == "truncated":
            assert len(frame) < 8
        elif kind == "oversize":
            assert len(frame) > grammar.MAX_ADU
            assert grammar.expect(frame, set(ALL_UNITS)).kind == grammar.SILENT
        elif kind == "unknown_unit":
            assert frame[0] not in range(8) and grammar.expect(frame, set(range(8))).kind == grammar.SILENT
        elif kind == "flood":
            assert len(frame) >= 2
        elif kind in ("function", "write", "broadcast", "wrong_length", "bad_count", "bad_address", "reply"):
            assert grammar.crc_ok(frame)
    assert seen == set(grammar.InverterGrammar.KINDS)


def test_a_burst_ends_with_valid_requests_after_a_silence_and_is_reproducible():
    first = grammar.InverterGrammar(random.Random(3), (0, 1, 2)).burst(30)
    again = grammar.InverterGrammar(random.Random(3), (0, 1, 2)).burst(30)
    assert [item.data for item in first] == [item.data for item in again]
    assert sum(len(item.frames) for item in first if not item.valid) == 30
    tail = [item for item in first if item.valid]
    assert tail and first[-len(tail) :] == tail
    for item in tail:
        assert item.pause == grammar.SILENCE
        expectation = grammar.expect(item.data, {0, 1, 2})
        assert expectation.kind in (grammar.REGISTERS, grammar.IDENTITY) and expectation.unit in (0, 1, 2)


def _byd_sum_ok(frame):
    """BYD PRO: sum8 of bytes 1..n-2 in the last byte (reference 2.2)."""
    return sum(frame[1:-1]) & 0xFF == frame[-1]


def test_the_bms_stand_in_never_sends_a_corruption_the_checksum_cannot_see():
    own, other = BYD_REPLIES[0], BYD_REPLIES[1]
    assert _byd_sum_ok(own) and _byd_sum_ok(other)
    replies = grammar.BmsReplyGrammar(random.Random(5))
    for kind in grammar.BMS_REPLY_KINDS:
        for _ in range(50):
            sends = replies.replies(kind, own, other, timeout_s=0.4, char_time_s=0.00104)
            data = b"".join(send.data for send in sends)
            if kind == "valid":
                assert data == own and sends[0].delay_s < 0.05
            elif kind in ("bad_checksum", "bit_flip"):
                assert len(data) == len(own) and not _byd_sum_ok(data)
            elif kind == "address_field":
                assert _byd_sum_ok(data) and data[0] != own[0] and data[1:] == own[1:]
            elif kind == "length_field":
                assert _byd_sum_ok(data) and data[1:3] != own[1:3] and data[3:-1] == own[3:-1]
            elif kind == "other_address":
                assert data == other
            elif kind == "duplicate":
                assert data == own + own
            elif kind == "late":
                assert data == own and sends[0].delay_s > 0.4
            elif kind == "truncated":
                assert len(data) < len(own) and own.startswith(data)
            elif kind == "silent":
                assert sends == []
            elif kind in ("trailing_junk", "leading_junk"):
                assert own in data and len(data) > len(own)
    starving = {replies.kind(starving=True) for _ in range(500)}
    assert not starving & set(grammar.MAY_FRESHEN)


def _passing_windows(stream):
    """Header-started 300-byte windows of a known type whose sum8 is right (jk-protocols.md 3), found here."""
    found = []
    start = stream.find(b"\x55\xaa\xeb\x90")
    while start >= 0:
        window = stream[start : start + 300]
        if len(window) == 300 and window[4] in (1, 2, 3, 5) and sum(window[:299]) & 0xFF == window[299]:
            found.append(window)
        start = stream.find(b"\x55\xaa\xeb\x90", start + 1)
    return found


def _module_sends(chunking, count):
    """What a JK module sends over BLE: the answers to 0x97 and 0x96, then its stream."""
    session = JkBleSession(JkBms(BatteryModel(seed=3), layout="JK02_32S"), chunking)
    # the zero-padded 0x97 and 0x96 requests of jk-protocols.md 2
    sends = [session.on_write(bytes.fromhex("AA5590EB97000000000000000000000000000011"), 0.0)]
    sends.append(session.on_write(bytes.fromhex("AA5590EB96000000000000000000000000000010"), 0.0))
    sends += [session.poll(0.5 * (index + 1)) for index in range(count)]
    return [send for send in sends if send]


@pytest.mark.parametrize("chunking", ("mtu23", "mtu131", "mtu247"))
def test_the_notification_mangler_never_forges_a_frame(chunking):
    sends = _module_sends(chunking, 400)
    sent_frames = {window for send in sends for window in _passing_windows(b"".join(send))}
    assert len(sent_frames) > 100  # the module's frames pass on their own (the counter makes each differ)
    mangler = grammar.NotificationMangler(random.Random(11))
    stream = b""
    kinds = set()
    delivered = 0
    for send in sends:
        kind, out, cell_info = mangler.mangle(send)
        kinds.add(kind)
        stream += b"".join(out)
        delivered += len(cell_info)
        assert all(frame in sent_frames for frame in cell_info)
    passing = _passing_windows(stream)
    assert set(passing) <= sent_frames  # nothing the module did not send passes JK's checksum
    assert 50 < delivered < len(sends)  # some frames get through whole, many do not
    assert kinds == set(grammar.BLE_MANGLE_KINDS)


def test_a_starved_module_delivers_no_frame_at_all():
    mangler = grammar.NotificationMangler(random.Random(2))
    stream = b"".join(b"".join(mangler.mangle(send, starving=True)[1]) for send in _module_sends("mtu131", 200))
    assert _passing_windows(stream) == []


# --- the command line -----------------------------------------------------------------------------------------


def _exit_status(arguments):
    try:
        return main(arguments)
    except SystemExit as exit:
        return exit.code


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["fuzz", "wire", "--port", "serial"], "invalid choice: 'serial'"),
        (["fuzz", "wire", "--port", "bms", "--frames", "0"], "--frames must be positive, not 0"),
        (["fuzz", "wire", "--port", "bms", "--bench", "/nonexistent.toml"], "cannot read bench file"),
        (["fuzz", "wire", "--port", "bms", "--stale-s", "1"], "--stale-s must be within 2..600"),
    ],
)  # fmt: skip
def test_invalid_wire_arguments_exit_2_with_a_clear_message(arguments, message, capsys):
    assert _exit_status(arguments) == 2
    assert message in capsys.readouterr().err


def test_a_board_that_is_not_there_exits_3_with_what_is_missing(capsys):
    arguments = ["fuzz", "wire", "--port", "inverter", "--dut", "esp32", "--bench", "hil/benches/esp32-example.toml"]
    assert _exit_status(arguments) == 3
    error = capsys.readouterr().err
    assert "the board did not come up" in error and "/dev/serial/by-id/usb-Silicon_Labs_CP2102" in error, error


def test_replay_tells_a_decoder_finding_from_a_file_that_is_none(tmp_path, capsys):
    fixed = sorted((Path(__file__).parent / "fuzz_regressions").glob("config-*.json"))
    assert _exit_status(["fuzz", "replay", str(fixed[0])]) == 0  # a fixed decoder finding: its input passes now
    assert "passes now: decoder target" in capsys.readouterr().out
    document = json.loads(fixed[0].read_text())
    document["input_hex"] = "00" * 4
    document["target"] = "no-such-target"
    broken = tmp_path / "finding.json"
    broken.write_text(json.dumps(document))
    assert _exit_status(["fuzz", "replay", str(broken)]) == 2
    assert "unknown decoder target 'no-such-target'" in capsys.readouterr().err
    broken.write_text("[1, 2]")
    assert _exit_status(["fuzz", "replay", str(broken)]) == 2
    assert "is not a finding" in capsys.readouterr().err


# --- a broken device under test ----------------------------------------------------------------------------------

BREAKER = '''
"""Breaks the proxy on purpose, four ways at once, each for frames of its own."""

from vbms_core import deye, modbus


def install(setattr):
    original = deye.DeyeSlave.handle

    def handle(self, adu, now_us):
        adu = bytes(adu)
        good = len(adu) >= 4 and modbus.crc16(adu[:-2]) == adu[-2] | adu[-1] << 8
        if len(adu) == 8 and adu[1] == 0x04 and not good:
            adu = modbus.with_crc(adu[:6])  # a read with a bad CRC is answered
        if good and adu[1] == 0x10:
            raise RuntimeError("broken on purpose: write-multiple")  # an exception inside the core
        if good and adu[0] == 2 and adu[1] == 0x04 and len(adu) == 8:
            reply = original(self, modbus.with_crc(b"\\x01" + adu[1:6]), now_us)  # unit 2 serves unit 1's data
            return None if reply is None else modbus.with_crc(b"\\x02" + bytes(reply[1:-2]))
        reply = original(self, adu, now_us)
        if reply is not None and reply[1] == 0x86:
            return modbus.with_crc(bytes(reply[:2]) + b"\\x02")  # the wrong exception code
        return reply

    setattr(deye.DeyeSlave, "handle", handle)
'''

SITECUSTOMIZE = """
import os

if os.environ.get("VBMS_FUZZ_BREAK"):
    import vbms_fuzz_breaker

    vbms_fuzz_breaker.install(setattr)
"""


@pytest.fixture
def breaker(tmp_path, monkeypatch):
    """The breaker module, installed into every vbms run this test starts (through sitecustomize)."""
    directory = tmp_path / "breaker"
    directory.mkdir()
    (directory / "vbms_fuzz_breaker.py").write_text(textwrap.dedent(BREAKER))
    (directory / "sitecustomize.py").write_text(textwrap.dedent(SITECUSTOMIZE))
    monkeypatch.setenv("PYTHONPATH", str(directory))
    monkeypatch.setenv("VBMS_FUZZ_BREAK", "1")
    monkeypatch.syspath_prepend(str(directory))
    import vbms_fuzz_breaker

    return vbms_fuzz_breaker


def _numbers(output):
    numbers = {}
    for line in output.splitlines():
        match = re.match(r"\s+([a-zA-Z ()]+?)\s{2,}(\d+)", line)
        if match:
            numbers[match.group(1).strip()] = int(match.group(2))
    return numbers


def test_a_short_live_campaign_against_vbms_run_finds_nothing(tmp_path, capsys):
    status = main(["fuzz", "wire", "--port", "inverter", "--frames", str(LIVE_FRAMES), "--findings", str(tmp_path)])
    output = capsys.readouterr().out
    numbers = _numbers(output)
    assert status == 0, output
    assert numbers["malformed frames sent"] == LIVE_FRAMES, output
    assert numbers["valid requests"] > 30, output
    assert numbers["answered"] + numbers["answered when repeated"] == numbers["valid requests"], output
    assert numbers["answered when repeated"] <= numbers["valid requests"] // 10, output  # host timing, seldom
    for name in ("unanswered", "wrong replies", "stale data served", "crashes", "DUT log exceptions"):
        assert numbers[name] == 0, output
    assert numbers["answerable malformed"] > 50, output  # the exception paths were reached and checked
    assert list(tmp_path.iterdir()) == []


def test_a_broken_device_under_test_is_caught_and_its_findings_replay(breaker, tmp_path, capsys, monkeypatch):
    status = main(["fuzz", "wire", "--port", "inverter", "--frames", "700", "--seed", "4",
                   "--findings", str(tmp_path)])  # fmt: skip
    output = capsys.readouterr().out
    assert status == 1, output
    documents = [json.loads(path.read_text()) for path in sorted(tmp_path.glob("*.json"))]
    problems = {document["problem"] for document in documents}
    details = "\n".join(document["detail"] for document in documents)
    assert {"unexpected-reply", "wrong-values", "wrong-reply", "dut-error"} <= problems, output + details
    assert "values closer to slot 1's battery than to slot 2's" in details
    assert "exception 01 to function 06" in details
    assert "broken on purpose: write-multiple" in details
    unexpected = next(document for document in documents if document["problem"] == "unexpected-reply")
    assert unexpected["script"] and {"t_s", "op", "hex"} <= set(unexpected["script"][-1])
    path = next(path for path in tmp_path.glob("wire-inverter-unexpected-reply-*.json"))

    # on the des target the breaker is installed in this process: the finding still fails there ...
    breaker.install(monkeypatch.setattr)
    assert _exit_status(["fuzz", "replay", str(path), "--target", "des"]) == 1
    assert "still fails" in capsys.readouterr().out
    # ... and passes on the real proxy
    monkeypatch.undo()
    assert _exit_status(["fuzz", "replay", str(path), "--target", "des"]) == 0
    assert "passes now" in capsys.readouterr().out


def test_a_core_that_raises_is_a_crash_on_the_des_target(tmp_path, monkeypatch, capsys):
    from vbms_core import deye

    original = deye.DeyeSlave.handle

    def handle(self, adu, now_us):
        if len(adu) == 4 and adu[1] == 0x11:
            raise ZeroDivisionError("broken on purpose: identity")
        return original(self, adu, now_us)

    finding = {"kind": "wire", "port": "inverter", "dut": "vbms", "bench": "default", "seed": 1,
               "problem": "crash", "detail": "", "stale_s": None, "script": [
                   {"t_s": 0.0, "op": "send", "hex": _read(0, 0x1000, 25).hex(), "kind": "valid", "valid": True},
                   {"t_s": 0.2, "op": "send", "hex": "0011c1bc", "kind": "valid", "valid": True}]}  # fmt: skip
    path = tmp_path / "crash.json"
    path.write_text(json.dumps(finding))
    monkeypatch.setattr(deye.DeyeSlave, "handle", handle)
    assert _exit_status(["fuzz", "replay", str(path), "--target", "des"]) == 1
    output = capsys.readouterr().out
    assert "ZeroDivisionError: broken on purpose: identity" in output and "still fails: crash" in output
    monkeypatch.undo()
    assert _exit_status(["fuzz", "replay", str(path), "--target", "des"]) == 0


# --- the BMS and BLE ports ------------------------------------------------------------------------------------


def _campaign(port, frames, tmp_path, stale_s=3, seed=2):
    campaign = WireCampaign(load_default(), "default", port, frames=frames, seed=seed, findings_dir=tmp_path,
                            out=io.StringIO(), stale_s=stale_s)  # fmt: skip
    try:
        campaign.start()
        campaign.warm_up()
        campaign.run()
    finally:
        campaign.stop()
    return campaign


@pytest.mark.parametrize("port, frames", [("bms", 60), ("ble", 70)])
def test_a_bms_and_a_ble_campaign_find_nothing_and_starve_a_module_into_silence(port, frames, tmp_path):
    campaign = _campaign(port, frames, tmp_path)
    stats = campaign.stats
    report = campaign.report()
    assert campaign.findings == [], report + "\n".join(finding["detail"] for finding in campaign.findings)
    assert stats.frames >= frames and stats.valid > 50, report
    assert stats.unanswered == 0 and stats.wrong == 0 and stats.crashes == 0, report
    assert stats.stale_silent > 0, report  # the starved module's unit fell silent, as it must
    assert stats.answered > stats.valid // 2, report


def test_a_device_that_serves_stale_data_is_caught_on_the_bms_port(tmp_path, monkeypatch):
    directory = tmp_path / "breaker"
    directory.mkdir()
    (directory / "sitecustomize.py").write_text(textwrap.dedent('''
        from vbms_core import deye

        original = deye.DeyeSlave.handle


        def handle(self, adu, now_us):
            self.stale_us = 10**15  # the staleness limit is off
            return original(self, adu, now_us)


        deye.DeyeSlave.handle = handle
    '''))  # fmt: skip
    monkeypatch.setenv("PYTHONPATH", str(directory))
    campaign = _campaign("bms", 60, tmp_path)
    problems = {finding["problem"] for finding in campaign.findings}
    assert "stale-data" in problems, campaign.report()
    assert problems <= {"stale-data"}, campaign.report()


def test_replay_says_where_a_bms_finding_cannot_run(tmp_path, capsys):
    path = tmp_path / "bms.json"
    path.write_text(json.dumps({"kind": "wire", "port": "bms", "bench": "default", "problem": "stale-data",
                                "script": []}))  # fmt: skip
    assert _exit_status(["fuzz", "replay", str(path), "--target", "des"]) == 2
    assert "replays on sim, micropython or esp32" in capsys.readouterr().err
    assert replay.still_fails({"problem": "bad-crc-reply"}, ["unexpected-reply"])
    assert not replay.still_fails({"problem": "unanswered"}, ["stale-data"])


def test_the_device_logs_tail_and_what_it_gained_since_the_last_look(tmp_path):
    log = tmp_path / "vbms.log"
    log.write_text("x" * 5000 + "\nTraceback: the last words\n")
    seen = FileLog(str(log))
    assert seen.tail().endswith("Traceback: the last words\n") and len(seen.tail()) == 2000
    assert seen.new_text() == log.read_text() and seen.new_text() == ""
    with log.open("a") as more:
        more.write("later\n")
    assert seen.new_text() == "later\n"
    log.unlink()  # gone with the bench's directory
    assert seen.tail() == "(no log)" and seen.new_text() == ""
    assert FileLog(None).tail() == "(no log)" and FileLog(None).new_text() == ""  # a device without a log file
