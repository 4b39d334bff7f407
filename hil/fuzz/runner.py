"""`vbms fuzz decoders`: one libFuzzer campaign per target, their numbers, their findings.

Each target runs in its own worker process (hil.fuzz.worker) under
atheris/libFuzzer; --jobs of them at a time.  The numbers come from
libFuzzer's own lines on the worker's stderr, timed here:
- runs: inputs executed (stat::number_of_executed_units);
- exec/s: inputs per second of wall-clock time from libFuzzer's INITED line
  (seed corpus loaded) to its last line; cpu exec/s: the same per second of
  the worker's CPU time (from /proc and wait4), which a busy machine does not
  lower;
- edges: libFuzzer's "cov", the branches of vbms_core (and of a --targets-file)
  the campaign reached, counted by atheris's bytecode instrumentation;
  features: its "ft" (edges with hit-count buckets, comparisons);
- findings: the input libFuzzer saved (an exception other than the allowed
  one, an invariant violation, an input over the CPU limit, a hang past
  -timeout, memory past -rss_limit_mb), minimized in a second worker and
  written as a regression file (see hil.fuzz.findings).

libFuzzer stops a campaign at its first finding, so there is at most one per
target and run.  Exit status: 0 clean, 1 a finding, 3 a worker that failed
without one (its output is shown).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, TextIO, cast

from . import findings

if TYPE_CHECKING:
    import argparse

    from .targets import Target

HANG_TIMEOUT_S = 5  # libFuzzer -timeout: one input running this long is a hang (whole seconds only)
RSS_LIMIT_MB = 1024
DEFAULT_SECONDS = 10.0
MINIMIZE_SECONDS = 30.0

_STATUS = re.compile(r"^#(\d+)\s+(\w+)\s+cov: (\d+) ft: (\d+) corp: (\d+)/")
_ARTIFACT = re.compile(r"Test unit written to (\S+)")
_STAT = re.compile(r"^stat::(\w+):\s+(\d+)")
_ERROR = re.compile(r"ERROR: libFuzzer: (.+)")


class Campaign:
    """What one target's campaign gave."""

    __slots__ = ("target", "runs", "exec_per_s", "cpu_exec_per_s", "edges", "features", "corpus", "finding", "error")

    def __init__(self, target: str) -> None:
        self.target = target
        self.runs = 0
        self.exec_per_s: float | None = None
        self.cpu_exec_per_s: float | None = None
        self.edges: int | None = None
        self.features: int | None = None
        self.corpus: int | None = None
        self.finding: findings.Finding | None = None
        self.error: str | None = None


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a live process (Linux /proc), or None."""
    try:
        fields = Path("/proc/%d/stat" % pid).read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _write_seeds(target: Target, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for seed in target.seeds():
        if len(seed) <= target.max_len:
            (directory / ("seed-" + hashlib.sha1(seed).hexdigest())).write_bytes(seed)


def _worker_command(mode: str, name: str, targets_file: str | Path | None) -> list[str]:
    command = [sys.executable, "-m", "hil.fuzz.worker", mode, "--target", name]
    if targets_file:
        command += ["--targets-file", str(targets_file)]
    return command


def _environment() -> dict[str, str]:
    """The worker must import this hil, wherever the command was started."""
    root = str(Path(__file__).resolve().parents[2])
    path = os.environ.get("PYTHONPATH")
    return dict(os.environ, PYTHONPATH=root + (os.pathsep + path if path else ""))


def run_target(
    target: Target,
    runs: int | None = None,
    seconds: float | None = None,
    corpus_root: str | Path | None = None,
    targets_file: str | Path | None = None,
    seed: int | None = None,
    timeout_s: int | None = None,
) -> Campaign:
    """One campaign in a worker process; returns a Campaign (finding saved by the caller)."""
    timeout_s = HANG_TIMEOUT_S if timeout_s is None else timeout_s
    campaign = Campaign(target.name)
    workdir = Path(tempfile.mkdtemp(prefix="vbms-fuzz-%s-" % target.name))
    try:
        _fuzz_in(workdir, campaign, target, runs, seconds, corpus_root, targets_file, seed, timeout_s)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return campaign


def _fuzz_in(
    workdir: Path,
    campaign: Campaign,
    target: Target,
    runs: int | None,
    seconds: float | None,
    corpus_root: str | Path | None,
    targets_file: str | Path | None,
    seed: int | None,
    timeout_s: int,
) -> None:
    corpus = Path(corpus_root) / target.name if corpus_root else workdir / "corpus"
    _write_seeds(target, corpus)
    report = workdir / "report.json"
    options = [
        str(corpus),
        "-max_len=%d" % target.max_len,
        "-timeout=%d" % timeout_s,
        "-rss_limit_mb=%d" % RSS_LIMIT_MB,
        "-print_final_stats=1",
        "-artifact_prefix=%s%s" % (workdir, os.sep),
    ]
    if runs is not None:
        options.append("-runs=%d" % runs)
    else:
        options.append("-max_total_time=%d" % max(1, round(seconds)))  # type: ignore[arg-type]  # runs or seconds
    if seed is not None:
        options.append("-seed=%d" % seed)
    command = _worker_command("fuzz", target.name, targets_file) + ["--report", str(report), "--"] + options
    process = subprocess.Popen(
        command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        errors="replace", env=_environment(),
    )  # fmt: skip
    tail: deque[str] = deque(maxlen=40)
    # (runs, monotonic time, cpu seconds) at INITED, (runs, monotonic time) at the latest status line
    first: tuple[int, float, float | None] | None = None
    last: tuple[int, float] | None = None
    artifact: Path | None = None
    libfuzzer_error: str | None = None
    stats: dict[str, int] = {}
    for line in process.stderr:  # type: ignore[union-attr]  # stderr=PIPE
        now = time.monotonic()
        tail.append(line.rstrip("\n"))
        status = _STATUS.match(line)
        if status:
            count = int(status.group(1))
            campaign.edges, campaign.features, campaign.corpus = (int(status.group(n)) for n in (3, 4, 5))
            if first is None and status.group(2) == "INITED":
                first = (count, now, _cpu_seconds(process.pid))
            last = (count, now)
            continue
        match = _ARTIFACT.search(line)
        if match:
            artifact = Path(match.group(1))
            continue
        match = _ERROR.search(line)
        if match:
            libfuzzer_error = match.group(1).strip()
            continue
        match = _STAT.match(line)
        if match:
            stats[match.group(1)] = int(match.group(2))
    _, wait_status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(wait_status)
    process.stderr.close()  # type: ignore[union-attr]
    campaign.runs = stats.get("number_of_executed_units", last[0] if last else 0)
    if first is not None and last is not None:
        fuzzed = campaign.runs - first[0]
        wall = last[1] - first[1]
        cpu = usage.ru_utime + usage.ru_stime - first[2] if first[2] is not None else None
        if fuzzed > 0 and wall > 0:
            campaign.exec_per_s = fuzzed / wall
        if fuzzed > 0 and cpu:
            campaign.cpu_exec_per_s = fuzzed / cpu
    if artifact is not None and artifact.is_file():
        kind = artifact.name.split("-", 1)[0]
        detail = json.loads(report.read_text()) if report.is_file() else {}
        error = detail.get("error") or "libFuzzer: %s" % (libfuzzer_error or kind)
        campaign.finding = findings.Finding(
            target.name, kind, error, detail.get("signature", kind), artifact.read_bytes(), detail.get("traceback", "")
        )
    elif process.returncode != 0:
        campaign.error = "worker exited with status %d:\n%s" % (process.returncode, "\n".join(tail))


def minimize_finding(
    target: Target, finding: findings.Finding, targets_file: str | Path | None = None, seconds: float = MINIMIZE_SECONDS
) -> None:
    """Shrink a crash finding's input in a worker (a hang or an out-of-memory input is kept as found)."""
    if finding.kind != "crash":
        return
    with tempfile.TemporaryDirectory(prefix="vbms-fuzz-min-") as directory:
        source = Path(directory) / "input"
        result = Path(directory) / "result.json"
        source.write_bytes(finding.original)
        command = _worker_command("minimize", target.name, targets_file) + [
            "--input", str(source), "--output", str(result), "--seconds", str(seconds),
        ]  # fmt: skip
        try:
            subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, timeout=seconds + 60,
                           env=_environment(), check=False)  # fmt: skip
        except subprocess.TimeoutExpired:
            return
        if not result.is_file():
            return
        outcome = json.loads(result.read_text())
    if outcome.get("signature") == finding.signature:
        finding.data = bytes.fromhex(outcome["input_hex"])


def _rate(value: float | None) -> str:
    return "-" if value is None else "%d" % round(value)


HEADER = "%-18s %10s %9s %11s %6s %8s %6s  %s" % (
    "target", "runs", "exec/s", "cpu exec/s", "edges", "features", "corpus", "findings",
)  # fmt: skip


def format_row(campaign: Campaign) -> str:
    return "%-18s %10d %9s %11s %6s %8s %6s  %s" % (
        campaign.target, campaign.runs, _rate(campaign.exec_per_s), _rate(campaign.cpu_exec_per_s),
        _rate(campaign.edges), _rate(campaign.features), _rate(campaign.corpus),
        "1" if campaign.finding else ("error" if campaign.error else "0"),
    )  # fmt: skip


def run_campaigns(targets: Sequence[Target], runs: int | None = None, seconds: float | None = None, jobs: int = 1,
                  findings_dir: str | Path = "fuzz-findings", corpus_root: str | Path | None = None,
                  targets_file: str | Path | None = None, seed: int | None = None, out: TextIO | None = None,
                  command_line: str | None = None, timeout_s: int | None = None) -> int:  # fmt: skip
    """Fuzz each target, print a row per target as it ends, save findings; returns the exit status."""
    out = sys.stdout if out is None else out
    if runs is None and seconds is None:
        seconds = DEFAULT_SECONDS
    budget = "%d runs" % runs if runs is not None else "%g s" % seconds  # type: ignore[str-format]  # set above
    out.write("vbms fuzz decoders: %d target%s, %s each, %d at a time\n"
              % (len(targets), "" if len(targets) == 1 else "s", budget, jobs))  # fmt: skip
    out.write(HEADER + "\n")
    out.flush()
    lock = threading.Lock()
    results: list[Campaign] = []

    def one(target: Target) -> Campaign:
        campaign = run_target(target, runs, seconds, corpus_root, targets_file, seed, timeout_s)
        if campaign.finding is not None:
            minimize_finding(target, campaign.finding, targets_file)
            campaign.finding.path = findings.save(campaign.finding, findings_dir, command_line)
        with lock:
            out.write(format_row(campaign) + "\n")
            out.flush()
            results.append(campaign)
        return campaign

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        list(pool.map(one, targets))
    found = [campaign for campaign in results if campaign.finding]
    failed = [campaign for campaign in results if campaign.error]
    for campaign in found:
        finding = cast(findings.Finding, campaign.finding)  # found: the campaigns with one
        out.write("\nFINDING %s (%s): %s\n  where: %s\n  input: %d bytes%s: %s\n  saved: %s\n" % (
            campaign.target, finding.kind, finding.error, finding.signature, len(finding.data),
            " (minimized from %d)" % len(finding.original) if finding.data != finding.original else "",
            finding.data.hex() if len(finding.data) <= 64 else finding.data[:64].hex() + "...", finding.path,
        ))  # fmt: skip
    for campaign in failed:
        out.write("\nERROR %s: %s\n" % (campaign.target, campaign.error))
    out.write("\n%d finding%s, %d worker error%s\n" % (len(found), "" if len(found) == 1 else "s", len(failed),
                                                       "" if len(failed) == 1 else "s"))  # fmt: skip
    out.flush()
    if found:
        return 1
    return 3 if failed else 0


def run_cli(args: argparse.Namespace) -> int:
    """The `vbms fuzz decoders` command (arguments already parsed and range-checked)."""
    try:
        import atheris  # noqa: F401
    except ImportError:
        sys.stderr.write("vbms fuzz decoders: needs atheris (pip install atheris==3.0.0; it is in the dev extra)\n")
        return 2
    from .targets import TARGETS

    if args.list:
        for target in TARGETS.values():
            sys.stdout.write("%-18s %s (allowed error: %s)\n" % (target.name, target.summary, target.accepts))
        return 0
    names = args.target or list(TARGETS)
    unknown = [name for name in names if name not in TARGETS]
    if unknown:
        sys.stderr.write("vbms fuzz decoders: unknown target %s; valid targets: %s\n"
                         % (", ".join(repr(name) for name in unknown), ", ".join(TARGETS)))  # fmt: skip
        return 2
    selected = [TARGETS[name] for name in dict.fromkeys(names)]
    budget = "--runs %d" % args.runs if args.runs is not None else "--seconds %g" % (args.seconds or DEFAULT_SECONDS)
    command_line = "vbms fuzz decoders %s %s" % (" ".join("--target " + t.name for t in selected), budget)
    if args.seed is not None:
        command_line += " --seed %d" % args.seed
    return run_campaigns(selected, args.runs, args.seconds, args.jobs, args.findings, args.corpus, None, args.seed,
                         command_line=command_line)  # fmt: skip
