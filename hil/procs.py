"""Processes a bench starts are tied to it: none outlives the process that started it.

start_tied() starts a child in a session of its own (so killpg stops everything it starts
in turn) that Linux sends SIGTERM when its parent dies (PR_SET_PDEATHSIG): a bench killed
with SIGKILL, or whose terminal closed before it could clean up, leaves nothing running.
The parent must be the thread that lives as long as the child (Linux's rule: the signal
comes when the thread that forked exits), so benches start their children from the thread
that stops them.

STOP_SIGNALS are the signals a bench or device treats as "stop now, cleanly": Ctrl-C,
SIGTERM, and SIGHUP (the terminal it runs in was closed).
"""

import ctypes
import os
import signal
import subprocess
from collections.abc import Sequence
from typing import Any

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() == 1:  # the parent died before the prctl took: go now
        os.kill(os.getpid(), signal.SIGTERM)


def start_tied(command: Sequence[str], **popen_arguments: Any) -> subprocess.Popen[Any]:
    """subprocess.Popen(command, ...) in a new session, SIGTERMed if this process dies."""
    return subprocess.Popen(command, start_new_session=True, preexec_fn=_die_with_parent, **popen_arguments)


def stop_group(process: subprocess.Popen[Any], timeout_s: float = 10) -> None:
    """SIGTERM to the child's process group, SIGKILL if it has not ended after timeout_s."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=timeout_s)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait()
