"""The tap path in the unix port: heap bytes allocated per decision, and time.

A decision here is what a tap runs between the card's bytes and the journal:
card record parse and MAC check, token hash, negative-list lookup (two flash
block reads through nl.dir, a 10,000-entry list), the decision, the card's new
counters and MAC, the journal record (a page program into its ring of erased
sectors, through the block device as on a board). The firmware runs compiled by
mpy-cross under the emulated board's heap cap. Allocation is measured with the
collector off: gc.mem_alloc() after the taps minus before, over the taps
(tests/test_tap.py proves the same under micropython.heap_lock()).
"""

import json
import random
import subprocess
import sys
import tempfile
from pathlib import Path

from bench import goal

ROOT = Path(__file__).resolve().parent.parent

_MPY = r"""
import sys
sys.path.insert(0, %(build)r)
import gc, os, time, vfs
from array import array
from drivers.filebdev import FileBlockDevice
from terminal.params import Params
from terminal.issuers import IssuerTable
from terminal.card import IssuerKeys, CardRecord, encode_into, seal, RECORD_LEN
from terminal.decision import Engine
from terminal.journal import Journal
from terminal.negative_list import NegativeList
from terminal.tokenhash import TokenHasher
from terminal.tap import Tap

bd = FileBlockDevice(%(img)r, 4096, 1024)
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
journal = Journal("/flash/journal", 2000, 7, bdev=bd)  # its ring programmed as on a board
nl = NegativeList("/flash", 100000, bdev=bd)
total = os.stat(%(lst)r)[6]
assert nl.begin(1, 1, 0, total) is None
buf = bytearray(1024)
with open(%(lst)r, "rb") as f:
    off = 0
    while off < total:
        n = f.readinto(buf)
        assert nl.write_chunk(off, memoryview(buf)[:n]) is None
        off += n
assert nl.commit() is None and nl.status()["direct_reads"]
del buf
for name in ("terminal.nl_update", "terminal.nl_transfer", "terminal.nl_check",
             "terminal.nl_format", "terminal.nl_dir", "drivers.lfsfile"):
    sys.modules.pop(name, None)  # as the service drops them after an update
tap = Tap(engine, ks, nl, journal)
card = CardRecord()
card.set_token(b"4980000000000001")
card.issuer_id = 1
card.product = 1
card.key_version = 1
card.expiry_day = 30000
card.status = 0
seal(card, ks.issuer_keys)
image = bytearray(RECORD_LEN)
encode_into(card, image)
NOW = 220000000


def one(amount, now):
    tap.raw[:] = image
    res = tap.decide(amount, now, 50, False)
    res = tap.conclude(res, amount, now, False, False)
    res = tap.card_written(res, True)
    tap.record(res, amount, now, b"000000")
    image[:] = tap.raw
    return res


for i in range(5):
    one(100, NOW + i)  # warm
N = %(n)d
us = array("I", bytes(4 * N))  # the timings, stored without allocating
i = t0 = 0  # globals bound before the count
gc.collect()
gc.disable()
m0 = gc.mem_alloc()
for i in range(N):
    t0 = time.ticks_us()
    one(100, NOW + 10 + i)
    us[i] = time.ticks_diff(time.ticks_us(), t0)
m1 = gc.mem_alloc()
gc.enable()
us = sorted(us)
print(json.dumps({"alloc": (m1 - m0) / N, "median_us": us[N // 2],
                  "p90_us": us[N * 9 // 10], "reads": nl.page_reads,
                  "pending": journal.status()["pending"]}))
"""


def run(quick=False):
    from host_tools import listbuild
    from host_tools.build import compile_firmware
    from host_tools.emulator import micropython_binary

    n = 200 if quick else 1000
    rnd = random.Random(7)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        build = ROOT / "build" / "unix"  # the tests' build: incremental, locked
        compile_firmware(build)
        lst = work / "list.bin"
        lst.write_bytes(listbuild.encode_full(
            {1: [(rnd.randbytes(8), 0) for _ in range(10_000)]}, version=1, base_day=20_400,
            key_id=1))
        code = "import json\n" + _MPY % dict(build=str(build), img=str(work / "f.img"),
                                            lst=str(lst), n=n)
        proc = subprocess.run([micropython_binary(), "-X", "heapsize=256k", "-c", code],
                              capture_output=True, text=True, timeout=600,
                              env={"MICROPYPATH": "%s:%s" % (ROOT / "firmware",
                                                             ROOT / "boards")})
    if proc.returncode != 0:
        raise RuntimeError("micropython failed:\n%s\n%s" % (proc.stdout, proc.stderr))
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["pending"] >= n
    rows = [["heap bytes allocated per decision", "%.1f B" % out["alloc"], "%d taps" % n],
            ["time per tap, card bytes to journal record (median)",
             "%d µs" % out["median_us"], ""],
            ["time per tap, card bytes to journal record (p90)", "%d µs" % out["p90_us"], ""]]
    return [{"title": "Tap path per decision (unix port, 10,000-entry list, LittleFS image)",
             "columns": ["figure", "value", "over"], "rows": rows,
             "notes": __doc__.split("\n\n")[1].replace("\n", " "),
             "goals": [goal("heap bytes allocated per decision", out["alloc"], "==", 0,
                            fmt="%.1f", unit=" B")]}]


if __name__ == "__main__":
    for table in run(quick="--quick" in sys.argv):
        print(json.dumps(table))
