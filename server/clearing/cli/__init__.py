"""The `clearing` command: runs the server, administers it, and is a gRPC client too.

    clearing serve [--dev] [--workers N]      run the server
    clearing migrate                          apply schema migrations
    clearing admin init [--out FILE]          an admin key (on the server host, straight in
                                              the database; `make run` writes var/admin.key)
    clearing admin list | revoke ID           the admin keys (on the database too)
  through PlatformService, with an admin key (--admin-key-file, default var/admin.key):
    clearing platform create NAME             create a platform; prints its API key once
    clearing platform list                    every platform
    clearing keys create PLATFORM --roles R   another key for a platform
    clearing keys create PLATFORM --party-account ID [--party-account ID ...]
                                              a party key, reading only those accounts'
                                              splits, statements, vouchers, payouts
    clearing keys list --platform P           its keys: id, prefix, roles, created, last
                                              used, revoked
    clearing keys revoke KEY_PREFIX_OR_ID     refused by every server within a second
    clearing accounts create|list|get|freeze|unfreeze|close ...
    clearing balance ACCOUNT_ID               balances of an account
    clearing entries ACCOUNT_ID               its statement
    clearing transfer --from A --to B --amount 12.34 [--currency CNY] [--pending]
    clearing post PENDING_ID --amount X | clearing void PENDING_ID
    clearing verify                           the key's platform: trial balance and chain
    clearing verify --all                     the whole system, from the database (operator
                                              of the core); exits 1 if anything fails
    clearing rules publish FILE.yaml          file a rule-set version (operator key)
    clearing rules activate NAME VERSION      activate it (another key, approver role:
                                              --key-file var/demo-approver.key)
    clearing rules list|get ...               rule-set versions
    clearing split preview|create ORDER_ID --amount 850000.00 --channel C --rule-set R
                   [--tag T] [--attr K=V] [--party ROLE=REF] | --json ORDER.json
                                              split an order (gateway), or a dry run
    clearing split get|release|cancel|refund ORDER_ID ...
                                              a split; post held legs (--event E or
                                              --fraction-bps N), void them, refund
    clearing split batch FILE [--failures PATH]
                                              the orders of a CSV or JSON-lines file, as
                                              SplitBatch calls (re-runs book nothing twice)
    clearing platform payout-config NAME ...  a platform's payout fee, limits and review
                                              threshold per currency (--show to read); a
                                              fee change waits for another admin key:
    clearing platform approve-change|reject-change CHANGE_ID
    clearing payouts bind|request|get|list|approve|reject ...
                                              PayoutService (approve/reject: approver key)
    clearing calendar set DAY --holiday|--workday [--note N]
                                              a business-day exception (payout schedules)
    clearing calendar unset DAY | list [--from DAY] [--to DAY]
    clearing recon import FILE --channel C --date D [--format canonical|wechat]
                                              import a statement and reconcile it (operator)
    clearing recon runs [--channel C] [--date D] | discrepancies [--run ID] [--class X]
    clearing recon settle RUN                 book a statement's money (operator)
    clearing recon propose DISCREPANCY --action split_now|refund|write_off|accept --note N
                   [--amount 12.34] [--order order.json]   propose a resolution (operator)
    clearing recon approve|reject RESOLUTION [--note N]    review it (another, approver key)
    clearing recon resolution RESOLUTION      a resolution with its every step
    clearing recon import-payouts FILE --date D [--bank BANKSIM]
                                              import a bank's payout result file (operator)
    clearing recon bank-file --date D [--platform NAME] [--out FILE]
                                              the bank simulator's result file of a day
    clearing vouchers get ID [--kind split|action|payout] -o FILE.pdf
                                              a voucher's PDF (issued on the first request)
    clearing vouchers verify ID | --file FILE.pdf
                                              check it against the ledger and the hash
                                              chain (operator key); exits 1 if not valid
    clearing risk publish FILE | activate VERSION | policy [VERSION]
                                              the risk policy (JSON RiskPolicy; maker-checker)
    clearing risk events [--state S] [--rule R] [--account ID] | event ID
    clearing risk resolve ID --decision release|reject --note N
                                              propose, or confirm another key's (approver)
    clearing reports NAME --from D --to D|--day D|--week D|--month M [--format csv|xlsx] -o FILE
                                              export a report (operator or approver)
    clearing audit list [--resource R] [--key-id N] [--method M] [--since T] [--until T]
                                              the platform's audit trail (operator key;
                                              --platform NAME: from the database)
    clearing audit verify [--platform NAME]   its hash chains, from the database; exits 1
                                              if one is broken
    clearing console [--listen HOST:PORT]     the back-office web console (sign in with an
                                              API key; CLEARING_CONSOLE_ADDR, 127.0.0.1:8080)
    clearing pods list | move PLATFORM --to POD
                                              PostgreSQL pods (CLEARING_PODS): move a
                                              platform's ledger (on the databases directly)

Client commands talk to CLEARING_GRPC_ADDR with the key in --key, CLEARING_API_KEY or
--key-file (default: var/demo.key, written by `make run`), over TLS with --tls-ca (and
--tls-cert/--tls-key for mutual TLS; default: var/tls/ from `make run`). Amounts are in major units
("12.34"), converted exactly to minor units.
"""

from __future__ import annotations

import argparse

from clearing.cli import (admin, audit, client, console, payout_config, pods, recon, reports,
                          risk, serve, split, vouchers)
from clearing.config import Settings

# The commands live in these modules: serve (serve), admin (migrate, admin init and
# verify --all on the database directly; platform, keys, payout-config and calendar through
# PlatformService with an admin key), client, recon and vouchers (calls to a server through
# the clearing_client SDK).


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="clearing", description=__doc__,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = top.add_subparsers(dest="command", required=True)
    serve.add_parsers(sub)
    admin.add_parsers(sub)
    client.add_parsers(sub)
    client.add_payouts_parser(sub)
    payout_config.add_calendar_parser(sub)
    recon.add_parser(sub)
    vouchers.add_parser(sub)
    risk.add_parser(sub)
    reports.add_parser(sub)
    split.add_parser(sub)
    audit.add_parser(sub)
    console.add_parser(sub)
    pods.add_parser(sub)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return args.func(args, Settings.from_env())
