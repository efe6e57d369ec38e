"""What the admin and the client commands share: amounts typed in major units."""

from __future__ import annotations


def parse_minor(text: str, currency: str) -> int:
    """"12.34" in `currency` as an exact integer of minor units (clearing.money.parse_major)
    that fits an int64 field; ValueError saying what is wrong otherwise."""
    from clearing.limits import INT64_MAX
    from clearing.money import is_currency, parse_major

    if not is_currency(currency):
        raise ValueError(f"unknown currency {currency!r}")
    amount = parse_major(text, currency)
    if not -INT64_MAX - 1 <= amount <= INT64_MAX:
        raise ValueError(f"{text!r} is out of range")
    return amount


def minor(text: str, currency: str) -> int:
    """parse_minor; a bad amount or currency ends the command with its reason."""
    try:
        return parse_minor(text, currency)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
