"""Online authorisation: the rule that answers a terminal's online request, the
funds it moves and the approval codes it hands out.

    reason = auth_rule(card_row, issuer, amount, product, day)   # "approved" or why not
    code, cycle = next_code(db)                                  # "530217", never "000000"
"""

from __future__ import annotations

import math
import secrets
import sqlite3

from host_tools.centre.schema import meta
from host_tools.centre.values import MAX_AMOUNT, product_name
from host_tools.errors import ToolError

_CODE_SPACE = 999_999  # approval codes 000001..999999: "000000" means offline

# Online authorisation answers: reason text -> ISO 8583 response code.
RESPONSES = {
    "approved": "00", "unknown card": "14", "issuer mismatch": "05", "product mismatch": "05",
    "blocked": "43", "expired": "54", "insufficient funds": "51",
    "over credit limit": "61", "invalid amount": "13",
}


def auth_rule(card, issuer, amount, product, day: int) -> str:
    if not isinstance(amount, int) or isinstance(amount, bool) or not 1 <= amount <= MAX_AMOUNT:
        return "invalid amount"
    if card is None:
        return "unknown card"
    if card["issuer"] != issuer:
        return "issuer mismatch"
    try:
        if product_name(product) != card["product"]:
            return "product mismatch"
    except ToolError:
        return "product mismatch"
    if card["status"] == "blocked":
        return "blocked"
    if card["expiry"] is not None and day > card["expiry"]:
        return "expired"
    if card["product"] != "credit":
        return "insufficient funds" if amount > card["balance"] else "approved"
    used = card["credit_used"] + amount
    return "over credit limit" if used > card["credit_limit"] else "approved"


def use_funds(db: sqlite3.Connection, token: str, product: str, amount: int) -> None:
    col = "credit_used = credit_used + ?" if product == "credit" else "balance = balance - ?"
    db.execute(f"UPDATE cards SET {col} WHERE token = ?", (amount, token))


def next_code(db: sqlite3.Connection) -> tuple[str, int]:
    # n-th approval -> (a*n + b) mod 999999 + 1 with gcd(a, 999999) = 1: a
    # permutation, so codes never repeat within a cycle of 999,999 approvals
    # and never read 000000; a and b are drawn when the database is made.
    a, b = _code_params(db)
    n = int(meta(db, "codes_issued") or 0)
    db.execute("INSERT OR REPLACE INTO meta VALUES ('codes_issued', ?)", (n + 1,))
    return "%06d" % ((a * n + b) % _CODE_SPACE + 1), n // _CODE_SPACE


def _code_params(db: sqlite3.Connection) -> tuple[int, int]:
    a = meta(db, "code_a")
    if a is None:
        a = secrets.randbelow(_CODE_SPACE - 2) + 2
        while math.gcd(a, _CODE_SPACE) != 1:
            a += 1
        db.execute("INSERT INTO meta VALUES ('code_a', ?), ('code_b', ?)",
                   (a, secrets.randbelow(_CODE_SPACE)))
    return int(a), int(meta(db, "code_b"))
