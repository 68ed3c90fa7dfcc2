"""The physical directory nl.dir: where each bucket of the installed list sits on
flash, so that a lookup reads the block device directly (terminal.negative_list).

    per, blocks = table_size(capacity, block_size)  # NegativeList sizes its table
    nl_dir.attach(nl, ident)   # after nl.bin is loaded: check nl.dir, rebuild if stale

`ident` names the installed nl.bin: (size, buckets, body CRC, trailer CRC), from
nl_format.load_table, with nl.version.

One 6-byte entry per bucket, in section order (block u16, offset in the block
u16, records | skip << 10), a fixed number of entries per block from offset
PTR_MAX, so entry k sits at a place the lookup computes without LittleFS's
geometry; then copies of the buckets that straddle two blocks of
nl.bin; then a trailer naming the list it describes. Written to nl.dtp and
renamed, so it is whole or absent. Imported when a list is loaded (start-up,
commit) and dropped afterwards, like the update code. docs/negative_list.md,
"Reads per lookup", has the reasoning.
"""

import os
import struct
from array import array
from binascii import crc32

from drivers.lfsfile import PTR_MAX, ctz_locate, ctz_ptrs, ctz_start, file_blocks
from terminal.compat import const
from terminal.nl_format import (
    ACTIVE,
    PDIR,
    PTMP,
    REC_LEN,
    S_DIR,
    S_Q,
    S_REC,
    ST,
    bucket_bits,
    file_size,
    remove_file,
)

PD_LEN = const(6)  # entry: block u16 (bit 15: block of nl.dir), offset u16, count | skip << 10
SPILLED = const(0x8000)
VIA_FILE = const(0xFFFF)  # bucket too long to copy: read it through the file
RBUF_RECS = const(64)  # records a lookup reads at once (negative_list's bucket buffer)
# Trailer: magic, then the installed nl.bin it describes (size, version, body CRC,
# trailer CRC), then the CRC of the 20 bytes before. The block numbers in nl.dir
# hold for one file only, so it is bound to the exact list: a new list of the
# same size is another file in other blocks (issue 12, item 1).
PD_TRL = "<4sIIIII"
PD_TRL_LEN = const(24)
PD_MAGIC = b"NLd4"
# How the last build placed its buckets: windowed, copied, long (> 64), via the file
# (for the bench and the tests: kept here, not in the list's RAM).
placed = None


def max_buckets(capacity):
    """Buckets (nl.dir entries) direct reads are sized for: four times what one
    section of `capacity` entries needs, for lists of several sections."""
    return 4 << bucket_bits(capacity)


def table_size(capacity, bs):
    """(nl.dir entries per block, u16 slots the table of nl.dir's blocks needs) for a
    list within capacity on blocks of bs bytes: its entries, and copies of the
    buckets that straddle blocks of nl.bin (one per block at most)."""
    per = (bs - PTR_MAX - 2) // PD_LEN  # 2 spare bytes: the lookup reads 8 at an entry
    nbk = max_buckets(capacity)
    nbin = (capacity * REC_LEN + 4 * nbk) // (bs - PTR_MAX) + 2
    return per, (nbk + per - 1) // per + nbin // ((bs - PTR_MAX) // 384) + 2


def attach(nl, ident):
    """Point lookups at the flash blocks themselves; on any trouble lookups read
    the file, and status says why."""
    nl.direct = False
    nl.direct_error = None
    if not nl.sections:
        return
    try:
        if not current(nl, ident):
            err = build(nl, ident)
            if err:
                nl.direct_error = err
                return
        if file_blocks(nl.bdev, PDIR, nl.pd_blocks) < 0:
            nl.direct_error = "nl.dir has more blocks than the table holds"
            return
        nl.direct = True
    except (OSError, ValueError, OverflowError) as e:
        nl.direct_error = "direct reads off: %s" % e


def current(nl, ident):
    """True if nl.dir describes the installed nl.bin."""
    path = nl.path(PDIR)
    try:
        with open(path, "rb") as f:
            f.seek(file_size(path) - PD_TRL_LEN)
            tr = f.read(PD_TRL_LEN)
    except (OSError, ValueError):
        return False
    if len(tr) != PD_TRL_LEN:
        return False
    return tr == _trailer(nl, ident)


def _trailer(nl, ident):
    size, _, crc, tcrc = ident
    tr = struct.pack(PD_TRL, PD_MAGIC, size, nl.version, crc, tcrc, 0)[:PD_TRL_LEN - 4]
    return tr + struct.pack("<I", crc32(tr))


def _buckets(nl, buf):
    # (file offset of its first record, records) of every bucket, in nl.dir order
    t = nl.table
    f = nl.file
    for s in range(nl.sections):
        row = s * ST
        rec = t[row + S_REC]
        pos = t[row + S_DIR]
        left = (1 << t[row + S_Q]) + 1
        prev = -1
        while left:
            f.seek(pos)
            n = min(f.readinto(buf) >> 2, left)
            if n <= 0:
                raise ValueError("list directory truncated")
            pos += 4 * n
            left -= n
            for i in range(n):
                x = struct.unpack_from("<I", buf, 4 * i)[0]
                if prev >= 0:
                    yield rec + prev * REC_LEN, x - prev
                prev = x


def _place(bs, chain, off, cnt, cur):
    # Where lookups read a bucket: (block, offset, info, spilled). A bucket whose
    # read window would cross the end of its block is copied into nl.dir at the
    # spill cursor cur = [block, offset] (logical blocks of nl.dir).
    if not cnt:
        return 0, 0, 0, False
    n, at = ctz_locate(off, bs)
    if cnt <= RBUF_RECS:
        span = (16 if cnt <= 16 else 32 if cnt <= 32 else 64) * REC_LEN
        if at + span <= bs:
            return chain[n], at, cnt, False
        end = at + cnt * REC_LEN
        if end <= bs and end - span >= ctz_ptrs(n):  # window ending at the bucket's end
            skip = (span - cnt * REC_LEN) // REC_LEN
            return chain[n], end - span, cnt | (skip << 10), False
        if cur[1] + span > bs:
            cur[0] += 1
            cur[1] = ctz_ptrs(cur[0])
        where = cur[0], cur[1]
        cur[1] += span
        return SPILLED | where[0], where[1], cnt, True
    span = ((cnt + RBUF_RECS - 1) // RBUF_RECS) * RBUF_RECS * REC_LEN
    if cnt <= 0x3FF and at + span <= bs:
        return chain[n], at, cnt, False
    return 0, 0, VIA_FILE, False


def build(nl, ident):
    """Write nl.dir for the installed list: an entry per bucket, then copies of
    the buckets that straddle blocks, then a trailer naming the list."""
    bs = nl.bdev.ioctl(5, 0)
    per = nl.pd_per
    size, buckets, _, _ = ident
    if buckets > max_buckets(nl.capacity):
        return "%d buckets: more than direct reads are sized for (%d)" % (
            buckets, max_buckets(nl.capacity))
    nent = (buckets + per - 1) // per  # nl.dir blocks of entries
    nbin = ctz_locate(size - 1, bs)[0] + 1
    chain = array("H", bytes(2 * nbin))
    if file_blocks(nl.bdev, ACTIVE, chain) != nbin:
        return "list file too small for direct reads"
    remove_file(nl.path(PDIR))
    tmp = nl.path(PTMP)
    buf = bytearray(256)
    ent = bytearray(PD_LEN)
    global placed
    kinds = placed = [0, 0, 0, 0]  # windowed, copied, long (> 64), via the file
    rbuf = nl.rbuf
    with open(tmp, "wb") as f:
        pos = 0
        cur = [nent, ctz_ptrs(nent)]
        for k, (off, cnt) in enumerate(_buckets(nl, buf)):  # the entries
            phys, at, info, moved = _place(bs, chain, off, cnt, cur)
            if info == VIA_FILE:
                kinds[3] += 1
            elif moved:
                kinds[1] += 1
            elif info >> 10:
                kinds[0] += 1
            elif cnt > RBUF_RECS:
                kinds[2] += 1
            blk = k // per  # entries start at PTR_MAX in every block, past any pointers
            pos = _pad(f, pos, ctz_start(blk, bs) - ctz_ptrs(blk) + PTR_MAX
                       + (k - blk * per) * PD_LEN)
            struct.pack_into("<HHH", ent, 0, phys, at, info)
            f.write(ent)
            pos += PD_LEN
        pos = _pad(f, pos, ctz_start(nent, bs))
        cur = [nent, ctz_ptrs(nent)]
        for off, cnt in _buckets(nl, buf):  # the copies, where _place put them
            phys, at, _, moved = _place(bs, chain, off, cnt, cur)
            if moved:
                blk = phys & 0x7FFF
                pos = _pad(f, pos, ctz_start(blk, bs) + at - ctz_ptrs(blk))
                nl.file.seek(off)
                n = nl.file.readinto(memoryview(rbuf)[: cnt * REC_LEN])
                f.write(memoryview(rbuf)[:n])
                pos += n
        f.write(_trailer(nl, ident))
    if cur[0] + 1 > len(nl.pd_blocks):
        remove_file(tmp)
        return "nl.dir would need %d blocks, the table holds %d" % (
            cur[0] + 1, len(nl.pd_blocks))
    os.rename(tmp, nl.path(PDIR))
    return None


_ZERO = bytes(PTR_MAX + 16)


def _pad(f, pos, to):
    # zeros from file offset pos up to to
    while pos < to:
        n = min(to - pos, len(_ZERO))
        f.write(_ZERO[:n])
        pos += n
    return pos
