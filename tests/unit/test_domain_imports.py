"""The domain packages (ledger, rules, splits, payout, recon, reports, risk, platforms) import neither grpc nor generated
protobuf code nor the API layer: conversion to and from the wire lives in `clearing.api`
(DESIGN.md). Read from the source files' import statements, so a lazy import inside a
function counts too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import clearing

SERVER = Path(clearing.__file__).parent
DOMAIN_PACKAGES = ("ledger", "rules", "splits", "payout", "recon", "reports", "risk",
                   "platforms", "audit", "events")
FORBIDDEN = ("grpc", "google.protobuf", "google.rpc", "clearing.v1", "clearing.api",
             "clearing.cli", "clearing.server")


def imported(tree: ast.Module) -> list[tuple[int, str]]:
    """(line, module) of every import in a module, `from x import y` as x and x.y."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.append((node.lineno, node.module))
            out += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return out


def forbidden(module: str) -> bool:
    return any(module == f or module.startswith(f + ".") for f in FORBIDDEN)


def test_the_checks_see_forbidden_imports():
    tree = ast.parse("import grpc\nfrom clearing import v1\nfrom clearing.v1 import split_pb2\n"
                     "def f():\n    from clearing.api import split\n"
                     "from clearing.rules import model\n")
    assert [m for _, m in imported(tree) if forbidden(m)] == [
        "grpc", "clearing.v1", "clearing.v1", "clearing.v1.split_pb2", "clearing.api",
        "clearing.api.split"]


@pytest.mark.parametrize("package", DOMAIN_PACKAGES)
def test_a_domain_package_imports_no_wire_code(package):
    files = sorted((SERVER / package).rglob("*.py"))
    assert files, f"no source in {package}"
    problems = [f"{path.relative_to(SERVER)}:{line}: {module}"
                for path in files
                for line, module in imported(ast.parse(path.read_text()))
                if forbidden(module)]
    assert not problems, "domain code importing wire code:\n" + "\n".join(problems)
