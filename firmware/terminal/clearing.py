"""Clearing batches over the host link: close, read, acknowledge.

    BATCH_CLOSE (signed)  -> batch id u32, first seq u32, count u32, MAC (32)
    BATCH_READ            batch id u32, from seq u32 -> whole records
    BATCH_ACK   (signed)  batch id u32 -> "acked" | "already acked"

A batch holds every record not yet acknowledged; closing again before an
acknowledgement returns a batch that covers the earlier one, so a repeated
or interrupted pull only ever re-reads records (the centre de-duplicates by
terminal id and sequence number). The MAC ("batch" || id || first || count,
then the records) lets the centre refuse a batch altered on the way. Space is
freed only by BATCH_ACK, after the counter table is saved (terminal.counters):
the records it frees are the ones a reboot would replay into it.

The terminal imports this module on demand (terminal.service) and drops it
once another module's command or a sale comes, so it keeps no state: the
batches' is the journal's.
"""

import struct

from terminal import protocol
from terminal.journal import RECORD_SIZE, JournalError


def handle(svc, cmd, args):
    if cmd == protocol.CMD_BATCH_READ:
        return _read(svc, args)
    if cmd == protocol.CMD_BATCH_CLOSE:
        return _close(svc)
    return _ack(svc, args)


def _close(svc):
    journal = svc.journal
    try:
        batch, first, count = journal.close_batch()
    except JournalError as e:
        return protocol.ERR_INTERNAL, str(e)
    head = struct.pack("<III", batch, first, count)
    mac = svc.auth.stream(b"batch")
    mac.update(head)
    seq = first
    buf = svc.link.body_buffer()  # scratch until the reply is written
    while count:
        n = journal.read_batch(batch, seq, buf)
        if not n:
            break
        mac.update(buf[:n])
        seq += n // RECORD_SIZE
    return protocol.OK, head + svc.auth.finish(mac)


def _read(svc, args):
    if len(args) != 8:
        return protocol.ERR_MALFORMED, "batch read takes a batch id and a sequence number"
    batch, from_seq = struct.unpack("<II", args)
    room = svc.link.max_body // RECORD_SIZE * RECORD_SIZE
    out = svc.link.body_buffer()[:room]
    try:
        n = svc.journal.read_batch(batch, from_seq, out)
    except JournalError as e:  # UnknownBatch included
        return protocol.ERR_STATE, str(e)
    return protocol.OK, out[:n]


def _ack(svc, args):
    if len(args) != 4:
        return protocol.ERR_MALFORMED, "batch ack takes a batch id"
    batch = struct.unpack("<I", args)[0]
    from terminal import counters

    counters.save(svc)
    try:
        r = svc.journal.acknowledge(batch)
    except JournalError as e:
        return protocol.ERR_STATE, str(e)
    return protocol.OK, "acked" if r == 0 else "already acked"
