"""Card record (firmware/terminal/card.py): layout, decoding, the issuer's AES-CMAC,
the two counter slots and what a cut at each block write leaves.

The CMAC is checked against RFC 4493's vectors and against the `cryptography`
package's CMAC for every length; the record bytes and MAC are pinned by a
vector and produced identically by the unix port running the mpy-cross output.
"""

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.cmac import CMAC
from hypothesis import given, settings
from hypothesis import strategies as st

from terminal import card as C

FIRMWARE = Path(__file__).resolve().parent.parent / "firmware"
RFC_KEY = bytes.fromhex("2b7e151628aed2a6abf7158809cf4f3c")
RFC_MSG = bytes.fromhex(
    "6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51"
    "30c81c46a35ce411e5fbc1191a0a52eff69f2445df4f9b17ad2b417be66c3710"
)
ISSUER_KEY = bytes(range(0x10, 0x20))




def cmac(key, data):
    mk = C.MacKey(key)
    out = bytearray(16)
    C.cmac_into(mk, data, len(data), out, bytearray(16))
    return bytes(out)


@pytest.mark.parametrize("n,tag", [
    (0, "bb1d6929e95937287fa37d129b756746"),
    (16, "070a16b46b4d4144f79bdd9dd04a287c"),
    (40, "dfa66747de9ae63030ca32611497c827"),
    (64, "51f0bebf7e3b9d92fc49741779363cfe"),
])
def test_cmac_rfc4493_vectors(n, tag):
    assert cmac(RFC_KEY, RFC_MSG[:n]).hex() == tag


def test_cmac_subkeys_rfc4493():
    mk = C.MacKey(RFC_KEY)
    assert bytes(mk.k1).hex() == "fbeed618357133667c85e08f7236a8de"
    assert bytes(mk.k2).hex() == "f7ddac306ae266ccf90bc11ee46d513b"


@settings(max_examples=200, deadline=None)
@given(key=st.binary(min_size=16, max_size=16), data=st.binary(max_size=80))
def test_cmac_matches_cryptography_for_any_length(key, data):
    ref = CMAC(algorithms.AES(key))
    ref.update(data)
    assert cmac(key, data) == ref.finalize()


CHAIN_CODE = r"""
from terminal import card as C
k = C.IssuerKeys(2)
k.add(1, 1, bytes(range(0x10, 0x20)))
mk = k._keys[0]
out = bytearray(16)
for i in range(6):
    msg = bytes((i * 7 + j) & 0xFF for j in range(64))
    k._enc[0:64] = msg
    a = bytes(k._mac64(mk))
    C.cmac_into(mk, msg, 64, out, bytearray(16))
    b = bytes(out)
    C.cmac_into(mk, msg[:5 + i], 5 + i, out, bytearray(16))
    print(a.hex(), b.hex(), bytes(out).hex())
"""


def _chain_reference():
    key = bytes(range(0x10, 0x20))
    lines = []
    for i in range(6):
        msg = bytes((i * 7 + j) & 0xFF for j in range(64))
        tags = []
        for m in (msg, msg, msg[:5 + i]):
            ref = CMAC(algorithms.AES(key))
            ref.update(m)
            tags.append(ref.finalize().hex())
        lines.append(" ".join(tags))
    return lines


def test_cbc_chain_carried_between_macs_under_one_key(mpy, mpydir):
    # The key's AES runs in CBC mode and chains from call to call: every MAC, the
    # 64-byte one-call form and the general one interleaved, must still be CMAC's.
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        exec(CHAIN_CODE, {})
    want = _chain_reference()
    assert buf.getvalue().split("\n")[:6] == want
    out = mpy("import sys\nsys.path.insert(0, %r)\n" % str(mpydir) + CHAIN_CODE, heap="64k")
    assert out.strip().split("\n") == want


IDM = bytes.fromhex("02fe001122334455")


def sample(**kw):
    rec = C.CardRecord()
    rec.set_token(kw.pop("token", b"4980123412341234"))
    rec.set_idm(kw.pop("idm", IDM))
    rec.issuer_id = 0x0101
    rec.product = C.PRODUCT_CREDIT
    rec.key_version = 1
    rec.expiry_day = C.expiry_from_yyyymm(202812)
    rec.atc = 0x0123
    rec.last_online_atc = 0x0120
    rec.offline_day = 20413
    rec.offline_count = 3
    rec.offline_today = 9800
    rec.offline_since_online = 25400
    for k, v in kw.items():
        setattr(rec, k, v)
    return rec


def keys():
    k = C.IssuerKeys(4)
    k.add(0x0101, 1, ISSUER_KEY)
    return k


# The record of sample() sealed once under ISSUER_KEY (slot A, sequence 1): a
# shared vector for the NFC driver and host tools (card emulator) to reproduce
# byte for byte.
VECTOR = (
    "02fe001122334455"  # IDm (from the polling, not from a block)
    "34393830313233343132333431323334"  # block 0: token
    "0210010101012d540000000000000000"  # block 1: version 2, len, issuer, product, key, expiry
    "010023012001bd4f0300482600003863"  # block 2: slot A seq 1, ATC .. amounts
    "0000000000000000c93b16dc32c2f650"  # block 3: slot A reserved, MAC
    "00000000000000000000000000000000"  # block 4: slot B, never written
    "00000000000000000000000000000000"  # block 5
)
SLOT_A, SLOT_B = C.slot_offset(0), C.slot_offset(1)


def sealed_sample_bytes(**kw):
    rec = sample(**kw)
    assert C.seal(rec, keys())
    buf = bytearray(C.RECORD_LEN)
    C.encode_into(rec, buf)
    return bytes(buf)


def read(raw, k=None):
    rec = C.CardRecord()
    return C.read_into(raw, rec, k or keys()), rec


def next_state(raw, **changes):
    """What a terminal writes after reading raw: the counters changed, sealed into
    the other slot; returns the new image and the slot written."""
    status, rec = read(raw)
    assert status == C.CARD_OK
    for f, v in changes.items():
        setattr(rec, f, v)
    assert C.seal(rec, keys())
    out = bytearray(raw)
    C.encode_into(rec, out)
    return bytes(out), rec.slot


def test_layout_is_idm_and_six_felica_blocks_and_matches_vector():
    raw = sealed_sample_bytes()
    assert C.RECORD_LEN == C.IDM_LEN + C.BLOCK_SIZE * C.BLOCKS == 104
    assert (SLOT_A, SLOT_B) == (8 + 16 * C.SLOT_FIRST_BLOCK, 8 + 16 * (C.SLOT_FIRST_BLOCK + 2))
    assert raw.hex() == VECTOR
    # the MAC, checked with another CMAC: IDm | block 0 | block 1 | slot bytes 0-23
    ref = CMAC(algorithms.AES(ISSUER_KEY))
    ref.update(raw[:40] + raw[SLOT_A:SLOT_A + 24])
    assert raw[SLOT_A + 24:SLOT_A + 32] == ref.finalize()[:8]


def test_vector_identical_on_unix_port(mpy, mpydir):
    out = mpy("import sys\nsys.path.insert(0, %r)\n" % str(mpydir) + r"""
from terminal import card as C
import binascii
rec = C.CardRecord()
rec.set_token(b"4980123412341234")
rec.set_idm(b"\x02\xfe\x00\x11\x22\x33\x44\x55")
rec.issuer_id = 0x0101; rec.product = C.PRODUCT_CREDIT; rec.key_version = 1
rec.expiry_day = C.expiry_from_yyyymm(202812); rec.atc = 0x0123; rec.last_online_atc = 0x0120
rec.offline_day = 20413; rec.offline_count = 3; rec.offline_today = 9800
rec.offline_since_online = 25400
k = C.IssuerKeys(4)
k.add(0x0101, 1, bytes(range(0x10, 0x20)))
C.seal(rec, k)
buf = bytearray(C.RECORD_LEN)
C.encode_into(rec, buf)
print(binascii.hexlify(buf).decode())
back = C.CardRecord()
print(C.read_into(buf, back, k), back.atc, back.offline_since_online, back.slot, back.seq)
back.atc += 1
C.seal(back, k)
C.encode_into(back, buf)
again = C.CardRecord()
print(C.read_into(buf, again, k), again.atc, again.slot, again.seq)
""", heap="64k").split()
    assert out[0] == VECTOR
    assert out[1:6] == [str(C.CARD_OK), str(0x0123), "25400", "0", "1"]
    assert out[6:10] == [str(C.CARD_OK), str(0x0124), "1", "2"]


def test_roundtrip_every_field():
    k = keys()
    rec = sample(token=b"12345", atc=65534, last_online_atc=0, offline_today=C.AMOUNT_LIMIT,
                 offline_since_online=0, offline_count=65535, expiry_day=65535)
    C.seal(rec, k)
    buf = bytearray(C.RECORD_LEN)
    C.encode_into(rec, buf)
    back = C.CardRecord()
    assert C.read_into(buf, back, k) == C.CARD_OK
    for f in ("token_len", "issuer_id", "product", "key_version", "expiry_day", "atc",
              "last_online_atc", "offline_day", "offline_count", "offline_today",
              "offline_since_online", "slot", "seq"):
        assert getattr(back, f) == getattr(rec, f), f
    assert back.token_bytes() == b"12345" and bytes(back.idm) == IDM


def test_every_single_bit_flip_under_the_mac_is_detected():
    k = keys()
    raw = sealed_sample_bytes()
    rec = C.CardRecord()
    assert C.read_into(raw, rec, k) == C.CARD_OK
    for i in range(SLOT_B):  # IDm, blocks 0-1 and slot A: under slot A's MAC
        for bit in range(8):
            bad = bytearray(raw)
            bad[i] ^= 1 << bit
            st_ = C.read_into(bad, rec, k)
            assert st_ in (C.CARD_MAC_BAD, C.CARD_UNREADABLE, C.CARD_ISSUER_UNKNOWN), (i, bit)


def test_a_flipped_bit_in_the_unused_slot_leaves_the_valid_one():
    raw = sealed_sample_bytes()
    for i in range(SLOT_B, C.RECORD_LEN):
        for bit in range(8):
            bad = bytearray(raw)
            bad[i] ^= 1 << bit
            status, rec = read(bad)
            assert (status, rec.slot, rec.seq, rec.atc) == (C.CARD_OK, 0, 1, 0x0123), (i, bit)


def test_a_record_copied_to_another_card_fails_its_mac():
    raw = bytearray(sealed_sample_bytes())
    raw[:8] = bytes.fromhex("012e50e7dac78b47")  # the same blocks read from another IDm
    assert read(raw)[0] == C.CARD_MAC_BAD
    status, rec = read(sealed_sample_bytes(idm=bytes.fromhex("012e50e7dac78b47")))
    assert status == C.CARD_OK  # sealed for that IDm, it verifies


def test_next_state_goes_to_the_other_slot_and_wins_by_sequence():
    raw = sealed_sample_bytes()
    raw2, slot = next_state(raw, atc=0x0124)
    assert slot == 1 and raw2[:SLOT_B] == raw[:SLOT_B]  # slot A kept as it was
    status, rec = read(raw2)
    assert (status, rec.slot, rec.seq, rec.atc) == (C.CARD_OK, 1, 2, 0x0124)
    raw3, slot = next_state(raw2, atc=0x0125)
    assert slot == 0 and raw3[SLOT_B:] == raw2[SLOT_B:]
    status, rec = read(raw3)
    assert (status, rec.slot, rec.seq, rec.atc) == (C.CARD_OK, 0, 3, 0x0125)


@pytest.mark.parametrize("cut", [0, 1, 2])
def test_a_cut_at_every_block_write_leaves_a_valid_record(cut):
    """The terminal writes the new slot one block per command; a card pulled away
    (or a power cut) after `cut` of its two blocks leaves the old state valid, and
    the complete write the new one. A torn block is also caught by the MAC."""
    for old in (sealed_sample_bytes(), next_state(sealed_sample_bytes(), atc=0x0124)[0]):
        before = read(old)[1]
        new, slot = next_state(old, atc=before.atc + 1, offline_today=before.offline_today + 5)
        card = bytearray(old)
        o = C.slot_offset(slot)
        card[o:o + 16 * cut] = new[o:o + 16 * cut]
        status, rec = read(card)
        assert status == C.CARD_OK
        if cut < 2:
            assert (rec.slot, rec.seq, rec.atc) == (before.slot, before.seq, before.atc)
        else:
            assert (rec.slot, rec.seq, rec.atc) == (slot, before.seq + 1, before.atc + 1)
        if cut == 1:  # half of the second block written: still the old state
            card[o + 16:o + 24] = new[o + 16:o + 24]
            assert read(card)[1].seq == before.seq


def test_sequence_numbers_wrap():
    raw = sealed_sample_bytes(seq=0xFFFD)  # sealing moves it to 0xFFFE, in slot A
    assert read(raw)[1].seq == 0xFFFE
    for seq, slot in ((0xFFFF, 1), (0, 0), (1, 1)):
        raw, written = next_state(raw, atc=read(raw)[1].atc + 1)
        status, rec = read(raw)
        assert (status, rec.seq, rec.slot, written) == (C.CARD_OK, seq, slot, slot)


def test_unknown_issuer_and_key_version():
    raw = bytearray(sealed_sample_bytes())
    rec = C.CardRecord()
    other = C.IssuerKeys(2)
    other.add(0x0202, 1, ISSUER_KEY)
    assert C.read_into(raw, rec, other) == C.CARD_ISSUER_UNKNOWN
    wrong_version = C.IssuerKeys(2)
    wrong_version.add(0x0101, 2, ISSUER_KEY)
    assert C.read_into(raw, rec, wrong_version) == C.CARD_ISSUER_UNKNOWN
    wrong_key = C.IssuerKeys(2)
    wrong_key.add(0x0101, 1, bytes(16))
    assert C.read_into(raw, rec, wrong_key) == C.CARD_MAC_BAD
    slot = rec.slot
    assert not C.seal(rec, other) and rec.slot == slot  # no key: nothing changes


@pytest.mark.parametrize("offset,value", [
    (24, 0), (24, 1), (24, 3),  # format version
    (25, 0), (25, 17),  # token length
    (28, 0), (28, 4),  # product
    (32, 1), (39, 0x80),  # reserved bytes of block 1
])
def test_unreadable_records(offset, value):
    raw = bytearray(sealed_sample_bytes())
    raw[offset] = value
    rec = C.CardRecord()
    assert C.decode_into(raw, rec) == C.CARD_UNREADABLE
    assert C.verify(rec, keys()) == C.CARD_UNREADABLE


@pytest.mark.parametrize("at,value", [(13, 0x40), (17, 0x40), (18, 1), (23, 1)])
def test_a_malformed_slot_is_never_chosen(at, value):
    """Amounts at or above 2**30, or reserved bytes set: the slot is ignored, the
    other one holds (or none does: MAC bad, counters zero)."""
    raw2, slot = next_state(sealed_sample_bytes(), atc=0x0124)
    bad = bytearray(raw2)
    bad[C.slot_offset(slot) + at] = value
    status, rec = read(bad)
    assert (status, rec.slot, rec.atc) == (C.CARD_OK, 0, 0x0123)
    bad[C.slot_offset(0) + at] = value
    status, rec = read(bad)
    assert status == C.CARD_MAC_BAD and rec.atc == rec.seq == 0


def test_nonzero_token_padding_and_short_buffer_unreadable():
    raw = bytearray(sealed_sample_bytes())
    raw[25] = 15  # token now 15 bytes: byte 15 ('4') is non-zero padding
    rec = C.CardRecord()
    assert C.decode_into(raw, rec) == C.CARD_UNREADABLE
    assert C.decode_into(sealed_sample_bytes()[:-1], rec) == C.CARD_UNREADABLE


def test_decode_does_not_touch_fields_of_unreadable_token_but_sets_status():
    rec = sample()
    rec.status = C.CARD_OK
    raw = bytearray(C.RECORD_LEN)
    assert C.decode_into(raw, rec) == C.CARD_UNREADABLE
    assert rec.status == C.CARD_UNREADABLE


def test_uid_only_card():
    rec = C.CardRecord()
    rec.load_uid(b"\x04\xa2\x19\x7a\x33\x81\x80")
    assert rec.status == C.CARD_NO_COUNTERS
    assert rec.token_bytes() == b"\x04\xa2\x19\x7a\x33\x81\x80"
    assert C.verify(rec, keys()) == C.CARD_NO_COUNTERS


def test_token_setter_bounds():
    rec = C.CardRecord()
    with pytest.raises(ValueError):
        rec.set_token(b"")
    with pytest.raises(ValueError):
        rec.set_token(b"1" * 17)


def test_key_table_capacity_and_replace():
    k = C.IssuerKeys(2)
    k.add(1, 1, ISSUER_KEY)
    k.add(2, 1, ISSUER_KEY)
    k.add(1, 1, bytes(16))  # replaces, no new row
    with pytest.raises(ValueError):
        k.add(3, 1, ISSUER_KEY)
    k.remove(2, 1)
    k.add(3, 1, ISSUER_KEY)
    assert k.find(3, 1) >= 0 and k.find(2, 1) < 0
    with pytest.raises(ValueError):
        k.add(1, 1, b"short")


@pytest.mark.parametrize("yyyymm,ymd", [
    (202812, (2028, 12, 31)), (202402, (2024, 2, 29)), (202302, (2023, 2, 28)),
    (197001, (1970, 1, 31)), (209912, (2099, 12, 31)),
])
def test_expiry_from_yyyymm_is_last_day_of_month(yyyymm, ymd):
    import datetime

    want = (datetime.date(*ymd) - datetime.date(1970, 1, 1)).days
    assert C.expiry_from_yyyymm(yyyymm) == want


def test_expiry_month_checked():
    with pytest.raises(ValueError):
        C.expiry_from_yyyymm(202813)


@settings(max_examples=300, deadline=None)
@given(d=st.dates())
def test_days_from_civil_matches_datetime(d):
    import datetime

    assert C.days_from_civil(d.year, d.month, d.day) == (d - datetime.date(1970, 1, 1)).days
