"""Bench cards: their card images (docs/card_profile.md: the card's IDm, then
blocks 0-5), kept in a JSON wallet so a card's counters travel from tap to tap
and terminal to terminal.

    w = Wallet.open("wallet.json")
    image = w.card(token="4980000000000001", issuer=1, product="credit", ring=ring)
    ... a sale returns the image with new counters ...
    w.store(token, new_image); w.save()
    memory = card_memory(image)           # the FeliCa card that carries it (nfcpy)
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
STATUS_NAMES = {card.CARD_OK: "ok", card.CARD_UNVERIFIED: "unverified",
                card.CARD_MAC_BAD: "mac_bad", card.CARD_ISSUER_UNKNOWN: "issuer_unknown",
                card.CARD_UNREADABLE: "unreadable"}


def card_idm(token: str) -> bytes:
    """The IDm a bench card of `token` gets unless told otherwise: 02FE (an emulated
    NFC-F card's prefix, as nfcpy gives its own) and 6 bytes from the token, so
    the same token is the same card in every wallet and at every tap."""
    import hashlib

    return b"\x02\xfe" + hashlib.sha256(token.encode()).digest()[:6]


def issue_card(token: str, issuer: int, product: str, ring, expiry: str | None = None,
               idm: bytes | None = None) -> bytes:
    """A new card image (RECORD_LEN bytes: IDm, blocks 0-5): counters zero (never
    online yet) in slot A, sealed with the issuer's key over the card's IDm
    (`idm`, 8 bytes; default card_idm(token))."""
    if product not in PRODUCTS:
        raise ToolError(f"unknown product {product!r} (credit, prepaid or debit)")
    tok = token.encode()
    if not 1 <= len(tok) <= card.TOKEN_MAX:
        raise ToolError(f"token number must be 1..16 characters, got {len(tok)}")
    version, key = ring.issuer_key(issuer)
    idm = card_idm(token) if idm is None else bytes(idm)
    if len(idm) != card.IDM_LEN:
        raise ToolError(f"IDm must be {card.IDM_LEN} bytes, got {len(idm)}")
    rec = card.CardRecord()
    rec.set_token(tok)
    rec.set_idm(idm)
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


def describe(image: bytes, ring=None) -> dict:
    """The record's fields, from the slot decode_into chooses (without keys: the
    well-formed slot with the higher sequence); with a keyring, from the slot
    whose MAC verifies, and "status" says whether one does."""
    if len(image) != card.RECORD_LEN:
        raise ToolError(f"card image: {len(image)} bytes, expected {card.RECORD_LEN}")
    rec = card.CardRecord()
    card.decode_into(image, rec)
    status = rec.status
    if ring is not None and status == card.CARD_UNVERIFIED:
        try:
            version, key = ring.issuer_key(rec.issuer_id)
        except ToolError:
            version, key = -1, b""
        keys = card.IssuerKeys(1)
        if version == rec.key_version:
            keys.add(rec.issuer_id, version, key)
        status = card.verify(rec, keys)
    return {"token": rec.token_bytes().decode(errors="replace"), "issuer": rec.issuer_id,
            "idm": bytes(rec.idm).hex(), "slot": "AB"[rec.slot], "seq": rec.seq,
            "status": STATUS_NAMES.get(status, str(status)),
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
            if len(image) != card.RECORD_LEN:
                raise ToolError(f"wallet card {token}: a {len(image)}-byte image of an "
                                f"older card profile; issue it again (delete it from "
                                f"{self.path or 'the wallet'})")
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


def card_memory(image: bytes, kind: str = "lite-s"):
    """The FeliCa card carrying `image` (IDm, blocks 0-5), for nfcpy emulation:
    its IDm is the image's, so the MAC the issuer sealed over it verifies. kind:
    "lite-s" (the profile's card, system 88B4) or "standard" (a standard FeliCa
    card with its own system code, which the terminal does not take)."""
    from host_tools.cardemu import CardMemory

    if len(image) != card.RECORD_LEN:
        raise ToolError(f"card image: {len(image)} bytes, expected {card.RECORD_LEN}")
    return CardMemory(bytes(image[:card.IDM_LEN]), bytes(image[card.IDM_LEN:]), kind=kind)


def card_image(memory) -> bytes:
    """The image a card emulator's memory now holds (what a terminal wrote back)."""
    return bytes(memory.idm) + bytes(memory.image[:card.RECORD_LEN - card.IDM_LEN])
