"""The terminal-side per-card counters across reboots: snapshot + journal replay.

    n = restore(service)   # boot: load the snapshot, replay journal records after it
    save(service)          # before a batch acknowledgement frees records; at shutdown

Writing the whole table (18 KB at 512 cards) on every tap would wear the flash
and slow the tap, so the snapshot is taken only when records it depends on are
about to be freed (and at shutdown). Every tap is in the journal anyway: at
boot the records newer than the snapshot are replayed into the table, so a
power cut loses no count and a reboot does not reset the day.

The terminal imports this module on demand (terminal.service) and drops it
after: the counters live in the decision engine's table.
"""

import os
import struct

from terminal import store
from terminal.compat import const
from terminal.journal import (
    OFF_AMOUNT,
    OFF_ATC,
    OFF_OUTCOME,
    OFF_TIME,
    OFF_TOKEN_HASH,
    RECORD_SIZE,
)
from terminal.velocity import business_day

COUNTERS_FILE = "counters.bin"
_P_SPLIT_WINDOW_S = const(9)
_P_BUSINESS_DAY_CUTOVER_MIN = const(14)
_APPROVED_OFFLINE = const(1)
_APPROVED_ONLINE = const(2)


def save(svc):
    """Snapshot: the table buffer, then the journal seq it includes (u32)."""
    seq = svc.journal.status()["seq_high_water"]
    p = store.path(svc.root, COUNTERS_FILE)
    tmp = p + ".tmp"
    with open(tmp, "wb") as f:
        f.write(svc.engine.table.buffer())
        f.write(struct.pack("<I", seq))
    os.rename(tmp, p)


def restore(svc):
    """Boot: the snapshot, then the journal records after it. Returns the number
    of records replayed; a snapshot not used is noted in svc.counters_note."""
    err, after = _load(svc.root, svc.engine.table)
    if err:
        svc.counters_note = "counter snapshot not restored (" + err + "): rebuilt from journal"
    return _replay(svc, after + 1)


def _load(root, table):
    # The snapshot is read straight into the table's buffer, which load_from then
    # checks: a copy of the file would need a second table-sized block (18 KB)
    # late in boot, when the heap has no such hole. (error or None, journal seq).
    p = store.path(root, COUNTERS_FILE)
    try:
        size = os.stat(p)[6]
    except OSError:
        return None, 0
    if size <= 4:
        return None, 0
    buf = table.buf
    if size - 4 != len(buf):
        return "counter table has %d bytes, expected %d" % (size - 4, len(buf)), 0
    seq = bytearray(4)
    try:
        with open(p, "rb") as f:
            ok = f.readinto(buf) == len(buf) and f.readinto(seq) == 4
    except OSError:
        ok = False
    if not ok:
        for i in range(len(buf)):
            buf[i] = 0  # the table is new at boot: empty again
        return "counter snapshot unreadable", 0
    err = table.load_from(buf)
    if err:
        return err, 0
    return None, struct.unpack("<I", seq)[0]


def _replay(svc, seq):
    v = svc.engine.params.values
    table = svc.engine.table
    buf = svc.link.body_buffer()  # scratch: the link answers nothing during boot
    n_done = 0
    while True:
        n = svc.journal.read_records(seq, buf)
        if not n:
            return n_done
        for off in range(0, n, RECORD_SIZE):
            outcome = buf[off + OFF_OUTCOME] & 0xF
            t = struct.unpack_from("<I", buf, off + OFF_TIME)[0]
            amount = struct.unpack_from("<I", buf, off + OFF_AMOUNT)[0]
            atc = struct.unpack_from("<H", buf, off + OFF_ATC)[0]
            key = buf[off + OFF_TOKEN_HASH : off + OFF_TOKEN_HASH + 8]
            day = business_day(t, v[_P_BUSINESS_DAY_CUTOVER_MIN])
            slot = table.lookup(key, t, day, v[_P_SPLIT_WINDOW_S])
            if slot < 0:
                slot = table.insert(key, t, day, v[_P_SPLIT_WINDOW_S])
            if outcome == _APPROVED_OFFLINE or outcome == _APPROVED_ONLINE:
                table.record_approval(slot, amount, t, outcome == _APPROVED_ONLINE, atc)
            else:
                table.record_decline(slot)
            n_done += 1
        seq += n // RECORD_SIZE
