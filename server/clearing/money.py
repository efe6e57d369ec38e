"""Money: integer minor units, ISO 4217 currencies, and the one rounding function.

There are no floats here. An amount is an `int` count of minor units of one currency
(fen for CNY, cents for USD, yen for JPY). Ratios are basis points (10000 = 100%).
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from clearing.errors import invariant

BPS_ONE = 10_000

# ISO 4217 codes in use, with their minor-unit exponent. Codes not listed are rejected.
_EXPONENTS: dict[str, int] = {
    **dict.fromkeys(
        "AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BMD BND BOB BRL BSD BTN "
        "BWP BYN BZD CAD CDF CHF CNY COP CRC CUP CVE CZK DKK DOP DZD EGP ERN ETB EUR FJD "
        "FKP GBP GEL GHS GIP GMD GTQ GYD HKD HNL HTG HUF IDR ILS INR IRR JMD KES KGS KHR "
        "KPW KYD KZT LAK LBP LKR LRD LSL MAD MDL MKD MMK MNT MOP MRU MUR MVR MWK MXN MYR "
        "MZN NAD NGN NIO NOK NPR NZD PAB PEN PGK PHP PKR PLN QAR RON RSD RUB SAR SBD SCR "
        "SDG SEK SGD SHP SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT TOP TRY TTD TWD TZS "
        "UAH USD UYU UZS VES WST XCD YER ZAR ZMW ZWL".split(), 2),
    **dict.fromkeys(
        "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX VND VUV XAF XOF XPF".split(), 0),
    **dict.fromkeys("BHD IQD JOD KWD LYD OMR TND".split(), 3),
}


def is_currency(code: str) -> bool:
    """Whether `code` is a known ISO 4217 currency (upper case, three letters)."""
    return code in _EXPONENTS


def exponent(code: str) -> int:
    """Minor-unit exponent of a known currency (2 for CNY: 1 yuan = 100 fen)."""
    return _EXPONENTS[code]


def parse_major(text: str, currency_code: str) -> int:
    """Parse a decimal amount in major units ("12.34") into minor units, exactly.

    Raises ValueError if the text is not a number or has more decimals than the currency.
    """
    try:
        value = Decimal(text.strip())
    except InvalidOperation as exc:
        raise ValueError(f"not a number: {text!r}") from exc
    if not value.is_finite():  # NaN, sNaN (scaleb would raise on it), Infinity
        raise ValueError(f"not a finite number: {text!r}")
    scaled = value.scaleb(exponent(currency_code))
    if scaled != scaled.to_integral_value():
        raise ValueError(f"{text!r} has more decimals than {currency_code} allows")
    return int(scaled)


def format_minor(amount_minor: int, currency_code: str) -> str:
    """Format minor units as a major-unit decimal string: 1470 CNY -> "14.70"."""
    exp = exponent(currency_code)
    sign = "-" if amount_minor < 0 else ""
    whole, frac = divmod(abs(amount_minor), 10**exp) if exp else (abs(amount_minor), 0)
    return f"{sign}{whole}.{frac:0{exp}d}" if exp else f"{sign}{whole}"


def allocate(amount_minor: int, weights: list[int]) -> list[int]:
    """Split `amount_minor` in proportion to `weights`; the parts sum exactly to the amount.

    The one rounding rule of the project: each part is first floored
    (amount * weight // total); the units left over are then handed out one each, to the
    parts with the largest remainders, ties going to the earlier part (list order). So the
    same inputs always give the same parts, and no part is ever negative.
    """
    invariant(amount_minor >= 0, "allocate: negative amount")
    invariant(all(w >= 0 for w in weights), "allocate: negative weight")
    total = sum(weights)
    invariant(total > 0, "allocate: weights sum to zero")
    floors = [amount_minor * w // total for w in weights]
    leftover = amount_minor - sum(floors)
    if leftover:
        remainders = [(amount_minor * w) % total for w in weights]
        order = sorted(range(len(weights)), key=lambda i: (-remainders[i], i))
        for i in order[:leftover]:
            floors[i] += 1
    invariant(sum(floors) == amount_minor, "allocate: parts do not sum to the amount")
    return floors


def bps_of(amount_minor: int, ratio_bps: int) -> int:
    """`ratio_bps` basis points of an amount, floored (the rounding rule's first step)."""
    return amount_minor * ratio_bps // BPS_ONE
