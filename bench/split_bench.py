"""The split engine's figures (issue 3, section 6) through the driver (bench/driver.py).

    .venv/bin/python -m bench.split_bench [driver options]

is `python -m bench.driver --scenarios eval,ceilings,closed --modes split,batch`: evaluation
time of the compiled B2B plan, unary Split against the echo ceiling, SplitBatch against the
bare asyncpg insert of the same rows. Any driver option may follow and wins.
"""

from __future__ import annotations

import sys

from bench import driver

ARGS = ["--scenarios", "eval,ceilings,closed", "--modes", "split,batch"]


def main(argv: list[str] | None = None) -> int:
    return driver.main(ARGS + (sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    raise SystemExit(main())
