"""Clearing journal: every decided transaction, on flash before the result shows.

    j = Journal("/flash/journal", board.JOURNAL_CAPACITY, terminal_id, 90,
                bdev=bdev, prog=board.FLASH_PROG_SIZE)
    seq = j.append(t, hash8, masked8, issuer, amount, outcome, reasons, b"000000",
                   atc, last_online_atc, offline_today, offline_since, offline_count)
    batch, first, count = j.close_batch()
    n = j.read_batch(batch, first, buf)   # bytes of whole records; 0 = batch end
    j.acknowledge(batch)                  # ACKED or ALREADY_ACKED
    j.idle()                              # the link is quiet: erase one freed sector

Records go into a ring of flash sectors erased beforehand (terminal.sectors):
an append programs one 64-byte slot, never erases and never commits
LittleFS metadata. Batches and acknowledgements are a small LittleFS file,
written off the tap path; the sectors an acknowledgement frees are erased
while the link is idle. Every record carries the journal's epoch, a random
number drawn when the journal is made: a terminal whose flash was formatted
starts a new epoch, so its restarted sequence numbers never collide with
records the centre already holds. Layout, recovery and the power-fail
argument: docs/journal.md.
"""

import struct
from array import array

from terminal import sectors
from terminal.compat import const, crc32_into
from terminal.errors import TerminalError

RECORD_SIZE = const(64)
FORMAT_VERSION = const(2)
OFFLINE_APPROVAL = b"000000"
ACKED = const(0)
ALREADY_ACKED = const(1)
FIELDS = ("version", "outcome", "issuer", "terminal_id", "epoch", "seq", "time",
          "token_hash", "masked_token", "amount", "reasons", "approval_code", "atc",
          "last_online_atc", "offline_count_since_online", "offline_amount_today",
          "offline_amount_since_online")
# Byte offsets of the fields a reader takes straight from a record (counters replay).
OFF_OUTCOME = const(1)  # low 4 bits
OFF_ATC = const(6)
OFF_SEQ = const(16)
OFF_TIME = const(20)
OFF_TOKEN_HASH = const(24)
OFF_AMOUNT = const(40)

# The record body; its CRC-32 (little-endian) fills bytes 60..63. Byte 1 holds
# the outcome (low 4 bits) and the approval code's low 4 bits, bytes 2..3 the
# rest of it: the six digits are one number below 2**20.
_REC_FMT = "<BBHHHIIII8s8sIIHHII"
_BODY = const(60)
# Ring sector header (slot 0, CRC at 60): magic, version, 0, 0, epoch, lap (how
# many sectors the ring had opened before this one), first seq it holds.
_HDR_FMT = "<4sBBHIII"
_HDR_MAGIC = b"TJR2"
_U32 = const(0xFFFFFFFF)
# Sector states (RAM only; rebuilt by the boot scan)
_UNKNOWN = const(0)  # not known to be erased: verified (and erased if need be) before use
_READY = const(1)  # erased and verified: an append may open it
_DIRTY = const(2)  # to erase: freed by an acknowledgement, or garbage from a cut
_LIVE = const(3)  # holds records not yet freed (or is the newest sector)
_SPARE_SECTORS = const(3)  # beyond capacity: partly filled ends, cut slots, the next one

def _crc_ok(buf, scratch):
    crc32_into(buf, _BODY, scratch, 0)
    for i in range(4):
        if scratch[i] != buf[_BODY + i]:
            return False
    return True


def _all(buf, value):
    for i in range(len(buf)):
        if buf[i] != value:
            return False
    return True


def pack_record_into(buf, terminal_id, seq, time, token_hash, masked_token, issuer, amount,
                     outcome, reasons, approval_code, atc, last_online_atc, offline_today,
                     offline_since_online, offline_count, epoch=0):
    """Encode a record, CRC included, into buf[:RECORD_SIZE]; no allocation.

    approval_code: six ASCII digits. A field that does not fit raises
    ValueError (MicroPython's struct would truncate it silently, CPython's
    would raise: this makes both refuse).
    """
    if len(token_hash) != 8 or len(masked_token) != 8 or len(approval_code) != 6:
        raise ValueError("journal: token hash, masked token or approval code length")
    code = 0
    for i in range(6):
        c = approval_code[i] - 48
        if not 0 <= c <= 9:
            raise ValueError("journal: approval code is not six digits")
        code = code * 10 + c
    # OR of small fields is a small int: no allocation. `time`, the epoch and the
    # terminal id (above 2**30, heap ints on 32-bit boards) are compared, never combined.
    if (outcome >> 4 or (issuer | atc | last_online_atc | offline_count) >> 16
            or (seq | amount | reasons | offline_today | offline_since_online) >> 32
            or not (0 <= time <= _U32 and 0 <= terminal_id <= _U32 and 0 <= epoch <= _U32)):
        raise ValueError("journal: a record field is out of range")
    struct.pack_into(_REC_FMT, buf, 0, FORMAT_VERSION, outcome | (code & 0xF) << 4, code >> 4,
                     issuer, atc, terminal_id, epoch, seq, time, token_hash, masked_token,
                     amount, reasons, last_online_atc, offline_count, offline_today,
                     offline_since_online)
    crc32_into(buf, _BODY, buf, _BODY)


def decode(record):
    """RECORD_SIZE bytes -> dict keyed by FIELDS (bytes fields as bytes).

    ValueError for a wrong length, a bad CRC or an unknown version. (The host's
    and the tests': on the board it is terminal.journal_ops's, loaded when asked.)
    """
    return _ops().decode(record)


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

    bdev: the block device of the LittleFS root is on, to program the ring's
    sectors directly (None: through the files); prog: the board's program
    unit (board.FLASH_PROG_SIZE); sector: sector bytes without bdev.
    Read these attributes on the hot path: `pending`, `capacity`, `near_full`
    (new sales online-only), `full` (append refused), `open_batch`.
    """

    def __init__(self, root, capacity, terminal_id, near_full_pct=90, bdev=None, prog=1,
                 sector=4096):
        if capacity < 1:
            raise ValueError("journal capacity must be positive")
        self._root = root
        self.capacity = capacity
        self.terminal_id = terminal_id
        self.near_full_pct = near_full_pct
        self._rec = bytearray(RECORD_SIZE)
        self._hdr = bytearray(RECORD_SIZE)
        self._crc = bytearray(4)
        self._fault = None  # why appends are refused though records fit
        self.tap_erases = 0  # erases an append had to make itself (0 when idle time sufficed)
        self.todo = True  # sectors may need verifying or erasing (journal_ops.idle)
        _ops().check_format(self, root)
        size = (bdev.ioctl(5, 0) if bdev is not None else sector) - sectors.RESERVED
        self._slots = size // RECORD_SIZE
        n = (capacity + self._slots - 2) // (self._slots - 1) + _SPARE_SECTORS
        try:
            self._ring = sectors.open(root, "r", n, size + sectors.RESERVED, bdev, prog)
        except OSError as e:
            raise JournalError("journal: cannot make its %d flash sectors of %d bytes (%r)"
                               % (n, size + sectors.RESERVED, e)) from e
        self._nsec = n
        self._state = bytearray(n)
        self._sfirst = array("I", [0] * n)  # first seq of each _LIVE sector
        _ops().load(self)

    def status(self):
        ready = 0
        for i in range(self._nsec):
            ready += self._state[i] == _READY
        return {"pending": self.pending, "capacity": self.capacity,
                "seq_high_water": self._next - 1, "open_batch": self.open_batch,
                "acked_batch": self._min_id - 1, "near_full": self.near_full,
                "full": self.full, "near_full_pct": self.near_full_pct, "fault": self._fault,
                "epoch": self.epoch, "sectors": self._nsec, "sectors_erased": ready,
                "tap_erases": self.tap_erases}

    def set_near_full_pct(self, pct):
        self.near_full_pct = pct
        self._flags()

    def _flags(self):
        self.pending = self._next - self._first_unacked
        self.full = self._fault is not None or self.pending >= self.capacity
        self.near_full = self.full or self.pending * 100 >= self.capacity * self.near_full_pct

    # -- the tap path ----------------------------------------------------------------

    def append(self, time, token_hash, masked_token, issuer, amount, outcome, reasons,
               approval_code, atc, last_online_atc, offline_today, offline_since_online,
               offline_count):
        """Program one record into erased flash; returns its sequence number.

        No allocation once open; no erase while idle time keeps a sector ready.
        JournalFull when `full` (nothing written), JournalError when the flash
        program failed (record not stored).
        """
        if self.full:
            raise JournalFull(self._fault or "journal full: %d records not cleared; pull and "
                              "acknowledge a batch" % self.pending)
        seq = self._next
        pack_record_into(self._rec, self.terminal_id, seq, time, token_hash, masked_token,
                         issuer, amount, outcome, reasons, approval_code, atc, last_online_atc,
                         offline_today, offline_since_online, offline_count, self.epoch)
        if self._head < 0 or self._slot == self._slots:
            self._open_sector(seq)
        slot = self._slot
        try:
            self._ring.program(self._head, slot * RECORD_SIZE, self._rec)
        except OSError as e:
            self._void(self._head, slot)
            raise JournalError("journal: flash program failed (%r); record not stored" % e) \
                from e
        self._slot = slot + 1
        self._next = seq + 1
        self.pending += 1
        if self.pending >= self.capacity:
            self.full = True
        if self.pending * 100 >= self.capacity * self.near_full_pct:
            self.near_full = True
        return seq

    def _open_sector(self, seq):
        # The next sector of the ring, erased in idle time; its header first.
        i = 0 if self._head < 0 else self._head + 1
        if i == self._nsec:
            i = 0
        st = self._state[i]
        if st == _LIVE:
            self._fault = "journal: no erased sector left; acknowledge a batch"
            self._flags()
            raise JournalFull(self._fault)
        try:
            if st != _READY:  # idle time did not come: erase here, and count it
                self.tap_erases += _ops().make_ready(self, i)
            h = self._hdr
            for k in range(RECORD_SIZE):
                h[k] = 0
            struct.pack_into(_HDR_FMT, h, 0, _HDR_MAGIC, FORMAT_VERSION, 0, 0, self.epoch,
                             self._lap + 1, seq)
            crc32_into(h, _BODY, h, _BODY)
            self._ring.program(i, 0, h)
        except OSError as e:
            self._state[i] = _DIRTY  # a torn header: erased before the ring comes back here
            self.todo = True
            raise JournalError("journal: opening a flash sector failed (%r); record not "
                               "stored" % e) from e
        self._state[i] = _LIVE
        self._sfirst[i] = seq
        self._head = i
        self._lap += 1
        self._slot = 1

    def _void(self, i, slot):
        # A slot whose program failed is programmed to zeros (always possible on
        # NOR) and skipped, so that only the last slot can ever be torn.
        r = self._hdr
        for k in range(RECORD_SIZE):
            r[k] = 0
        try:
            self._ring.program(i, slot * RECORD_SIZE, r)
            self._slot = slot + 1
        except OSError:
            self._fault = "journal: a flash slot could not be voided; reboot"
            self._flags()

    # -- idle time -------------------------------------------------------------------

    def idle(self):
        """Housekeeping while the link is quiet, a bounded step: erase the first
        sector after the newest that needs it (tSE: 45 ms typical on the boards'
        flash), or verify up to four that may not be erased (reads only). True
        if there was work; once there is none, returns at once until there is."""
        if not self.todo:
            return False
        return _ops().idle(self)

    # -- batches ---------------------------------------------------------------------

    def close_batch(self):
        """Close the open batch: (batch_id, first_seq, count) of every record not
        yet acknowledged. Nothing new since the last close: that batch again
        (count 0 if it is acknowledged). MAX_CLOSED batches outstanding: the
        newest again, new records wait for the next one."""
        return _ops().close_batch(self)

    def read_batch(self, batch_id, from_seq, buf):
        """Copy the records of closed batch `batch_id` from sequence number
        `from_seq` on into buf (as many whole records as fit); returns the
        bytes copied, 0 past the end. A resumed pull asks from the last seq it
        stored + 1: an offset by seq can neither skip nor repeat a record. An
        acknowledged batch reads as empty."""
        return _ops().read_batch(self, batch_id, from_seq, buf)

    def read_records(self, from_seq, buf):
        """Copy records from sequence number `from_seq` to the newest, whatever
        batch holds them (the open one too), into buf; returns the bytes copied,
        0 past the end. Boot uses it to replay what a saved snapshot missed."""
        if max(from_seq, self._first_unacked) >= self._next:
            return 0  # nothing to read: the batch code stays out of RAM (a boot replay)
        return _ops().read_records(self, from_seq, buf)

    def acknowledge(self, batch_id):
        """Free the records of closed batch `batch_id`: ACKED, or ALREADY_ACKED
        for one acknowledged before (harmless); UnknownBatch otherwise. The
        sectors it frees are erased now (the next two) or in idle time."""
        return _ops().acknowledge(self, batch_id)

    def close(self):
        pass  # no file stays open: the ring is programmed in place


def _ops():
    # Batches, reading and the boot scan: a module of their own, which the
    # terminal drops while taps run (terminal.service ON_DEMAND).
    from terminal import journal_ops

    return journal_ops
