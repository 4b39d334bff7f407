"""Run code on real MicroPython: the official WebAssembly port, under node.

The npm package @micropython/micropython-webassembly-pyscript is pinned in the
project's package.json (./dev installs it).  run() copies vbms_core (and any
other directory given) into the port's file system and returns what the
script printed.
"""

import os
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RUNNER = Path(__file__).with_name("run.mjs")
PACKAGE = ROOT / "node_modules" / "@micropython" / "micropython-webassembly-pyscript"


class MicroPythonError(RuntimeError):
    """The script failed on MicroPython, or the port could not be started."""


def available() -> bool:
    return shutil.which("node") is not None and PACKAGE.is_dir()


def version() -> str:
    return run_source(
        "import sys\nprint(sys.implementation.name, '.'.join(str(v) for v in sys.implementation.version[:3]))"
    ).strip()


def run(
    script: str | os.PathLike[str],
    mounts: Iterable[tuple[str | os.PathLike[str], str]] = (),
    heap_bytes: int = 16 * 1024 * 1024,
    timeout_s: float = 600,
) -> str:
    """Run script (a path) with vbms_core and the given (host_dir, mp_dir) mounts."""
    if not available():
        raise MicroPythonError(
            "the MicroPython WebAssembly port is not installed: run `./dev test` or `npm ci` in %s" % ROOT
        )
    command = ["node", str(RUNNER), "--heap", str(heap_bytes), "--mount", "%s:/lib/vbms_core" % (ROOT / "vbms_core")]
    for host_dir, mp_dir in mounts:
        command += ["--mount", "%s:%s" % (host_dir, mp_dir)]
    command.append(str(script))
    completed = subprocess.run(
        command, capture_output=True, text=True, timeout=timeout_s, cwd=ROOT, env=dict(os.environ, NODE_NO_WARNINGS="1")
    )
    if completed.returncode != 0:
        raise MicroPythonError("MicroPython run of %s failed:\n%s" % (script, completed.stderr.strip()[-4000:]))
    return completed.stdout


def run_source(
    source: str, mounts: Iterable[tuple[str | os.PathLike[str], str]] = (), heap_bytes: int = 16 * 1024 * 1024
) -> str:
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as handle:
        handle.write(source)
        path = handle.name
    try:
        return run(path, mounts, heap_bytes)
    finally:
        os.unlink(path)
