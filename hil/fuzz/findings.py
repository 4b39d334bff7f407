"""Findings as regression files, and their replay.

A finding is one JSON file (tests/fuzz_regressions/ keeps those the test suite
replays):

    {"target": "config-validate",          the target (hil.fuzz.targets.TARGETS)
     "kind": "crash",                      crash, timeout (a hang), oom, or slow-unit
     "status": "open",                     open: the bug is not fixed (the test expects the failure);
                                           fixed: the input must pass
     "error": "ValueError: ...",           what happened
     "signature": "ValueError at vbms_core/config.py:158",
     "input_hex": "...",                   the minimized input, as the target's check() takes it
     "original_hex": "...",                what libFuzzer saved
     "found_by": "vbms fuzz decoders ...",
     "note": "...",                        for people: what the input means, where the fix goes
     "traceback": "..."}

For a frame target the input is the frame itself; for a script target (the
framer, the reassembler, the configuration) it is the script of that target
(hil/fuzz/targets.py documents each format).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .targets import Target


class Finding:
    __slots__ = ("target", "kind", "error", "signature", "original", "data", "traceback", "path")

    def __init__(
        self, target: str, kind: str, error: str, signature: str, original: bytes, traceback: str = ""
    ) -> None:
        self.target = target
        self.kind = kind
        self.error = error
        self.signature = signature
        self.original = bytes(original)
        self.data = bytes(original)
        self.traceback = traceback
        self.path: Path | None = None  # where save() wrote it


def save(finding: Finding, directory: str | Path, found_by: str | None = None) -> Path:
    """Write the finding as <target>-<sha1 of the input>.json in directory; returns the path."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / ("%s-%s.json" % (finding.target, hashlib.sha1(finding.data).hexdigest()[:12]))
    document = {
        "target": finding.target,
        "kind": finding.kind,
        "status": "open",
        "error": finding.error,
        "signature": finding.signature,
        "input_hex": finding.data.hex(),
        "original_hex": finding.original.hex(),
        "found_by": found_by or "",
        "note": "",
        "traceback": finding.traceback,
    }
    path.write_text(json.dumps(document, indent=1) + "\n")
    return path


def load(path: str | Path) -> dict[str, Any]:
    document = json.loads(Path(path).read_text())
    for key in ("target", "input_hex", "status"):
        if key not in document:
            raise ValueError("%s: a fuzz regression file needs %r" % (path, key))
    if document["status"] not in ("open", "fixed"):
        raise ValueError("%s: status must be open or fixed, not %r" % (path, document["status"]))
    return document


def replay(document: Mapping[str, Any], table: Mapping[str, Target] | None = None) -> None:
    """Run the input of a loaded finding through its target, with the CPU limit; raises what the target raises."""
    from . import targets

    table = targets.TARGETS if table is None else table
    targets.run_bounded(table[document["target"]].check, bytes.fromhex(document["input_hex"]))
