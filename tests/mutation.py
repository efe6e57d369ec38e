"""`make mutation`: mutmut on the money, rules, ledger and payout-rule modules, one module at
a time, each with its own focused test selection, then the score per module.

The modules and their tests are in pyproject.toml ([tool.mutation.<module>]); the settings
shared by every run are [tool.mutmut]. mutmut finds the code to mutate under the working
directory (clearing/), not under server/, so each module runs in a folder of its own,
var/mutation/<module>/, holding links to server/clearing and tests/ and a pyproject.toml
with [tool.mutmut] completed for that module. Its mutants/ folder stays there, so a second
run only re-tests what changed.

    python tests/mutation.py [module ...] [--max-children N] [--survivors] [--retest-survivors]
    [--score-only]
    (default: every module, 1 child)
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "var" / "mutation"
KILLED = {"killed", "timeout", "caught by type check", "segfault"}


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value)  # strings, numbers and lists of strings are valid TOML


def _stage(name: str, module: dict, base: dict, pyproject_text: str) -> Path:
    folder = WORK / name
    folder.mkdir(parents=True, exist_ok=True)
    for link, target in (("clearing", ROOT / "server" / "clearing"), ("tests", ROOT / "tests")):
        path = folder / link
        if not path.is_symlink():
            if path.exists():
                shutil.rmtree(path)
            path.symlink_to(target)
    settings = dict(base)
    settings["only_mutate"] = module["mutate"]
    settings["pytest_add_cli_args_test_selection"] = module["tests"]
    settings.update(module.get("settings", {}))  # the module's own [tool.mutmut] values
    table = "".join(f"{k} = {_toml_value(v)}\n" for k, v in settings.items())
    # the repo's pyproject (pytest settings) with [tool.mutmut] replaced by this module's
    text = re.sub(r"(?ms)^\[tool\.mutmut\]\n.*?(?=^\[)", "", pyproject_text)
    text = re.sub(r"(?ms)^\[tool\.mutation\..*?(?=^\[(?!tool\.mutation\.)|\Z)", "", text)
    (folder / "pyproject.toml").write_text(text.rstrip() + "\n\n[tool.mutmut]\n" + table)
    return folder


def _score(folder: Path, mutmut: str, patterns: list[str]) -> tuple[int, int, int, list[str]]:
    """(killed, judged, not yet run, survivors) of the module's mutants."""
    out = subprocess.run([mutmut, "results", "--all", "true"], cwd=folder, check=True,
                         capture_output=True, text=True).stdout
    killed = judged = unrun = 0
    survivors = []
    for line in out.splitlines():
        key, _, status = line.strip().rpartition(": ")
        if not key or (patterns and not any(fnmatch.fnmatch(key, p) for p in patterns)):
            continue
        if status == "not checked":
            unrun += 1
            continue
        judged += 1
        if status in KILLED:
            killed += 1
        else:
            survivors.append(f"{key}: {status}")
    return killed, judged, unrun, survivors


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="*")
    parser.add_argument("--max-children", type=int, default=1)
    parser.add_argument("--survivors", action="store_true", help="list the surviving mutants")
    parser.add_argument("--score-only", action="store_true",
                        help="print the score of the last run(s), run nothing")
    parser.add_argument("--retest-survivors", action="store_true",
                        help="run the surviving mutants again (after adding tests)")
    args = parser.parse_args()
    pyproject_text = (ROOT / "pyproject.toml").read_text()
    config = tomllib.loads(pyproject_text)["tool"]
    base, modules = config["mutmut"], config["mutation"]
    names = args.modules or list(modules)
    unknown = set(names) - set(modules)
    if unknown:
        parser.error(f"unknown module(s) {sorted(unknown)}; known: {sorted(modules)}")
    mutmut = str(Path(sys.executable).with_name("mutmut"))
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "CLEARING_MUTATION": "1"}
    scores = []
    for name in names:
        module = modules[name]
        folder = _stage(name, module, base, pyproject_text)
        if args.score_only:
            scores.append((name, *_score(folder, mutmut, module.get("mutants", []))))
            continue
        print(f"== {name}: mutmut on {', '.join(module['mutate'])}", flush=True)
        run = subprocess.run([mutmut, "run", "--max-children", str(args.max_children),
                              *module.get("mutants", [])], cwd=folder, env=env)
        if run.returncode == 0 and args.retest_survivors:
            # mutmut keeps a verdict until the code changes: after new tests, judge again
            survivors = _score(folder, mutmut, module.get("mutants", []))[3]
            names = [s.rpartition(": ")[0] for s in survivors]
            if names:
                print(f"== {name}: re-testing {len(names)} survivors", flush=True)
                run = subprocess.run([mutmut, "run", "--max-children", str(args.max_children),
                                      *names], cwd=folder, env=env)
        if run.returncode:
            print(f"mutmut failed on {name} (exit {run.returncode})", file=sys.stderr)
            return run.returncode
        scores.append((name, *_score(folder, mutmut, module.get("mutants", []))))
    print("\nmutation score (killed / mutants):")
    for name, killed, total, unrun, survivors in scores:
        pct = 100 * killed / total if total else 100.0
        note = f"  ({unrun} not run yet)" if unrun else ""
        print(f"  {name:<12} {killed:>4} / {total:<4} {pct:5.1f}%{note}")
        if args.survivors:
            for s in survivors:
                print(f"      {s}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
