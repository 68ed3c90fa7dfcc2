"""Transfers of the negative list: staging the host's bytes, resumably, and the
recovery of a cut transfer or commit after a reset. Functions of the
NegativeList `nl` (terminal.negative_list), which imports this module when an
update begins (and at start-up only if one was cut); the commit is
terminal.nl_update's. A transfer runs with only this code loaded: the merge
and the checks of a commit come later, and go again.

    err = begin(nl, KIND_FULL, version, 0, total_len)   # or resume the same list
    err = write_chunk(nl, offset, data)                  # resent bytes are skipped
    n = read_staged(nl, offset, buf)                     # for the whole-list MAC

Every call returns None or a message for the host; state lives in nl.stage,
nl.staged and nl.staged_reader (nl_format's G_ layout).
"""

import os
import struct
from binascii import crc32

from terminal.compat import const
from terminal.nl_check import abort, check_header, check_versions
from terminal.nl_format import (
    ACTIVE,
    DREC_LEN,
    DTMP,
    FOOTER_LEN,
    G_BASE,
    G_HAVE,
    G_KIND,
    G_SYNCED,
    G_TOTAL,
    G_VER,
    HEADER_LEN,
    KIND_DELTA,
    KIND_FULL,
    META,
    NEW,
    PTMP,
    REC_LEN,
    SECTION_LEN,
    STAGE,
    bucket_bits,
    file_size,
    parse_header,
    remove_file,
)

_FLASH_MARGIN = const(16384)  # flash left free beyond what a transfer and its commit need


def begin(nl, kind, version, base_version, total_len):
    """Start a transfer, or resume it if this same one is staged."""
    err = check_versions(nl, kind, version, base_version)
    if err:
        return err
    cap = nl.capacity
    if kind == KIND_FULL:  # records, and directories no larger than capacity needs
        most = cap * REC_LEN + nl.max_issuers * (SECTION_LEN + 4 + (4 << bucket_bits(cap)))
    else:
        most = 2 * cap * DREC_LEN + nl.max_issuers * SECTION_LEN
    if total_len < HEADER_LEN + FOOTER_LEN or total_len > most + HEADER_LEN + FOOTER_LEN:
        return "a list of %d bytes does not fit this terminal (%d entries)" % (
            total_len, cap)
    g = nl.stage
    if (g[G_KIND] == kind and g[G_VER] == version and g[G_BASE] == base_version
            and g[G_TOTAL] == total_len):
        if nl.staged is None:
            g[G_HAVE] = g[G_SYNCED] = max(0, file_size(nl.path(STAGE)))
            nl.staged = open(nl.path(STAGE), "ab")
        return None
    abort(nl)
    need = total_len + _FLASH_MARGIN
    if nl.bdev is not None:  # the new list's nl.dir, about a tenth of it
        need += total_len // 8
    if kind == KIND_DELTA:  # the merge writes a second copy of the list
        need += max(0, file_size(nl.path(ACTIVE))) + total_len
    free = _free(nl)
    if 0 <= free < need:
        return "not enough flash for this list: need %d KB, %d KB free" % (
            need // 1024, free // 1024)
    m = struct.pack("<BBHIII", kind, 0, 0, version, base_version, total_len)
    with open(nl.path(META), "wb") as mf:
        mf.write(m + struct.pack("<I", crc32(m)))
    nl.staged = open(nl.path(STAGE), "wb")
    g[G_KIND], g[G_VER], g[G_BASE], g[G_TOTAL] = kind, version, base_version, total_len
    g[G_HAVE] = g[G_SYNCED] = 0
    return None


def write_chunk(nl, offset, data):
    """Store bytes [offset, offset + len(data)) of the list. Bytes already stored
    are skipped, so a resent chunk is harmless; a gap is refused."""
    if nl.staged is None:
        return "no list transfer in progress"
    g = nl.stage
    have = g[G_HAVE]
    end = offset + len(data)
    if offset > have:
        return "chunk at offset %d leaves a gap: %d bytes stored" % (offset, have)
    if end > g[G_TOTAL]:
        return "chunk ends at %d, past the list length %d" % (end, g[G_TOTAL])
    if end <= have:
        return None
    if offset == 0 and end >= HEADER_LEN:  # refuse a wrong list before it all arrives
        err = check_header(nl, parse_header(data[:HEADER_LEN]))
        if err:
            abort(nl)
            return err
    if nl.staged_reader is not None:  # a reader opened earlier may not see the new bytes
        nl.staged_reader.close()
        nl.staged_reader = None
    nl.staged.write(data[have - offset :] if have > offset else data)
    g[G_HAVE] = end
    if end - g[G_SYNCED] >= nl.sync_bytes or end == g[G_TOTAL]:
        nl.staged.flush()  # LittleFS sync: stored bytes survive a power cut
        g[G_SYNCED] = end
    return None


def read_staged(nl, offset, buf):
    """Read staged bytes into buf (to check the whole-list MAC); returns the count."""
    if nl.staged is None:
        return 0
    if nl.staged_reader is None:
        nl.staged.flush()
        nl.staged_reader = open(nl.path(STAGE), "rb")
    nl.staged_reader.seek(offset)
    return nl.staged_reader.readinto(buf)


def _free(nl):
    try:
        st = os.statvfs(nl.root or "/")
        return st[0] * st[3]
    except (OSError, AttributeError):
        return -1


def recover(nl):
    # After a reset: a half-built merge is garbage; a staged transfer may resume
    # (begin() with the same arguments), unless its commit had begun.
    remove_file(nl.path(NEW))
    remove_file(nl.path(DTMP))
    remove_file(nl.path(PTMP))
    try:
        with open(nl.path(META), "rb") as mf:
            m = mf.read()
    except OSError:
        m = b""
    size = file_size(nl.path(STAGE))
    if len(m) == 20 and crc32(m[:16]) == struct.unpack_from("<I", m, 16)[0] and size >= 0:
        kind, _, _, version, base, total = struct.unpack_from("<BBHIII", m, 0)
        if size <= total:
            g = nl.stage
            g[G_KIND], g[G_VER], g[G_BASE], g[G_TOTAL] = kind, version, base, total
            g[G_HAVE] = g[G_SYNCED] = size
            return
    remove_file(nl.path(STAGE))
    remove_file(nl.path(META))
