"""Negative list: blocked tokens in a LittleFS file, found with two small reads.

    nl = NegativeList("/flash", capacity=board.LIST_CAPACITY)
    nl.lookup(hash8, card.issuer_id, today)    # True if listed; no allocation once warm
    nl.online_only(issuer)                      # True while the issuer's quota overflows
    err = nl.begin(KIND_FULL, 7, 0, total_len)  # None or a message, for every update call
    err = nl.write_chunk(offset, data)          # resent chunks are harmless
    nl.resume_offset()                          # where a dropped transfer continues
    err = nl.commit()                           # after the caller checked the list MAC

Entries are grouped in one section per issuer. In a section, the top q bits of
the 8-byte keyed token hash pick a bucket (about 32 entries each); a directory
of 2**q + 1 u32 (the first entry of each bucket) sits on flash, and every
record holds only the next 36 bits of the hash plus a 12-bit expiry: 6 bytes.
A lookup reads 8 bytes of directory and one bucket, whatever the list size.

The update calls run in terminal.nl_update, imported when one comes (and at
start-up only if a transfer or commit was cut), so a tap runs without that code
in RAM.

Given the flash's block device (`bdev=`), a lookup does not go through the
LittleFS file at all: reading an offset of a large LittleFS file walks its CTZ
skip-list (about log2 of its blocks in extra reads). At install the terminal
finds the file's blocks once and writes a physical directory (nl.dir: block,
offset and count of every bucket; a bucket that straddles two blocks is copied
whole into nl.dir), so a lookup is two block-device reads: the entry, then the
bucket. Without bdev (CPython) lookups read the file.

The same module builds and parses the format on the host (CPython imports it
as `terminal.negative_list`). docs/negative_list.md has the layout, the flash
budget per board and why a power cut leaves the old list or the new one.
"""

import os
import struct
from array import array
from binascii import crc32

from terminal.compat import const


def _upd():
    # The update code (transfer, commit, nl.dir) is a module of its own: a tap
    # never runs it, so the terminal keeps it out of RAM between updates.
    from terminal import nl_update

    return nl_update

KIND_FULL = const(1)
KIND_DELTA = const(2)
FORMAT = const(1)
MAGIC = b"NL"
HEADER_LEN = const(24)
SECTION_LEN = const(12)
FOOTER_LEN = const(16)
EXTRA_LEN = const(16)
TRAILER_LEN = const(16)
REC_LEN = const(6)  # full list record: 36 key bits after the bucket, 12 expiry bits
DREC_LEN = const(8)  # delta record: 52 key bits, 12 expiry bits (REMOVE = remove)
KEY_BITS = const(36)
BUCKET_TARGET = const(32)
MAX_BUCKET_BITS = const(16)
EXPIRY_MAX = const(4094)  # largest expiry code: base day + 4093
REMOVE = const(4095)  # expiry code of a delta record that removes its key
MAX_COUNT = const(0xFFFFFF)  # counts stay small ints on a 32-bit board

_HDR = "<2sBBIIHHI"  # magic, format, kind, version, base version, base day, key id, 0; crc
_SEC = "<HBBII"  # issuer, bucket bits (full), 0, records, the centre's quota (0: none)
_FTR = "<HHIII"  # sections, 0, records, crc of header+records+dirs, crc of table+footer
_EXT = "<IHHHHHH"  # overflow, keep rank, cut bucket, cut a, cut b, cut c, 0
_TRL = "<4sIBBHI"  # magic, body length, last update kind, 0, 0, crc of extras+trailer
_TRL_MAGIC = b"NLtr"

_ACTIVE = "/nl.bin"  # the list lookups use
_STAGE = "/nl.stg"  # transfer in progress: the host's bytes as they arrive
_META = "/nl.stm"  # what is staged: kind, version, base version, length
_NEW = "/nl.new"  # delta merge output, renamed over _ACTIVE at commit
_DTMP = "/nl.dtm"  # directories of the merge, appended to _NEW
_PDIR = "/nl.dir"  # physical directory of the installed list (derived, rebuilt if stale)
_PTMP = "/nl.dtp"  # ... while it is written
_PD_LEN = const(6)  # entry: block u16 (bit 15: block of nl.dir), offset u16, count | skip << 10
_PD_TRL = "<4sIII"  # magic, nl.bin size, nl.bin trailer CRC, CRC of the 12 bytes before
_PD_MAGIC = b"NLpd"
_SPILLED = const(0x8000)
_VIA_FILE = const(0xFFFF)  # bucket too long to copy: read it through the file
_PTR_MAX = const(64)  # CTZ pointer bytes at the start of a block, at most

_NEWEST = const(4095)  # keep-rank of an entry without expiry
_RBUF_RECS = const(64)


# -- format helpers, shared with host_tools.listbuild --------------------------


def bucket_bits(n):
    """Bucket bits q for a section that may hold n entries (<= 32 per bucket)."""
    q = 0
    while q < MAX_BUCKET_BITS and (BUCKET_TARGET << q) < n:
        q += 1
    return q


def _bits(buf, pos, off, w):
    # w <= 16 bits at bit `off` (MSB first) of the bytes at buf[pos:]; small ints only.
    i = pos + (off >> 3)
    v = (buf[i] << 16) | (buf[i + 1] << 8) | buf[i + 2]
    return (v >> (24 - (off & 7) - w)) & ((1 << w) - 1)


def split_key(key, q):
    """(bucket, a, b, c): what a section with q bucket bits stores of an 8-byte key."""
    return (
        _bits(key, 0, 0, q),
        _bits(key, 0, q, 12),
        _bits(key, 0, q + 12, 12),
        _bits(key, 0, q + 24, 12),
    )


def join_key(bk, a, b, c, q):
    """An 8-byte key whose top q + 36 bits are (bucket, a, b, c), the rest zero."""
    v = (bk << 36) | (a << 24) | (b << 12) | c
    return (v << (28 - q)).to_bytes(8, "big")


def pack_record(buf, pos, a, b, c, e):
    buf[pos] = a >> 4
    buf[pos + 1] = ((a & 15) << 4) | (b >> 8)
    buf[pos + 2] = b & 255
    buf[pos + 3] = c >> 4
    buf[pos + 4] = ((c & 15) << 4) | (e >> 8)
    buf[pos + 5] = e & 255


def unpack_record(buf, pos):
    """(a, b, c, expiry code) of the full-list record at buf[pos:]."""
    return (
        (buf[pos] << 4) | (buf[pos + 1] >> 4),
        ((buf[pos + 1] & 15) << 8) | buf[pos + 2],
        (buf[pos + 3] << 4) | (buf[pos + 4] >> 4),
        ((buf[pos + 4] & 15) << 8) | buf[pos + 5],
    )


def pack_delta_record(buf, pos, key, e):
    """Delta record: the top 52 bits of the 8-byte key, then the expiry code or REMOVE."""
    for i in range(6):
        buf[pos + i] = key[i]
    buf[pos + 6] = (key[6] & 0xF0) | (e >> 8)
    buf[pos + 7] = e & 255


def expiry_code(day, base_day):
    """Record code of a last-listed day (days since 1970; 0 or None: no expiry).
    0 = none, 1.. = base_day + code - 1; -1 if the day is before base_day (already
    expired), -2 if it is more than EXPIRY_MAX - 1 days after it."""
    if not day:
        return 0
    e = day - base_day + 1
    if e < 1:
        return -1
    if e > EXPIRY_MAX:
        return -2
    return e


def pack_header(kind, version, base_version, base_day, key_id):
    h = struct.pack(_HDR, MAGIC, FORMAT, kind, version, base_version, base_day, key_id, 0)
    return h + struct.pack("<I", crc32(h))


def parse_header(buf):
    """(kind, version, base version, base day, key id), or None if not a list header."""
    if len(buf) < HEADER_LEN:
        return None
    f = struct.unpack_from(_HDR, buf, 0)
    if f[0] != MAGIC or f[1] != FORMAT or f[2] not in (KIND_FULL, KIND_DELTA):
        return None
    if struct.unpack_from("<I", buf, 20)[0] != crc32(bytes(buf[:20])):
        return None
    return f[2], f[3], f[4], f[5], f[6]


def pack_section(issuer, q, count, aux):
    return struct.pack(_SEC, issuer, q, 0, count, aux)


def pack_footer(n_sections, n_records, body_crc, table):
    """Footer after the section table; `table` is the packed section table."""
    head = struct.pack("<HHIII", n_sections, 0, n_records, body_crc, 0)[:12]
    return head + struct.pack("<I", crc32(head, crc32(table)))


class Body:
    """Header, section table and offsets of a list file body (host and commit use).

        b = Body(); err = b.read(f, body_len)   # None or a message
    """

    def read(self, f, body_len, max_sections=256):
        if body_len < HEADER_LEN + FOOTER_LEN:
            return "list too short (%d bytes)" % body_len
        f.seek(0)
        head = f.read(HEADER_LEN)
        h = parse_header(head)
        if h is None:
            return "not a negative list (bad header)"
        self.kind, self.version, self.base_version, self.base_day, self.key_id = h
        f.seek(body_len - FOOTER_LEN)
        foot = f.read(FOOTER_LEN)
        if len(foot) != FOOTER_LEN:
            return "list truncated"
        ns, _, nrec, self.body_crc, tcrc = struct.unpack(_FTR, foot)
        if ns > max_sections:
            return "list has %d issuers, the terminal holds %d" % (ns, max_sections)
        self.table_off = body_len - FOOTER_LEN - SECTION_LEN * ns
        if self.table_off < HEADER_LEN:
            return "list truncated"
        f.seek(self.table_off)
        table = f.read(SECTION_LEN * ns)
        if crc32(foot[:12], crc32(table)) != tcrc:
            return "list section table damaged (CRC)"
        self.n = ns
        self.records = nrec
        self.issuer, self.q, self.count, self.aux = [], [], [], []
        self.rec_off, self.dir_off = [], []
        rlen = REC_LEN if self.kind == KIND_FULL else DREC_LEN
        roff = HEADER_LEN
        doff = HEADER_LEN + rlen * nrec
        total = 0
        prev = -1
        for s in range(ns):
            iss, q, _, cnt, aux = struct.unpack_from(_SEC, table, SECTION_LEN * s)
            if iss <= prev:
                return "list issuers out of order at issuer %d" % iss
            if q > MAX_BUCKET_BITS or cnt > MAX_COUNT:
                return "issuer %d: bad section (q=%d, %d entries)" % (iss, q, cnt)
            prev = iss
            self.issuer.append(iss)
            self.q.append(q)
            self.count.append(cnt)
            self.aux.append(aux)
            self.rec_off.append(roff)
            self.dir_off.append(doff)
            roff += rlen * cnt
            if self.kind == KIND_FULL:
                doff += 4 * ((1 << q) + 1)
            total += cnt
        if total != nrec or doff != self.table_off:
            return "list section table does not match its length"
        return None


def _before(bk, a, b, c, x0, x1, x2, x3):
    # (bk, a, b, c) < (x0, x1, x2, x3), without building tuples
    if bk != x0:
        return bk < x0
    if a != x1:
        return a < x1
    if b != x2:
        return b < x2
    return c < x3


def _search(buf, lo, hi, a, b, c):
    # Binary search of records [lo, hi) in buf: the expiry code of the record
    # (a, b, c), or -1 - (where it would be).
    L = lo
    R = hi - 1
    while L <= R:
        m = (L + R) >> 1
        p = m * REC_LEN
        y = a
        x = (buf[p] << 4) | (buf[p + 1] >> 4)
        if x == y:
            y = b
            x = ((buf[p + 1] & 15) << 8) | buf[p + 2]
            if x == y:
                y = c
                x = (buf[p + 3] << 4) | (buf[p + 4] >> 4)
                if x == y:
                    return ((buf[p + 4] & 15) << 8) | buf[p + 5]
        if x < y:
            L = m + 1
        else:
            R = m - 1
    return -1 - L


def _size(path):
    try:
        return os.stat(path)[6]
    except OSError:
        return -1


# -- LittleFS file geometry (littlefs SPEC.md, "CTZ skip-lists") ------------------
# Block n > 0 of a file starts with ctz(n) + 1 four-byte pointers to earlier
# blocks (the first to block n - 1); the data follows. tests/test_negative_list.py
# checks these formulas against the unix port's LittleFS.


def ctz_ptrs(n):
    """Bytes of skip pointers at the start of block n of a LittleFS file."""
    if n == 0:
        return 0
    c = 4
    while not n & 1:
        c += 4
        n >>= 1
    return c


def ctz_start(n, bs):
    """File offset of the first data byte of block n (bs: the block size)."""
    if n == 0:
        return 0
    m = n - 1
    ones = 0
    while m:
        ones += m & 1
        m >>= 1
    return n * bs - 8 * (n - 1) + 4 * ones


def ctz_locate(off, bs):
    """(block index, offset in that block) of file offset off."""
    n = off // bs
    while ctz_start(n + 1, bs) <= off:
        n += 1
    return n, off - ctz_start(n, bs) + ctz_ptrs(n)


class _Tap:
    """Read-only view of a block device that remembers the last block read."""

    def __init__(self, bd):
        self.bd = bd
        self.last = -1

    def readblocks(self, n, buf, off=0):
        self.bd.readblocks(n, buf, off)
        self.last = n

    def writeblocks(self, n, buf, off=0):
        raise OSError(30)  # EROFS

    def ioctl(self, op, arg):
        if op == 6:
            raise OSError(30)
        return self.bd.ioctl(op, arg)


def file_blocks(bd, name, arr):
    """Physical blocks of the LittleFS file `name` (path inside the filesystem on
    bd) into arr[0..n); returns n, or -1 if arr is too short or the file is not
    stored in blocks of its own (an inline file of a few bytes). A second,
    read-only view of the filesystem reads the file's last byte, which costs one
    read of its last block and tells which it is; the skip pointers lead back."""
    import vfs

    tap = _Tap(bd)
    fs = vfs.VfsLfs2(tap)
    size = fs.stat(name)[6]
    bs = bd.ioctl(5, 0)
    if size < 8:
        return -1
    last, _ = ctz_locate(size - 1, bs)
    if last >= len(arr):
        return -1
    first = bytearray(8)
    with fs.open(name, "rb") as f:
        f.seek(size - 1)
        tap.last = -1
        end = f.read(1)  # the first read of this handle: its cache is empty
        if tap.last < 0:
            return -1
        arr[last] = tap.last
        f.seek(0)
        f.readinto(first)
    ptr = bytearray(8)
    for n in range(last, 0, -1):
        bd.readblocks(arr[n], ptr, 0)
        arr[n - 1] = ptr[0] | (ptr[1] << 8) | (ptr[2] << 16) | (ptr[3] << 24)
    bd.readblocks(arr[0], ptr, 0)  # the file's first bytes, read the raw way
    if ptr != first:
        return -1
    _, at = ctz_locate(size - 1, bs)
    bd.readblocks(arr[last], memoryview(ptr)[:1], at)
    if ptr[0] != end[0]:
        return -1
    return last + 1


# Section table: one row of _ST u32 per issuer section, in issuer order.
_S_ISS = const(0)
_S_Q = const(1)
_S_CNT = const(2)
_S_REC = const(3)  # file offset of the section's records
_S_DIR = const(4)  # file offset of its directory
_S_OVF = const(5)  # entries over quota at the last commit
_S_KEEP = const(6)  # keep-rank while over quota (0: every entry counts)
_S_CUT0 = const(7)  # first key kept at that rank: bucket << 12 | a
_S_CUT1 = const(8)  # ... b << 12 | c
_S_LQ = const(9)  # quota the centre put in the list
_S_PDB = const(10)  # index of the section's first entry in nl.dir
_ST = const(11)
# Staged transfer: kind, version, base version, total length, bytes stored, bytes synced.
_G_KIND = const(0)
_G_VER = const(1)
_G_BASE = const(2)
_G_TOTAL = const(3)
_G_HAVE = const(4)
_G_SYNCED = const(5)  # (terminal.nl_update)
_KINDS = ("none", "full", "delta")


class NegativeList:
    """The terminal's negative list in `root` (a LittleFS mount such as "/flash").

    capacity: most entries the board holds (board.LIST_CAPACITY); max_issuers:
    sections (issuers) the RAM table holds; key_id: the token-hash key id the
    terminal uses (a list keyed otherwise is refused; None accepts any);
    sync_bytes: staged bytes between flash syncs, what a power cut may cost a
    transfer (each sync is a LittleFS metadata commit); bdev: the block device
    of the LittleFS mounted at root, for lookups that read it directly (two
    reads whatever the size); None reads the file.
    Update calls return None or an error message and never raise for bad input.
    """

    def __init__(self, root, capacity, max_issuers=32, key_id=None, sync_bytes=16384,
                 bdev=None):
        self._root = root.rstrip("/")
        self._sync = sync_bytes
        self.capacity = capacity
        self._max = max_issuers
        self._key_id = key_id
        self._t = array("I", bytes(4 * _ST * max_issuers))
        self._quotas = array("I", bytes(8 * max_issuers))  # issuer, quota pairs
        self._nquota = 0
        self._rbuf = bytearray(_RBUF_RECS * REC_LEN)  # one bucket (lookup, commit reads)
        mv = memoryview(self._rbuf)
        self._v16 = mv[: 16 * REC_LEN]
        self._v32 = mv[: 32 * REC_LEN]
        self._dbuf = bytearray(8)  # two directory entries
        self._work = None  # commit only: writer, delta reader, directory reader
        self._bd = bdev
        self._direct = False
        self.direct_error = None
        self._nbk = self._size = self._tcrc = 0
        self.placed = None  # after nl.dir is built: buckets windowed, copied, long, via file
        if bdev is not None and bdev.ioctl(4, 0) > 0x7FFF:
            self.direct_error = "flash has more blocks than nl.dir entries address"
            bdev = self._bd = None
        if bdev is not None:
            bs = bdev.ioctl(5, 0)
            self._bs = bs
            self._per = (bs - _PTR_MAX) // _PD_LEN  # nl.dir entries per block
            # nl.dir blocks a list within capacity needs: its entries, and copies of
            # the buckets that straddle blocks of nl.bin (one per block at most)
            self._maxbk = 4 << bucket_bits(capacity)
            nbin = (capacity * REC_LEN + 4 * self._maxbk) // (bs - _PTR_MAX) + 2
            npd = (self._maxbk + self._per - 1) // self._per + nbin // ((bs - _PTR_MAX) // 384)
            self._pd = array("H", bytes(2 * (npd + 2)))
            self._ebuf = bytearray(_PD_LEN)
        self._stage = array("I", bytes(24))
        self._sf = None  # staged file, open for appending while a transfer runs
        self._rf = None  # ... and for reading back (MAC check)
        self._f = None  # the installed list
        self._n = 0
        self.page_reads = 0  # directory and bucket reads made by lookup()
        self.version = 0
        self.base_day = 0
        self.key_id = 0
        self.last_kind = 0
        self.entries = 0
        self.error = None
        self._recover()
        self._load()

    # -- the tap path -------------------------------------------------------------

    def lookup(self, key, issuer, today):
        """True if the 8-byte token hash is listed for this issuer and not expired
        on `today` (days since 1970; 0 = date unknown: expiry ignored)."""
        if self._f is None:
            return False
        t = self._t
        lo = 0
        hi = self._n - 1
        while lo <= hi:  # the issuer's section
            s = (lo + hi) >> 1
            x = t[s * _ST]
            if x == issuer:
                break
            if x < issuer:
                lo = s + 1
            else:
                hi = s - 1
        else:
            return False
        row = s * _ST
        q = t[row + _S_Q]
        bk = _bits(key, 0, 0, q)
        a = _bits(key, 0, q, 12)
        b = _bits(key, 0, q + 12, 12)
        c = _bits(key, 0, q + 24, 12)
        if self._direct:
            e = self._direct_find(t[row + _S_PDB] + bk, a, b, c)
        else:
            e = _VIA_FILE
        if e == _VIA_FILE:
            e = self._file_find(row, bk, a, b, c)
        if e < 0:
            return False
        return self._live(row, e, bk, a, b, c, today)

    def _direct_find(self, k, a, b, c):
        # Entry k of nl.dir, then the bucket it points at: two block-device reads.
        pd = self._pd
        per = self._per
        blk = k // per
        d = self._ebuf
        self._bd.readblocks(pd[blk], d, ctz_ptrs(blk) + (k - blk * per) * _PD_LEN)
        self.page_reads += 1
        info = d[4] | (d[5] << 8)
        if info == _VIA_FILE:
            return _VIA_FILE
        n = info & 0x3FF
        if not n:
            return -1
        skip = info >> 10
        phys = d[0] | (d[1] << 8)
        if phys & _SPILLED:
            phys = pd[phys & 0x7FFF]
        off = d[2] | (d[3] << 8)
        buf = self._rbuf
        n += skip
        while True:  # a window of 16, 32 or 64 records; a long bucket takes more
            self._bd.readblocks(phys, self._view(n), off)
            self.page_reads += 1
            m = n if n < _RBUF_RECS else _RBUF_RECS
            e = _search(buf, skip, m, a, b, c)
            if e >= 0 or e > -1 - m or n <= _RBUF_RECS:
                return e
            n -= _RBUF_RECS
            off += _RBUF_RECS * REC_LEN

    def _file_find(self, row, bk, a, b, c):
        # Through the LittleFS file: 8 bytes of directory, then the bucket.
        t = self._t
        f = self._f
        d = self._dbuf
        f.seek(t[row + _S_DIR] + (bk << 2))
        f.readinto(d)
        self.page_reads += 1
        lo = d[0] | (d[1] << 8) | (d[2] << 16)
        hi = d[4] | (d[5] << 8) | (d[6] << 16)
        buf = self._rbuf
        while lo < hi:
            n = hi - lo
            if n > _RBUF_RECS:
                n = _RBUF_RECS
            f.seek(t[row + _S_REC] + lo * REC_LEN)
            f.readinto(self._view(n))
            self.page_reads += 1
            e = _search(buf, 0, n, a, b, c)
            if e >= 0 or e > -1 - n:
                return e
            lo += n  # bucket longer than the buffer: next part
        return -1

    def _view(self, n):
        # The bucket buffer, or a view of its first 16 or 32 records, to read n records
        if n <= 16:
            return self._v16
        if n <= 32:
            return self._v32
        return self._rbuf

    def _live(self, row, e, bk, a, b, c, today):
        if e and today and e < today - self.base_day + 1:
            return False  # expired
        t = self._t
        keep = t[row + _S_KEEP]
        if keep:  # over quota: only the newest entries count
            r = e if e else _NEWEST
            if r < keep:
                return False
            if r == keep:
                x = t[row + _S_CUT0]
                y = t[row + _S_CUT1]
                if _before(bk, a, b, c, x >> 12, x & 4095, y >> 12, y & 4095):
                    return False
        return True

    def set_key_id(self, key_id):
        """The token-hash key the terminal now uses: lists keyed otherwise are refused."""
        self._key_id = key_id

    def online_only(self, issuer):
        """True while the issuer's entries overflow its quota (its cards go online)."""
        t = self._t
        for s in range(self._n):
            if t[s * _ST] == issuer:
                return t[s * _ST + _S_OVF] > 0
        return False

    def overflowing(self):
        """Issuers over quota at the last commit: the caller makes them online-only
        and clears the flag of the others."""
        t = self._t
        return [t[s * _ST] for s in range(self._n) if t[s * _ST + _S_OVF]]

    # -- quotas -------------------------------------------------------------------

    def set_quotas(self, pairs):
        """Per-issuer quotas [(issuer, entries), ...], applied at the next commit. An
        issuer without one keeps the quota the centre wrote into the list."""
        n = 0
        for issuer, quota in pairs:
            if n >= self._max:
                return "more than %d issuer quotas" % self._max
            self._quotas[2 * n] = issuer
            self._quotas[2 * n + 1] = quota
            n += 1
        self._nquota = n
        return None

    def _quota_of(self, issuer, listed):
        for i in range(self._nquota):
            if self._quotas[2 * i] == issuer:
                return self._quotas[2 * i + 1]
        return listed if listed else -1

    # -- update protocol: terminal.nl_update, imported when an update comes -----------

    def begin(self, kind, version, base_version, total_len):
        """Start a transfer, or resume it if this same one is staged."""
        return _upd().begin(self, kind, version, base_version, total_len)

    def write_chunk(self, offset, data):
        """Store bytes [offset, offset + len(data)) of the list. Bytes already stored
        are skipped, so a resent chunk is harmless; a gap is refused."""
        return _upd().write_chunk(self, offset, data)

    def resume_offset(self):
        """Bytes of the current transfer already stored: the host resends from here."""
        return self._stage[_G_HAVE] if self._sf is not None else 0

    def read_staged(self, offset, buf):
        """Read staged bytes into buf (to check the whole-list MAC); returns the count."""
        return _upd().read_staged(self, offset, buf)

    def abort(self):
        """Drop the staged transfer; the installed list stays as it is."""
        _upd().abort(self)

    def commit(self):
        """Install the staged list; from the moment this returns None lookups use it.
        On an error the staged transfer is dropped and the installed list stays."""
        return _upd().commit(self)

    def _recover(self):
        # After a reset: leftovers of a transfer or commit are nl_update's to sort out.
        for name in (_META, _STAGE, _NEW, _DTMP, _PTMP):
            if _size(self._path(name)) >= 0:
                _upd().recover(self)
                return

    def _attach(self):
        """Point lookups at the flash blocks themselves (see the module doc); on any
        trouble lookups read the file, and status says why."""
        if self._bd is None:
            return
        self._direct = False
        self.direct_error = None
        if not self._n:
            return
        try:
            if not self._pdir_current():
                err = _upd().build_pdir(self)
                if err:
                    self.direct_error = err
                    return
            if file_blocks(self._bd, _PDIR, self._pd) < 0:
                self.direct_error = "nl.dir has more blocks than the table holds"
                return
            self._direct = True
        except (OSError, ValueError, OverflowError) as e:
            self.direct_error = "direct reads off: %s" % e

    def _pdir_current(self):
        try:
            with open(self._path(_PDIR), "rb") as f:
                f.seek(_size(self._path(_PDIR)) - 16)
                tr = f.read(16)
        except (OSError, ValueError):
            return False
        if len(tr) != 16:
            return False
        magic, size, tcrc, crc = struct.unpack(_PD_TRL, tr)
        return (magic == _PD_MAGIC and size == self._size and tcrc == self._tcrc
                and crc == crc32(tr[:12]))

    # -- status -------------------------------------------------------------------

    def status(self):
        """A dict for the host: version, last update kind, entries, per-issuer
        (issuer, stored, over quota), transfer in progress."""
        t = self._t
        g = self._stage
        return {
            "version": self.version,
            "kind": _KINDS[self.last_kind],
            "entries": self.entries,
            "capacity": self.capacity,
            "base_day": self.base_day,
            "key_id": self.key_id,
            "issuers": [(t[s * _ST], t[s * _ST + _S_CNT], t[s * _ST + _S_OVF])
                        for s in range(self._n)],
            "overflowing": self.overflowing(),
            "staged": None if not g[_G_KIND] else {
                "kind": _KINDS[g[_G_KIND]], "version": g[_G_VER], "base_version": g[_G_BASE],
                "received": g[_G_HAVE], "total": g[_G_TOTAL]},
            "error": self.error,
            "direct_reads": self._direct,
            "direct_error": self.direct_error,
        }

    def close(self):
        self._close_stage()
        if self._f is not None:
            self._f.close()
            self._f = None

    # -- internals ------------------------------------------------------------------

    def _path(self, name):
        return self._root + name

    def _close_stage(self):
        for fh in (self._sf, self._rf):
            if fh is not None:
                fh.close()
        self._sf = self._rf = None


    def _load(self):
        """Read the installed list's tables into RAM and keep its file open."""
        if self._f is not None:
            self._f.close()
            self._f = None
        self._n = self.version = self.base_day = self.key_id = self.last_kind = 0
        self.entries = 0
        self.error = None
        path = self._path(_ACTIVE)
        size = _size(path)
        if size < 0:
            return
        f = open(path, "rb")
        try:
            err = self._load_from(f, size)
        except (OSError, ValueError, IndexError) as e:
            err = "list file unreadable: %s" % e
        if err:
            f.close()
            self._n = self.version = self.entries = 0
            self.error = err
            return
        self._f = f
        self._attach()


    def _load_from(self, f, size):
        f.seek(size - TRAILER_LEN)
        tr = f.read(TRAILER_LEN)
        magic, body_len, last_kind, _, _, tcrc = struct.unpack(_TRL, tr)
        if magic != _TRL_MAGIC:
            return "list file damaged (trailer)"
        body = Body()
        err = body.read(f, body_len, self._max)
        if err:
            return err
        if body.kind != KIND_FULL or size != body_len + EXTRA_LEN * body.n + TRAILER_LEN:
            return "list file damaged (length)"
        f.seek(body_len)
        ext = f.read(EXTRA_LEN * body.n)
        if crc32(tr[:12], crc32(ext)) != tcrc:
            return "list file damaged (extras CRC)"
        t = self._t
        total = 0
        pdb = 0
        for s in range(body.n):
            ovf, keep, c0, c1, c2, c3, _ = struct.unpack_from(_EXT, ext, EXTRA_LEN * s)
            row = s * _ST
            t[row + _S_PDB] = pdb
            pdb += 1 << body.q[s]
            t[row + _S_ISS] = body.issuer[s]
            t[row + _S_Q] = body.q[s]
            t[row + _S_CNT] = body.count[s]
            t[row + _S_REC] = body.rec_off[s]
            t[row + _S_DIR] = body.dir_off[s]
            t[row + _S_OVF] = ovf
            t[row + _S_KEEP] = keep
            t[row + _S_CUT0] = (c0 << 12) | c1
            t[row + _S_CUT1] = (c2 << 12) | c3
            t[row + _S_LQ] = body.aux[s]
            total += body.count[s] - ovf
        self._n = body.n
        self._nbk = pdb
        self._size = size
        self._tcrc = tcrc
        self.version = body.version
        self.base_day = body.base_day
        self.key_id = body.key_id
        self.last_kind = last_kind
        self.entries = total
        return None


