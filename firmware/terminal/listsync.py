"""Negative-list updates over the host link: chunked, resumable, MAC'd as a whole.

    LIST_BEGIN  (signed)  kind u8, version u32, base version u32, length u32
                          -> offset u32 to send from (0, or where a dropped
                             transfer of the same list stopped)
    LIST_CHUNK            offset u32, bytes -> next offset u32
    LIST_COMMIT (signed)  mac (32): HMAC "list" over the whole list -> summary text
    LIST_STATUS           -> KEY=VALUE lines

Chunks only fill the staging file (the frame CRC guards each one); nothing
is installed until LIST_COMMIT's MAC over every staged byte verifies, so a
forged or mixed-up chunk can waste flash writes but never change a lookup.
"""

import struct

from terminal import protocol
from terminal.compat import const

_READ_CHUNK = const(512)


class ListSync:
    def __init__(self, service, negative_list, after_commit=None):
        self.svc = service
        self.nl = negative_list
        self.after_commit = after_commit
        self._buf = bytearray(_READ_CHUNK)
        h = service.handlers
        h[protocol.CMD_LIST_BEGIN] = self.do_begin
        h[protocol.CMD_LIST_CHUNK] = self.do_chunk
        h[protocol.CMD_LIST_COMMIT] = self.do_commit
        h[protocol.CMD_LIST_STATUS] = self.do_status

    def do_begin(self, args):
        if len(args) != 13:
            return protocol.ERR_MALFORMED, "list begin takes kind, version, base, length"
        kind, version, base, total = struct.unpack("<BIII", args)
        err = self.nl.begin(kind, version, base, total)
        if err:
            return protocol.ERR_STATE, err
        return protocol.OK, struct.pack("<I", self.nl.resume_offset())

    def do_chunk(self, args):
        if len(args) < 4:
            return protocol.ERR_MALFORMED, "list chunk takes an offset and bytes"
        offset = struct.unpack_from("<I", args, 0)[0]
        err = self.nl.write_chunk(offset, args[4:])
        if err:
            return protocol.ERR_STATE, err
        return protocol.OK, struct.pack("<I", self.nl.resume_offset())

    def do_commit(self, args):
        if len(args) != protocol.MAC_LEN:
            return protocol.ERR_MALFORMED, "list commit takes the 32-byte list MAC"
        st = self.nl.status()
        staged = st["staged"]
        if not staged or staged["received"] != staged["total"]:
            return protocol.ERR_STATE, "no complete list staged"
        mac = self.svc.auth.stream(b"list")
        offset = 0
        buf = self._buf
        mv = memoryview(buf)
        while offset < staged["total"]:
            n = self.nl.read_staged(offset, buf)
            if not n:
                break
            mac.update(mv[:n])
            offset += n
        if not protocol.equal_time(self.svc.auth.finish(mac), args):
            self.nl.abort()
            return protocol.ERR_BAD_MAC, "list MAC does not verify: staged list dropped"
        err = self.nl.commit()
        if self.after_commit is not None:
            self.after_commit()
        if err:
            return protocol.ERR_STATE, err
        st = self.nl.status()
        return protocol.OK, "version=%d\nentries=%d\noverflowing=%s" % (
            st["version"], st["entries"], ",".join("%d" % i for i in st["overflowing"]))

    def do_status(self, args):
        return protocol.OK, "\n".join("%s=%s" % kv for kv in self.status_fields())

    def status_fields(self):
        st = self.nl.status()
        out = [("list_version", st["version"]), ("list_kind", st["kind"]),
               ("list_entries", st["entries"]), ("list_capacity", st["capacity"]),
               ("list_key_id", st["key_id"])]
        for issuer, count, overflow in st["issuers"]:
            out.append(("list_issuer_%d" % issuer, "%d overflow=%d" % (count, overflow)))
        if st["overflowing"]:
            out.append(("list_online_only_issuers",
                        ",".join("%d" % i for i in st["overflowing"])))
        staged = st["staged"]
        if staged:
            out.append(("list_staged", "%s v%d on v%d: %d/%d bytes" % (
                staged["kind"], staged["version"], staged["base_version"], staged["received"],
                staged["total"])))
        if st["error"]:
            out.append(("list_error", st["error"]))
        if st["entries"]:  # lookups read flash blocks directly, or through the file (why)
            out.append(("list_direct_reads", "yes" if st["direct_reads"] else
                        "no (%s)" % (st["direct_error"] or "no block device")))
        return out
