"""The journal's batches, reads and boot scan: terminal.journal's code a tap never runs.

    from terminal import journal_ops        # by terminal.journal, when it needs it
    journal_ops.load(j)                     # boot: state file, sector headers, the tail
    journal_ops.close_batch(j)              # (and read_batch, read_records, acknowledge)

A Journal forwards its batch calls here; the terminal drops this module while
taps run (terminal.service ON_DEMAND), so the resident journal is the record
format, the append and the idle-time erase. Layout and the power-fail
argument: docs/journal.md.
"""

import os
import struct
from array import array

from terminal.compat import const
from terminal.journal import (
    _HDR_FMT,
    _HDR_MAGIC,
    _REC_FMT,
    ACKED,
    ALREADY_ACKED,
    FORMAT_VERSION,
    OFF_SEQ,
    RECORD_SIZE,
    JournalError,
    UnknownBatch,
    _all,
    _crc_ok,
    crc32_into,
)

# Batch state (LittleFS file "state"): magic, version, closed batches
# outstanding, 0, epoch, last acknowledged batch, first seq not acknowledged,
# open batch id; then (start, end) per outstanding closed batch; CRC-32.
_ST_FMT = "<4sBBHIIII"
_ST_MAGIC = b"TJST"
_ST_LEN = const(24)
# Closed batches outstanding at most: bounds the batch table whatever the host does.
MAX_CLOSED = const(7)
# Sector states, as terminal.journal keeps them (tests/test_journal.py pins them)
_UNKNOWN = const(0)
_READY = const(1)
_DIRTY = const(2)
_LIVE = const(3)


def decode(record):
    """terminal.journal.decode."""
    if len(record) != RECORD_SIZE:
        raise ValueError("journal record has %d bytes, not %d" % (len(record), RECORD_SIZE))
    if not _crc_ok(record, bytearray(4)):
        raise ValueError("journal record CRC mismatch")
    v = struct.unpack_from(_REC_FMT, record, 0)
    if v[0] != FORMAT_VERSION:
        raise ValueError("journal record version %d unknown" % v[0])
    code = v[2] << 4 | v[1] >> 4
    return {"version": v[0], "outcome": v[1] & 0xF, "issuer": v[3], "terminal_id": v[5],
            "epoch": v[6], "seq": v[7], "time": v[8], "token_hash": bytes(v[9]),
            "masked_token": bytes(v[10]), "amount": v[11], "reasons": v[12],
            "approval_code": b"%06d" % code, "atc": v[4], "last_online_atc": v[13],
            "offline_count_since_online": v[14], "offline_amount_today": v[15],
            "offline_amount_since_online": v[16]}


def idle(j):
    n = j._nsec
    i = j._head
    checked = 0
    for _ in range(n):
        i += 1
        if i == n:
            i = 0
        st = j._state[i]
        if st == _DIRTY:
            if not checked:
                _try_ready(j, i)
            return True
        if st == _UNKNOWN:
            _try_ready(j, i)  # an erase only if it was not erased after all
            checked += 1
            if checked == 4:
                return True
    if not checked:
        j.todo = False
    return checked > 0


def _try_ready(j, i):
    try:
        make_ready(j, i)
    except OSError:
        j._state[i] = _DIRTY


def make_ready(j, i):
    """Verify sector i erased (or erase it); returns the erases made (0 or 1)."""
    if j._state[i] == _UNKNOWN:
        buf = j._rec
        for k in range(j._slots):
            j._ring.read(i, k * RECORD_SIZE, buf)
            if not _all(buf, 0xFF):
                break
        else:
            j._state[i] = _READY
            return 0
    j._state[i] = _DIRTY
    j._ring.erase(i)
    j._state[i] = _READY
    return 1


def close_batch(j):
    """Close the open batch: (batch_id, first_seq, count) of every record not
    yet acknowledged. Nothing new since the last close: that batch again
    (count 0 if it is acknowledged). MAX_CLOSED batches outstanding: the
    newest again, new records wait for the next one."""
    k = j.open_batch - j._min_id  # closed batches outstanding
    last = j._bend[k - 1] if k else j._first_unacked - 1
    if j._next == last + 1 or k == MAX_CLOSED:
        if not k:
            return j._min_id - 1, j._next, 0
        first = _batch_first(j, k - 1)
        return j.open_batch - 1, first, j._bend[k - 1] - first + 1
    b = j.open_batch
    start = j._first_unacked
    j._bstart[k] = start
    j._bend[k] = j._next - 1
    j.open_batch = b + 1
    try:
        _save_state(j)
    except OSError as e:
        j.open_batch = b
        raise JournalError("journal: closing batch %d failed (%r)" % (b, e)) from e
    return b, start, j._next - start


def read_batch(j, batch_id, from_seq, buf):
    """Copy the records of closed batch `batch_id` from sequence number
    `from_seq` on into buf (as many whole records as fit); returns the
    bytes copied, 0 past the end. A resumed pull asks from the last seq it
    stored + 1: an offset by seq can neither skip nor repeat a record. An
    acknowledged batch reads as empty."""
    if 0 <= batch_id < j._min_id:
        return 0  # acknowledged (0: the empty batch before any): nothing left
    if len(buf) < RECORD_SIZE:
        raise ValueError("journal: read buffer smaller than a record")
    k = _outstanding(j, batch_id)
    return _copy(j, max(from_seq, _batch_first(j, k)), j._bend[k], buf, batch_id)


def read_records(j, from_seq, buf):
    """Copy records from sequence number `from_seq` to the newest, whatever
    batch holds them (the open one too), into buf; returns the bytes copied,
    0 past the end. Boot uses it to replay what a saved snapshot missed."""
    if len(buf) < RECORD_SIZE:
        raise ValueError("journal: read buffer smaller than a record")
    return _copy(j, max(from_seq, j._first_unacked), j._next - 1, buf,
                      j.open_batch)


def acknowledge(j, batch_id):
    """Free the records of closed batch `batch_id`: ACKED, or ALREADY_ACKED
    for one acknowledged before (harmless); UnknownBatch otherwise. The
    sectors it frees are erased now (the next two) or in idle time."""
    if 0 <= batch_id < j._min_id:
        return ALREADY_ACKED
    k = _outstanding(j, batch_id) + 1
    old = (j._min_id, j._first_unacked)
    j._first_unacked = j._bend[k - 1] + 1
    j._min_id = batch_id + 1
    for q in range(j.open_batch - j._min_id):
        j._bstart[q] = j._bstart[q + k]
        j._bend[q] = j._bend[q + k]
    try:
        _save_state(j)
    except OSError as e:
        j._min_id, j._first_unacked = old  # the file holds the old state
        _load_state(j)
        raise JournalError("journal: acknowledging batch %d failed (%r)"
                           % (batch_id, e)) from e
    j._fault = None
    j._flags()
    _reclaim(j)
    try:
        _prepare(j, 2)  # the next sectors an append needs, erased off the tap path
    except OSError:
        pass  # left to idle time, or to the append that needs it
    return ACKED


def _outstanding(j, batch_id):
    # Table index of an outstanding closed batch, or raise.
    if j._min_id <= batch_id < j.open_batch:
        return batch_id - j._min_id
    if batch_id == j.open_batch:
        raise UnknownBatch("batch %d is still open: close it first" % batch_id)
    if j._min_id == j.open_batch:
        raise UnknownBatch("unknown batch %d: none outstanding, %d acknowledged"
                           % (batch_id, j._min_id - 1))
    raise UnknownBatch("unknown batch %d: outstanding %d..%d"
                       % (batch_id, j._min_id, j.open_batch - 1))


def _batch_first(j, k):
    # First seq of closed batch k, past any prefix since acknowledged.
    return max(j._bstart[k], j._first_unacked)

# -- reading records ---------------------------------------------------------------


def _copy(j, seq, end, buf, batch_id):
    # Whole records seq..end (at most what buf holds), read a run of slots at a
    # time; a voided slot (a cut append) is skipped.
    room = len(buf) // RECORD_SIZE
    mv = memoryview(buf)
    done = 0
    try:
        if seq <= end and room:
            i = _sector_of(j, seq)
            slot = 1 + seq - j._sfirst[i]
        while room and seq <= end:
            if slot >= j._slots:
                i = i + 1 if i + 1 < j._nsec else 0
                if j._state[i] != _LIVE or j._sfirst[i] > seq:
                    raise OSError(5)
                slot = 1
            n = min(room, end - seq + 1, j._slots - slot)
            at = done * RECORD_SIZE
            j._ring.read(i, slot * RECORD_SIZE, mv[at:at + n * RECORD_SIZE])
            slot += n
            w = done
            for r in range(done, done + n):
                got = _check(j, buf, r * RECORD_SIZE, seq)
                if got == 0:
                    if r != w:
                        for b in range(RECORD_SIZE):
                            buf[w * RECORD_SIZE + b] = buf[r * RECORD_SIZE + b]
                    w += 1
                    seq += 1
                elif got > 0:
                    raise JournalError("journal: record %d missing (sector %d)" % (seq, i))
            room -= w - done
            done = w
    except OSError as e:
        raise JournalError("journal: reading batch %d failed (%r)" % (batch_id, e)) from e
    return done * RECORD_SIZE


def _check(j, buf, off, seq):
    # 0: the record `seq`; -1: a slot to skip (void, or an earlier record);
    # 1: anything else (a later record, or damage).
    mv = memoryview(buf)[off:off + RECORD_SIZE]
    if _all(mv, 0):
        return -1
    if not _ours(j, mv):
        return 1
    got = struct.unpack_from("<I", mv, OFF_SEQ)[0]
    return 0 if got == seq else (-1 if got < seq else 1)


def _ours(j, rec):
    # A whole record of this format and this journal's epoch.
    return (rec[0] == FORMAT_VERSION and _crc_ok(rec, j._crc)
            and struct.unpack_from("<I", rec, 12)[0] == j.epoch)


def _sector_of(j, seq):
    # The live sector holding seq: back from the newest.
    i = j._head
    for _ in range(j._nsec):
        if j._state[i] != _LIVE:
            break
        if j._sfirst[i] <= seq:
            return i
        i = i - 1 if i else j._nsec - 1
    raise OSError(5)

# -- state file --------------------------------------------------------------------


def _save_state(j):
    b = j._st
    k = j.open_batch - j._min_id
    struct.pack_into(_ST_FMT, b, 0, _ST_MAGIC, FORMAT_VERSION, k, 0, j.epoch,
                     j._min_id - 1, j._first_unacked, j.open_batch)
    for q in range(k):
        struct.pack_into("<II", b, _ST_LEN + 8 * q, j._bstart[q], j._bend[q])
    n = _ST_LEN + 8 * k
    crc32_into(b, n, b, n)
    tmp = j._root + "/state.tmp"
    with open(tmp, "wb") as f:
        f.write(memoryview(b)[: n + 4])
    os.rename(tmp, j._root + "/state")


def _load_state(j):
    # True if the state file was read; False if there is none (a new journal).
    try:
        with open(j._root + "/state", "rb") as f:
            n = f.readinto(j._st)
    except OSError:
        return False
    b = j._st
    v = struct.unpack_from(_ST_FMT, b, 0) if n >= _ST_LEN else None
    if v is None or v[0] != _ST_MAGIC or v[1] != FORMAT_VERSION or v[2] > MAX_CLOSED \
            or n != _ST_LEN + 8 * v[2] + 4:
        raise JournalError("journal: state file is damaged")
    crc32_into(b, n - 4, j._crc, 0)
    for k in range(4):
        if j._crc[k] != b[n - 4 + k]:
            raise JournalError("journal: state file is damaged")
    j.epoch = v[4]
    j._min_id = v[5] + 1
    j._first_unacked = v[6]
    j.open_batch = v[7]
    if j.open_batch - j._min_id != v[2]:
        raise JournalError("journal: state file is damaged")
    for q in range(v[2]):
        j._bstart[q], j._bend[q] = struct.unpack_from("<II", b, _ST_LEN + 8 * q)
    return True

# -- boot --------------------------------------------------------------------------


def check_format(j, root):
    try:
        names = os.listdir(root)
    except OSError:
        os.mkdir(root)
        return
    for name in names:
        if name.startswith("seg") and name[3:].isdigit():
            raise JournalError("journal: %s holds format 1 segment files (seg*): pull "
                               "and acknowledge them with firmware 0.1, then remove them"
                               % root)
        if name == "state.tmp":  # a close or acknowledgement cut before its rename
            os.remove(root + "/state.tmp")


def load(j):
    # The boot scan: state file, every sector header, the newest sector's tail.
    j._st = bytearray(_ST_LEN + 8 * MAX_CLOSED + 4)
    # Closed batches not yet acknowledged, oldest first: batch _min_id + k covers
    # seq _bstart[k].._bend[k] (cumulative: from the first unacknowledged).
    j._bstart = array("I", [0] * MAX_CLOSED)
    j._bend = array("I", [0] * MAX_CLOSED)
    have_state = _load_state(j)
    if not have_state:
        j.epoch = 0
        j._min_id = j.open_batch = 1
        j._first_unacked = 1
    n = j._nsec
    lap = array("I", [0] * n)
    h = j._hdr
    head = -1
    for i in range(n):
        if j._ring.created:
            j._state[i] = _READY
            continue
        j._ring.read(i, 0, h)
        if _all(h, 0xFF):
            j._state[i] = _UNKNOWN
            continue
        v = struct.unpack_from(_HDR_FMT, h, 0)
        if v[0] != _HDR_MAGIC or v[1] != FORMAT_VERSION or not _crc_ok(h, j._crc):
            j._state[i] = _DIRTY  # a header cut as it was programmed, or an erase cut
            continue
        if not have_state and not j.epoch:
            j.epoch = v[4]
        if v[4] != j.epoch:
            raise JournalError("journal: sector %d belongs to epoch %08x, not %08x"
                               % (i, v[4], j.epoch))
        j._state[i] = _LIVE
        lap[i] = v[5]
        j._sfirst[i] = v[6]
        if head < 0 or v[5] > lap[head]:
            head = i
    if not j.epoch:
        j.epoch = _new_epoch()
    j._head = head
    j._lap = lap[head] if head >= 0 else 0
    tail = _chain(j, lap, have_state)
    j._next = _scan_head(j) if head >= 0 else j._first_unacked
    if not have_state:  # state lost or never written: every record here is unsent
        j._first_unacked = j._sfirst[tail] if tail >= 0 else j._next
        _save_state(j)
    if j._next < j._first_unacked or (tail >= 0 and j._sfirst[tail]
                                             > j._first_unacked):
        raise JournalError("journal: records %d..%d are not in the ring"
                           % (j._first_unacked, j._next - 1))
    j._flags()
    _reclaim(j)
    _prepare(j, 2)  # erased sectors ahead before the first append
    j.todo = False
    for i in range(n):
        if j._state[i] == _UNKNOWN or j._state[i] == _DIRTY:
            j.todo = True  # the rest is verified or erased in idle time
            break


def _prepare(j, k):
    # The k sectors after the newest, verified or erased now.
    i = j._head
    for _ in range(k):
        i = i + 1 if i + 1 < j._nsec else 0
        st = j._state[i]
        if st == _LIVE:
            return
        if st != _READY:
            make_ready(j, i)


def _chain(j, lap, have_state):
    # Keep as _LIVE the run of sectors before the newest whose laps count down
    # by one; older leftovers are freed (all their records were acknowledged).
    n = j._nsec
    i = j._head
    if i < 0:
        return -1
    tail = i
    length = 1
    for _ in range(n - 1):
        q = i - 1 if i else n - 1
        if j._state[q] != _LIVE or lap[q] != lap[i] - 1:
            break
        if j._sfirst[q] > j._sfirst[i]:
            raise JournalError("journal: sectors %d and %d are out of order" % (q, i))
        i = tail = q
        length += 1
    for q in range(n):
        if j._state[q] == _LIVE and (q - tail) % n >= length:
            if have_state and j._sfirst[tail] > j._first_unacked:
                raise JournalError("journal: sector %d is out of order" % q)
            j._state[q] = _DIRTY
    return tail


def _scan_head(j):
    # Next seq from the newest sector: its filled slots are a prefix (binary
    # search for the first erased one), of which only the last may be torn.
    i = j._head
    buf = j._rec
    lo, hi = 1, j._slots
    while lo < hi:
        mid = (lo + hi) // 2
        j._ring.read(i, mid * RECORD_SIZE, buf)
        if _all(buf, 0xFF):
            hi = mid
        else:
            lo = mid + 1
    j._slot = lo
    # Back over voided slots to the last one written; if it is torn, the one
    # before it (voids skipped) must be whole, or this is damage, not a cut.
    torn = 0
    s = lo - 1
    while s >= 1:
        j._ring.read(i, s * RECORD_SIZE, buf)
        if _all(buf, 0):  # voided: a cut append
            s -= 1
            continue
        if _ours(j, buf):
            seq = struct.unpack_from("<I", buf, OFF_SEQ)[0]
            break
        if torn or _crc_ok(buf, j._crc):
            raise JournalError("journal: sector %d is damaged before its end" % i)
        torn = s
        s -= 1
    else:
        seq = j._sfirst[i] - 1
    if torn:  # the last append was cut: void its slot, so it reads as skipped
        j._ring.program(i, torn * RECORD_SIZE, bytearray(RECORD_SIZE))
    return seq + 1


def _reclaim(j):
    # Sectors whose every record is acknowledged (never the newest) are freed.
    n = j._nsec
    i = j._head
    if i < 0:
        return
    nxt = j._sfirst[i]
    for _ in range(n - 1):
        i = i - 1 if i else n - 1
        if j._state[i] != _LIVE:
            return
        if nxt <= j._first_unacked:  # its last record nxt - 1 is acknowledged
            j._state[i] = _DIRTY
            j.todo = True
        nxt = j._sfirst[i]


def _new_epoch():
    e = 0
    while not e:
        r = os.urandom(4)
        e = r[0] | r[1] << 8 | r[2] << 16 | r[3] << 24
    return e
