"""Large transfers over the link: negative-list push and clearing-batch pull.

    summary = push_list(link, list_bytes, kind, version, base_version)
    batch = pull_batch(link)             # records verified against the batch MAC
    link ... store batch.records ...     # in the centre's database
    ack_batch(link, batch.batch_id)      # only then does the terminal free them

Both are resumable: a push that dies is restarted with the same list and
continues where the terminal's staging stopped; a pull that dies is simply
pulled again (the terminal re-sends everything not acknowledged).
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass, field

from host_tools.errors import ToolError
from host_tools.progress import Progress
from terminal import frame, protocol
from terminal.clock import EPOCH_OFFSET
from terminal.journal import RECORD_SIZE, decode


@dataclass
class PushSummary:
    version: int
    entries: int
    list_bytes: int
    wire_bytes: int
    seconds: float
    resumed_from: int
    overflowing: str

    def __str__(self) -> str:
        resumed = f", resumed at byte {self.resumed_from}" if self.resumed_from else ""
        over = f"; quota overflow, online-only: issuers {self.overflowing}" \
            if self.overflowing else ""
        return (f"list v{self.version} installed: {self.entries} entries, {self.list_bytes} "
                f"list bytes, {self.wire_bytes} bytes on the wire "
                f"({self.wire_bytes / max(self.list_bytes, 1):.3f}x), "
                f"{self.seconds:.2f} s{resumed}{over}")


def _chunk_size(link) -> int:
    max_frame = int(link.identity().get("max_frame", "256"))
    return max_frame - 3 - 4  # cmd + req, then the offset


def push_list(link, data: bytes, kind: int, version: int, base_version: int,
              label: str = "list push") -> PushSummary:
    t0 = time.monotonic()
    sent0 = link.bytes_sent
    reply = link.call_signed(protocol.CMD_LIST_BEGIN,
                             struct.pack("<BIII", kind, version, base_version, len(data)))
    offset = resumed = struct.unpack("<I", reply)[0]
    size = _chunk_size(link)
    with Progress(label, len(data), "B") as bar:
        bar.update(offset)
        while offset < len(data):
            reply = link.call(protocol.CMD_LIST_CHUNK,
                              struct.pack("<I", offset) + data[offset:offset + size])
            new = struct.unpack("<I", reply)[0]
            if new <= offset:
                raise ToolError(f"{link.name}: terminal stopped accepting the list at {offset}")
            bar.update(new - offset)
            offset = new
        auth = link.authenticator()
        mac = auth.stream(b"list")
        mac.update(data)
        with bar.waiting("commit"):  # the terminal checks the MAC and builds its index
            text = link.call_signed(protocol.CMD_LIST_COMMIT, auth.finish(mac),
                                    timeout=max(link.timeout, 60)).decode()
    kv = protocol_kv(text)
    return PushSummary(int(kv.get("version", version)), int(kv.get("entries", 0)), len(data),
                       link.bytes_sent - sent0, time.monotonic() - t0, resumed,
                       kv.get("overflowing", ""))


def list_status(link) -> dict[str, str]:
    """What the terminal's list holds (`termctl list status`)."""
    return protocol_kv(link.call(protocol.CMD_LIST_STATUS).decode())


def push_list_file(link, path) -> PushSummary:
    """Push a list file from `termctl list build` / `centre next-list`, after checking
    it is a list and that a full list fits the terminal."""
    from pathlib import Path

    from host_tools.listbuild import decode as decode_list
    from terminal import nl_format as nl

    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise ToolError(f"cannot read {path}: {e.strerror}") from None
    head = nl.parse_header(data[:nl.HEADER_LEN])
    if head is None:
        raise ToolError(f"{path} is not a list file (bad header)")
    kind, version, base, _day, _key_id = head
    entries = decode_list(data).entries()
    if kind == nl.KIND_FULL:  # a delta's size is checked by the merge
        capacity = int(list_status(link)["list_capacity"])
        if entries > capacity:
            raise ToolError(f"{path}: {entries} entries, the terminal holds {capacity}: "
                            "not sent")
    return push_list(link, data, kind, version, base)


def protocol_kv(text: str) -> dict[str, str]:
    from host_tools.link import parse_kv

    return parse_kv(text)


@dataclass
class Batch:
    terminal_id: int
    batch_id: int
    first_seq: int
    count: int
    records: list[dict] = field(default_factory=list)
    wire_bytes: int = 0
    seconds: float = 0.0
    epoch: int = 0  # the terminal journal's epoch: every record of a batch has it


def pull_batch(link, label: str = "batch pull") -> Batch:
    """Close the terminal's batch and read every record; the MAC is checked
    before anything is returned. Nothing is acknowledged here."""
    t0 = time.monotonic()
    sent0, recv0 = link.bytes_sent, link.bytes_received
    reply = link.call_signed(protocol.CMD_BATCH_CLOSE, timeout=max(link.timeout, 30))
    if len(reply) != 12 + protocol.MAC_LEN:
        raise ToolError(f"{link.name}: batch close reply has {len(reply)} bytes")
    batch_id, first, count = struct.unpack_from("<III", reply, 0)
    tid = int(link.identity()["terminal_id"], 16)
    raw = bytearray()
    seq = first
    with Progress(label, count, "records") as bar:
        while len(raw) < count * RECORD_SIZE:
            chunk = link.call(protocol.CMD_BATCH_READ, struct.pack("<II", batch_id, seq))
            if not chunk or len(chunk) % RECORD_SIZE:
                raise ToolError(f"{link.name}: batch {batch_id} ended early at seq {seq} "
                                f"({len(raw) // RECORD_SIZE} of {count} records)")
            raw += chunk
            seq += len(chunk) // RECORD_SIZE
            bar.update(len(chunk) // RECORD_SIZE)
    auth = link.authenticator()
    mac = auth.stream(b"batch")
    mac.update(reply[:12])
    mac.update(bytes(raw))
    if not protocol.equal_time(auth.finish(mac), reply[12:]):
        raise ToolError(f"{link.name}: batch {batch_id} fails its MAC: not stored, not "
                        "acknowledged (pull again)")
    records: list[dict] = []
    for i in range(count):
        try:
            rec = decode(bytes(raw[i * RECORD_SIZE:(i + 1) * RECORD_SIZE]))
        except ValueError as e:
            raise ToolError(f"{link.name}: record {first + i} of batch {batch_id}: {e}") from None
        # the journal keeps terminal time (seconds since 2020); the centre wants Unix time
        rec["time"] += EPOCH_OFFSET
        if rec["terminal_id"] != tid or rec["seq"] != first + i:
            raise ToolError(f"{link.name}: batch {batch_id} record {i} is terminal "
                            f"{rec['terminal_id']:08x} seq {rec['seq']}, expected "
                            f"{tid:08x} seq {first + i}")
        epoch = records[0]["epoch"] if records else rec["epoch"]
        if rec["epoch"] != epoch or not epoch:  # a journal draws one, never 0
            raise ToolError(f"{link.name}: batch {batch_id} record {i} has journal epoch "
                            f"{rec['epoch']:08x}, not the batch's: not stored, not "
                            "acknowledged")
        records.append(rec)
    return Batch(tid, batch_id, first, count, records,
                 (link.bytes_sent - sent0) + (link.bytes_received - recv0),
                 time.monotonic() - t0, records[0]["epoch"] if records else 0)


def ack_batch(link, batch_id: int) -> str:
    return link.call_signed(protocol.CMD_BATCH_ACK, struct.pack("<I", batch_id)).decode()


__all__ = ["push_list", "push_list_file", "list_status", "pull_batch", "ack_batch", "Batch",
           "PushSummary", "frame"]
