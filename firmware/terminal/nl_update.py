"""Commits of the negative list: a full list checked and installed, a delta
merged into the installed list, the quota results appended. A function of the
NegativeList `nl` (terminal.negative_list), which imports this module only for
a commit, so neither a tap nor a transfer runs with it in RAM; the transfer
before it is terminal.nl_transfer's.

    err = commit(nl)    # None: from now on lookups use the new list

It keeps its state in nl's attributes (its docstring lists them); the format
is terminal.nl_format's. It returns None or a message for the host.
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
    EXTRA_LEN,
    FOOTER_LEN,
    G_BASE,
    G_HAVE,
    G_KIND,
    G_TOTAL,
    G_VER,
    KIND_DELTA,
    KIND_FULL,
    NEW,
    NEWEST,
    REC_LEN,
    REMOVE,
    S_CNT,
    S_CUT0,
    S_CUT1,
    S_DIR,
    S_KEEP,
    S_Q,
    S_REC,
    S_WH,
    SECTION_LEN,
    ST,
    STAGE,
    TRAILER_LEN,
    Body,
    before,
    bits,
    bucket_bits,
    file_size,
    pack_extras,
    pack_footer,
    pack_header,
    pack_record,
    pack_section,
    remove_file,
)

# work buffer of a commit: writer | directory writer | delta reader | directory reader
_W_OUT = const(192)
_W_DEL = const(256)
_W_DIR = const(384)
_W_END = const(448)
_WORK = const(448)


class _Reader:
    """Walks one section of a full list in key order: bk, a, b, c, e per record."""

    def __init__(self, f, rbuf, dbuf):
        self.f = f
        self.rb = rbuf
        self.db = dbuf
        self.bad = False

    def start(self, rec_off, dir_off, q, count):
        self.rpos = rec_off
        self.left = count
        self.count = count
        self.rn = self.rp = 0
        self.dpos = dir_off
        self.dn = self.dp = 0
        self.nb = 1 << q
        self.bk = 0
        self.i = -1
        self.bad = self._dir() != 0
        self.nxt = self._dir()

    def _dir(self):
        if self.dp >= self.dn:
            self.f.seek(self.dpos)
            n = self.f.readinto(self.db) & ~3
            if n <= 0:
                self.bad = True
                return self.count
            self.dpos += n
            self.dn = n
            self.dp = 0
        d = self.db
        p = self.dp
        self.dp = p + 4
        return d[p] | (d[p + 1] << 8) | (d[p + 2] << 16) | (d[p + 3] << 24)

    def next(self):
        if self.rp >= self.rn:
            if not self.left:
                return False
            self.f.seek(self.rpos)
            n = self.f.readinto(self.rb) // REC_LEN
            if n <= 0:
                self.bad = True
                return False
            n = min(n, self.left)
            self.left -= n
            self.rpos += n * REC_LEN
            self.rn = n * REC_LEN
            self.rp = 0
        self.i += 1
        while self.i >= self.nxt:
            if self.bk + 1 >= self.nb:
                self.bad = True  # records beyond the last bucket
                break
            prev = self.nxt
            self.bk += 1
            self.nxt = self._dir()
            if self.nxt < prev or self.nxt > self.count:
                self.bad = True
                break
        b = self.rb
        p = self.rp
        self.rp = p + REC_LEN
        self.a = (b[p] << 4) | (b[p + 1] >> 4)
        self.b = ((b[p + 1] & 15) << 8) | b[p + 2]
        self.c = (b[p + 3] << 4) | (b[p + 4] >> 4)
        self.e = ((b[p + 4] & 15) << 8) | b[p + 5]
        return True

    def finish(self):
        """After the last record: the remaining directory entries must all be the count."""
        if self.nxt != self.count:
            self.bad = True
        while self.bk + 1 < self.nb:
            self.bk += 1
            if self._dir() != self.count:
                self.bad = True
        return not self.bad


class _DeltaReader:
    """Walks one section of a delta: bk, a, b, c (for q bucket bits), e, in key order."""

    def __init__(self, f, buf):
        self.f = f
        self.buf = buf
        self.bad = False

    def start(self, off, count, q):
        self.pos = off
        self.left = count
        self.n = self.p = 0
        self.q = q
        self.k0 = self.k1 = self.k2 = self.k3 = -1

    def next(self):
        if self.p >= self.n:
            if not self.left:
                return False
            self.f.seek(self.pos)
            n = min(self.f.readinto(self.buf) // DREC_LEN, self.left)
            if n <= 0:
                self.bad = True
                return False
            self.left -= n
            self.pos += n * DREC_LEN
            self.n = n * DREC_LEN
            self.p = 0
        b = self.buf
        p = self.p
        self.p = p + DREC_LEN
        q = self.q
        # strictly increasing 52-bit keys, compared as four 13-bit pieces
        k0 = bits(b, p, 0, 13)
        k1 = bits(b, p, 13, 13)
        k2 = bits(b, p, 26, 13)
        k3 = bits(b, p, 39, 13)
        if k0 != self.k0:
            less = k0 < self.k0
        elif k1 != self.k1:
            less = k1 < self.k1
        elif k2 != self.k2:
            less = k2 < self.k2
        else:
            less = k3 <= self.k3
        if less:
            self.bad = True
        self.k0, self.k1, self.k2, self.k3 = k0, k1, k2, k3
        self.bk = bits(b, p, 0, q)
        self.a = bits(b, p, q, 12)
        self.b = bits(b, p, q + 12, 12)
        self.c = bits(b, p, q + 24, 12)
        self.e = ((b[p + 6] & 15) << 8) | b[p + 7]
        return True


class _Out:
    """Buffered file writer keeping a running CRC32."""

    def __init__(self, f, buf):
        self.f = f
        self.buf = buf
        self.n = 0
        self.crc = 0
        self.total = 0

    def record(self, a, b, c, e):
        if self.n + REC_LEN > len(self.buf):
            self.flush()
        pack_record(self.buf, self.n, a, b, c, e)
        self.n += REC_LEN

    def u32(self, v):
        if self.n + 4 > len(self.buf):
            self.flush()
        struct.pack_into("<I", self.buf, self.n, v)
        self.n += 4

    def raw(self, data):
        self.flush()
        self.f.write(data)
        self.crc = crc32(data, self.crc)
        self.total += len(data)

    def flush(self):
        if self.n:
            chunk = memoryview(self.buf)[: self.n]
            self.f.write(chunk)
            self.crc = crc32(chunk, self.crc)
            self.total += self.n
            self.n = 0


def _rank(e):
    return e if e else NEWEST


def _next_base(r, keep, c0, c1, c2, c3, shift):
    # next installed entry that survives a merge: within quota, not expired (rebased)
    while r.next():
        e = r.e
        if keep:
            k = e if e else NEWEST
            if k < keep or (k == keep and before(r.bk, r.a, r.b, r.c, c0, c1, c2, c3)):
                continue
        if e:
            e -= shift
            if e < 1:
                continue
        r.e2 = e
        return True
    return False


def _u32(b, p):
    return b[p] | (b[p + 1] << 8) | (b[p + 2] << 16) | (b[p + 3] << 24)


def _inc32(b, p):
    v = _u32(b, p) + 1
    b[p] = v & 255
    b[p + 1] = (v >> 8) & 255
    b[p + 2] = (v >> 16) & 255
    b[p + 3] = v >> 24


def commit(nl):
    """Install the staged list; from the moment this returns None lookups use it.
    On an error the staged transfer is dropped and the installed list stays."""
    g = nl.stage
    if nl.staged is None:
        return "no list transfer in progress"
    if g[G_HAVE] != g[G_TOTAL]:
        return "transfer incomplete: %d of %d bytes" % (g[G_HAVE], g[G_TOTAL])
    nl.close_stage()
    err = check_versions(nl, g[G_KIND], g[G_VER], g[G_BASE])
    if not err:
        work = memoryview(bytearray(_WORK))
        try:
            if g[G_KIND] == KIND_FULL:
                err = _commit_full(nl, work)
            else:
                err = _commit_delta(nl, work)
        except OSError as e:
            err = "flash error during commit: %s" % e
        work = None  # freed before the reload
    remove_file(nl.path(NEW))
    remove_file(nl.path(DTMP))
    abort(nl)
    nl.reload()
    return err


def _install(nl, path):
    if nl.file is not None:
        nl.file.close()  # LittleFS frees the old file's blocks at the rename
        nl.file = None
    os.rename(path, nl.path(ACTIVE))  # atomic: the old list or the new one
    return None


def _commit_full(nl, work):
    # The staged bytes are the new list file: check them, append the terminal's
    # quota results, rename over the installed list.
    path = nl.path(STAGE)
    body = Body()
    with open(path, "rb") as f:
        err = body.read(f, nl.stage[G_TOTAL], nl.max_issuers)
        if not err:
            err = check_header(nl,
                (body.kind, body.version, body.base_version, body.base_day, body.key_id))
        if not err and body.records > nl.capacity:
            err = "list holds %d entries, capacity is %d" % (body.records, nl.capacity)
        for s in range(0 if err else body.n):
            if body.q[s] > bucket_bits(nl.capacity):
                err = "issuer %d: directory larger than the capacity needs" % body.issuer[s]
        if not err:
            err = _verify_full(nl, f, body, work)
        if err:
            return err
        ext = _extras(nl, f, body, work)
    _append_extras(path, body, ext, KIND_FULL)
    return _install(nl, path)


def _verify_full(nl, f, body, work):
    """Body CRC, directories consistent, keys strictly increasing in each bucket."""
    err = _verify_crc(f, body, work)
    if err:
        return err
    r = _Reader(f, nl.rbuf, work[_W_DIR:_W_END])
    for s in range(body.n):
        r.start(body.rec_off[s], body.dir_off[s], body.q[s], body.count[s])
        pb = pa = pbb = pc = -1
        while r.next():
            if r.e == REMOVE or (r.bk == pb and not before(pa, pbb, pc, 0,
                                                             r.a, r.b, r.c, 0)):
                return "issuer %d: entry %d out of order or bad" % (body.issuer[s], r.i)
            pb, pa, pbb, pc = r.bk, r.a, r.b, r.c
        if not r.finish():
            return "issuer %d: directory does not match its entries" % body.issuer[s]
    return None


def _verify_crc(f, body, work):
    buf = work[:_W_OUT]
    crc = 0
    pos = 0
    f.seek(0)
    while pos < body.table_off:
        n = f.readinto(buf)
        if n <= 0:
            return "list truncated"
        n = min(n, body.table_off - pos)
        crc = crc32(buf[:n], crc)
        pos += n
    if crc != body.body_crc:
        return "list damaged (body CRC)"
    return None


def _extras(nl, f, body, work):
    """Per section: (over quota, keep rank, cut key) under the quotas in force."""
    out = []
    for s in range(body.n):
        quota = nl.quota_of(body.issuer[s], body.aux[s])
        cnt = body.count[s]
        if 0 <= quota < cnt:
            out.append((cnt - quota,) + _keep_newest(nl, f, body, s, quota, work))
        else:
            out.append((0, 0, 0, 0, 0, 0))
    return out


def _keep_newest(nl, f, body, s, keep, work):
    """(rank, cut key) such that exactly `keep` entries of section s count: those
    expiring last (no expiry counts as newest), ties kept from the cut key up."""
    if keep == 0:
        return NEWEST + 1, 0, 0, 0, 0
    r = _Reader(f, nl.rbuf, work[_W_DIR:_W_END])
    hist = work[:256]  # 64 u32 counts
    above = 0
    sel = 0
    for shift in (6, 0):  # top 6 bits of the rank, then the low 6
        for i in range(256):
            hist[i] = 0
        r.start(body.rec_off[s], body.dir_off[s], body.q[s], body.count[s])
        while r.next():
            k = _rank(r.e)
            if shift == 0 and k >> 6 != sel:
                continue
            _inc32(hist, ((k >> shift) & 63) << 2)
        j = 63
        while above + _u32(hist, j << 2) < keep:
            above += _u32(hist, j << 2)
            j -= 1
        sel = j if shift else (sel << 6) | j
    drop = _u32(hist, j << 2) - (keep - above)  # entries of rank sel dropped: lowest keys
    if drop == 0:
        return sel, 0, 0, 0, 0
    r.start(body.rec_off[s], body.dir_off[s], body.q[s], body.count[s])
    seen = 0
    while r.next():
        if _rank(r.e) == sel:
            if seen == drop:
                return sel, r.bk, r.a, r.b, r.c
            seen += 1
    return sel + 1, 0, 0, 0, 0  # not reached while keep < count


def _append_extras(path, body, ext, last_kind):
    blob = pack_extras(ext, body.table_off + SECTION_LEN * body.n + FOOTER_LEN, last_kind)
    with open(path, "ab") as f:
        f.write(blob)


def _commit_delta(nl, work):
    # Merge installed list + staged delta into NEW (directories via DTMP),
    # append the quota results, rename over the installed list.
    npath = nl.path(NEW)
    dpath = nl.path(DTMP)
    w = work
    with open(nl.path(STAGE), "rb") as sf:
        d = Body()
        err = d.read(sf, nl.stage[G_TOTAL], nl.max_issuers)
        if not err:
            err = check_header(nl, (d.kind, d.version, d.base_version, d.base_day, d.key_id))
        if not err:
            err = _verify_crc(sf, d, work)
        if err:
            return err
        base = Body()  # the installed list's section table: the centre's quotas
        err = base.read(nl.file, file_size(nl.path(ACTIVE)) - EXTRA_LEN * nl.sections
                        - TRAILER_LEN, nl.max_issuers)
        if err:
            return "installed list damaged: " + err
        with open(npath, "wb") as nf:
            out = _Out(nf, w[:_W_OUT])
            out.raw(pack_header(KIND_FULL, d.version, d.base_version, d.base_day, d.key_id))
            with open(dpath, "wb") as tf:
                dout = _Out(tf, w[_W_OUT:_W_DEL])
                res = _merge(nl, base, sf, d, out, dout, work)
                dout.flush()
            if isinstance(res, str):
                return res
            out.flush()
            table = bytearray()
            total = 0
            for issuer, q, cnt, quota, held in res:
                table += pack_section(issuer, q, cnt, quota, held)
                total += cnt
            with open(dpath, "rb") as tf:  # directories follow all the records
                while True:
                    n = tf.readinto(nl.rbuf)
                    if not n:
                        break
                    out.raw(memoryview(nl.rbuf)[:n])
            nf.write(table)
            nf.write(pack_footer(len(res), total, out.crc, table))
    body = Body()
    with open(npath, "rb") as f:
        err = body.read(f, file_size(npath), nl.max_issuers)
        if err:
            return "merge produced a bad list: " + err
        ext = _extras(nl, f, body, work)
    _append_extras(npath, body, ext, KIND_DELTA)
    return _install(nl, npath)


def _merge(nl, base, sf, d, out, dout, work):
    """Installed list (its body `base`) + delta d -> records to out, directories
    to dout. Returns [(issuer, q, count, listed quota, withheld)] or an error
    message. A delta's section sets the issuer's quota (if it gives one) and its
    withheld count; an issuer the delta leaves out keeps both."""
    shift = d.base_day - nl.base_day  # expiry codes move to the delta's day
    w = work
    br = _Reader(nl.file, nl.rbuf, w[_W_DIR:_W_END])
    dr = _DeltaReader(sf, w[_W_DEL:_W_DIR])
    t = nl.table
    res = []
    total = 0
    i = j = 0
    nb = nl.sections
    while i < nb or j < d.n:
        ib = t[i * ST] if i < nb else 0x10000
        jd = d.issuer[j] if j < d.n else 0x10000
        issuer = min(ib, jd)
        has_b = ib == issuer
        has_d = jd == issuer
        if has_b:
            row = i * ST
            q = t[row + S_Q]
            lquota = (d.aux[j] if has_d else 0) or base.aux[i]
            held = d.withheld[j] if has_d else t[row + S_WH]
            keep = t[row + S_KEEP]
            x = t[row + S_CUT0]
            y = t[row + S_CUT1]
            c0, c1, c2, c3 = x >> 12, x & 4095, y >> 12, y & 4095
            br.start(t[row + S_REC], t[row + S_DIR], q, t[row + S_CNT])
            i += 1
        else:
            lquota = d.aux[j]
            held = d.withheld[j]
            keep = c0 = c1 = c2 = c3 = 0
            q = bucket_bits(max(d.count[j], nl.quota_of(issuer, lquota)))
        if has_d:
            dr.start(d.rec_off[j], d.count[j], q)
            j += 1
        cnt = 0
        nxt = 0  # next bucket whose directory entry is due
        lb = la = lbb = lc = -1  # last key written
        hb = has_b and _next_base(br, keep, c0, c1, c2, c3, shift)
        hd = has_d and dr.next()
        while hb or hd:
            if hb and hd:
                if br.bk == dr.bk and br.a == dr.a and br.b == dr.b and br.c == dr.c:
                    o = 0
                elif before(br.bk, br.a, br.b, br.c, dr.bk, dr.a, dr.b, dr.c):
                    o = -1
                else:
                    o = 1
            else:
                o = -1 if hb else 1
            if o < 0:
                bk, a, b, c, e = br.bk, br.a, br.b, br.c, br.e2
            else:  # the delta's record replaces or removes the installed one
                bk, a, b, c, e = dr.bk, dr.a, dr.b, dr.c, dr.e
            if e != REMOVE and (bk != lb or a != la or b != lbb or c != lc):
                if total + cnt >= nl.capacity:
                    return "list would exceed its capacity of %d entries" % nl.capacity
                while nxt <= bk:
                    dout.u32(cnt)
                    nxt += 1
                out.record(a, b, c, e)
                cnt += 1
                lb, la, lbb, lc = bk, a, b, c
            if o <= 0:
                hb = _next_base(br, keep, c0, c1, c2, c3, shift)
            if o >= 0:
                hd = dr.next()
        if dr.bad:
            return "delta records out of order (issuer %d)" % issuer
        if br.bad:
            return "installed list damaged (issuer %d)" % issuer
        if cnt or held:  # a section of no entries still says what was withheld
            while nxt <= (1 << q):
                dout.u32(cnt)
                nxt += 1
            res.append((issuer, q, cnt, lquota, held))
            total += cnt
    if len(res) > nl.max_issuers:
        return "list would hold %d issuers, the terminal holds %d" % (len(res), nl.max_issuers)
    return res
