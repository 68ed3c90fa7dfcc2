"""The card source (drivers/cardsource.py) over a reader whose card keeps Lite-S
rules: it polls for the profile's system, refuses a card of another system,
reads the image in two commands of at most 4 blocks, writes the next slot one
block per command; a card pulled away after any block write leaves a card the
next tap reads as it was, and the sale's offline approval is declined."""

import pytest

from drivers.cardsource import OTHER_SYSTEM, FelicaCards
from terminal import card as C
from terminal.errors import NfcTimeout

KEY = bytes(range(16))
IDM = bytes.fromhex("02fe0a0b0c0d0e0f")
PMM = bytes.fromhex("00f1000000014300")  # a FeliCa Lite-S (RC-S966)


def keys():
    k = C.IssuerKeys(2)
    k.add(1, 1, KEY)
    return k


def issued(idm=IDM):
    rec = C.CardRecord()
    rec.set_token(b"4980000000000001")
    rec.set_idm(idm)
    rec.issuer_id, rec.product, rec.key_version, rec.expiry_day = 1, C.PRODUCT_CREDIT, 1, 30000
    assert C.seal(rec, keys())
    img = bytearray(C.RECORD_LEN)
    C.encode_into(rec, img)
    return img


class LiteS:
    """Just enough of a FeliCa Lite-S behind a reader: polling by system code,
    Read (1..4 blocks) and Write (1 block) Without Encryption on blocks 0-13."""

    def __init__(self, image, system_code=C.SYSTEM_CODE):
        self.idm = bytes(image[:8])
        self.blocks = bytearray(image[8:]) + bytearray(16 * 8)
        self.system_code = system_code
        self.present = True
        self.writes_left = -1  # after this many block writes the card leaves the field
        self.log = []

    def image(self):
        return bytes(self.idm) + bytes(self.blocks[:C.RECORD_LEN - 8])

    def start(self):
        self.log.append(("start",))

    reset = start

    def sense_ttf(self, system_code=0xFFFF, request_code=0, brty=212, timeout_ms=0):
        if not self.present or system_code not in (0xFFFF, self.system_code):
            return None
        self.log.append(("poll", system_code, request_code))
        rd = self.system_code.to_bytes(2, "big") if request_code == 1 else b""
        return memoryview(b"\x01" + self.idm + PMM + rd)

    def exchange(self, frame, timeout_ms, rsp_len=0):
        f = bytes(frame[:frame[0]])
        if not self.present:
            raise NfcTimeout("card did not answer")
        assert f[2:10] == self.idm and f[10] == 1
        n = f[13]
        blocks = [f[15 + 2 * i] for i in range(n)]
        self.log.append((f[1], (f[11] | f[12] << 8), tuple(blocks)))
        if f[1] == 0x06:
            if n > 4:
                return memoryview(bytes([12, 7]) + self.idm + b"\xff\xa2")
            data = b"".join(bytes(self.blocks[16 * b:16 * b + 16]) for b in blocks)
            return memoryview(bytes([13 + len(data), 7]) + self.idm + b"\x00\x00"
                              + bytes([n]) + data)
        if n != 1:
            return memoryview(bytes([12, 9]) + self.idm + b"\xff\xa2")
        if self.writes_left == 0:
            self.present = False
            raise NfcTimeout("card left")
        b = blocks[0]
        self.blocks[16 * b:16 * b + 16] = f[14 + 2 * n:14 + 2 * n + 16]
        if self.writes_left > 0:
            self.writes_left -= 1
        return memoryview(bytes([12, 9]) + self.idm + b"\x00\x00")

    def rf_off(self):
        self.log.append(("off",))


def test_reads_two_commands_through_the_read_only_service():
    card = LiteS(issued())
    cards = FelicaCards(card)
    raw = bytearray(C.RECORD_LEN)
    assert cards.read(raw, 100)
    assert bytes(raw) == card.image()
    assert card.log == [("start",), ("poll", C.SYSTEM_CODE, 1), (6, C.SERVICE_RO, (0, 1, 2, 3)),
                        (6, C.SERVICE_RO, (4, 5))]


def test_a_card_of_another_system_is_not_taken():
    card = LiteS(issued(), system_code=0x0003)
    cards = FelicaCards(card)
    assert not cards.read(bytearray(C.RECORD_LEN), 30)  # it never answers a 88B4 polling
    liar = LiteS(issued())
    liar.system_code = 0x0003  # answers every polling, says system 0003

    def sense(system_code=0xFFFF, request_code=0, brty=212, timeout_ms=0):
        return memoryview(b"\x01" + liar.idm + PMM + b"\x00\x03")

    liar.sense_ttf = sense
    cards = FelicaCards(liar)
    assert not cards.read(bytearray(C.RECORD_LEN), 30)
    assert cards.last_error == OTHER_SYSTEM and cards.other_system > 0
    assert not [e for e in liar.log if e[0] == 6]  # nothing read from it


@pytest.mark.parametrize("cut", [0, 1, 2])
def test_a_card_pulled_away_after_each_block_write(cut):
    """Write the next slot; the card leaves after `cut` block writes (2: none missing)."""
    card = LiteS(issued())
    cards = FelicaCards(card)
    raw = bytearray(C.RECORD_LEN)
    assert cards.read(raw, 100)
    rec = C.CardRecord()
    assert C.read_into(raw, rec, keys()) == C.CARD_OK and rec.slot == 0
    rec.atc += 1
    rec.offline_today += 500
    assert C.seal(rec, keys())
    C.encode_into(rec, raw)
    card.writes_left = cut if cut < 2 else -1
    ok = cards.write(raw, rec.slot)
    assert ok == (cut == 2)
    writes = [e for e in card.log if e[0] == 8]
    assert all(len(e[2]) == 1 and e[1] == C.SERVICE_RW for e in writes)  # one block each
    after = C.CardRecord()
    assert C.read_into(card.image(), after, keys()) == C.CARD_OK
    if cut == 2:
        assert (after.slot, after.atc, after.offline_today) == (1, 1, 500)
    else:
        assert (after.slot, after.atc, after.offline_today) == (0, 0, 0)
