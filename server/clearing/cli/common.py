"""What the admin and the client commands share: amounts typed in major units."""

from __future__ import annotations


def minor(text: str, currency: str) -> int:
    """"12.34" in `currency` as an exact integer of minor units; a bad amount or currency
    ends the command with its reason."""
    from clearing.money import is_currency, parse_major

    if not is_currency(currency):
        raise SystemExit(f"unknown currency {currency!r}")
    try:
        return parse_major(text, currency)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
