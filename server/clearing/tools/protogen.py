"""Generate the Python code of the contract (proto/clearing/v1) into <out>/clearing/v1.

`--check` generates into a temporary folder and fails if anything differs from what is
committed: CI runs it so that stale generated code cannot land.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import sys
import tempfile
from pathlib import Path

import grpc_tools
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parents[3]
PROTO_ROOT = ROOT / "proto"
PACKAGE = Path("clearing") / "v1"
_INIT = '"""Generated from proto/clearing/v1 by `make proto`. Do not edit."""\n'


def generate(out: Path) -> None:
    files = sorted(str(p.relative_to(PROTO_ROOT)) for p in (PROTO_ROOT / PACKAGE).glob("*.proto"))
    include = Path(grpc_tools.__file__).parent / "_proto"
    (out / PACKAGE).mkdir(parents=True, exist_ok=True)
    cwd = os.getcwd()
    os.chdir(PROTO_ROOT)  # relative paths keep absolute paths out of the generated code
    try:
        code = protoc.main(["protoc", "-I.", f"-I{include}", f"--python_out={out}",
                            f"--pyi_out={out}", f"--grpc_python_out={out}", *files])
    finally:
        os.chdir(cwd)
    if code != 0:
        raise SystemExit(f"protoc failed with exit code {code}")
    (out / PACKAGE / "__init__.py").write_text(_INIT)


def generated_files(out: Path) -> set[str]:
    folder = out / PACKAGE
    return {p.name for p in folder.iterdir()
            if p.name == "__init__.py" or "_pb2" in p.name} if folder.exists() else set()


def check(out: Path) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp)
        generate(fresh)
        want, have = generated_files(fresh), generated_files(out)
        stale = sorted(want ^ have) + sorted(
            n for n in want & have
            if not filecmp.cmp(fresh / PACKAGE / n, out / PACKAGE / n, shallow=False))
    if stale:
        print("generated code is stale; run `make proto` and commit:", ", ".join(stale),
              file=sys.stderr)
        return 1
    print("generated code is up to date")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    out = args.out.resolve()
    if args.check:
        return check(out)
    generate(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
