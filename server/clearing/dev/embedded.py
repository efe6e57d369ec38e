"""What the embedded dev services share (`embedded_postgres`, `embedded_redis`, run
together by `stack.DevStack`): their error, their logger, and the tail of a service's log
that their error messages quote."""

from __future__ import annotations

import logging
from pathlib import Path

# One logger for the whole embedded stack, named after its entry point.
logger = logging.getLogger("clearing.dev.stack")

LOG_TAIL_LINES = 30


class DevStackError(RuntimeError):
    """An embedded service could not be started or stopped."""


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """Last ``lines`` lines of a log file, for error messages."""
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"(no log at {path}: {exc})"
    tail = "\n".join(text.splitlines()[-lines:])
    return f"--- last {lines} lines of {path} ---\n{tail}"
