"""Clearing journal: every decided transaction, on flash before the result shows.

    j = Journal("/flash/journal", board.JOURNAL_CAPACITY, terminal_id, 90)
    seq = j.append(t, hash8, masked8, issuer, amount, outcome, reasons, b"000000",
                   atc, last_online_atc, offline_today, offline_since, offline_count)
    batch, first, count = j.close_batch()
    n = j.read_batch(batch, first, buf)   # bytes of whole records; 0 = batch end
    j.acknowledge(batch)                  # ACKED or ALREADY_ACKED

Layout, recovery and the power-fail argument: docs/journal.md.
"""

import os
import struct
from array import array

from terminal.compat import const
from terminal.errors import TerminalError

RECORD_SIZE = const(64)
FORMAT_VERSION = const(1)
OFFLINE_APPROVAL = b"000000"
ACKED = const(0)
ALREADY_ACKED = const(1)
FIELDS = ("version", "outcome", "issuer", "terminal_id", "seq", "time", "token_hash",
          "masked_token", "amount", "reasons", "approval_code", "atc", "last_online_atc",
          "offline_count_since_online", "offline_amount_today", "offline_amount_since_online")

# The record body, in FIELDS order; its CRC-32 (little-endian) fills bytes 60..63.
_REC_FMT = "<BBHIII8s8sII6sHHHII"
_BODY = const(60)
# Segment header (a RECORD_SIZE block, CRC at 60): magic, version, 0, 0, its
# batch id, its first seq, the first seq of the batch closed when it was made.
_SEG_FMT = "<4sBBHIII"
_SEG_MAGIC = b"TJSG"
# Segment files present at most (closed unacknowledged batches + the open one):
# bounds the boot scan and the batch table whatever the host does.
_MAX_SEG = const(8)
_U32 = const(0xFFFFFFFF)
_ENOSPC = const(28)

# CRC-32 (the zlib/binascii one) 4 bits at a time, the register kept as two
# 16-bit halves: every value is a small int, so nothing is allocated even on a
# 32-bit board, where binascii.crc32 returns a heap int 3 times in 4.
_CRC_LO = array("H", [0] * 16)
_CRC_HI = array("H", [0] * 16)
for _i in range(16):
    _lo = _i
    _hi = 0
    for _ in range(4):
        _b = _lo & 1
        _lo = (_lo >> 1) | ((_hi & 1) << 15)
        _hi >>= 1
        if _b:
            _lo ^= 0x8320
            _hi ^= 0xEDB8
    _CRC_LO[_i] = _lo
    _CRC_HI[_i] = _hi


def crc32_into(src, n, dst, off):
    """CRC-32 of src[:n] into dst[off:off + 4], little-endian; no allocation."""
    tl = _CRC_LO
    th = _CRC_HI
    lo = 0xFFFF
    hi = 0xFFFF
    for i in range(n):
        b = src[i]
        x = (lo ^ b) & 0xF
        lo = ((lo >> 4) | ((hi & 0xF) << 12)) ^ tl[x]
        hi = (hi >> 4) ^ th[x]
        x = (lo ^ (b >> 4)) & 0xF
        lo = ((lo >> 4) | ((hi & 0xF) << 12)) ^ tl[x]
        hi = (hi >> 4) ^ th[x]
    lo ^= 0xFFFF
    hi ^= 0xFFFF
    dst[off] = lo & 0xFF
    dst[off + 1] = lo >> 8
    dst[off + 2] = hi & 0xFF
    dst[off + 3] = hi >> 8


def _crc_ok(buf, scratch):
    crc32_into(buf, _BODY, scratch, 0)
    for i in range(4):
        if scratch[i] != buf[_BODY + i]:
            return False
    return True


def pack_record_into(buf, terminal_id, seq, time, token_hash, masked_token, issuer, amount,
                     outcome, reasons, approval_code, atc, last_online_atc, offline_today,
                     offline_since_online, offline_count):
    """Encode a record, CRC included, into buf[:RECORD_SIZE]; no allocation.

    A field that does not fit raises ValueError (MicroPython's struct would
    truncate it silently, CPython's would raise: this makes both refuse).
    """
    if len(token_hash) != 8 or len(masked_token) != 8 or len(approval_code) != 6:
        raise ValueError("journal: token hash, masked token or approval code length")
    # OR of small fields is a small int: no allocation. `time` (above 2**30, a
    # heap int on 32-bit boards) and the terminal id are compared, never combined.
    if (outcome >> 8 or (issuer | atc | last_online_atc | offline_count) >> 16
            or (seq | amount | reasons | offline_today | offline_since_online) >> 32
            or not (0 <= time <= _U32 and 0 <= terminal_id <= _U32)):
        raise ValueError("journal: a record field is out of range")
    struct.pack_into(_REC_FMT, buf, 0, FORMAT_VERSION, outcome, issuer, terminal_id, seq, time,
                     token_hash, masked_token, amount, reasons, approval_code, atc,
                     last_online_atc, offline_count, offline_today, offline_since_online)
    crc32_into(buf, _BODY, buf, _BODY)


def decode(record):
    """RECORD_SIZE bytes -> dict keyed by FIELDS (bytes fields as bytes).

    ValueError for a wrong length, a bad CRC or an unknown version.
    """
    if len(record) != RECORD_SIZE:
        raise ValueError("journal record has %d bytes, not %d" % (len(record), RECORD_SIZE))
    if not _crc_ok(record, bytearray(4)):
        raise ValueError("journal record CRC mismatch")
    values = struct.unpack_from(_REC_FMT, record, 0)
    if values[0] != FORMAT_VERSION:
        raise ValueError("journal record version %d unknown" % values[0])
    out = {}
    for i in range(len(FIELDS)):
        v = values[i]
        out[FIELDS[i]] = bytes(v) if isinstance(v, (bytes, bytearray)) else v
    return out


def mask_token_into(token, out):
    """First 4 and last 4 bytes of a token number into out[:8] (short: padded with '*')."""
    n = len(token)
    for i in range(8):
        if n >= 8:
            out[i] = token[i] if i < 4 else token[n - 8 + i]
        else:
            out[i] = token[i] if i < n else 0x2A


class JournalError(TerminalError):
    """A journal operation failed; what is on flash stays consistent."""


class JournalFull(JournalError):
    """append() refused: uncleared records are never overwritten."""


class UnknownBatch(JournalError):
    """A batch id this journal has not closed."""


class Journal:
    """The journal in directory `root` (created if missing) of a mounted filesystem.

    Read these attributes on the hot path: `pending`, `capacity`, `near_full`
    (new sales online-only), `full` (append refused), `open_batch`.
    """

    def __init__(self, root, capacity, terminal_id, near_full_pct=90):
        if capacity < 1:
            raise ValueError("journal capacity must be positive")
        self._root = root
        self.capacity = capacity
        self.terminal_id = terminal_id
        self.near_full_pct = near_full_pct
        self._rec = bytearray(RECORD_SIZE)
        self._hdr = bytearray(RECORD_SIZE)
        self._crc = bytearray(4)
        # Per present segment, index = id - _min_id: its first seq, and the
        # first seq of the batch closed when it was created.
        self._first = array("I", [0] * _MAX_SEG)
        self._start = array("I", [0] * _MAX_SEG)
        self._f = None  # the open segment, append mode
        self._rf = None  # a reader on one closed segment
        self._rf_id = 0
        self._fault = None  # why appends are refused though records fit
        self._load()

    def status(self):
        return {"pending": self.pending, "capacity": self.capacity,
                "seq_high_water": self._next - 1, "open_batch": self.open_batch,
                "acked_batch": self._min_id - 1, "near_full": self.near_full,
                "full": self.full, "near_full_pct": self.near_full_pct, "fault": self._fault}

    def set_near_full_pct(self, pct):
        self.near_full_pct = pct
        self._flags()

    def _flags(self):
        self.pending = self._next - self._first[0]
        self.full = self._fault is not None or self.pending >= self.capacity
        self.near_full = self.full or self.pending * 100 >= self.capacity * self.near_full_pct

    def append(self, time, token_hash, masked_token, issuer, amount, outcome, reasons,
               approval_code, atc, last_online_atc, offline_today, offline_since_online,
               offline_count):
        """Write one record and sync it to flash; returns its sequence number.

        No allocation once open. JournalFull when `full` (nothing written),
        JournalError when the flash write failed (record not stored).
        """
        if self.full:
            raise JournalFull(self._fault or "journal full: %d records not cleared; pull and "
                              "acknowledge a batch" % self.pending)
        seq = self._next
        pack_record_into(self._rec, self.terminal_id, seq, time, token_hash, masked_token,
                         issuer, amount, outcome, reasons, approval_code, atc, last_online_atc,
                         offline_today, offline_since_online, offline_count)
        try:
            self._f.write(self._rec)
            self._f.flush()  # LittleFS: lfs_file_sync, which ends in a block device sync
        except (OSError, AttributeError) as e:
            self._recover(e)
            raise JournalError("journal: flash write failed (%r); record not stored" % e) from e
        self._next = seq + 1
        self.pending += 1
        if self.pending >= self.capacity:
            self.full = True
        if self.pending * 100 >= self.capacity * self.near_full_pct:
            self.near_full = True
        return seq

    def close_batch(self):
        """Close the open batch: (batch_id, first_seq, count) of every record not
        yet acknowledged. Nothing new since the last close: that batch again
        (count 0 if it is acknowledged). _MAX_SEG segments present: the newest
        closed batch again, new records wait for the next one."""
        n = self.open_batch - self._min_id + 1
        if self._next == self._first[n - 1] or n == _MAX_SEG:
            b = self.open_batch - 1
            if b < self._min_id:
                return b, self._next, 0
            first = self._batch_first(b)
            return b, first, self._first[b + 1 - self._min_id] - first
        b = self.open_batch
        start = self._first[0]
        try:
            f = self._f
            self._f = None
            f.close()
            self._new_segment(b + 1, self._next, start)
            self._f = open(self._path(b + 1), "ab")
        except OSError as e:
            self._recover(e)
            raise JournalError("journal: closing batch %d failed (%r)" % (b, e)) from e
        self._first[n] = self._next
        self._start[n] = start
        self.open_batch = b + 1
        return b, start, self._next - start

    def read_batch(self, batch_id, from_seq, buf):
        """Copy the records of closed batch `batch_id` from sequence number
        `from_seq` on into buf (as many whole records as fit); returns the
        bytes copied, 0 past the end. A resumed pull asks from the last seq it
        stored + 1: an offset by seq can neither skip nor repeat a record. An
        acknowledged batch reads as empty."""
        if 0 <= batch_id < self._min_id:
            return 0  # acknowledged (0: the empty batch before any): nothing left
        if len(buf) < RECORD_SIZE:
            raise ValueError("journal: read buffer smaller than a record")
        b = self._outstanding(batch_id)
        return self._copy(max(from_seq, self._batch_first(batch_id)), self._first[b + 1] - 1,
                          buf, batch_id)

    def read_records(self, from_seq, buf):
        """Copy records from sequence number `from_seq` to the newest, whatever
        batch holds them (the open one too), into buf; returns the bytes copied,
        0 past the end. Boot uses it to replay what a saved snapshot missed."""
        if len(buf) < RECORD_SIZE:
            raise ValueError("journal: read buffer smaller than a record")
        return self._copy(max(from_seq, self._first[0]), self._next - 1, buf, self.open_batch)

    def _copy(self, seq, end, buf, batch_id):
        # Whole records seq..end (at most what buf holds) from the segment files.
        last = self.open_batch - self._min_id  # table index of the open segment
        room = len(buf) // RECORD_SIZE
        mv = memoryview(buf)
        done = 0
        try:
            while room and seq <= end:
                i = last
                while self._first[i] > seq:
                    i -= 1
                seg_end = end if i == last else min(end, self._first[i + 1] - 1)
                n = min(room, seg_end - seq + 1)
                if self._rf_id != self._min_id + i:
                    self._close_reader()
                    self._rf = open(self._path(self._min_id + i), "rb")
                    self._rf_id = self._min_id + i
                self._rf.seek((1 + seq - self._first[i]) * RECORD_SIZE)
                if self._rf.readinto(mv[done:done + n * RECORD_SIZE]) != n * RECORD_SIZE:
                    raise OSError(5)
                done += n * RECORD_SIZE
                seq += n
                room -= n
        except OSError as e:
            self._close_reader()
            raise JournalError("journal: reading batch %d failed (%r)" % (batch_id, e)) from e
        return done

    def acknowledge(self, batch_id):
        """Free the records of closed batch `batch_id`: ACKED, or ALREADY_ACKED
        for one acknowledged before (harmless); UnknownBatch otherwise."""
        if 0 <= batch_id < self._min_id:
            return ALREADY_ACKED
        k = self._outstanding(batch_id) + 1
        self._close_reader()
        try:
            # Oldest first, so a power cut leaves a contiguous run of segments
            # and the batch still outstanding: acknowledging it again finishes.
            for sid in range(self._min_id, batch_id + 1):
                os.remove(self._path(sid))
        except OSError as e:
            self._recover(e)
            raise JournalError("journal: acknowledging batch %d failed (%r)"
                               % (batch_id, e)) from e
        for i in range(self.open_batch - batch_id):
            self._first[i] = self._first[i + k]
            self._start[i] = self._start[i + k]
        self._min_id = batch_id + 1
        self._fault = None
        self._flags()
        return ACKED

    def close(self):
        self._close_reader()
        if self._f is not None:
            self._f.close()
            self._f = None

    def _path(self, sid):
        return "%s/seg%08d" % (self._root, sid)

    def _outstanding(self, batch_id):
        # Table index of an outstanding closed batch, or raise.
        if self._min_id <= batch_id < self.open_batch:
            return batch_id - self._min_id
        if batch_id == self.open_batch:
            raise UnknownBatch("batch %d is still open: close it first" % batch_id)
        if self._min_id == self.open_batch:
            raise UnknownBatch("unknown batch %d: none outstanding, %d acknowledged"
                               % (batch_id, self._min_id - 1))
        raise UnknownBatch("unknown batch %d: outstanding %d..%d"
                           % (batch_id, self._min_id, self.open_batch - 1))

    def _batch_first(self, b):
        # First seq recorded when b was closed, past any prefix since acknowledged.
        return max(self._start[b + 1 - self._min_id], self._first[0])

    def _close_reader(self):
        if self._rf is not None:
            self._rf.close()
        self._rf = None
        self._rf_id = 0

    def _recover(self, err):
        # After a failed flash operation: drop the handles, rescan as at boot.
        # Out of space (or unreadable), appends stay refused until an ack.
        try:
            self.close()
        except OSError:
            self._f = None
        if isinstance(err, OSError) and err.args and err.args[0] == _ENOSPC:
            self._fault = "journal full: no flash space left for a record"
        try:
            self._load()
        except (OSError, JournalError) as e:
            self._fault = "journal unusable (%r); reboot" % e
        self._flags()

    def _new_segment(self, sid, first_seq, start):
        # Written whole to tmp, then renamed: LittleFS renames atomically.
        h = self._hdr
        for i in range(RECORD_SIZE):
            h[i] = 0
        struct.pack_into(_SEG_FMT, h, 0, _SEG_MAGIC, FORMAT_VERSION, 0, 0, sid, first_seq, start)
        crc32_into(h, _BODY, h, _BODY)
        with open(self._root + "/tmp", "wb") as f:
            f.write(h)
        os.rename(self._root + "/tmp", self._path(sid))

    def _load(self):
        # Boot scan: list the segments, check their headers, repair the tail.
        root = self._root
        try:
            names = os.listdir(root)
        except OSError:
            os.mkdir(root)
            names = ()
        lo = hi = count = 0
        for name in names:
            if name == "tmp":  # a close or repair cut short, never renamed in
                os.remove(root + "/tmp")
            elif len(name) == 11 and name.startswith("seg") and name[3:].isdigit():
                sid = int(name[3:])
                lo = sid if count == 0 or sid < lo else lo
                hi = max(hi, sid)
                count += 1
        if count == 0:
            self._new_segment(1, 1, 1)
            lo = hi = count = 1
        if hi - lo + 1 != count or count > _MAX_SEG:
            raise JournalError("journal: segments %d..%d are not %d in a row" % (lo, hi, count))
        self._min_id = lo
        self.open_batch = hi
        h = self._hdr
        for i in range(count):
            with open(self._path(lo + i), "rb") as f:
                got = f.readinto(h)
            v = struct.unpack_from(_SEG_FMT, h, 0)
            if got != RECORD_SIZE or not _crc_ok(h, self._crc) or v[0] != _SEG_MAGIC \
                    or v[4] != lo + i:
                raise JournalError("journal: segment %d has a bad header" % (lo + i))
            self._first[i] = v[5]
            self._start[i] = v[6]
            if i and v[5] <= self._first[i - 1]:
                raise JournalError("journal: segment %d is out of order" % (lo + i))
        first = self._first[count - 1]
        path = self._path(hi)
        size = os.stat(path)[6] - RECORD_SIZE
        n = keep = size // RECORD_SIZE
        # Only the last append can have been cut: drop its record if torn.
        if n and not self._record_ok(path, n - 1, first + n - 1):
            keep = n - 1
            if keep and not self._record_ok(path, keep - 1, first + keep - 1):
                raise JournalError("journal: segment %d is damaged before its end" % hi)
        if keep != n or size % RECORD_SIZE:
            with open(path, "rb") as src, open(root + "/tmp", "wb") as dst:
                for _ in range(keep + 1):
                    src.readinto(self._rec)
                    dst.write(self._rec)
            os.rename(root + "/tmp", path)
        self._next = first + keep
        self._f = open(path, "ab")
        self._flags()

    def _record_ok(self, path, index, seq):
        with open(path, "rb") as f:
            f.seek((1 + index) * RECORD_SIZE)
            got = f.readinto(self._rec)
        r = self._rec
        return (got == RECORD_SIZE and r[0] == FORMAT_VERSION and _crc_ok(r, self._crc)
                and struct.unpack_from("<I", r, 8)[0] == seq)
