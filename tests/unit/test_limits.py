"""clearing.limits: the one place of the limits, and the relationships checked at import."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import clearing
from clearing import limits, money
from clearing.config import WriterSettings

ROOT = Path(clearing.__file__).parent


def test_a_broken_relationship_fails_at_import():
    source = (ROOT / "limits.py").read_text("utf-8")
    broken = source.replace("LEGS_PER_SPLIT_MAX = 256", "LEGS_PER_SPLIT_MAX = 257")
    assert broken != source
    with pytest.raises(AssertionError, match="LEGS_PER_SPLIT_MAX <= LEGS_PER_POSTING_MAX"):
        exec(compile(broken, "limits.py", "exec"), {"__name__": "broken_limits"})


def test_one_bps_unit():
    assert limits.BPS_MAX == money.BPS_ONE


def test_a_split_batch_fits_in_the_default_writer_queue():
    # SplitBatch hands its postings to the writer in one submit_many, refused whole when the
    # queue has no room for all of them.
    assert limits.SPLIT_BATCH_SIZE_MAX <= WriterSettings().queue_max


def test_limits_are_defined_only_in_clearing_limits():
    """No module of the server defines a name clearing.limits defines (a second amount
    maximum or default time zone, a copied ORDER_ID_LEN_MAX...)."""
    names = {n for n in vars(limits) if re.fullmatch(r"[A-Z][A-Z0-9_]+", n)}
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        if path.name == "limits.py" or "v1" in path.relative_to(ROOT).parts:
            continue
        for node in ast.parse(path.read_text("utf-8")).body:
            targets = (node.targets if isinstance(node, ast.Assign)
                       else [node.target] if isinstance(node, ast.AnnAssign) else [])
            for t in targets:
                if isinstance(t, ast.Name) and t.id in names:
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {t.id}")
    assert found == []
