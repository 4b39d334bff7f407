"""Decoder fuzzing (issue 13): short campaigns, the saved findings, and proof that the harness catches bugs.

The campaigns run atheris/libFuzzer in worker processes (hil.fuzz.runner); the regression
replay needs only vbms_core.  A deliberately broken decoder, framer and parser, each put
behind the real target's invariant, must produce a finding that is minimized and saved.
"""

import io
import json
import random
import textwrap
from pathlib import Path

import pytest

from hil.cli import main
from hil.fuzz import checksums, findings, runner, targets
from vbms_core import byd, jk_4e57, jk_ble, jk_frames, modbus

REGRESSIONS = Path(__file__).parent / "fuzz_regressions"
RUNS_PER_TARGET = 1500  # all 24 targets: about 16 s of CPU here, half of it worker start-up


def regression_cases():
    cases = []
    for path in sorted(REGRESSIONS.glob("*.json")):
        document = findings.load(path)
        marks = []
        if document["status"] == "open":
            marks.append(pytest.mark.xfail(strict=True, reason="open finding: %s" % document["note"]))
        cases.append(pytest.param(document, id=path.stem, marks=marks))
    return cases


@pytest.mark.parametrize("document", regression_cases())
def test_saved_finding_replays(document):
    """Each saved input runs through its target; an open one must still fail (xfail strict), a fixed one pass."""
    findings.replay(document)


def test_regression_files_name_known_targets():
    documents = [findings.load(path) for path in REGRESSIONS.glob("*.json")]
    assert documents, "tests/fuzz_regressions/ holds no finding to replay"
    for document in documents:
        assert document["target"] in targets.TARGETS
        assert document["note"], "%s-...: say what the input means and where the fix goes" % document["target"]


# --- structure-aware repairs ---------------------------------------------------------------------------------------


def _random_frames(length, count=50):
    generator = random.Random(length)
    return [bytes(generator.randrange(256) for _ in range(length)) for _ in range(count)]


def _byd_sum_accepted(frame):
    try:
        byd.decode_response(frame)
    except Exception as error:  # noqa: BLE001 - only the checksum complaint matters here
        return "checksum" not in str(error)
    return True


@pytest.mark.parametrize(
    "repair, length, accepted",
    [
        (checksums.modbus_request, 8, lambda frame: modbus.check_crc(frame) is None),
        (checksums.modbus_response, 45, lambda frame: modbus.check_crc(frame) is None),
        (checksums.jk_frame, 300, lambda frame: frame[299] == jk_frames.checksum(frame)),
        (checksums.jk_command, 20, lambda frame: frame[19] == sum(frame[:19]) & 0xFF),
        (checksums.byd, 105, _byd_sum_accepted),
        (checksums.e57, 40, lambda frame: frame[-2] << 8 | frame[-1] == jk_4e57.checksum(frame, len(frame) - 2)),
    ],
)
def test_repaired_frames_pass_the_decoders_checksum(repair, length, accepted):
    """The mutator's fix-ups are what the decoders check (their own checksum code judges)."""
    for frame in _random_frames(length):
        fixed = repair(frame, 0)
        assert len(fixed) == len(frame)
        assert accepted(fixed)


def test_full_repair_gets_a_frame_past_every_envelope_check():
    frame = checksums.jk_frame(bytes(range(256)) + bytes(44), checksums.FULL_REPAIR)
    jk_frames.check_frame(frame)
    command = jk_ble.decode_command(checksums.jk_command(bytes(20), checksums.FULL_REPAIR))
    assert command.command == 0
    envelope = jk_4e57.decode_frame(checksums.e57(bytes(30), checksums.FULL_REPAIR))
    assert envelope.data == bytes(10)  # 30 bytes: 11 of header, 9 of record, marker and sum
    assert byd.decode_request(checksums.byd(bytes(8), checksums.FULL_REPAIR)).address == 0


# --- short campaigns -----------------------------------------------------------------------------------------------


def _root_cause(signature):
    """("RecursionError", "vbms_core/config.py") from "RecursionError at vbms_core/config.py:123"."""
    kind, _, place = signature.partition(" at ")
    return kind, place.rsplit(":", 1)[0]


def test_every_target_runs_a_short_campaign_without_a_new_finding(tmp_path):
    """All targets, a fixed small budget each: no finding except the open ones in tests/fuzz_regressions/.

    An open finding (same exception, same file) stops its target's campaign early and is tolerated
    until it is fixed; anything else fails here with the runner's report.
    """
    known = {_root_cause(findings.load(path)["signature"]) for path in REGRESSIONS.glob("*.json")
             if findings.load(path)["status"] == "open"}  # fmt: skip
    out = io.StringIO()
    status = runner.run_campaigns(
        list(targets.TARGETS.values()), runs=RUNS_PER_TARGET, findings_dir=tmp_path / "findings", seed=1, out=out
    )
    report = out.getvalue()
    found = {}
    for path in (tmp_path / "findings").glob("*.json"):
        document = findings.load(path)
        found[document["target"]] = document
    new = [document["signature"] for document in found.values() if _root_cause(document["signature"]) not in known]
    assert not new, report
    assert status == (1 if found else 0), report
    rows = {
        line.split()[0]: line.split()
        for line in report.splitlines()
        if line.split()[:1] in ([n] for n in targets.TARGETS)
    }
    assert set(rows) == set(targets.TARGETS), report
    for name in set(targets.TARGETS) - set(found):
        runs, exec_per_s, cpu_exec_per_s, edges, features, corpus, result = rows[name][1:8]
        assert int(runs) == RUNS_PER_TARGET, report
        assert int(edges) > 5 and int(features) >= int(edges), report  # coverage of vbms_core was measured
        assert exec_per_s != "-" and cpu_exec_per_s != "-" and result == "0", report


# --- the harness catches bugs ----------------------------------------------------------------------------------------

BROKEN_TARGETS = '''
import struct

from hil.fuzz import checksums, seeds
from hil.fuzz.targets import Target, e57_check, framer_check, modbus_request_check
from vbms_core import jk_4e57, modbus
from vbms_core.errors import RemoteProtocolError


def decode_request(adu):
    """Broken: trusts the function code for the length (struct.error on a short read request)."""
    modbus.check_crc(adu)
    if adu[1] in (modbus.READ_HOLDING, modbus.READ_INPUT) and len(adu) <= 8:
        address, count = struct.unpack_from(">HH", adu, 2)
        return modbus.ReadRequest(adu[0], adu[1], address, count)
    return modbus.decode_request(adu)


class UnboundedFramer(modbus.RtuFramer):
    """Broken: keeps every byte of a burst (no MAX_ADU bound)."""

    def feed(self, data, end_us):
        if not data:
            return
        first_end_us = end_us - (len(data) - 1) * self.char_us
        if self._buf and first_end_us - self.char_us - self._last_us >= self.gap_us:
            self._close()
        if not self._buf:
            self._start_us = first_end_us - self.char_us
        self._buf.extend(data)
        self._last_us = end_us


def parse_registers(data):
    """Broken: an unknown register id is skipped without advancing (a hang)."""
    position = 0
    while position < len(data):
        register = data[position]
        if register == jk_4e57.CELLS:
            position += 2 + data[position + 1] if position + 1 < len(data) else 1
        elif register in jk_4e57.REGISTERS:
            position += 1 + jk_4e57.REGISTERS[register][0]
    return [], {}


def hanging_e57_check(data):
    try:
        envelope = jk_4e57.decode_frame(data)
    except RemoteProtocolError:
        return
    parse_registers(envelope.data)


TARGETS = {
    "broken-request": Target("broken-request", "decode_request without its length check",
                             modbus_request_check(decode_request), seeds.modbus_frames, checksums.modbus_request,
                             max_len=300),
    "broken-framer": Target("broken-framer", "RtuFramer without its bound", framer_check(UnboundedFramer),
                            lambda: [targets_framer_seed()], None, max_len=2048),
    "broken-4e57": Target("broken-4e57", "4E57 TLV parser that stops advancing", hanging_e57_check,
                          seeds.e57_frames, checksums.e57, max_len=1100),
}


def targets_framer_seed():
    frames = seeds.modbus_frames()
    script = bytearray((0,))
    for frame in frames * 3:
        script += bytes((0x00, 0x00, len(frame))) + frame  # back to back: one burst of several hundred bytes
    return bytes(script)
'''


@pytest.fixture(scope="module")
def broken_targets(tmp_path_factory):
    path = tmp_path_factory.mktemp("broken") / "broken_targets.py"
    path.write_text(textwrap.dedent(BROKEN_TARGETS))
    from hil.fuzz.worker import load_targets

    return path, load_targets(path)


def _campaign(broken_targets, name, tmp_path, **options):
    path, table = broken_targets
    out = io.StringIO()
    status = runner.run_campaigns(
        [table[name]], findings_dir=tmp_path, targets_file=path, seed=1, out=out, **options
    )  # fmt: skip
    saved = sorted(tmp_path.glob(name + "-*.json"))
    return status, out.getvalue(), saved, table


def test_a_decoder_that_raises_the_wrong_error_is_a_minimized_saved_finding(broken_targets, tmp_path):
    status, report, saved, table = _campaign(broken_targets, "broken-request", tmp_path, runs=200000)
    assert status == 1, report
    assert "FINDING broken-request (crash): error: unpack_from requires a buffer" in report
    assert len(saved) == 1
    document = findings.load(saved[0])
    data = bytes.fromhex(document["input_hex"])
    assert document["signature"].startswith("error at ")  # struct.error, raised inside the broken decoder
    assert 4 <= len(data) < 8 and data[1] in (3, 4)  # minimized to a short read request with a valid CRC
    modbus.check_crc(data)
    with pytest.raises(Exception, match="unpack_from"):
        findings.replay(document, table)
    findings.replay(dict(document, target="modbus-request"))  # the real decoder rejects it properly


def test_a_framer_whose_buffer_grows_is_a_finding(broken_targets, tmp_path):
    status, report, saved, table = _campaign(broken_targets, "broken-framer", tmp_path, runs=2000)
    assert status == 1, report
    assert "InvariantViolation: framer holds" in report
    document = findings.load(saved[0])
    with pytest.raises(targets.InvariantViolation, match="framer holds"):
        findings.replay(document, table)
    findings.replay(dict(document, target="modbus-framer"))


def test_a_decoder_that_hangs_is_a_timeout_finding(broken_targets, tmp_path):
    status, report, saved, _ = _campaign(broken_targets, "broken-4e57", tmp_path, seconds=60, timeout_s=1)
    assert status == 1, report
    assert "FINDING broken-4e57 (timeout): libFuzzer: timeout" in report
    document = json.loads(saved[0].read_text())
    assert document["kind"] == "timeout" and document["input_hex"] == document["original_hex"]
    findings.replay(dict(document, target="jk-4e57"))  # the real parser answers it at once


class _UncountedDrop(jk_ble.JkReassembler):
    """Broken: a dropped run of one byte is not counted as junk (bytes vanish)."""

    def _drop(self, count):
        if count == 1:
            self._buffer[0:1] = b""
            return
        super()._drop(count)


class _NoChecksum(jk_ble.JkReassembler):
    """Broken: hands out a frame whatever its checksum."""

    def feed(self, chunk):
        buffer = self._buffer
        buffer.extend(chunk)
        if len(buffer) >= jk_frames.FRAME_LENGTH and buffer[:4] == jk_frames.HEADER:
            self._events.append(jk_ble.JkFrame(bytes(buffer[: jk_frames.FRAME_LENGTH])))
            self.frames += 1
            buffer[0 : jk_frames.FRAME_LENGTH] = b""
        super().feed(b"")


@pytest.mark.parametrize(
    "broken, script, message",
    [
        # one-byte notifications of garbage: the check after each of them sees the byte that vanished
        (_UncountedDrop, bytes([0, 0, 10]) + b"\x11" * 10, "^4 bytes fed, 3 accounted for"),
        # a frame with a wrong checksum (record control 2), in notifications of 20 bytes
        (_NoChecksum, bytes([19, 2 | 1 << 2, 40]) + bytes(range(40)), "a frame of bad type or checksum"),
    ],
)
def test_the_reassembler_check_catches_a_broken_reassembler(broken, script, message):
    targets.reassembler_check()(script)  # the real reassembler passes
    with pytest.raises(targets.InvariantViolation, match=message):
        targets.reassembler_check(broken)(script)


# --- the command line ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--target", "nope"], "unknown target 'nope'; valid targets: modbus-framer, modbus-request"),
        (["--runs", "0"], "--runs must be positive, not 0"),
        (["--seconds", "x"], "--seconds must be a number, not 'x'"),
        (["--jobs", "-1"], "--jobs must be positive, not -1"),
        (["--runs", "1.5"], "--runs must be a whole number, not '1.5'"),
        (["--seconds", "inf"], "--seconds must be positive, not inf"),
        (["--runs", "5", "--seconds", "3"], "not allowed with argument --runs"),
    ],
)
def test_invalid_arguments_exit_2_with_a_clear_message(arguments, message, capsys):
    try:
        status = main(["fuzz", "decoders"] + arguments)
    except SystemExit as exit:
        status = exit.code
    assert status == 2
    assert message in capsys.readouterr().err


def test_the_command_prints_the_numbers_per_target(tmp_path, capsys):
    status = main(["fuzz", "decoders", "--target", "deye", "--runs", "3000", "--findings", str(tmp_path)])
    output = capsys.readouterr().out
    assert status == 0, output
    assert "target" in output and "exec/s" in output and "edges" in output and "findings" in output
    row = next(line for line in output.splitlines() if line.startswith("deye "))
    assert row.split()[1] == "3000" and row.split()[-1] == "0"


def test_list_names_every_target_and_its_allowed_error(capsys):
    assert main(["fuzz", "decoders", "--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == list(targets.TARGETS)
    assert "(allowed error: RemoteProtocolError)" in lines[1] and "(allowed error: ConfigError)" in lines[-2]
    assert lines[-1].startswith("rpc ") and "(allowed error: none (errors are replies))" in lines[-1]


def test_a_targets_file_that_is_not_python_source_is_refused_by_name(tmp_path):
    from hil.fuzz.worker import load_targets

    path = tmp_path / "targets.txt"
    path.write_text("TARGETS = {}\n")
    with pytest.raises(ValueError, match="targets file .*targets.txt: not a Python source file"):
        load_targets(str(path))
