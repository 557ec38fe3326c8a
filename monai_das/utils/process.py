"""Child processes that end with their parent."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

__all__ = ["run_child"]

_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _death_signal_setter() -> Any:
    """A ``preexec_fn`` that asks the kernel for ``SIGTERM`` when the parent dies; ``libc.prctl`` is resolved here,
    before the fork (no library loading between fork and exec), and a parent that died before the call (the child
    would never get the signal) ends the child at once."""
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()

    def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)

    return _die_with_parent


def run_child(cmd: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess:
    """
    :func:`subprocess.run` whose child gets ``SIGTERM`` when the calling process dies, on Linux (``prctl``
    ``PR_SET_PDEATHSIG``). A runner killed with ``SIGKILL`` (a batch system's time limit, ``kill -9``) would
    otherwise leave the bundle training it started running on: holding its checkpoint folder's lock, so the rerun
    that resumes the cell is refused while the orphan goes on. Elsewhere the same as :func:`subprocess.run`.
    A training ended so leaves its last atomic checkpoint, which the rerun resumes from.

    The signal follows the *thread* that started the child (a kernel rule): :func:`subprocess.run` waits in that
    thread, so it lives as long as the child; only the direct child is signalled (it ends its own workers).
    """
    if sys.platform.startswith("linux"):
        kwargs.setdefault("preexec_fn", _death_signal_setter())
    return subprocess.run(list(cmd), **kwargs)
