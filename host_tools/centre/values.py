"""The centre's small values: business days, token numbers, products, amounts.

    as_day("2026-11-21")          # 20413: days since 1970-01-01
    day_of(unix_s, cutover_min)   # the business day of a Unix time
    token_bytes("4980000000000001"), masked(raw), product_name(2)  # 'prepaid'
"""

from __future__ import annotations

import datetime as dt
import time as _time

from host_tools.errors import ToolError
from terminal import journal as jr

PRODUCTS = ("credit", "prepaid", "debit")  # index + 1 = terminal.card.PRODUCT_*
MAX_AMOUNT = 100_000_000  # as the terminal's decision: amounts are 1..100,000,000 yen
_EPOCH = dt.date(1970, 1, 1)


def day_of(unix_s: int, cutover_min: int = 0) -> int:
    """Business day (days since 1970-01-01) of a Unix time; the day starts cutover_min
    minutes after 00:00 UTC, as terminal.velocity.business_day."""
    return (unix_s - cutover_min * 60) // 86400


def as_day(value: int | str | dt.date) -> int:
    """A day number from a day number, a date or 'YYYY-MM-DD'."""
    if isinstance(value, dt.datetime):
        value = value.date()
    if isinstance(value, dt.date):
        return (value - _EPOCH).days
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            return (dt.date.fromisoformat(value) - _EPOCH).days
        except ValueError:
            pass
    raise ToolError(f"bad day {value!r}: use YYYY-MM-DD")


def day_text(day: int) -> str:
    return (_EPOCH + dt.timedelta(days=day)).isoformat()


def token_bytes(token: str | bytes) -> bytes:
    """The token number as the card carries it: 1-16 ASCII letters or digits."""
    raw = token.encode() if isinstance(token, str) else bytes(token)
    if not (1 <= len(raw) <= 16 and raw.isascii() and raw.isalnum()):
        raise ToolError(f"token {token!r} must be 1-16 letters or digits")
    return raw


def masked(token: bytes) -> str:
    out = bytearray(8)
    jr.mask_token_into(token, out)
    return out.decode("ascii", "replace")


def product_name(product: str | int) -> str:
    """'credit' / 'prepaid' / 'debit', from the name or terminal.card.PRODUCT_* code."""
    if isinstance(product, int) and 1 <= product <= len(PRODUCTS):
        return PRODUCTS[product - 1]
    if isinstance(product, str) and product.lower() in PRODUCTS:
        return product.lower()
    raise ToolError(f"unknown product {product!r} (have: {', '.join(PRODUCTS)})")


def check_amount(value, what: str = "amount", allow_zero: bool = False) -> int:
    low = 0 if allow_zero else 1
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= MAX_AMOUNT:
        raise ToolError(f"{what} {value!r} must be a whole number of yen, "
                        f"{low}..{MAX_AMOUNT:,}")
    return value


def now_or(now: int | None) -> int:
    return int(_time.time()) if now is None else now


def check_terminal_id(value) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 0xFFFFFFFF:
        raise ToolError(f"terminal id {value!r} must be 0..0xFFFFFFFF")
    return value
