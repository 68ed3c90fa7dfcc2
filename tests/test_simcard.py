"""The simulation's cards (host_tools/simcard.py): the image a world's card starts
with is the one host_tools.wallet.issue_card issues, counters moved to the card's
online history by the firmware's own seal."""

import datetime as dt

import pytest

from host_tools import scenario
from host_tools.keyring import Keyring
from host_tools.simcard import card_image, decode_card
from host_tools.wallet import issue_card
from host_tools.world import generate, resize
from terminal import card as C


@pytest.fixture(scope="module")
def ring(tmp_path_factory):
    return Keyring.open(tmp_path_factory.mktemp("ring") / "keyring.json")


def _by_issue_card(card, ring, start):
    # the long way: issue, decode, move the counters, seal with a fresh key table
    image = issue_card(card.token, card.issuer, card.product, ring,
                       expiry=f"{start.year + 3}-{start.month:02d}")
    if not card.online_atc and not card.forged:
        return image
    rec = C.CardRecord()
    C.decode_into(image, rec)
    out = bytearray(image)
    if card.online_atc:
        rec.atc = rec.last_online_atc = card.online_atc
        keys = C.IssuerKeys(1)
        keys.add(card.issuer, *ring.issuer_key(card.issuer))
        C.seal(rec, keys)
        C.encode_into(rec, out)
    if card.forged:
        out[C.slot_offset(1) - 1] ^= 0x5A
        out[C.RECORD_LEN - 1] ^= 0x5A
    return bytes(out)


@pytest.mark.parametrize("name", scenario.names())
def test_every_card_of_a_world_is_issued_as_the_wallet_issues_it(ring, name):
    world = generate(resize(scenario.load(name), shoppers=30), 2)
    kinds = set()
    for card in world.cards.values():
        assert card_image(card, ring, world.start) == _by_issue_card(card, ring, world.start)
        kinds.add((bool(card.online_atc), card.forged))
    assert (True, False) in kinds and (False, False) in kinds  # established and new cards


def test_a_card_reads_back_with_its_online_history(ring):
    world = generate(resize(scenario.load("incident"), shoppers=5), 1)
    card = next(c for c in world.cards.values() if c.online_atc)
    rec = decode_card(card_image(card, ring, dt.date(2026, 11, 2)))
    assert (rec.atc, rec.last_online_atc, rec.issuer_id) == (card.online_atc, card.online_atc,
                                                              card.issuer)
