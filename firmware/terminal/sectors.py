"""Pre-erased flash sectors for append-only logs: the journal ring, the auth counter.

    s = sectors.open("/flash/journal", "r", 19, 4096, bdev, prog=256)
    s.read(i, off, buf)         # buf <- sector i from byte off
    s.program(i, off, data)     # may only clear bits of erased space (NOR)
    s.erase(i)                  # sector i back to 0xFF: 45 ms typical on a W25Q16JV
    s.size, s.count             # usable bytes per sector (an erase block less 64), sectors

Each sector is a file of exactly one block (`<root>/<prefix>000/0000`, 16 to a
directory, as LittleFS looks a name up by reading its whole directory), written
once by LittleFS, which erases the block for it. A file of one block has no
skip-list pointers, and LittleFS never reads, moves or rewrites the data block
of a file nobody writes to again. So with the flash's block device (`bdev`)
the sectors' blocks are found once and listed in `<prefix>map`, written after
the files; from then on they are read, programmed and erased directly through
the block protocol: an append is one page program, never a LittleFS commit or
erase. Without bdev (CPython, or a test without one) open() gives the files
themselves, read and written with the same results (terminal.sectors_make).

Finding the blocks (terminal.sectors_make, at start-up only): each file is
written erased but for a 16-byte mark at its end, and one pass reads the last
16 bytes of every block of the flash. The last 64 bytes of a sector are
therefore not part of `size`: never programmed, never checked (an erase
clears the mark, which is not needed again).

`prog` is the board's program unit (board.FLASH_PROG_SIZE): data smaller than
it is programmed as one whole unit padded with 0xFF, which leaves the other
bytes as they are, since a program only clears bits. docs/journal.md, "Flash".
"""

from array import array

from terminal.compat import const

# The end of each block left out of `size`: where terminal.sectors_make puts the
# mark that finds the block, and nothing else (journal.py repeats it).
RESERVED = const(64)


def open(root, prefix, count, size, bdev, prog=1):  # noqa: A001 (as io.open: a factory)
    """The sectors under root (made at the first start): on bdev, or as files."""
    from terminal import sectors_make  # start-up only: the terminal drops it after

    s = Sectors(root, prefix, count, size, bdev, prog) if bdev is not None else \
        sectors_make.FileSectors(root, prefix, count, size, None, prog)
    s.created = not sectors_make.load_map(s)
    if s.created:
        sectors_make.make(s)
    return s


class Sectors:
    def __init__(self, root, prefix, count, size, bdev, prog):
        self._root = root
        self._prefix = prefix
        self.count = count
        self._bd = bdev
        if bdev is not None:
            size = bdev.ioctl(5, 0)
        self._block = size
        self.size = size - RESERVED
        self._prog = prog
        # all 0xFF between programs: only the bytes of a program are set, then restored
        self._page = bytearray(b"\xff" * prog) if prog > 1 else None
        self._blocks = array("I", [0] * count)
        self.created = False  # True when made at this start: all of them erased

    def read(self, i, off, buf):
        self._bd.readblocks(self._blocks[i], buf, off)

    def program(self, i, off, data):
        """Program data at off; the caller keeps it inside one program unit, or
        aligned to whole units."""
        p = self._page
        n = len(data)
        if p is not None and (off % self._prog or n % self._prog):
            base = off - off % self._prog
            k = off - base
            p[k : k + n] = data  # copied in C, no allocation (a tap programs a record so)
            try:
                self._write(i, base, p)
            finally:
                for j in range(k, k + n):
                    p[j] = 0xFF
        else:
            self._write(i, off, data)

    def erase(self, i):
        self._bd.ioctl(6, self._blocks[i])

    def _write(self, i, off, data):
        self._bd.writeblocks(self._blocks[i], data, off)
