"""The simulation's cards: the one place it uses the card profile's API.

    image = card_image(card, keys, world.start)   # a world.Card as issued, 104 bytes
    rec = decode_card(image)                       # what its holder (or thief) can read

`keys` is anything with issuer_key(issuer) -> (version, key): a Keyring, or the
fast fleet's DeploymentKeys.
"""

from __future__ import annotations

import datetime as dt

from host_tools.wallet import PRODUCTS, card_idm
from terminal import card as C

# Issuer key tables by (issuer, version, key): made once, not per card (a large
# world issues 100,000 cards; making a key's table costs more than sealing).
_TABLES: dict[tuple[int, int, bytes], C.IssuerKeys] = {}


def _table(issuer: int, keys) -> tuple[int, C.IssuerKeys]:
    version, key = keys.issuer_key(issuer)
    ident = (issuer, version, bytes(key))
    table = _TABLES.get(ident)
    if table is None:
        table = _TABLES[ident] = C.IssuerKeys(1)
        table.add(issuer, version, key)
    return version, table


def card_image(card, keys, start: dt.date) -> bytes:
    """The card's image as the world starts: issued as host_tools.wallet.issue_card
    issues it (its IDm from the token, counters zero, sealed in slot A), then its
    counters set to its online history and sealed in the other slot; a forged card's
    MACs broken. (tests/test_simulate.py pins it to issue_card's image.)"""
    version, table = _table(card.issuer, keys)
    rec = C.CardRecord()
    rec.set_token(card.token.encode())
    rec.set_idm(card_idm(card.token))
    rec.issuer_id = card.issuer
    rec.product = PRODUCTS[card.product]
    rec.key_version = version
    rec.expiry_day = C.expiry_from_yyyymm((start.year + 3) * 100 + start.month)
    rec.status = C.CARD_OK
    out = bytearray(C.RECORD_LEN)
    C.seal(rec, table)
    C.encode_into(rec, out)
    if card.online_atc:  # its next state: the other slot
        rec.atc = rec.last_online_atc = card.online_atc
        C.seal(rec, table)
        C.encode_into(rec, out)
    if card.forged:  # made up: neither slot's MAC verifies
        out[C.slot_offset(1) - 1] ^= 0x5A
        out[C.RECORD_LEN - 1] ^= 0x5A
    return bytes(out)


def decode_card(image: bytes) -> C.CardRecord:
    """The card's fields and counters as the card holds them (no MAC check)."""
    rec = C.CardRecord()
    C.decode_into(image, rec)
    return rec
