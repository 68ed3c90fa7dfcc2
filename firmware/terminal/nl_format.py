"""The negative list's file format, one definition for the host and the terminal.

    h = pack_header(KIND_FULL, version, 0, base_day, key_id)   # 24 bytes
    kind, version, base_version, base_day, key_id = parse_header(h)
    bk, a, b, c = split_key(hash8, q)       # what a section with q bucket bits stores
    pack_record(buf, pos, a, b, c, expiry)  # 6 bytes of a full list
    body = Body(); err = body.read(f, body_len)   # header, section table, offsets

host_tools.listbuild builds and decodes lists with it; on the terminal the
lookup (terminal.negative_list) imports it only to load the installed list,
and the update code (terminal.nl_transfer, nl_update, nl_dir) when an update
comes, so a tap runs without it in RAM. The layout is in docs/negative_list.md.

The last part describes what only the terminal keeps: the files of a list in
its flash root and the tables it holds in RAM for the installed list (the
lookup repeats the indices it reads as private const()s, pinned to these by
tests/test_consts.py).
"""

import os
import struct
from binascii import crc32

from terminal.compat import const

KIND_FULL = const(1)
KIND_DELTA = const(2)
FORMAT = const(2)  # 2: a section carries the entries the centre withheld
MAGIC = b"NL"
HEADER_LEN = const(24)
SECTION_LEN = const(16)
FOOTER_LEN = const(16)
EXTRA_LEN = const(16)
TRAILER_LEN = const(16)
REC_LEN = const(6)  # full list record: 36 key bits after the bucket, 12 expiry bits
DREC_LEN = const(8)  # delta record: 52 key bits, 12 expiry bits (REMOVE = remove)
KEY_BITS = const(36)
BUCKET_TARGET = const(32)
MAX_BUCKET_BITS = const(16)
EXPIRY_MAX = const(4094)  # largest expiry code: base day + 4093
REMOVE = const(4095)  # expiry code of a delta record that removes its key
MAX_COUNT = const(0xFFFFFF)  # counts stay small ints on a 32-bit board
NEWEST = const(4095)  # keep-rank of an entry without expiry

HDR = "<2sBBIIHHI"  # magic, format, kind, version, base version, base day, key id, 0; crc
SEC = "<HBBIII"  # issuer, bucket bits (full), 0, records, the centre's quota (0: none),
# entries the centre withheld to keep within that quota (the issuer goes online-only)
FTR = "<HHIII"  # sections, 0, records, crc of header+records+dirs, crc of table+footer
EXT = "<IHHHHHH"  # overflow, keep rank, cut bucket, cut a, cut b, cut c, 0
TRL = "<4sIBBHI"  # magic, body length, last update kind, 0, 0, crc of extras+trailer
TRL_MAGIC = b"NLtr"


# -- keys and records -----------------------------------------------------------


def bucket_bits(n):
    """Bucket bits q for a section that may hold n entries (<= 32 per bucket)."""
    q = 0
    while q < MAX_BUCKET_BITS and (BUCKET_TARGET << q) < n:
        q += 1
    return q


def bits(buf, pos, off, w):
    """w <= 16 bits at bit `off` (MSB first) of the bytes at buf[pos:]; small ints only."""
    i = pos + (off >> 3)
    v = (buf[i] << 16) | (buf[i + 1] << 8) | buf[i + 2]
    return (v >> (24 - (off & 7) - w)) & ((1 << w) - 1)


def split_key(key, q):
    """(bucket, a, b, c): what a section with q bucket bits stores of an 8-byte key."""
    return (
        bits(key, 0, 0, q),
        bits(key, 0, q, 12),
        bits(key, 0, q + 12, 12),
        bits(key, 0, q + 24, 12),
    )


def join_key(bk, a, b, c, q):
    """An 8-byte key whose top q + 36 bits are (bucket, a, b, c), the rest zero."""
    v = (bk << 36) | (a << 24) | (b << 12) | c
    return (v << (28 - q)).to_bytes(8, "big")


def before(bk, a, b, c, x0, x1, x2, x3):
    """(bk, a, b, c) < (x0, x1, x2, x3), without building tuples."""
    if bk != x0:
        return bk < x0
    if a != x1:
        return a < x1
    if b != x2:
        return b < x2
    return c < x3


def pack_record(buf, pos, a, b, c, e):
    buf[pos] = a >> 4
    buf[pos + 1] = ((a & 15) << 4) | (b >> 8)
    buf[pos + 2] = b & 255
    buf[pos + 3] = c >> 4
    buf[pos + 4] = ((c & 15) << 4) | (e >> 8)
    buf[pos + 5] = e & 255


def unpack_record(buf, pos):
    """(a, b, c, expiry code) of the full-list record at buf[pos:]."""
    return (
        (buf[pos] << 4) | (buf[pos + 1] >> 4),
        ((buf[pos + 1] & 15) << 8) | buf[pos + 2],
        (buf[pos + 3] << 4) | (buf[pos + 4] >> 4),
        ((buf[pos + 4] & 15) << 8) | buf[pos + 5],
    )


def pack_delta_record(buf, pos, key, e):
    """Delta record: the top 52 bits of the 8-byte key, then the expiry code or REMOVE."""
    for i in range(6):
        buf[pos + i] = key[i]
    buf[pos + 6] = (key[6] & 0xF0) | (e >> 8)
    buf[pos + 7] = e & 255


def expiry_code(day, base_day):
    """Record code of a last-listed day (days since 1970; 0 or None: no expiry).
    0 = none, 1.. = base_day + code - 1; -1 if the day is before base_day (already
    expired), -2 if it is more than EXPIRY_MAX - 1 days after it."""
    if not day:
        return 0
    e = day - base_day + 1
    if e < 1:
        return -1
    if e > EXPIRY_MAX:
        return -2
    return e


# -- header, section table, footer ----------------------------------------------


def pack_header(kind, version, base_version, base_day, key_id):
    h = struct.pack(HDR, MAGIC, FORMAT, kind, version, base_version, base_day, key_id, 0)
    return h + struct.pack("<I", crc32(h))


def parse_header(buf):
    """(kind, version, base version, base day, key id), or None if not a list header."""
    if len(buf) < HEADER_LEN:
        return None
    f = struct.unpack_from(HDR, buf, 0)
    if f[0] != MAGIC or f[1] != FORMAT or f[2] not in (KIND_FULL, KIND_DELTA):
        return None
    if struct.unpack_from("<I", buf, 20)[0] != crc32(bytes(buf[:20])):
        return None
    return f[2], f[3], f[4], f[5], f[6]


def pack_section(issuer, q, count, quota, withheld=0):
    """A section table row: `withheld` entries of the issuer did not fit its quota
    (the terminal then sends every card of the issuer online)."""
    return struct.pack(SEC, issuer, q, 0, count, quota, withheld)


def pack_footer(n_sections, n_records, body_crc, table):
    """Footer after the section table; `table` is the packed section table."""
    head = struct.pack(FTR, n_sections, 0, n_records, body_crc, 0)[:12]
    return head + struct.pack("<I", crc32(head, crc32(table)))


class Body:
    """Header, section table and offsets of a list file body (host and commit use).

        b = Body(); err = b.read(f, body_len)   # None or a message
    """

    def read(self, f, body_len, max_sections=256):
        if body_len < HEADER_LEN + FOOTER_LEN:
            return "list too short (%d bytes)" % body_len
        f.seek(0)
        head = f.read(HEADER_LEN)
        h = parse_header(head)
        if h is None:
            return "not a negative list (bad header)"
        self.kind, self.version, self.base_version, self.base_day, self.key_id = h
        f.seek(body_len - FOOTER_LEN)
        foot = f.read(FOOTER_LEN)
        if len(foot) != FOOTER_LEN:
            return "list truncated"
        ns, _, nrec, self.body_crc, tcrc = struct.unpack(FTR, foot)
        if ns > max_sections:
            return "list has %d issuers, the terminal holds %d" % (ns, max_sections)
        self.table_off = body_len - FOOTER_LEN - SECTION_LEN * ns
        if self.table_off < HEADER_LEN:
            return "list truncated"
        f.seek(self.table_off)
        table = f.read(SECTION_LEN * ns)
        if crc32(foot[:12], crc32(table)) != tcrc:
            return "list section table damaged (CRC)"
        self.n = ns
        self.records = nrec
        self.issuer, self.q, self.count, self.aux, self.withheld = [], [], [], [], []
        self.rec_off, self.dir_off = [], []
        rlen = REC_LEN if self.kind == KIND_FULL else DREC_LEN
        roff = HEADER_LEN
        doff = HEADER_LEN + rlen * nrec
        total = 0
        prev = -1
        for s in range(ns):
            iss, q, _, cnt, aux, held = struct.unpack_from(SEC, table, SECTION_LEN * s)
            if iss <= prev:
                return "list issuers out of order at issuer %d" % iss
            if q > MAX_BUCKET_BITS or cnt > MAX_COUNT or held > MAX_COUNT:
                return "issuer %d: bad section (q=%d, %d entries)" % (iss, q, cnt)
            prev = iss
            self.issuer.append(iss)
            self.q.append(q)
            self.count.append(cnt)
            self.aux.append(aux)
            self.withheld.append(held)
            self.rec_off.append(roff)
            self.dir_off.append(doff)
            roff += rlen * cnt
            if self.kind == KIND_FULL:
                doff += 4 * ((1 << q) + 1)
            total += cnt
        if total != nrec or doff != self.table_off:
            return "list section table does not match its length"
        return None


# -- what the terminal appends at commit: extras and trailer --------------------


def pack_extras(rows, body_len, last_kind):
    """Extras (one row per section: over quota, keep rank, cut bucket, a, b, c) and
    the trailer, as appended to the body in nl.bin."""
    blob = bytearray()
    for row in rows:
        blob += struct.pack(EXT, row[0], row[1], row[2], row[3], row[4], row[5], 0)
    head = struct.pack(TRL, TRL_MAGIC, body_len, last_kind, 0, 0, 0)[:12]
    blob += head + struct.pack("<I", crc32(head, crc32(blob)))
    return blob


# -- the terminal: its files, and its tables of the installed list --------------

ACTIVE = "/nl.bin"  # the list lookups use
STAGE = "/nl.stg"  # transfer in progress: the host's bytes as they arrive
META = "/nl.stm"  # what is staged: kind, version, base version, length
NEW = "/nl.new"  # delta merge output, renamed over ACTIVE at commit
DTMP = "/nl.dtm"  # directories of the merge, appended to NEW
PDIR = "/nl.dir"  # physical directory of the installed list (derived, rebuilt if stale)
PTMP = "/nl.dtp"  # ... while it is written

# Section table: one row of ST u32 per issuer section, in issuer order.
S_ISS = const(0)
S_Q = const(1)
S_CNT = const(2)
S_REC = const(3)  # file offset of the section's records
S_DIR = const(4)  # file offset of its directory
S_OVF = const(5)  # entries over quota at the last commit
S_KEEP = const(6)  # keep-rank while over quota (0: every entry counts)
S_CUT0 = const(7)  # first key kept at that rank: bucket << 12 | a
S_CUT1 = const(8)  # ... b << 12 | c
S_WH = const(9)  # entries the centre withheld (over its quota): the issuer goes online
S_PDB = const(10)  # index of the section's first entry in nl.dir
ST = const(11)
# Staged transfer: kind, version, base version, total length, bytes stored, bytes synced.
G_KIND = const(0)
G_VER = const(1)
G_BASE = const(2)
G_TOTAL = const(3)
G_HAVE = const(4)
G_SYNCED = const(5)
G_LEN = const(6)


def file_size(path):
    """Bytes of the file at path, -1 if there is none."""
    try:
        return os.stat(path)[6]
    except OSError:
        return -1


def remove_file(path):
    """Delete the file at path if there is one."""
    try:
        os.remove(path)
    except OSError:
        pass


def load_table(f, size, t, max_sections):
    """Read the installed list nl.bin (open as f, size bytes) into the section table
    t (ST u32 per section). Returns an error message, or (sections, buckets,
    version, base day, key id, last update kind, entries counted, body CRC,
    trailer CRC): the version and the two CRCs name this list exactly."""
    f.seek(size - TRAILER_LEN)
    tr = f.read(TRAILER_LEN)
    magic, body_len, last_kind, _, _, tcrc = struct.unpack(TRL, tr)
    if magic != TRL_MAGIC:
        return "list file damaged (trailer)"
    body = Body()
    err = body.read(f, body_len, max_sections)
    if err:
        return err
    if body.kind != KIND_FULL or size != body_len + EXTRA_LEN * body.n + TRAILER_LEN:
        return "list file damaged (length)"
    f.seek(body_len)
    ext = f.read(EXTRA_LEN * body.n)
    if crc32(tr[:12], crc32(ext)) != tcrc:
        return "list file damaged (extras CRC)"
    total = 0
    pdb = 0
    for s in range(body.n):
        ovf, keep, c0, c1, c2, c3, _ = struct.unpack_from(EXT, ext, EXTRA_LEN * s)
        row = s * ST
        t[row + S_PDB] = pdb
        pdb += 1 << body.q[s]
        t[row + S_ISS] = body.issuer[s]
        t[row + S_Q] = body.q[s]
        t[row + S_CNT] = body.count[s]
        t[row + S_REC] = body.rec_off[s]
        t[row + S_DIR] = body.dir_off[s]
        t[row + S_OVF] = ovf
        t[row + S_KEEP] = keep
        t[row + S_CUT0] = (c0 << 12) | c1
        t[row + S_CUT1] = (c2 << 12) | c3
        t[row + S_WH] = body.withheld[s]
        total += body.count[s] - ovf
    return (body.n, pdb, body.version, body.base_day, body.key_id, last_kind, total,
            body.body_crc, tcrc)
