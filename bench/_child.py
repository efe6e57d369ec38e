"""Run a module as `python -m` would, but die with the parent.

    python -m bench._child clearing.cli serve

PR_SET_PDEATHSIG makes the kernel SIGKILL this process when the bench process that
started it dies, so no server, echo server or load generator outlives a killed bench.
The process keeps its pid (the module runs in it), so py-spy can attach to it.
"""

from __future__ import annotations

import ctypes
import os
import runpy
import signal
import sys

PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Ask for SIGKILL when the parent exits (Linux); exit now if it is already gone."""
    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the bench still kills its children
        return
    if os.getppid() != parent or parent == 1:
        os._exit(1)


def main() -> None:
    if len(sys.argv) < 2:
        raise SystemExit("usage: python -m bench._child MODULE [ARGS...]")
    die_with_parent()
    module = sys.argv[1]
    sys.argv = [module, *sys.argv[2:]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
