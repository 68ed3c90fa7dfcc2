"""The simulation's cards: the one place it uses the card profile's API.

    image = card_image(card, keys, world.start)   # a world.Card as issued, 104 bytes
    rec = decode_card(image)                       # what its holder (or thief) can read

`keys` is anything with issuer_key(issuer) -> (version, key): a Keyring, or the
fast fleet's DeploymentKeys.
"""

from __future__ import annotations

import datetime as dt

from host_tools.wallet import issue_card
from terminal import card as C


def card_image(card, keys, start: dt.date) -> bytes:
    """The card's image as the world starts: issued by host_tools.wallet (its IDm
    from the token), counters set to its online history and sealed in the other
    slot; a forged card's MACs broken."""
    expiry = f"{start.year + 3}-{start.month:02d}"
    image = issue_card(card.token, card.issuer, card.product, keys, expiry=expiry)
    if not card.online_atc and not card.forged:
        return image
    rec = C.CardRecord()
    C.decode_into(image, rec)
    out = bytearray(image)
    if card.online_atc:  # its next state: the other slot
        rec.atc = rec.last_online_atc = card.online_atc
        issuer_keys = C.IssuerKeys(1)
        version, key = keys.issuer_key(card.issuer)
        issuer_keys.add(card.issuer, version, key)
        C.seal(rec, issuer_keys)
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
