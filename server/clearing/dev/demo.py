"""`make demo` (`python -m clearing.dev.demo`): the seed's B2B example end to end, against
the server `make run` started, through the Python client (clearing_client).

As the operator (var/admin.key, the maker, and var/admin-approver.key, the checker, both
written by `make run`), it creates the platform `b2b` and its keys (var/b2b.key: gateway
and operator; var/b2b-approver.key: approver); as the platform it opens the five accounts
of server/clearing/rules/examples/b2b.yaml and a fee account (and var/b2b-supplier.key, a
party key bound to SUP_2025001: the supplier's read-only view, in the console too), publishes the rule set and has
the approver key activate it, splits order ORD202601200001 of 850,000.00 CNY and prints the
legs; the operator sets a withdrawal fee of 4.00 (a fee change: the maker sets it, the
checker approves it); the supplier binds a bank account and is paid 600,000.00 out (the fee,
and two bank transfers: the simulated bank takes at most 500,000.00 per transfer); then the
balances and VerifyLedger.

Rerunnable: every write has a request id of its own, and what exists already (the platform,
an account, the key files) is taken as done; a second run prints the same.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from decimal import Decimal
from pathlib import Path
from typing import TextIO

from clearing.config import Settings

PLATFORM = "b2b"
ORDER_ID = "ORD202601200001"
ORDER_MINOR = 85_000_000
CURRENCY = "CNY"
FEE_MINOR = 400
PAYOUT_MINOR = 60_000_000
RULE_SET = Path(__file__).resolve().parents[1] / "rules" / "examples" / "b2b.yaml"
ADDR_FILE = "grpc.addr"  # written by `clearing serve --dev`
# (external_ref, AccountKind name, OwnerType name)
ACCOUNTS = (
    ("custodial", "ACCOUNT_KIND_CUSTODIAL", "OWNER_TYPE_ENTERPRISE"),
    ("PLAT_001", "ACCOUNT_KIND_PLATFORM", "OWNER_TYPE_ENTERPRISE"),
    ("SUP_2025001", "ACCOUNT_KIND_MERCHANT", "OWNER_TYPE_ENTERPRISE"),
    ("LOGISTICS_B", "ACCOUNT_KIND_ORDINARY", "OWNER_TYPE_INDIVIDUAL"),
    ("GOV_ACCOUNT", "ACCOUNT_KIND_FUNCTIONAL", "OWNER_TYPE_ENTERPRISE"),
    ("FEES", "ACCOUNT_KIND_FEE", "OWNER_TYPE_ENTERPRISE"),
)
PAYOUT_WAIT_S = 30.0
PAYOUT_POLL_S = 0.1


def money(minor: int) -> str:
    """850,000.00 (CNY: two decimals)."""
    return f"{Decimal(minor).scaleb(-2):,.2f}"


def _write_secret(path: Path, value: str) -> None:
    import os

    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # a file that was there keeps its mode through O_TRUNC
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")


async def _platform(admin, name: str):
    from clearing_client import ClearingRpcError
    from clearing_client.v1 import platform_pb2 as pb

    try:
        return (await admin.call(admin.platform.CreatePlatform, pb.CreatePlatformRequest(
            name=name, request_id=f"demo-platform-{name}"))).platform
    except ClearingRpcError as err:
        if err.code.name != "ALREADY_EXISTS":
            raise
    return (await admin.call(admin.platform.GetPlatform,
                             pb.GetPlatformRequest(name=name))).platform


async def _key(admin, addr: str, platform_id: int, path: Path, roles: list[str],
               credentials=None, party_account_ids: tuple[int, ...] = ()) -> str:
    """The platform's key kept in `path`, made (and written, 0600) if missing or refused
    (with `party_account_ids`: a party key bound to those accounts)."""
    from clearing_client import ClearingClient, ClearingRpcError
    from clearing_client.v1 import ledger_pb2, platform_pb2 as pb

    if path.exists():
        key = path.read_text().strip()
        async with ClearingClient(addr, key, credentials=credentials) as probe:
            try:
                await probe.call(probe.ledger.ListAccounts,
                                 ledger_pb2.ListAccountsRequest(page_size=1))
                return key
            except ClearingRpcError as err:
                if err.code.name not in ("UNAUTHENTICATED", "PERMISSION_DENIED"):
                    raise
    # Stable request ids: a rerun (or a retry) makes no second key. A replay answers the key
    # made before without the key itself (key_shown_before): it is lost (not in `path`, or
    # refused), so revoke it and go on to the next request id of the chain, named by it.
    request_id = f"demo-key-{platform_id}-{path.name}"
    while True:
        made = await admin.call(admin.platform.CreateApiKey, pb.CreateApiKeyRequest(
            platform_id=platform_id, roles=roles, party_account_ids=party_account_ids,
            request_id=request_id))
        if not made.key_shown_before:
            break
        await admin.call(admin.platform.RevokeApiKey,
                         pb.RevokeApiKeyRequest(key_id=made.api_key.key_id))
        request_id = f"demo-key-{platform_id}-{path.name}-after-{made.api_key.key_id}"
    _write_secret(path, made.key)
    return made.key


async def _accounts(client) -> dict[str, int]:
    from clearing_client import ClearingRpcError
    from clearing_client.v1 import ledger_pb2

    ids = {}
    for ref, kind, owner in ACCOUNTS:
        try:
            account = await client.create_account(
                ref, kind=ledger_pb2.AccountKind.Value(kind),
                owner_type=ledger_pb2.OwnerType.Value(owner), currency_code=CURRENCY,
                request_id=f"demo-account-{ref}")
        except ClearingRpcError as err:
            if err.code.name != "ALREADY_EXISTS":
                raise
            account = await client.get_account(external_ref=ref)
        ids[ref] = account.account_id
    return ids


async def _rule_set(client, approver) -> int:
    from clearing.api.rules_proto import rule_set_proto_from_yaml

    published = await client.publish_rule_set(rule_set_proto_from_yaml(RULE_SET.read_bytes()),
                                              request_id="demo-publish-b2b")
    await approver.activate_rule_set(published.name, published.version,
                                     request_id=f"demo-activate-b2b-{published.version}")
    return published.version


async def _fee(admin, checker, platform_id: int, fee_account_id: int):
    """The withdrawal fee of 4.00: set by the maker, approved by the checker."""
    from clearing_client.v1 import platform_pb2 as pb

    config = (await admin.call(admin.platform.GetPayoutConfig, pb.GetPayoutConfigRequest(
        platform_id=platform_id, currency_code=CURRENCY))).config
    config.fee_fixed_minor, config.fee_bps, config.fee_account_id = FEE_MINOR, 0, fee_account_id
    change = (await admin.call(admin.platform.SetPayoutConfig, pb.SetPayoutConfigRequest(
        request_id=f"demo-fee-{platform_id}-{FEE_MINOR}", config=config))).change
    if change.state == pb.PAYOUT_CONFIG_CHANGE_STATE_PENDING:
        change = (await checker.call(
            checker.platform.ApprovePayoutConfigChange, pb.ApprovePayoutConfigChangeRequest(
                change_id=change.change_id, note="make demo"))).change
    return change


async def _payout(client, account_id: int):
    from clearing_client.v1 import payout_pb2

    await client.bind_bank_account(
        account_id, bank_code="BANKSIM", bank_name="Simulated Bank",
        account_number="6222020200112233445", holder_name="Supplier 2025001 Ltd",
        account_type=payout_pb2.BANK_ACCOUNT_TYPE_CORPORATE, kyc_verified=True,
        request_id="demo-bind-SUP_2025001")
    payout = await client.request_payout(account_id, PAYOUT_MINOR, CURRENCY,
                                         request_id="demo-payout-SUP_2025001")
    done = {payout_pb2.PAYOUT_STATE_SUCCEEDED, payout_pb2.PAYOUT_STATE_FAILED}
    deadline = asyncio.get_running_loop().time() + PAYOUT_WAIT_S
    while payout.state not in done and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(PAYOUT_POLL_S)
        payout = await client.get_payout(payout.payout_id)
    return payout


async def run(addr: str, data_dir: Path, out: TextIO = sys.stdout,
              platform_name: str = PLATFORM, credentials=None) -> bool:
    """The demo against the server at `addr` (over TLS with `credentials`), with the admin
    keys in `data_dir`; prints to `out`. True if the ledger verifies."""
    from clearing_client import ClearingClient
    from clearing_client.v1 import payout_pb2, split_pb2

    def say(line: str = "") -> None:
        print(line, file=out, flush=True)

    admin_key = (data_dir / "admin.key").read_text().strip()
    checker_key = (data_dir / "admin-approver.key").read_text().strip()
    async with ClearingClient(addr, admin_key, credentials=credentials) as admin, \
            ClearingClient(addr, checker_key, credentials=credentials) as checker:
        platform = await _platform(admin, platform_name)
        key = await _key(admin, addr, platform.platform_id, data_dir / f"{platform_name}.key",
                         ["gateway", "operator"], credentials)
        approver_key = await _key(admin, addr, platform.platform_id,
                                  data_dir / f"{platform_name}-approver.key", ["approver"],
                                  credentials)
        say(f"platform {platform.name} (id {platform.platform_id}); its keys: "
            f"{platform_name}.key (gateway, operator), {platform_name}-approver.key (approver)")
        async with ClearingClient(addr, key, credentials=credentials) as client, \
                ClearingClient(addr, approver_key, credentials=credentials) as approver:
            ids = await _accounts(client)
            say("accounts: " + ", ".join(f"{ref} {i}" for ref, i in ids.items()))
            await _key(admin, addr, platform.platform_id,
                       data_dir / f"{platform_name}-supplier.key", [], credentials,
                       party_account_ids=(ids["SUP_2025001"],))
            say(f"party key {platform_name}-supplier.key: SUP_2025001's splits, statement, "
                "vouchers and payouts, read-only")
            version = await _rule_set(client, approver)
            say(f"rule set b2b version {version}: published (gateway/operator key), "
                "activated (approver key)")
            split = (await client.call(client.split.Split, split_pb2.SplitRequest(
                request_id=f"demo-split-{ORDER_ID}", order=split_pb2.Order(
                    order_id=ORDER_ID, amount_minor=ORDER_MINOR, currency_code=CURRENCY,
                    channel="BANK_TRANSFER", rule_set_name="b2b",
                    tags=["enterprise purchase", "government purchase"],
                    attributes={"customer_type": "enterprise"})))).split
            say(f"split {ORDER_ID} {money(ORDER_MINOR)} {CURRENCY} (split {split.split_id}):")
            for leg in split.legs:
                say(f"  {leg.external_ref:<12} {leg.label:<11} {money(leg.amount_minor):>12}")
            change = await _fee(admin, checker, platform.platform_id, ids["FEES"])
            say(f"withdrawal fee {money(change.config.fee_fixed_minor)}: change "
                f"{change.change_id} set by admin key {change.requested_by_admin_key_id}, "
                f"approved by admin key {change.decided_by_admin_key_id}")
            payout = await _payout(client, ids["SUP_2025001"])
            say(f"payout {payout.payout_id} of SUP_2025001: amount "
                f"{money(payout.amount_minor)}, fee {money(payout.fee_minor)}, net "
                f"{money(payout.net_amount_minor)}, "
                f"{payout_pb2.PayoutState.Name(payout.state).removeprefix('PAYOUT_STATE_')}")
            for t in payout.transfers:
                state = payout_pb2.BankTransferState.Name(t.state)
                say(f"  bank transfer {t.sequence}: {money(t.amount_minor):>12} "
                    f"{state.removeprefix('BANK_TRANSFER_STATE_')}")
            say("balances (posted):")
            for ref, account_id in ids.items():
                balance = await client.balance(account_id)
                say(f"  {ref:<12} {money(balance.posted_minor):>13}")
            verified = await client.verify()
            say(f"VerifyLedger: {'ok' if verified.ok else 'FAILED'} "
                f"({verified.account_count} accounts, chain {'ok' if verified.chain_ok else 'BROKEN'})")
            return verified.ok


def _address(settings: Settings) -> str:
    """CLEARING_GRPC_ADDR if set, else the address `make run` wrote, else the default."""
    written = settings.data_dir / ADDR_FILE
    if settings.grpc_addr == Settings().grpc_addr and written.exists():
        return written.read_text().strip()
    return settings.grpc_addr


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clearing.dev.demo",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--addr", help="the server (default: CLEARING_GRPC_ADDR, else "
                                       "var/grpc.addr written by `make run`)")
    parser.add_argument("--platform", default=PLATFORM, help="the platform's name")
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    for name in ("admin.key", "admin-approver.key"):
        if not (settings.data_dir / name).exists():
            raise SystemExit(f"{settings.data_dir / name} is missing: start the server with "
                             "`make run` first (it writes the admin keys)")
    from clearing_client import ClearingRpcError

    try:
        from clearing.cli.client import credentials_for  # TLS as the `clearing` commands

        addr = args.addr or _address(settings)
        ok = asyncio.run(run(addr, settings.data_dir, platform_name=args.platform,
                             credentials=credentials_for(None, settings, addr)))
    except ClearingRpcError as err:
        raise SystemExit(f"error: {err}") from None
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
