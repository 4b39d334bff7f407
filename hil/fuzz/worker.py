"""One fuzzing process: a target under atheris/libFuzzer, or the minimizer of a finding.

    python -m hil.fuzz.worker fuzz --target NAME [--targets-file F] [--report F] -- LIBFUZZER ARGS...
    python -m hil.fuzz.worker minimize --target NAME [--targets-file F] --input F --output F

atheris.Fuzz() never returns (libFuzzer exits the process), so the runner
starts one of these per target and reads libFuzzer's lines from stderr.  The
vbms_core modules the targets use are imported under atheris.instrument_imports,
so libFuzzer's "cov" counts the branches (edges) of the code under test; the
harness itself is not instrumented.  On a finding the worker writes a JSON report (exception,
where it was raised, traceback) before libFuzzer saves the input and exits.

--targets-file names a Python file whose TARGETS dict adds targets (it is
instrumented too): the tests use it to fuzz a deliberately broken decoder.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .checksums import Repair
    from .targets import Target

EXTRA_MODULE = "vbms_fuzz_extra_targets"


def load_targets(targets_file: str | None = None) -> dict[str, Target]:
    """The target table, with the targets of targets_file added."""
    from . import targets

    table = dict(targets.TARGETS)
    if targets_file:
        spec = importlib.util.spec_from_file_location(EXTRA_MODULE, targets_file)
        if spec is None or spec.loader is None:  # a name without a source suffix
            raise ValueError("targets file %s: not a Python source file (.py)" % targets_file)
        module = importlib.util.module_from_spec(spec)
        sys.modules[EXTRA_MODULE] = module
        spec.loader.exec_module(module)
        table.update(module.TARGETS)
    return table


def where(error: BaseException) -> str:
    """file:line of the innermost frame that raised error, relative to the package roots.

    For an invariant violation that is the check that called require(), not require itself.
    """
    frames = traceback.extract_tb(error.__traceback__)
    while len(frames) > 1 and frames[-1].name == "require":
        frames.pop()
    if not frames:
        return "?"
    frame = frames[-1]
    path = Path(frame.filename)
    parts = path.parts
    for root in ("vbms_core", "hil", "tests"):
        if root in parts:
            path = Path(*parts[len(parts) - 1 - parts[::-1].index(root) :])
            break
    else:
        path = Path(path.name)
    return "%s:%d" % (path.as_posix(), frame.lineno)  # type: ignore[str-format]  # a traceback's frames have lines


def signature(error: BaseException) -> str:
    """What makes two failures the same finding: the exception type and where it was raised."""
    return "%s at %s" % (type(error).__name__, where(error))


def describe(error: BaseException) -> dict[str, str]:
    return {
        "error": "%s: %s" % (type(error).__name__, str(error)[:500]),
        "signature": signature(error),
        "traceback": "".join(traceback.format_exception(error))[-4000:],
    }


def _instrumented_imports(targets_file: str | None) -> dict[str, Target]:
    import atheris

    # Only the vbms_core modules the targets import are instrumented (each costs start-up time).
    with atheris.instrument_imports(include=["vbms_core", EXTRA_MODULE]):
        return load_targets(targets_file)


def fuzz(args: argparse.Namespace, libfuzzer_args: list[str]) -> None:
    import atheris

    table = _instrumented_imports(args.targets_file)
    from .checksums import make_mutator
    from .targets import run_bounded

    target = table[args.target]
    check = target.check
    report = args.report

    def test_one_input(data: bytes) -> None:
        try:
            run_bounded(check, data)
        except Exception as error:
            if report:
                Path(report).write_text(json.dumps(describe(error)))
            raise

    options: dict[str, Any] = {}
    if target.repair is not None:
        options["custom_mutator"] = make_mutator(target.repair)
    atheris.Setup([sys.argv[0]] + libfuzzer_args, test_one_input, **options)
    atheris.Fuzz()


def failure(check: Callable[[bytes], object], data: bytes) -> str | None:
    """The signature of the finding data triggers, or None when it passes."""
    try:
        check(data)
    except Exception as error:
        return signature(error)
    return None


def minimize(
    check: Callable[[bytes], object],
    data: bytes,
    repair: Repair | None = None,
    budget_s: float = 30.0,
    max_runs: int = 20000,
) -> bytes:
    """A smaller input with the same failure signature (delta debugging on bytes).

    Removes chunks of halving size, then zeroes bytes; with a repair (the
    target's checksum fixer) each candidate is also tried with its checksums
    fixed, so a frame can shrink through its own CRC.
    """
    wanted = failure(check, data)
    if wanted is None:
        return data
    deadline = time.monotonic() + budget_s
    runs = 0
    best = bytes(data)

    def same(candidate: bytes) -> bool:
        nonlocal runs
        runs += 1
        return failure(check, candidate) == wanted

    def try_candidate(candidate: bytes) -> bytes | None:
        if same(candidate):
            return candidate
        if repair is not None:
            fixed = repair(candidate, 0xFFFF)
            if fixed != candidate and same(fixed):
                return fixed
        return None

    def in_budget() -> bool:
        return runs < max_runs and time.monotonic() < deadline

    changed = True
    while changed and in_budget():
        changed = False
        size = max(len(best) // 2, 1)
        while size >= 1 and in_budget():
            start = 0
            while start < len(best) and in_budget():
                smaller = try_candidate(best[:start] + best[start + size :])
                if smaller is not None:
                    best = smaller
                    changed = True
                else:
                    start += size
            size //= 2
        for index in range(len(best)):
            if not in_budget():
                break
            if best[index] == 0:
                continue
            simpler = try_candidate(best[:index] + b"\x00" + best[index + 1 :])
            if simpler is not None:
                best = simpler
                changed = True
    return best


def run_minimize(args: argparse.Namespace) -> int:
    table = load_targets(args.targets_file)
    target = table[args.target]
    from .targets import run_bounded

    data = Path(args.input).read_bytes()

    def check(candidate: bytes) -> None:
        run_bounded(target.check, candidate)

    smaller = minimize(check, data, target.repair, budget_s=args.seconds)
    result: dict[str, str | None] = {"input_hex": smaller.hex()}
    try:
        check(smaller)
        result["error"] = None
    except Exception as error:
        result.update(describe(error))
    Path(args.output).write_text(json.dumps(result))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    libfuzzer_args: list[str] = []
    if "--" in argv:
        index = argv.index("--")
        argv, libfuzzer_args = argv[:index], argv[index + 1 :]
    parser = argparse.ArgumentParser(prog="python -m hil.fuzz.worker")
    parser.add_argument("mode", choices=("fuzz", "minimize"))
    parser.add_argument("--target", required=True)
    parser.add_argument("--targets-file")
    parser.add_argument("--report")
    parser.add_argument("--input")
    parser.add_argument("--output")
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args(argv)
    if args.mode == "fuzz":
        fuzz(args, libfuzzer_args)
        return 0
    return run_minimize(args)


if __name__ == "__main__":
    sys.exit(main())
