"""Where a LittleFS file's bytes sit on its block device (littlefs SPEC.md, "CTZ
skip-lists").

    n = file_blocks(bdev, "/nl.bin", blocks)   # physical block of every file block
    blk, at = ctz_locate(offset, block_size)    # file offset -> (file block, offset in it)
    bdev.readblocks(blocks[blk], buf, at)       # the file's bytes, read the raw way

Block n > 0 of a file starts with ctz(n) + 1 four-byte pointers to earlier
blocks (the first to block n - 1); the data follows. The negative list uses
this to read its buckets straight off the flash (terminal.nl_dir), and
tests/test_negative_list.py checks these formulas against the unix port's
LittleFS at every block boundary.
"""

from terminal.compat import const

PTR_MAX = const(64)  # CTZ pointer bytes at the start of a block, at most


def ctz_ptrs(n):
    """Bytes of skip pointers at the start of block n of a LittleFS file."""
    if n == 0:
        return 0
    c = 4
    while not n & 1:
        c += 4
        n >>= 1
    return c


def ctz_start(n, bs):
    """File offset of the first data byte of block n (bs: the block size)."""
    if n == 0:
        return 0
    m = n - 1
    ones = 0
    while m:
        ones += m & 1
        m >>= 1
    return n * bs - 8 * (n - 1) + 4 * ones


def ctz_locate(off, bs):
    """(block index, offset in that block) of file offset off."""
    n = off // bs
    while ctz_start(n + 1, bs) <= off:
        n += 1
    return n, off - ctz_start(n, bs) + ctz_ptrs(n)


class _Tap:
    """Read-only view of a block device that remembers the last block read."""

    def __init__(self, bd):
        self.bd = bd
        self.last = -1

    def readblocks(self, n, buf, off=0):
        self.bd.readblocks(n, buf, off)
        self.last = n

    def writeblocks(self, n, buf, off=0):
        raise OSError(30)  # EROFS

    def ioctl(self, op, arg):
        if op == 6:
            raise OSError(30)
        return self.bd.ioctl(op, arg)


def file_blocks(bd, name, arr):
    """Physical blocks of the LittleFS file `name` (path inside the filesystem on
    bd) into arr[0..n); returns n, or -1 if arr is too short or the file is not
    stored in blocks of its own (an inline file of a few bytes). A second,
    read-only view of the filesystem reads the file's last byte, which costs one
    read of its last block and tells which it is; the skip pointers lead back."""
    import vfs

    tap = _Tap(bd)
    fs = vfs.VfsLfs2(tap)
    size = fs.stat(name)[6]
    bs = bd.ioctl(5, 0)
    if size < 8:
        return -1
    last, _ = ctz_locate(size - 1, bs)
    if last >= len(arr):
        return -1
    first = bytearray(8)
    with fs.open(name, "rb") as f:
        f.seek(size - 1)
        tap.last = -1
        end = f.read(1)  # the first read of this handle: its cache is empty
        if tap.last < 0:
            return -1
        arr[last] = tap.last
        f.seek(0)
        f.readinto(first)
    ptr = bytearray(8)
    for n in range(last, 0, -1):
        bd.readblocks(arr[n], ptr, 0)
        arr[n - 1] = ptr[0] | (ptr[1] << 8) | (ptr[2] << 16) | (ptr[3] << 24)
    bd.readblocks(arr[0], ptr, 0)  # the file's first bytes, read the raw way
    if ptr != first:
        return -1
    _, at = ctz_locate(size - 1, bs)
    bd.readblocks(arr[last], memoryview(ptr)[:1], at)
    if ptr[0] != end[0]:
        return -1
    return last + 1
