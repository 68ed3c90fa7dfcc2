"""Bench cards: their 48-byte card images (docs/card_profile.md), kept in a
JSON wallet so a card's counters travel from tap to tap and terminal to terminal.

    w = Wallet.open("wallet.json")
    image = w.card(token="4980000000000001", issuer=1, product="credit", ring=ring)
    ... a sale returns the image with new counters ...
    w.store(token, new_image); w.save()
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from host_tools import jsonfile
from host_tools.errors import ToolError
from terminal import card

PRODUCTS = {"credit": card.PRODUCT_CREDIT, "prepaid": card.PRODUCT_PREPAID,
            "debit": card.PRODUCT_DEBIT}
PRODUCT_NAMES = {v: k for k, v in PRODUCTS.items()}


def issue_card(token: str, issuer: int, product: str, ring, expiry: str | None = None) -> bytes:
    """A new card image: counters zero (never online yet), sealed with the issuer's key."""
    if product not in PRODUCTS:
        raise ToolError(f"unknown product {product!r} (credit, prepaid or debit)")
    tok = token.encode()
    if not 1 <= len(tok) <= card.TOKEN_MAX:
        raise ToolError(f"token number must be 1..16 characters, got {len(tok)}")
    version, key = ring.issuer_key(issuer)
    rec = card.CardRecord()
    rec.set_token(tok)
    rec.issuer_id = issuer
    rec.product = PRODUCTS[product]
    rec.key_version = version
    if expiry:
        try:
            yyyymm = int(expiry.replace("-", "").replace("/", ""))
            rec.expiry_day = card.expiry_from_yyyymm(yyyymm)
        except (ValueError, TypeError):
            raise ToolError(f"bad expiry {expiry!r}: use YYYY-MM") from None
    else:
        three_years = dt.date.today() + dt.timedelta(days=3 * 365)
        rec.expiry_day = (three_years - dt.date(1970, 1, 1)).days
    rec.status = card.CARD_OK
    keys = card.IssuerKeys(1)
    keys.add(issuer, version, key)
    if not card.seal(rec, keys):
        raise ToolError(f"no key for issuer {issuer}")
    out = bytearray(card.RECORD_LEN)
    card.encode_into(rec, out)
    return bytes(out)


def describe(image: bytes) -> dict:
    rec = card.CardRecord()
    card.decode_into(image, rec)
    return {"token": rec.token_bytes().decode(errors="replace"), "issuer": rec.issuer_id,
            "product": PRODUCT_NAMES.get(rec.product, str(rec.product)), "atc": rec.atc,
            "last_online_atc": rec.last_online_atc, "offline_today": rec.offline_today,
            "offline_day": rec.offline_day, "offline_since_online": rec.offline_since_online,
            "offline_count": rec.offline_count}


class Wallet:
    def __init__(self, path: Path | None, data: dict):
        self.path = path
        self.data = data

    @classmethod
    def open(cls, path: str | Path | None) -> Wallet:
        if path is None:
            return cls(None, {"cards": {}})
        p = Path(path)
        return cls(p, jsonfile.load(p, "cards", "wallet"))

    def card(self, token: str, issuer: int, product: str, ring,
             expiry: str | None = None) -> bytes:
        entry = self.data["cards"].get(token)
        if entry is not None:
            image = bytes.fromhex(entry["image"])
            d = describe(image)
            if d["issuer"] != issuer or d["product"] != product:
                raise ToolError(f"wallet card {token} is issuer {d['issuer']} {d['product']}, "
                                f"not issuer {issuer} {product}")
            return image
        image = issue_card(token, issuer, product, ring, expiry)
        self.store(token, image)
        return image

    def store(self, token: str, image: bytes) -> None:
        self.data["cards"][token] = {"image": bytes(image).hex()}

    def save(self) -> None:
        if self.path is not None:
            jsonfile.save(self.path, self.data)


def card_memory(token: str, image: bytes):
    """The FeliCa card carrying `image`, for nfcpy emulation: an IDm derived from the
    token (stable, so the same card has the same IDm at every tap)."""
    import hashlib

    from host_tools.cardemu import CardMemory

    idm = b"\x02\xfe" + hashlib.sha256(token.encode()).digest()[:6]
    return CardMemory(idm, image)
