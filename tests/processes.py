"""The one way tests run a command: in its own process group, killed whole on timeout or
when pytest dies, its output captured, and (``run_ok``) a failure that shows the output's end."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

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


@contextlib.contextmanager
def background(command: list[str], log: Path, stop: int = signal.SIGTERM, **kwargs):
    """A server for the duration of a ``with`` block: started like :func:`run` (its own process
    group, killed when pytest dies), its output in ``log``; on the way out the whole group gets
    ``stop`` (SIGTERM), then SIGKILL if it is still there after 20 s. Yields the ``Popen``."""
    with log.open("w") as output:
        process = subprocess.Popen(
            command,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent if _PRCTL is not None else None,
            **kwargs,
        )
        try:
            yield process
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, stop)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=20)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # children that outlived the leader


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
