"""Every reason the server sends is a member of one registry, `clearing.reasons.Reason`, the
mirror of the proto enum `clearing.v1.ErrorReason` (proto/clearing/v1/errors.proto) that
clients see.

- the mirror: the same names, in the same order, each member's value its own name (what is
  sent), each proto value commented (when it is sent);
- the source (AST of server/clearing): every `reason=` argument and every class-level
  `reason` is `Reason.X` (or a choice between such, or None: the class's own), a string
  literal equal to a reason is written `Reason.X` instead, and the few `reason=` that pass
  on a reason made elsewhere (or a request's free-text reason) are listed below;
- no dead reasons: every member is used in server/clearing, or listed as reserved;
- the spec: a reason a proto comment names (`reason X`, `reasons X, Y or Z`) is a member."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from clearing.reasons import Reason
from clearing.v1 import errors_pb2

ROOT = Path(__file__).resolve().parents[2]
SERVER = ROOT / "server" / "clearing"
PROTO = ROOT / "proto" / "clearing" / "v1"

# The gRPC status code names: also the reasons of statuses with no more precise one, so a
# literal like "NOT_FOUND" may be a code (`code = "NOT_FOUND"`) and is not flagged.
CODE_NAMES = {"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED",
              "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED",
              "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL",
              "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"}

# `reason=` arguments that are not a Reason member written out, keyed by (file, source of
# the value), each with why. A key no longer found fails too (the list stays exact).
PASSED_ON = {
    ("errors.py", "reason"): "InvalidArgument passes its own argument to ClearingError; "
                             "error_from_record rebuilds a recorded reason for a replay",
    ("idempotency.py", "doc['reason']"): "a recorded failure rebuilt for a replay",
    ("api/errors.py", "reason"): "the one map to ErrorInfo: the error's reason",
    ("api/split_convert.py", "reason"): "SplitError: the error's reason, as on the wire",
    ("payout/service.py", "reason"): "_invalid(..., reason=Reason.X) passes it on",
    ("ledger/batch.py", "claim.reason"): "a Claim's reason: Claim.of is given Reason.X",
    ("ledger/batch.py", "_PENDING_DONE_REASONS[pending.state]"): "a dict of Reason members",
    ("ledger/status.py", "_REFUSAL_REASONS[status]"): "a dict of Reason members",
    ("api/split_convert.py", "a.reason"): "a SplitAlert: evaluate's Alert reasons are Reason.X",
    ("api/split_convert.py", "a.reason_text"): "SplitAction.reason: the caller's free text",
    ("cli/client.py", "args.reason"): "a request's free-text reason",
    ("cli/client.py", "args.reason or ''"): "a request's free-text reason",
    ("cli/split.py", "args.reason"): "a request's free-text reason",
    ("cli/split.py", "args.reason or ''"): "a request's free-text reason",
    ("console/app.py", "why"): "a request's free-text reason, typed in a console form",
}
# Members no code sends yet (kept so that clients may already handle them).
RESERVED: set[str] = set()


def sources() -> list[tuple[str, ast.Module]]:
    out = []
    for path in sorted(SERVER.rglob("*.py")):
        rel = path.relative_to(SERVER).as_posix()
        # clearing.dev holds the bank simulator: its failure codes are the bank's own
        # (they reach clients as BankTransfer.failure_code, passed on as the bank said).
        if rel.startswith(("v1/", "dev/")) or rel == "reasons.py":
            continue
        out.append((rel, ast.parse(path.read_text(), filename=str(path))))
    return out


def is_member(node: ast.AST) -> bool:
    """`Reason.X` (or `reasons.Reason.X`) with X a member."""
    return (isinstance(node, ast.Attribute) and node.attr in Reason.__members__
            and (isinstance(node.value, ast.Name) and node.value.id == "Reason"
                 or isinstance(node.value, ast.Attribute) and node.value.attr == "Reason"))


def is_reason_expr(node: ast.AST) -> bool:
    if isinstance(node, ast.IfExp):
        return is_reason_expr(node.body) and is_reason_expr(node.orelse)
    if isinstance(node, ast.Constant) and node.value is None:
        return True
    return is_member(node)


def docstrings(tree: ast.Module) -> set[int]:
    """The ids of the docstring nodes (module, class, function)."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                out.add(id(body[0].value))
    return out


def test_the_mirror_matches_the_proto_enum():
    values = errors_pb2.ErrorReason.DESCRIPTOR.values
    assert values[0].name == "ERROR_REASON_UNSPECIFIED" and values[0].number == 0
    assert [v.name for v in values[1:]] == [m.name for m in Reason]
    assert all(m.value == m.name for m in Reason)
    assert len({v.number for v in values}) == len(values)


def test_every_proto_value_is_commented():
    text = (PROTO / "errors.proto").read_text()
    body = text[text.index("enum ErrorReason {"):]
    lines = body.splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"\s+([A-Z][A-Z0-9_]*) = \d+;", line)
        if m:
            assert lines[i - 1].strip().startswith("//"), f"{m.group(1)} has no comment"


def test_every_reason_argument_and_class_reason_is_a_member():
    problems, used = [], set()
    for rel, tree in sources():
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                for kw in node.keywords:
                    if kw.arg != "reason" or is_reason_expr(kw.value):
                        continue
                    key = (rel, ast.unparse(kw.value))
                    if key in PASSED_ON:
                        used.add(key)
                    else:
                        problems.append(f"{rel}:{kw.value.lineno}: reason={key[1]}")
            elif isinstance(node, ast.ClassDef):
                for stmt in node.body:
                    target = (stmt.targets[0] if isinstance(stmt, ast.Assign)
                              else stmt.target if isinstance(stmt, ast.AnnAssign) else None)
                    if (isinstance(target, ast.Name) and target.id == "reason"
                            and stmt.value is not None and not is_member(stmt.value)):
                        problems.append(f"{rel}:{stmt.lineno}: class {node.name}: reason = "
                                        f"{ast.unparse(stmt.value)}")
    assert not problems, "reasons that are not Reason.X:\n" + "\n".join(problems)
    assert set(PASSED_ON) == used, f"PASSED_ON entries no longer found: {set(PASSED_ON) - used}"


def test_no_reason_is_written_as_a_string():
    problems = []
    for rel, tree in sources():
        skip = docstrings(tree)
        for node in ast.walk(tree):
            if (isinstance(node, ast.Constant) and isinstance(node.value, str)
                    and id(node) not in skip and node.value in Reason.__members__
                    and node.value not in CODE_NAMES):
                problems.append(f"{rel}:{node.lineno}: {node.value!r} (write Reason.{node.value})")
            if isinstance(node, ast.JoinedStr) and any(
                    isinstance(v, ast.Constant) and re.fullmatch(r"[A-Z][A-Z0-9]*_", v.value)
                    for v in node.values[:1]):
                problems.append(f"{rel}:{node.lineno}: an UPPER_SNAKE name built with an f-string")
    assert not problems, "\n".join(problems)


def test_every_member_is_used_or_reserved():
    used = set()
    for _, tree in sources():
        used |= {node.attr for node in ast.walk(tree) if is_member(node)}
    assert RESERVED <= set(Reason.__members__)
    assert not RESERVED & used, f"reserved but used: {RESERVED & used}"
    dead = set(Reason.__members__) - used - RESERVED
    assert not dead, f"reasons nothing sends (remove them or list them as RESERVED): {dead}"


# `reason X`, `reasons X, Y or Z`, `reason: X / Y`, `reason X (Y when ...)` in a comment.
_NAME = r"`?[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)*`?"
_MENTION = re.compile(rf"\breasons?:?\s+({_NAME}(?:\s*(?:,|/|\bor\b|\band\b|\()\s*{_NAME})*)")


def proto_mentions() -> list[tuple[str, int, str]]:
    out = []
    for path in sorted(PROTO.glob("*.proto")):
        lines = path.read_text().splitlines()
        comment = [(i + 1, line.split("//", 1)[1]) for i, line in enumerate(lines) if "//" in line]
        text = " ".join(c for _, c in comment)
        starts, at = [], 0
        for lineno, c in comment:
            starts.append((at, lineno))
            at += len(c) + 1
        for m in _MENTION.finditer(text):
            lineno = max(n for s, n in starts if s <= m.start())
            for name in re.findall(r"[A-Z][A-Z0-9_]*", m.group(1)):
                out.append((path.name, lineno, name))
    return out


def test_the_reasons_proto_comments_name_are_members():
    mentions = proto_mentions()
    assert len(mentions) > 40  # the pattern still finds the comments' reasons
    unknown = [f"{f}:{n}: {name}" for f, n, name in mentions
               if name not in Reason.__members__ and name not in CODE_NAMES]
    assert not unknown, "proto comments name reasons the server does not send:\n" + "\n".join(
        unknown)


@pytest.mark.parametrize("text, names", [
    ("// answers FAILED_PRECONDITION with reason ACCOUNT_FROZEN / ACCOUNT_CLOSED and",
     ["ACCOUNT_FROZEN", "ACCOUNT_CLOSED"]),
    ("// reasons NO_BANK_ACCOUNT, KYC_NOT_VERIFIED or NOPE_NOT_A_REASON.", None),
])
def test_the_mention_pattern(text, names):
    found = re.findall(r"[A-Z][A-Z0-9_]*", _MENTION.search(text).group(1))
    if names is None:
        assert "NOPE_NOT_A_REASON" in found and "NOPE_NOT_A_REASON" not in Reason.__members__
    else:
        assert found == names
