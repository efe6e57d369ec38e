"""Generate the Python code of the contract (proto/clearing/v1) in two places:

    <out>/clearing/v1                  the server's copy (package `clearing.v1`)
    <client-out>/clearing_client/v1    the client SDK's copy (package `clearing_client.v1`),
                                       so that clients/python installs without the server

The client's copy is the same code with its imports of `clearing.v1` pointed at
`clearing_client.v1` (the descriptors are unchanged: both copies can be loaded in one
process and share their message classes). `--check` generates into a temporary folder and
fails if anything differs from what is committed: CI runs it so that stale generated code
cannot land.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import grpc_tools
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parents[3]
PROTO_ROOT = ROOT / "proto"
PROTO_PACKAGE = Path("clearing") / "v1"
CLIENT_OUT = ROOT / "clients" / "python"


@dataclass(frozen=True)
class Target:
    """Where one copy of the generated code goes: <out>/<package path>."""

    package: str  # the Python package, e.g. "clearing.v1"

    @property
    def folder(self) -> Path:
        return Path(*self.package.split("."))

    @property
    def init(self) -> str:
        return '"""Generated from proto/clearing/v1 by `make proto`. Do not edit."""\n'


SERVER = Target("clearing.v1")
CLIENT = Target("clearing_client.v1")
# The lines of the generated code that name its own package: imports of a sibling module
# (`from clearing.v1 import ledger_pb2 as ...`) and the module name the builder is given.
_IMPORT = re.compile(r"^(from |import )clearing\.v1\b", re.MULTILINE)
_BUILDER = re.compile(r"^(_builder\.BuildTopDescriptorsAndMessages\(DESCRIPTOR, ')clearing\.v1\.",
                      re.MULTILINE)


def _protoc(out: Path) -> None:
    files = sorted(str(p.relative_to(PROTO_ROOT))
                   for p in (PROTO_ROOT / PROTO_PACKAGE).glob("*.proto"))
    include = Path(grpc_tools.__file__).parent / "_proto"
    (out / PROTO_PACKAGE).mkdir(parents=True, exist_ok=True)
    cwd = os.getcwd()
    os.chdir(PROTO_ROOT)  # relative paths keep absolute paths out of the generated code
    try:
        code = protoc.main(["protoc", "-I.", f"-I{include}", f"--python_out={out}",
                            f"--pyi_out={out}", f"--grpc_python_out={out}", *files])
    finally:
        os.chdir(cwd)
    if code != 0:
        raise SystemExit(f"protoc failed with exit code {code}")


def _relocate(text: str, target: Target) -> str:
    if target == SERVER:
        return text
    text = _IMPORT.sub(lambda m: f"{m.group(1)}{target.package}", text)
    return _BUILDER.sub(lambda m: f"{m.group(1)}{target.package}.", text)


def generate(out: Path, target: Target) -> None:
    """Generate the code of `target` into out/<its package folder>."""
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp)
        _protoc(raw)
        folder = out / target.folder
        folder.mkdir(parents=True, exist_ok=True)
        for path in sorted((raw / PROTO_PACKAGE).iterdir()):
            (folder / path.name).write_text(_relocate(path.read_text(), target))
    (folder / "__init__.py").write_text(target.init)


def generated_files(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()
            if p.name == "__init__.py" or "_pb2" in p.name} if folder.exists() else set()


def stale_files(out: Path, target: Target) -> list[str]:
    """The files of `target` under `out` that differ from freshly generated ones."""
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp)
        generate(fresh, target)
        new, old = fresh / target.folder, out / target.folder
        want, have = generated_files(new), generated_files(old)
        return sorted(want ^ have) + sorted(
            n for n in want & have if not filecmp.cmp(new / n, old / n, shallow=False))


def check(outs: dict[Target, Path]) -> int:
    stale = [str(out / target.folder / name) for target, out in outs.items()
             for name in stale_files(out, target)]
    if stale:
        print("generated code is stale; run `make proto` and commit:", ", ".join(stale),
              file=sys.stderr)
        return 1
    print("generated code is up to date")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True,
                        help="root of the server's copy (server: server/clearing/v1)")
    parser.add_argument("--client-out", type=Path, default=CLIENT_OUT,
                        help="root of the client's copy (default: clients/python)")
    parser.add_argument("--check", action="store_true",
                        help="fail if the committed code differs from fresh code")
    args = parser.parse_args()
    outs = {SERVER: args.out.resolve(), CLIENT: args.client_out.resolve()}
    if args.check:
        return check(outs)
    for target, out in outs.items():
        generate(out, target)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
