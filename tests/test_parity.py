"""vbms_core on real MicroPython: same transcript as CPython; mpy-cross compiles it."""

import io
import subprocess
import sys
from pathlib import Path

import pytest

from hil import micropython

ROOT = Path(__file__).resolve().parents[1]
PARITY = ROOT / "tests" / "parity"
GOLDEN = ROOT / "tests" / "golden"

pytestmark = pytest.mark.parity


def cpython_transcript():
    sys.path.insert(0, str(PARITY))
    try:
        import transcript
    finally:
        sys.path.remove(str(PARITY))
    out = io.StringIO()
    transcript.main(str(GOLDEN), lambda line: out.write(line + "\n"))
    return out.getvalue().splitlines()


def test_micropython_port_is_the_pinned_version():
    assert micropython.version() == "micropython 1.27.0"


def test_golden_transcript_is_identical_on_micropython():
    expected = cpython_transcript()
    got = micropython.run(PARITY / "mpy_main.py", mounts=[(PARITY, "/parity"), (GOLDEN, "/golden")]).splitlines()
    assert len(expected) > 500
    for number, (want, have) in enumerate(zip(expected, got, strict=False), 1):
        assert have == want, "line %d differs\nCPython:     %s\nMicroPython: %s" % (number, want[:2000], have[:2000])
    assert len(got) == len(expected)


@pytest.mark.parametrize("module", sorted(p.name for p in (ROOT / "vbms_core").glob("*.py")))
def test_mpy_cross_compiles(module, tmp_path):
    output = tmp_path / (module[:-3] + ".mpy")
    completed = subprocess.run(
        [sys.executable, "-m", "mpy_cross", "-o", str(output), str(ROOT / "vbms_core" / module)],
        capture_output=True,
        text=True,
    )
    assert completed.returncode == 0, completed.stderr
    assert output.stat().st_size > 0
