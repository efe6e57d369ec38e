"""`make bench-ledger`: the ledger's figures through the driver (bench/driver.py).

    .venv/bin/python -m bench.ledger_bench [driver options]

is `python -m bench.driver --scenarios ceilings,closed,open --modes transfer --open-mode
transfer --open-rate 0` (unary Transfer closed loop against the real server and against the
echo ceiling, then an open loop at half the measured Transfer rate); any driver option
(--duration, --concurrency, --profile DIR, --writer-stats, --m2m-fraction, ...) may follow
and wins. The shared machinery lives in bench/harness.py.
"""

from __future__ import annotations

import sys

from bench import driver

ARGS = ["--scenarios", "ceilings,closed,open", "--modes", "transfer", "--open-mode", "transfer",
        "--open-rate", "0"]


def main(argv: list[str] | None = None) -> int:
    return driver.main(ARGS + (sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    raise SystemExit(main())
