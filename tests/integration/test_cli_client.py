"""The `clearing` command's client commands (built on clearing_client) against a real server:
their JSON output (the response, proto field names), amounts typed in major units and sent
as exact minor units, and errors on stderr with each BadRequest field violation."""

from __future__ import annotations

import json

from tests.support import cli as _cli


async def _ok(running, key: str, *argv: str) -> dict:
    code, out, err = await _cli(running, key, *argv)
    assert code == 0, err
    return json.loads(out)


async def test_accounts_transfers_and_statement(running, platform):
    key = platform.key
    src = (await _ok(running, key, "accounts", "create", "--ref", "src", "--kind", "custodial",
                     "--owner", "enterprise"))["account"]
    dst = (await _ok(running, key, "accounts", "create", "--ref", "dst", "--kind", "merchant",
                     "--owner", "enterprise", "--name", "Shop"))["account"]
    assert (src["kind"], src["currency_code"], src["allow_negative"]) == (
        "ACCOUNT_KIND_CUSTODIAL", "CNY", True)
    assert (dst["display_name"], dst["status"]) == ("Shop", "ACCOUNT_STATUS_ACTIVE")
    assert "allow_negative" not in dst  # false: left out of the JSON

    # 12.34 CNY by reference, twice with one request id: one transfer of 1234 minor units.
    first = await _ok(running, key, "transfer", "--from-ref", "src", "--to-ref", "dst",
                      "--amount", "12.34", "--request-id", "cli-t1")
    again = await _ok(running, key, "transfer", "--from-ref", "src", "--to-ref", "dst",
                      "--amount", "12.34", "--request-id", "cli-t1")
    assert first == again
    assert (first["transfer"]["amount_minor"], first["transfer"]["debit_account_id"],
            first["transfer"]["credit_account_id"]) == ("1234", src["account_id"],
                                                        dst["account_id"])
    # A hold of 5.00, 3.01 of it posted, the rest (1.99) voided.
    hold = (await _ok(running, key, "transfer", "--from", src["account_id"], "--to",
                      dst["account_id"], "--amount", "5.00", "--pending"))["transfer"]
    assert (hold["mode"], hold["pending_state"]) == ("TRANSFER_MODE_PENDING",
                                                     "PENDING_STATE_OPEN")
    posted = (await _ok(running, key, "post", hold["transfer_id"], "--amount", "3.01"))
    assert posted["transfer"]["amount_minor"] == "301"
    voided = (await _ok(running, key, "void", hold["transfer_id"]))["transfer"]
    assert voided["mode"] == "TRANSFER_MODE_VOID_PENDING"

    balance = (await _ok(running, key, "balance", dst["account_id"]))["balance"]
    assert balance["posted_minor"] == str(1234 + 301)
    assert "pending_credit_minor" not in balance
    entries = (await _ok(running, key, "entries", dst["account_id"]))["entries"]
    assert sorted((e["mode"], int(e["amount_minor"])) for e in entries) == [
        ("TRANSFER_MODE_IMMEDIATE", 1234), ("TRANSFER_MODE_PENDING", 500),
        ("TRANSFER_MODE_POST_PENDING", 301), ("TRANSFER_MODE_VOID_PENDING", 199)]

    frozen = (await _ok(running, key, "accounts", "freeze", dst["account_id"], "--amount",
                        "0.01", "--reason", "kyc"))["account"]
    assert frozen["balance"]["frozen_minor"] == "1"
    await _ok(running, key, "accounts", "unfreeze", dst["account_id"], "--amount", "0.01",
              "--reason", "kyc")
    got = await _ok(running, key, "accounts", "get", "dst")
    assert got == await _ok(running, key, "accounts", "get", dst["account_id"])
    assert "frozen_minor" not in got["account"]["balance"]
    listed = await _ok(running, key, "accounts", "list", "--page-size", "1")
    assert [a["external_ref"] for a in listed["accounts"]] == ["src"]
    assert listed["next_page_token"]
    verify = await _ok(running, key, "verify")
    assert verify["ok"] is True and verify["chain_ok"] is True


async def test_errors_name_the_status_and_every_field(running, platform):
    code, out, err = await _cli(running, platform.key, "accounts", "create", "--ref", "x",
                                "--kind", "merchant", "--owner", "enterprise",
                                "--currency", "XXQ")
    assert (code, out) == (1, "")
    lines = err.splitlines()
    assert lines[0].startswith("error: INVALID_ARGUMENT: ")
    assert lines[1:] == ["  currency_code: 'XXQ' is not a known ISO 4217 currency code"]

    code, _, err = await _cli(running, platform.key, "transfer", "--from-ref", "nowhere",
                              "--to", "1", "--amount", "1.00")
    assert code == 1 and err.startswith("account 'nowhere': NOT_FOUND: ")
    code, _, err = await _cli(running, platform.key, "transfer", "--from", "1", "--to", "2",
                              "--amount", "0.001")
    assert code == 1 and "more decimals than CNY allows" in err
    code, _, err = await _cli(running, "ck_not-a-key", "balance", "1")
    assert (code, err) == (1, "error: UNAUTHENTICATED: unknown or revoked API key\n")


async def test_payouts_bind_request_get_list(running, platform):
    key = platform.key
    src = (await _ok(running, key, "accounts", "create", "--ref", "p-src", "--kind",
                     "custodial", "--owner", "enterprise"))["account"]
    shop = (await _ok(running, key, "accounts", "create", "--ref", "p-shop", "--kind",
                      "merchant", "--owner", "enterprise"))["account"]
    await _ok(running, key, "transfer", "--from", src["account_id"], "--to",
              shop["account_id"], "--amount", "20.00")
    bound = (await _ok(running, key, "payouts", "bind", shop["account_id"], "--bank-code",
                       "B1", "--bank-name", "Bank", "--number", "6222000011112222",
                       "--holder", "Ann", "--type", "corporate", "--kyc-verified"))
    assert bound["bank_account"]["account_type"] == "BANK_ACCOUNT_TYPE_CORPORATE"
    assert "6222000011112222" not in json.dumps(bound)
    payout = (await _ok(running, key, "payouts", "request", shop["account_id"], "--amount",
                        "10.00", "--memo", "m"))["payout"]
    assert (payout["amount_minor"], payout["account_id"]) == ("1000", shop["account_id"])
    got = (await _ok(running, key, "payouts", "get", payout["payout_id"]))["payout"]
    assert got["payout_id"] == payout["payout_id"]
    listed = await _ok(running, key, "payouts", "list", "--account", shop["account_id"])
    assert [p["payout_id"] for p in listed["payouts"]] == [payout["payout_id"]]
