"""`clearing vouchers get|verify`: ReportService's vouchers through the clearing_client SDK
(see `clearing.cli.client` for the key, the address and the output).

    clearing vouchers get ID [--kind voucher|split|action|payout] -o FILE.pdf
        writes the PDF to FILE.pdf (issuing the voucher on the first request for a split,
        action or payout) and prints the voucher's record (`--field` as elsewhere)
    clearing vouchers verify ID | --file FILE.pdf
        prints the verification; exits 1 unless the voucher is valid
"""

from __future__ import annotations

import sys
from pathlib import Path

from clearing.cli.client import _client_options, _run
from clearing.config import Settings

# --kind: which id the command names (GetVoucherRequest's fields).
KINDS = {"voucher": "voucher_id", "split": "split_id", "action": "split_action_id",
         "payout": "payout_id"}


def cmd_get(args, settings: Settings) -> int:
    out = Path(args.output)

    async def call(client):
        response = await client.get_voucher(**{KINDS[args.kind]: args.id})
        out.write_bytes(response.pdf)
        print(f"wrote {out} ({len(response.pdf)} bytes)", file=sys.stderr)
        return response.voucher

    return _run(args, settings, call)


def cmd_verify(args, settings: Settings) -> int:
    if (args.id is None) == (args.file is None):
        raise SystemExit("vouchers verify: give a voucher id or --file, not both")
    pdf = Path(args.file).read_bytes() if args.file else b""
    valid = []

    async def call(client):
        response = await client.verify_voucher(voucher_id=args.id or 0, pdf=pdf)
        valid.append(response.valid)
        return response

    status = _run(args, settings, call)
    return status or (0 if valid and valid[0] else 1)


def add_parser(sub) -> None:
    """vouchers get|verify."""
    vouchers = sub.add_parser("vouchers", help="vouchers of splits and payouts (PDF)"
                              ).add_subparsers(dest="action", required=True)
    p = vouchers.add_parser("get", help="a voucher's PDF, issued on the first request")
    p.add_argument("id", type=int, help="the id named by --kind")
    p.add_argument("--kind", choices=sorted(KINDS), default="voucher",
                   help="what ID is: a voucher's id (default), a split's, a split action's"
                        " or a payout's")
    p.add_argument("-o", "--output", required=True, help="the PDF file to write")
    p.set_defaults(func=cmd_get)
    p = vouchers.add_parser("verify", help="check a voucher against the ledger and the chain"
                                           " (operator or approver key); exit 1 if not valid")
    p.add_argument("id", type=int, nargs="?", help="the voucher's id")
    p.add_argument("--file", help="a voucher PDF instead of an id")
    p.set_defaults(func=cmd_verify)
    for sp in vouchers.choices.values():
        _client_options(sp)
