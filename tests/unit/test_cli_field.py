"""`--field`: the values at a dotted path of a response, lists followed in order."""

from clearing.cli.client import field_values

RESPONSE = {
    "run": {"run_id": "12", "settlement": {"amount_minor": "135363019"}},
    "discrepancies": [
        {"discrepancy_id": "7", "reconciliation_class": "RECONCILIATION_CLASS_DUPLICATE"},
        {"discrepancy_id": "9"},  # a zero value proto3 leaves out
        {"discrepancy_id": "8", "reconciliation_class": "RECONCILIATION_CLASS_FEE_MISMATCH",
         "tags": ["a", "b"]},
    ],
}


def test_a_scalar_at_a_path():
    assert field_values(RESPONSE, "run.run_id") == ["12"]
    assert field_values(RESPONSE, "run.settlement.amount_minor") == ["135363019"]


def test_a_list_is_followed_into_each_item_in_order():
    assert field_values(RESPONSE, "discrepancies.discrepancy_id") == ["7", "9", "8"]
    assert field_values(RESPONSE, "discrepancies.reconciliation_class") == [
        "RECONCILIATION_CLASS_DUPLICATE", "RECONCILIATION_CLASS_FEE_MISMATCH"]


def test_a_list_at_the_end_gives_its_items():
    assert field_values(RESPONSE, "discrepancies.tags") == ["a", "b"]


def test_a_missing_field_gives_nothing():
    assert field_values(RESPONSE, "run.nothing") == []
    assert field_values(RESPONSE, "nothing.at.all") == []
    assert field_values({}, "run") == []
