"""Negative-list updates over the host link: chunked, resumable, MAC'd as a whole.

    LIST_BEGIN  (signed)  kind u8, version u32, base version u32, length u32
                          -> offset u32 to send from (0, or where a dropped
                             transfer of the same list stopped)
    LIST_CHUNK            offset u32, bytes -> next offset u32
    LIST_COMMIT (signed)  mac (32): HMAC "list" over the whole list -> summary text

Chunks only fill the staging file (the frame CRC guards each one); nothing
is installed until LIST_COMMIT's MAC over every staged byte verifies, so a
forged or mixed-up chunk can waste flash writes but never change a lookup.
LIST_STATUS is terminal.admin's (the list's lines of STATUS).

The terminal imports this module on demand (terminal.service) and drops it
once another module's command or a sale comes, so it keeps no state: the
transfer's is the negative list's.
"""

import struct

from terminal import protocol


def handle(svc, cmd, args):
    nl = svc.negative_list
    if cmd == protocol.CMD_LIST_CHUNK:
        if len(args) < 4:
            return protocol.ERR_MALFORMED, "list chunk takes an offset and bytes"
        offset = struct.unpack_from("<I", args, 0)[0]
        err = nl.write_chunk(offset, args[4:])
        if err:
            return protocol.ERR_STATE, err
        return protocol.OK, struct.pack("<I", nl.resume_offset())
    if cmd == protocol.CMD_LIST_BEGIN:
        if len(args) != 13:
            return protocol.ERR_MALFORMED, "list begin takes kind, version, base, length"
        kind, version, base, total = struct.unpack("<BIII", args)
        err = nl.begin(kind, version, base, total)
        if err:
            return protocol.ERR_STATE, err
        return protocol.OK, struct.pack("<I", nl.resume_offset())
    return _commit(svc, nl, args)


def _commit(svc, nl, args):
    if len(args) != protocol.MAC_LEN:
        return protocol.ERR_MALFORMED, "list commit takes the 32-byte list MAC"
    st = nl.status()
    staged = st["staged"]
    if not staged or staged["received"] != staged["total"]:
        return protocol.ERR_STATE, "no complete list staged"
    mac = svc.auth.stream(b"list")
    offset = 0
    buf = svc.link.body_buffer()  # scratch until the reply is written
    while offset < staged["total"]:
        n = nl.read_staged(offset, buf)
        if not n:
            break
        mac.update(buf[:n])
        offset += n
    if not protocol.equal_time(svc.auth.finish(mac), args):
        nl.abort()
        return protocol.ERR_BAD_MAC, "list MAC does not verify: staged list dropped"
    # The transfer code has done its part: the commit runs without it in RAM.
    svc.drop("nl_transfer")
    err = nl.commit()
    sync_online_only(svc)
    if err:
        return protocol.ERR_STATE, err
    st = nl.status()
    return protocol.OK, "version=%d\nentries=%d\noverflowing=%s" % (
        st["version"], st["entries"], ",".join("%d" % i for i in st["overflowing"]))


def sync_online_only(svc):
    """An issuer whose list entries overflow its quota goes online-only (a full
    quota costs authorisation fees, not fraud); the flag clears with the overflow.
    At boot and after every commit."""
    over = svc.negative_list.overflowing()
    issuers = svc.issuers
    for i in range(issuers.capacity):
        issuer = issuers.ids[i]
        if issuer >= 0 and issuer not in over:
            issuers.set_online_only(issuer, False)
    issuers.all_online_only = False
    for issuer in over:
        issuers.set_online_only(issuer, True)
