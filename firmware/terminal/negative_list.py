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

This module is the lookup and the state it needs; the rest comes on demand and
leaves again, so a tap runs without it in RAM:
- terminal.nl_format: the file format (shared with the host), read here only to
  load the installed list at start-up and after a commit;
- terminal.nl_transfer: staging a transfer, resumably, and recovery after a
  reset (imported when an update begins, and at start-up only if one was cut);
- terminal.nl_update: the commit, the delta merge (imported for a commit);
- terminal.nl_dir: the physical directory nl.dir.

Given the flash's block device (`bdev=`), a lookup does not go through the
LittleFS file at all: reading an offset of a large LittleFS file walks its CTZ
skip-list (about log2 of its blocks in extra reads). At install the terminal
finds the file's blocks once and writes a physical directory (nl.dir: block,
offset and count of every bucket; a bucket that straddles two blocks is copied
whole into nl.dir), so a lookup is two block-device reads: the entry, then the
bucket. Without bdev (CPython) lookups read the file.

docs/negative_list.md has the layout, the flash budget per board and why a
power cut leaves the old list or the new one.
"""

from array import array

from terminal.compat import const

# terminal.nl_format's names, repeated for the compiler to fold (tests/test_consts.py)
_REC_LEN = const(6)
_S_Q = const(1)
_S_CNT = const(2)
_S_REC = const(3)
_S_DIR = const(4)
_S_OVF = const(5)
_S_KEEP = const(6)
_S_CUT0 = const(7)
_S_CUT1 = const(8)
_S_WH = const(9)
_S_PDB = const(10)
_ST = const(11)
_G_KIND = const(0)
_G_VER = const(1)
_G_BASE = const(2)
_G_TOTAL = const(3)
_G_HAVE = const(4)
_G_LEN = const(6)
_NEWEST = const(4095)
# terminal.nl_dir's entry layout: entries from _PTR_MAX (drivers.lfsfile.PTR_MAX) on
_PD_LEN = const(6)  # entry: block u16 (bit 15: block of nl.dir), offset u16, count | skip << 10
_SPILLED = const(0x8000)
_VIA_FILE = const(0xFFFF)  # bucket too long to copy: read it through the file
_PTR_MAX = const(64)

_RBUF_RECS = const(64)  # records in the bucket buffer
_KINDS = ("none", "full", "delta")


def _bits(buf, pos, off, w):
    # The lookup's copy of nl_format.bits (tests pin them to each other): importing
    # that module would keep the whole format in RAM for four shifts.
    i = pos + (off >> 3)
    v = (buf[i] << 16) | (buf[i + 1] << 8) | buf[i + 2]
    return (v >> (24 - (off & 7) - w)) & ((1 << w) - 1)


def _search(buf, lo, hi, a, b, c):
    # Binary search of records [lo, hi) in buf: the expiry code of the record
    # (a, b, c), or -1 - (where it would be).
    L = lo
    R = hi - 1
    while L <= R:
        m = (L + R) >> 1
        p = m * _REC_LEN
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


def _transfer():
    # The update code is in modules of their own: a tap never runs them, so the
    # terminal keeps them out of RAM between updates (terminal.service drops them).
    from terminal import nl_transfer

    return nl_transfer


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

    The modules that come and go keep their state here, in these attributes:
    `table` (nl_format.ST u32 per section, in its S_ layout) and `sections`
    (rows in use), `file` (nl.bin, open), `rbuf` (the bucket buffer, also a read
    buffer for a commit); the transfer's `stage` (nl_format's G_ layout),
    `staged` and `staged_reader` (nl.stg open for appending and for reading
    back); for nl.dir `bdev`, `pd_per` (entries per block), `pd_blocks` (its
    blocks), `direct` (lookups read it).
    Nothing else: every attribute of this object costs RAM the tap path keeps.
    """

    def __init__(self, root, capacity, max_issuers=32, key_id=None, sync_bytes=16384,
                 bdev=None):
        self.root = root.rstrip("/")
        self.sync_bytes = sync_bytes
        self.capacity = capacity
        self.max_issuers = max_issuers
        self.key_id_wanted = key_id
        self.table = array("I", bytes(4 * _ST * max_issuers))
        self._quotas = None  # issuer, quota pairs: set_quotas() allocates them
        self.rbuf = bytearray(_RBUF_RECS * _REC_LEN)  # one bucket (lookup, commit reads)
        mv = memoryview(self.rbuf)
        self._v16 = mv[: 16 * _REC_LEN]
        self._v32 = mv[: 32 * _REC_LEN]
        self._dbuf = bytearray(8)  # two directory entries, or an nl.dir entry
        self.bdev = bdev
        self.direct = False
        self.direct_error = None
        if bdev is not None and bdev.ioctl(4, 0) > 0x7FFF:
            self.direct_error = "flash has more blocks than nl.dir entries address"
            bdev = self.bdev = None
        if bdev is not None:
            from terminal.nl_dir import table_size

            self.pd_per, npd = table_size(capacity, bdev.ioctl(5, 0))
            self.pd_blocks = array("H", bytes(2 * npd))
        self.stage = array("I", bytes(4 * _G_LEN))
        self.staged = None  # staged file, open for appending while a transfer runs
        self.staged_reader = None  # ... and for reading back (MAC check)
        self.file = None  # the installed list
        self.sections = 0
        self.page_reads = 0  # directory and bucket reads made by lookup()
        self.version = 0
        self.base_day = 0
        self.key_id = 0
        self.last_kind = 0
        self.entries = 0
        self.error = None
        self._recover()
        self.reload()

    # -- the tap path -------------------------------------------------------------

    def lookup(self, key, issuer, today):
        """True if the 8-byte token hash is listed for this issuer and not expired
        on `today` (days since 1970; 0 = date unknown: expiry ignored)."""
        if self.file is None:
            return False
        t = self.table
        lo = 0
        hi = self.sections - 1
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
        if self.direct:
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
        # The entry is read with the directory buffer: 8 bytes, 6 of them the
        # entry's (nl.dir leaves 2 spare bytes at the end of each block).
        pd = self.pd_blocks
        per = self.pd_per
        blk = k // per
        d = self._dbuf
        self.bdev.readblocks(pd[blk], d, _PTR_MAX + (k - blk * per) * _PD_LEN)
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
        buf = self.rbuf
        n += skip
        while True:  # a window of 16, 32 or 64 records; a long bucket takes more
            self.bdev.readblocks(phys, self._view(n), off)
            self.page_reads += 1
            m = n if n < _RBUF_RECS else _RBUF_RECS
            e = _search(buf, skip, m, a, b, c)
            if e >= 0 or e > -1 - m or n <= _RBUF_RECS:
                return e
            n -= _RBUF_RECS
            off += _RBUF_RECS * _REC_LEN

    def _file_find(self, row, bk, a, b, c):
        # Through the LittleFS file: 8 bytes of directory, then the bucket.
        t = self.table
        f = self.file
        d = self._dbuf
        f.seek(t[row + _S_DIR] + (bk << 2))
        f.readinto(d)
        self.page_reads += 1
        lo = d[0] | (d[1] << 8) | (d[2] << 16)
        hi = d[4] | (d[5] << 8) | (d[6] << 16)
        buf = self.rbuf
        while lo < hi:
            n = hi - lo
            if n > _RBUF_RECS:
                n = _RBUF_RECS
            f.seek(t[row + _S_REC] + lo * _REC_LEN)
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
        return self.rbuf

    def _live(self, row, e, bk, a, b, c, today):
        if e and today and e < today - self.base_day + 1:
            return False  # expired
        t = self.table
        keep = t[row + _S_KEEP]
        if keep:  # over quota: only the newest entries count
            r = e if e else _NEWEST
            if r < keep:
                return False
            if r == keep:  # ties: kept from the cut key (bucket, a | b, c) up
                x = (bk << 12) | a
                if x != t[row + _S_CUT0]:
                    return x > t[row + _S_CUT0]
                return ((b << 12) | c) >= t[row + _S_CUT1]
        return True

    def set_key_id(self, key_id):
        """The token-hash key the terminal now uses: lists keyed otherwise are refused."""
        self.key_id_wanted = key_id

    def online_only(self, issuer):
        """True while the issuer's list is incomplete (its cards go online): its
        entries overflowed the terminal's quota at the last commit, or the centre
        withheld some to keep within the quota it gave."""
        t = self.table
        for s in range(self.sections):
            if t[s * _ST] == issuer:
                return t[s * _ST + _S_OVF] > 0 or t[s * _ST + _S_WH] > 0
        return False

    def overflowing(self):
        """Issuers whose list is incomplete (see online_only): the caller makes
        them online-only and clears the flag of the others."""
        t = self.table
        return [t[s * _ST] for s in range(self.sections)
                if t[s * _ST + _S_OVF] or t[s * _ST + _S_WH]]

    # -- quotas -------------------------------------------------------------------

    def set_quotas(self, pairs):
        """Per-issuer quotas [(issuer, entries), ...], applied at the next commit. An
        issuer without one keeps the quota the centre wrote into the list."""
        if len(pairs) > self.max_issuers:
            return "more than %d issuer quotas" % self.max_issuers
        q = array("I", bytes(8 * len(pairs)))
        for n, (issuer, quota) in enumerate(pairs):
            q[2 * n] = issuer
            q[2 * n + 1] = quota
        self._quotas = q
        return None

    def quota_of(self, issuer, listed):
        """The quota in force for an issuer whose list section says `listed` (0:
        none): the one set_quotas gave, else the list's; -1 for none at all."""
        q = self._quotas
        if q is not None:
            for i in range(0, len(q), 2):
                if q[i] == issuer:
                    return q[i + 1]
        return listed if listed else -1

    # -- update protocol: nl_transfer, then nl_update for the commit -----------------

    def begin(self, kind, version, base_version, total_len):
        """Start a transfer, or resume it if this same one is staged."""
        return _transfer().begin(self, kind, version, base_version, total_len)

    def write_chunk(self, offset, data):
        """Store bytes [offset, offset + len(data)) of the list. Bytes already stored
        are skipped, so a resent chunk is harmless; a gap is refused."""
        return _transfer().write_chunk(self, offset, data)

    def resume_offset(self):
        """Bytes of the current transfer already stored: the host resends from here."""
        return self.stage[_G_HAVE] if self.staged is not None else 0

    def read_staged(self, offset, buf):
        """Read staged bytes into buf (to check the whole-list MAC); returns the count."""
        return _transfer().read_staged(self, offset, buf)

    def abort(self):
        """Drop the staged transfer; the installed list stays as it is."""
        _transfer().abort(self)

    def commit(self):
        """Install the staged list; from the moment this returns None lookups use it.
        On an error the staged transfer is dropped and the installed list stays."""
        from terminal import nl_update

        return nl_update.commit(self)

    def _recover(self):
        # After a reset: leftovers of a transfer or commit are nl_transfer's to sort out.
        from terminal import nl_format as F

        for name in (F.META, F.STAGE, F.NEW, F.DTMP, F.PTMP):
            if F.file_size(self.path(name)) >= 0:
                _transfer().recover(self)
                return

    # -- status -------------------------------------------------------------------

    def status(self):
        """A dict for the host: version, last update kind, entries, per-issuer
        (issuer, stored, over the terminal's quota, withheld by the centre),
        transfer in progress."""
        t = self.table
        g = self.stage
        return {
            "version": self.version,
            "kind": _KINDS[self.last_kind],
            "entries": self.entries,
            "capacity": self.capacity,
            "base_day": self.base_day,
            "key_id": self.key_id,
            "issuers": [(t[s * _ST], t[s * _ST + _S_CNT], t[s * _ST + _S_OVF],
                         t[s * _ST + _S_WH]) for s in range(self.sections)],
            "overflowing": self.overflowing(),
            "staged": None if not g[_G_KIND] else {
                "kind": _KINDS[g[_G_KIND]], "version": g[_G_VER], "base_version": g[_G_BASE],
                "received": g[_G_HAVE], "total": g[_G_TOTAL]},
            "error": self.error,
            "direct_reads": self.direct,
            "direct_error": self.direct_error,
        }

    def close(self):
        self.close_stage()
        if self.file is not None:
            self.file.close()
            self.file = None

    # -- for the update code ------------------------------------------------------

    def path(self, name):
        """The file `name` (nl_format.ACTIVE, ...) in the list's root."""
        return self.root + name

    def close_stage(self):
        for fh in (self.staged, self.staged_reader):
            if fh is not None:
                fh.close()
        self.staged = self.staged_reader = None

    def reload(self):
        """Read the installed list's tables into RAM and keep its file open (at
        start-up and after a commit); then point lookups at its flash blocks."""
        from terminal import nl_format as F

        if self.file is not None:
            self.file.close()
            self.file = None
        self.sections = self.version = self.base_day = self.key_id = self.last_kind = 0
        self.entries = 0
        self.error = None
        path = self.path(F.ACTIVE)
        size = F.file_size(path)
        if size < 0:
            return
        f = open(path, "rb")
        try:
            got = F.load_table(f, size, self.table, self.max_issuers)
        except (OSError, ValueError, IndexError) as e:
            got = "list file unreadable: %s" % e
        if isinstance(got, str):
            f.close()
            self.sections = self.version = self.entries = 0
            self.error = got
            return
        (self.sections, buckets, self.version, self.base_day, self.key_id,
         self.last_kind, self.entries, crc, tcrc) = got
        self.file = f
        if self.bdev is not None:
            from terminal import nl_dir

            nl_dir.attach(self, (size, buckets, crc, tcrc))
