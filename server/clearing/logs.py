"""Structured JSON logs on stderr, carrying the current call's method and request id.

Never log secrets: API keys appear only as their 8-character prefix, bank account numbers
only masked.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time

# (method, request_id, platform_id) of the RPC being served, set by the interceptor.
CALL: contextvars.ContextVar[tuple[str, str, int] | None] = contextvars.ContextVar(
    "clearing_call", default=None)

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, call context, extras."""

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
                  + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        call = CALL.get()
        if call is not None:
            out["method"], out["request_id"], out["platform_id"] = call
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, ensure_ascii=False)


def setup(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
