"""An order's tags, attributes and parties: the violations of each bad item, with its field
path (the path is only formatted for an item with a problem: api/split_validate.py)."""

from __future__ import annotations

from clearing.api.split_validate import order_collections
from clearing.errors import Violations
from clearing.limits import EXTERNAL_REF_LEN_MAX, NAME_LEN_MAX, TAG_LEN_MAX, VALUE_LEN_MAX
from clearing.v1 import split_pb2 as pb


def _violations(order: pb.Order) -> list[tuple[str, str]]:
    v = Violations()
    order_collections(v, order)
    return [(i.field, i.description) for i in v.items]


def test_good_items_have_no_violation():
    order = pb.Order(tags=["a", "x" * TAG_LEN_MAX], attributes={"k": "", "n" * NAME_LEN_MAX:
                                                               "v" * VALUE_LEN_MAX},
                     parties={"seller": "r" * EXTERNAL_REF_LEN_MAX})
    assert _violations(order) == []


def test_each_bad_item_is_named():
    order = pb.Order(
        tags=["ok", "", "t" * (TAG_LEN_MAX + 1), "nul\0"],
        attributes={"k\0": "v", "long": "v" * (VALUE_LEN_MAX + 1), "n" * (NAME_LEN_MAX + 1):
                    "v", "": "empty key", "nulvalue": "a\0b"},
        parties={"seller": "", "buyer": "r" * (EXTERNAL_REF_LEN_MAX + 1)})
    got = _violations(order)
    assert ("order.tags[0]", "required") not in got
    assert ("order.tags[1]", "required") in got
    assert ("order.tags[2]", f"longer than {TAG_LEN_MAX} characters") in got
    assert ("order.tags[3]", "must not contain NUL characters") in got
    assert ("order.attributes[k\0]", "must not contain NUL characters") in got
    assert ("order.attributes[long]", f"longer than {VALUE_LEN_MAX} characters") in got
    assert (f"order.attributes[{'n' * (NAME_LEN_MAX + 1)}]",
            f"longer than {NAME_LEN_MAX} characters") in got
    assert ("order.attributes[]", "required") in got
    assert ("order.attributes[nulvalue]", "must not contain NUL characters") in got
    assert ("order.parties[seller]", "required") in got
    assert ("order.parties[buyer]", f"longer than {EXTERNAL_REF_LEN_MAX} characters") in got
    assert len(got) == 10
