"""The tap path allocates nothing once warm: card bytes -> decision -> new card
image -> journal record, run under micropython.heap_lock() in the unix port on a
LittleFS2 image, as on the board."""

import pytest

SETUP = r"""
import os, vfs, gc, micropython
from drivers.filebdev import FileBlockDevice
from terminal.params import Params
from terminal.issuers import IssuerTable
from terminal.card import IssuerKeys, CardRecord, encode_into, seal, RECORD_LEN
from terminal.decision import Engine
from terminal.journal import Journal
from terminal.negative_list import NegativeList
from terminal.tokenhash import TokenHasher
from terminal.tap import Tap, APPROVED_OFFLINE, FINAL_MASK, FINAL_SHIFT

IMG = %(img)r
try:
    os.remove(IMG)
except OSError:
    pass
bd = FileBlockDevice(IMG, 4096, 256)
vfs.VfsLfs2.mkfs(bd)
vfs.mount(vfs.VfsLfs2(bd), "/flash")

class KS:
    pass

ks = KS()
ks.issuer_keys = IssuerKeys(4)
ks.issuer_keys.add(1, 1, b"K" * 16)
ks.hasher = TokenHasher(b"L" * 16)
params = Params()
params.update({"new_card_online": 0, "random_target_pct": 0, "random_max_target_pct": 0,
               "lower_consecutive_offline": 200, "upper_consecutive_offline": 255})
engine = Engine(params, IssuerTable(8), ks.issuer_keys, 64)
journal = Journal("/flash/journal", 500, 7, bdev=bd)  # programmed as on a board
nl = NegativeList("/flash", 1000)
tap = Tap(engine, ks, nl, journal)

card = CardRecord()
card.set_token(b"4980000000000001")
card.issuer_id = 1; card.product = 1; card.key_version = 1; card.expiry_day = 30000
card.status = 0
seal(card, ks.issuer_keys)
image = bytearray(RECORD_LEN)
encode_into(card, image)
NOW = 220000000  # terminal time (seconds since 2020), a weekday in 2026

def one(amount, now):
    tap.raw[:] = image
    res = tap.decide(amount, now, 50, False)
    res = tap.conclude(res, amount, now, False, False)
    res = tap.card_written(res, True)
    tap.record(res, amount, now, b"000000")
    image[:] = tap.raw
    return res
"""


def test_tap_path_allocates_nothing_once_warm(mpy, tmp_path):
    code = SETUP % {"img": str(tmp_path / "tap.img")} + r"""
for i in range(3):
    one(100, NOW + i)          # warm: first file opens, first table inserts
locked = "ok"  # bound before the lock: a new global would itself allocate
i = 0
approved = 0
micropython.heap_lock()
try:
    for i in range(20):
        if one(100, NOW + 10 + i) & FINAL_MASK == APPROVED_OFFLINE:
            approved += 1
except MemoryError:
    locked = "allocated"
micropython.heap_unlock()
if locked != "ok":
    print("allocated at tap", i)
r = one(100, NOW + 40)
print(locked, approved, r & FINAL_MASK, r >> FINAL_SHIFT, journal.status()["pending"])
"""
    out = mpy(code, heap="256k", compiled=True).split()
    assert out[0] == "ok", "the tap path allocated under heap_lock: " + " ".join(out)
    # the 20 locked taps really approved offline and were journalled
    assert int(out[1]) == 20
    assert int(out[2]) == 1 and int(out[3]) == 0
    assert int(out[4]) == 24


@pytest.mark.parametrize("amount,expect", [(9999, 1), (10000, 3)])
def test_floor_limit_through_the_tap_glue(mpy, tmp_path, amount, expect):
    """The glue passes the amount and the card through unchanged: floor - 1 is
    approved offline, floor goes online, and with no centre the default declines."""
    code = SETUP % {"img": str(tmp_path / "f.img")} + "r = one(%d, NOW)\nprint(r & FINAL_MASK)\n"
    assert int(mpy(code % amount, heap="256k", compiled=True).split()[-1]) == expect
