"""The one way tests run a command: in its own process group, killed whole on timeout or
when pytest dies, its output captured, and (``run_ok``) a failure that shows the output's end."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys

# prctl(PR_SET_PDEATHSIG, SIGKILL) in a child: it dies with pytest, even when pytest is killed
_PRCTL = ctypes.CDLL(None, use_errno=True).prctl if sys.platform == "linux" else None


def _die_with_parent() -> None:  # in the child, between fork and exec
    _PRCTL(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG; kept across exec


def run(command: list[str], timeout: float, **kwargs) -> subprocess.CompletedProcess:
    """``subprocess.run`` (text output captured) in a new process group, all of it killed on
    timeout or on the way out.

    Killing only the direct child leaves grandchildren behind (Chromium's renderers, kedro-viz's
    build, ParallelRunner's workers); the group takes them too. A new group no longer gets the
    signals sent to pytest's group, so on Linux the child is also killed when pytest dies.
    Raises ``subprocess.TimeoutExpired`` like ``subprocess.run``.
    """
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, led by process.pid
        preexec_fn=_die_with_parent if _PRCTL is not None else None,
        **kwargs,
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
        return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # whatever of the group is still running
        if process.returncode is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.communicate(timeout=30)  # reap it and close the pipes


def run_ok(command: list[str], timeout: float, **kwargs) -> subprocess.CompletedProcess:
    """:func:`run`, failing the test with the end of both outputs unless it exits with 0."""
    done = run(command, timeout, **kwargs)
    assert done.returncode == 0, (
        f"{command} exited with {done.returncode}:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    )
    return done
