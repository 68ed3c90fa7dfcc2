"""The terminal-side per-card counters across reboots: snapshot + journal replay.

    cs = CounterStore(root, engine, journal)
    cs.restore()      # boot: load the snapshot, replay journal records after it
    cs.save()         # before a batch acknowledgement frees records; at shutdown

Writing the whole table (18 KB at 512 cards) on every tap would wear the flash
and slow the tap, so the snapshot is taken only when records it depends on are
about to be freed (and at shutdown). Every tap is in the journal anyway: at
boot the records newer than the snapshot are replayed into the table, so a
power cut loses no count and a reboot does not reset the day.
"""

import struct

from terminal import store
from terminal.compat import const
from terminal.journal import RECORD_SIZE

COUNTERS_FILE = "counters.bin"
_P_SPLIT_WINDOW_S = const(9)
_P_BUSINESS_DAY_CUTOVER_MIN = const(14)
_APPROVED_OFFLINE = const(1)
_APPROVED_ONLINE = const(2)


class CounterStore:
    def __init__(self, root, engine, journal):
        self.root = root
        self.engine = engine
        self.journal = journal
        self.replayed = 0
        self.note = None

    def save(self):
        """Snapshot: the table buffer, then the journal seq it includes (u32)."""
        seq = self.journal.status()["seq_high_water"]
        p = store.path(self.root, COUNTERS_FILE)
        tmp = p + ".tmp"
        with open(tmp, "wb") as f:
            f.write(self.engine.table.buffer())
            f.write(struct.pack("<I", seq))
        import os

        os.rename(tmp, p)

    def restore(self):
        table = self.engine.table
        data = store.read(self.root, COUNTERS_FILE)
        after = 0
        if data is not None and len(data) > 4:
            err = table.load_from(memoryview(data)[:-4])
            if err:
                self.note = "counter snapshot not restored (" + err + "): rebuilt from journal"
            else:
                after = struct.unpack("<I", data[-4:])[0]
        self.replayed = self._replay(after + 1)

    def _replay(self, seq):
        from terminal.velocity import business_day

        v = self.engine.params.values
        table = self.engine.table
        buf = bytearray(8 * RECORD_SIZE)
        n_done = 0
        while True:
            n = self.journal.read_records(seq, buf)
            if not n:
                return n_done
            for off in range(0, n, RECORD_SIZE):
                outcome = buf[off + 1]
                t, amount = struct.unpack_from("<I", buf, off + 12)[0], struct.unpack_from(
                    "<I", buf, off + 32)[0]
                atc = struct.unpack_from("<H", buf, off + 46)[0]
                key = memoryview(buf)[off + 16 : off + 24]
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

    def status_fields(self):
        t = self.engine.table
        out = [("counters", "%d/%d cards" % (t.count, t.capacity)),
               ("counter_evictions", t.evictions),
               ("counters_replayed_at_boot", self.replayed)]
        if self.note:
            out.append(("note", self.note))
        return out
