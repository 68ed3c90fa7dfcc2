"""Making the sectors of terminal.sectors, finding them again, scanning a log:
start-up only (and the sectors as files, where there is no block device).

    from terminal import sectors_make       # by sectors.open(); the boot drops it after
    if not sectors_make.load_map(s):        # the blocks listed at an earlier start
        sectors_make.make(s)                # the files, their blocks, the map
    sectors_make.log_scan(log)              # terminal.authlog: where its entries end

Each sector file is written erased but for a 16-byte mark at its end (magic, a
nonce drawn for this ring, its index); one pass over the last 16 bytes of
every block of the flash finds the blocks, listed in `<prefix>map` (magic,
count, block size, the blocks, CRC-32), written last: sector files without a
map are made again. docs/journal.md, "Flash".
"""

import os
import struct
from binascii import crc32

from terminal.compat import const
from terminal.journal import crc32_into
from terminal.sectors import Sectors

_MAP_MAGIC = b"TSMP"
_MARK_MAGIC = b"TSMK"
_MARK = "<4s8sHH"  # magic, nonce, index, count: the last 16 bytes of a new sector
_EXISTS = const(17)  # EEXIST
_PER_DIR = const(16)  # sector files per directory


class FileSectors(Sectors):
    """The sectors as files, read and written through the filesystem (no bdev)."""

    def __init__(self, root, prefix, count, size, bdev, prog):
        super().__init__(root, prefix, count, size, None, prog)
        self._blocks = None

    def read(self, i, off, buf):
        with open(_path(self, i), "rb") as f:
            f.seek(off)
            if f.readinto(buf) != len(buf):
                raise OSError(5)

    def erase(self, i):
        with open(_path(self, i), "r+b") as f:
            _fill(f, self._block)

    def _write(self, i, off, data):
        with open(_path(self, i), "r+b") as f:
            f.seek(off)
            f.write(data)


def _path(s, i, root=None):
    return "%s/%s%03d/%04d" % (root or s._root, s._prefix, i // _PER_DIR, i)


def _fill(f, n):
    chunk = bytearray(b"\xff" * 256)
    while n >= 256:
        f.write(chunk)
        n -= 256
    f.write(chunk[:n])


def _map_path(s):
    return "%s/%smap" % (s._root, s._prefix)


def load_map(s):
    try:
        with open(_map_path(s), "rb") as f:
            data = f.read()
    except OSError:
        return False
    n = len(data)
    if n < 16 or data[:4] != _MAP_MAGIC:
        return False
    count, size = struct.unpack_from("<HxxI", data, 4)
    if count != s.count or size != s._block or n != 16 + 4 * count:
        return False
    if crc32(data[: n - 4]) != struct.unpack_from("<I", data, n - 4)[0]:
        return False
    if s._blocks is not None:
        for i in range(count):
            s._blocks[i] = struct.unpack_from("<I", data, 12 + 4 * i)[0]
    return True


def make(s):
    # Any earlier sector files go (never written: the map comes last), then
    # the files, their blocks, and the map that makes them usable.
    try:
        os.mkdir(s._root)
    except OSError as e:
        if e.args[0] != _EXISTS:
            raise
    pre = s._prefix
    for name in os.listdir(s._root):
        path = s._root + "/" + name
        if name.startswith(pre) and name[len(pre):].isdigit():
            for sub in os.listdir(path):
                os.remove(path + "/" + sub)
            os.rmdir(path)
        elif name == pre + "map":
            os.remove(path)
    nonce = os.urandom(8)
    mark = bytearray(16)
    for i in range(s.count):
        if i % _PER_DIR == 0:
            os.mkdir("%s/%s%03d" % (s._root, pre, i // _PER_DIR))
        struct.pack_into(_MARK, mark, 0, _MARK_MAGIC, nonce, i, s.count)
        with open(_path(s, i), "wb") as f:
            _fill(f, s._block - 16)
            f.write(mark)
    if s._bd is not None:
        _find_blocks(s, nonce)
    out = bytearray(16 + 4 * s.count)
    struct.pack_into("<4sHxxI", out, 0, _MAP_MAGIC, s.count, s._block)
    if s._blocks is not None:
        for i in range(s.count):
            struct.pack_into("<I", out, 12 + 4 * i, s._blocks[i])
    n = len(out)
    struct.pack_into("<I", out, n - 4, crc32(out[: n - 4]))
    tmp = _map_path(s) + ".tmp"
    with open(tmp, "wb") as f:
        f.write(out)
    os.rename(tmp, _map_path(s))


def _find_blocks(s, nonce):
    # One pass over the flash: the block whose last 16 bytes are sector i's mark.
    bd = s._bd
    found = 0
    for i in range(s.count):
        s._blocks[i] = 0xFFFFFFFF
    tail = bytearray(16)
    for blk in range(bd.ioctl(4, 0)):
        bd.readblocks(blk, tail, s._block - 16)
        if tail[:4] != _MARK_MAGIC or tail[4:12] != nonce:
            continue
        magic, _, i, count = struct.unpack(_MARK, tail)
        if count != s.count or i >= count or s._blocks[i] != 0xFFFFFFFF:
            raise OSError(5)  # a mark twice: not ours after all
        s._blocks[i] = blk
        found += 1
    if found != s.count:
        raise OSError(5)


# -- terminal.authlog's boot scan ----------------------------------------------------


def log_scan(log):
    """Where a CounterLog's entries end: value (this terminal id's last), the
    active sector (the one holding it; else the one with room), next slot."""
    best = -1
    ends = [_end(log, 0), _end(log, 1)]
    log._active = 1 if ends[0] == log._n else 0
    for i in range(2):
        v = _last(log, i, ends[i])
        if v is not None and v > best:
            best = v
            log._active = i
    if best >= 0:
        log.value = best
    log._slot = ends[log._active]


def log_ready(log, i):
    """Sector i of a CounterLog verified erased, erasing it if not; the erases made."""
    buf = log._buf
    erased = True
    for k in range(log._n):
        log._s.read(i, k * 16, buf)
        if _kind(log, buf):
            erased = False
            break
    if not erased:
        log._s.erase(i)
    log._spare_ready = True
    return 0 if erased else 1


def _kind(log, b):
    # 0: erased (all 0xFF); 1: torn; 2: a whole entry (of any terminal id)
    for k in range(16):
        if b[k] != 0xFF:
            crc32_into(b, 12, log._crc, 0)
            for j in range(4):
                if log._crc[j] != b[12 + j]:
                    return 1
            return 2
    return 0


def _end(log, i):
    # First erased slot of sector i: entries fill a prefix (binary search).
    lo, hi = 0, log._n
    while lo < hi:
        mid = (lo + hi) // 2
        log._s.read(i, mid * 16, log._buf)
        if _kind(log, log._buf):
            lo = mid + 1
        else:
            hi = mid
    return lo


def _last(log, i, end):
    # The last whole entry of this terminal id before end, or None.
    for k in range(end - 1, -1, -1):
        log._s.read(i, k * 16, log._buf)
        if _kind(log, log._buf) == 2:
            v, tid = struct.unpack_from("<QI", log._buf, 0)
            if tid == log.terminal_id:
                return v
    return None
