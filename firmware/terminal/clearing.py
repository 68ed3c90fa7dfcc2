"""Clearing batches over the host link: close, read, acknowledge.

    BATCH_CLOSE (signed)  -> batch id u32, first seq u32, count u32, MAC (32)
    BATCH_READ            batch id u32, from seq u32 -> whole records
    BATCH_ACK   (signed)  batch id u32 -> "acked" | "already acked"

A batch holds every record not yet acknowledged; closing again before an
acknowledgement returns a batch that covers the earlier one, so a repeated
or interrupted pull only ever re-reads records (the centre de-duplicates by
terminal id and sequence number). The MAC ("batch" || id || first || count,
then the records) lets the centre refuse a batch altered on the way. Space is
freed only by BATCH_ACK.
"""

import struct

from terminal import protocol
from terminal.compat import const
from terminal.journal import RECORD_SIZE, JournalError

_READ_RECORDS = const(8)


class Clearing:
    def __init__(self, service, journal, before_ack=None):
        self.svc = service
        self.journal = journal
        self.before_ack = before_ack  # e.g. save the counter table before records go
        self._buf = bytearray(_READ_RECORDS * RECORD_SIZE)
        h = service.handlers
        h[protocol.CMD_BATCH_CLOSE] = self.do_close
        h[protocol.CMD_BATCH_READ] = self.do_read
        h[protocol.CMD_BATCH_ACK] = self.do_ack

    def do_close(self, args):
        try:
            batch, first, count = self.journal.close_batch()
        except JournalError as e:
            return protocol.ERR_INTERNAL, str(e)
        head = struct.pack("<III", batch, first, count)
        mac = self.svc.auth.stream(b"batch")
        mac.update(head)
        seq = first
        mv = memoryview(self._buf)
        while count:
            n = self.journal.read_batch(batch, seq, self._buf)
            if not n:
                break
            mac.update(mv[:n])
            seq += n // RECORD_SIZE
        return protocol.OK, head + self.svc.auth.finish(mac)

    def do_read(self, args):
        if len(args) != 8:
            return protocol.ERR_MALFORMED, "batch read takes a batch id and a sequence number"
        batch, from_seq = struct.unpack("<II", args)
        room = self.svc.link.max_body // RECORD_SIZE * RECORD_SIZE
        out = self.svc.link.body_buffer()[:room]
        try:
            n = self.journal.read_batch(batch, from_seq, out)
        except JournalError as e:  # UnknownBatch included
            return protocol.ERR_STATE, str(e)
        return protocol.OK, out[:n]

    def do_ack(self, args):
        if len(args) != 4:
            return protocol.ERR_MALFORMED, "batch ack takes a batch id"
        batch = struct.unpack("<I", args)[0]
        if self.before_ack is not None:
            self.before_ack()
        try:
            r = self.journal.acknowledge(batch)
        except JournalError as e:
            return protocol.ERR_STATE, str(e)
        return protocol.OK, "acked" if r == 0 else "already acked"

    def status_fields(self):
        st = self.journal.status()
        out = [("journal_pending", st["pending"]), ("journal_capacity", st["capacity"]),
               ("journal_seq", st["seq_high_water"]), ("journal_open_batch", st["open_batch"]),
               ("journal_acked_batch", st["acked_batch"])]
        if st["full"]:
            out.append(("alert", "journal full: sales declined until a batch is acknowledged"))
        elif st["near_full"]:
            out.append(("alert", "journal near full: new sales go online-only"))
        if st["fault"]:
            out.append(("journal_fault", st["fault"]))
        return out
