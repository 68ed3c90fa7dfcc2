"""NOR flash in a file, for LittleFS and the journal on the emulated board.

    bdev = FileBlockDevice("flash.img", 4096, 4096, page_size=256, prog_size=256,
                           timing=board_timing, create=False)  # an image of that size
    vfs.VfsLfs2.mkfs(bdev); vfs.mount(vfs.VfsLfs2(bdev), "/flash")
    bdev.erases, bdev.programs, bdev.typ_us, bdev.max_us   # counters since open
    bdev.reads, bdev.read_bytes, bdev.program_bytes, bdev.writes, bdev.violations

The block protocol is the one rp2.Flash and esp32.Partition implement:
`readblocks(block, buf[, offset])`; `writeblocks(block, buf)` erases the
blocks buf covers, then programs them; `writeblocks(block, buf, offset)`
programs only; `ioctl(6, block)` erases one block (4 count, 5 size, 3 sync).
An image that is missing or short is made (erased, 0xFF) only with
create=True; otherwise it is refused, and so is one that is too long.

A program behaves as the chip's Page Program does (W25Q16JV datasheet, 8.2.13):
it can only turn bits from 1 to 0, so the stored byte is old AND new, and a
0xFF byte leaves the flash as it is (how a whole page is programmed around a
few new bytes). A program that wants a 1 where the flash holds a 0 in any
other byte, or that is not aligned to the board's program unit (the RP2040's
ROM programs whole 256-byte pages), is a *violation*: code that overwrites in
place works on a file and fails on a board. Strict (the tests): the program
raises OSError(EIO) and writes nothing. Otherwise the flash ANDs as the chip
would, the violation is counted and the first ones are logged on stderr (the
emulator's log).

Every program is charged one page-program time (tPP) per page it touches and
every erase one erase time of the block (tSE for the boards' 4 KB sectors),
typical and maximum, as `timing` gives them from the datasheet the board file
names: `typ_us` and `max_us` are modelled flash time; nothing sleeps.
docs/boards.md, "Flash".

Power cuts: `cut_after(n)` lets n more programs/erases through; the next one
is applied halfway (a torn page, a half-erased sector), raises PowerLost and
every later call raises too, as if the supply had dropped during it.
"""

from terminal.compat import const

_CHUNK = const(256)  # bytes compared and written per file access: buffers made once
_EIO = const(5)


class PowerLost(Exception):
    """The supply dropped during a flash operation (see cut_after). Not an
    OSError: on a board nothing runs after a cut, so no handler may catch it."""


class FileBlockDevice:
    def __init__(self, path, block_size, block_count, page_size=256, prog_size=1,
                 timing=(400, 3000, 45000, 400000), strict=True, create=True):
        self.block_size = block_size
        self.block_count = block_count
        self.page_size = page_size
        self.prog_size = prog_size
        self.strict = strict
        self.timing = timing  # page program typ, max; erase of one block typ, max (µs)
        self.size = block_size * block_count
        self.reads = self.read_bytes = self.writes = 0  # writes: writeblocks calls
        self.programs = self.program_bytes = self.erases = self.violations = 0
        self.typ_us = self.max_us = 0
        self._cut = -1  # programs/erases still allowed before the cut; -1: no cut armed
        self._keep_head = False
        self.dead = False  # the cut happened: every call raises PowerLost
        self._old = bytearray(_CHUNK)
        self._ff = bytearray(b"\xff" * _CHUNK)
        try:
            f = open(path, "r+b")
        except OSError:
            if not create:
                raise
            f = open(path, "w+b")
        self._f = f
        have = f.seek(0, 2)
        self.found = have  # bytes the image had when opened
        if have != self.size:
            if not create or have > self.size:
                f.close()
                raise ValueError("image has %d bytes, the flash %d" % (have, self.size))
            self._fill(have, self.size)  # new or short: the missing part arrives erased

    # -- block protocol ---------------------------------------------------------

    def readblocks(self, block, buf, offset=0):
        if self.dead:
            raise PowerLost()
        self.reads += 1
        self.read_bytes += len(buf)
        self._f.seek(block * self.block_size + offset)
        self._f.readinto(buf)

    def writeblocks(self, block, buf, offset=None):
        self.writes += 1
        if offset is None:  # rp2.Flash / esp32.Partition: erase the blocks, then program
            for b in range(block, block + (len(buf) - 1) // self.block_size + 1):
                self._erase(b)
            offset = 0
        self._program(block * self.block_size + offset, buf)

    def ioctl(self, op, arg):
        # 3 sync: every write already reached the OS (FileIO has no buffer), which
        # keeps it if the process is killed; no fsync, it costs ms
        if self.dead and op == 3:
            raise PowerLost()
        if op == 6:
            self._erase(arg)
        return self.block_count if op == 4 else self.block_size if op == 5 else 0

    def close(self):
        self._f.close()

    # -- faults -----------------------------------------------------------------

    def cut_after(self, n, keep_head=False):
        """Power cut: n more programs/erases succeed, the next is torn and raises.
        A torn program stores the first half of its bytes; a torn erase erases
        the first half of the block, or the second with keep_head (so that what
        the block starts with, a header, survives over half-erased data)."""
        self._cut = n
        self._keep_head = keep_head

    def _tear(self):
        # True when this operation is the one the cut lands on.
        if self.dead:
            raise PowerLost()
        self.dead = self._cut == 0
        self._cut -= self._cut > 0
        return self.dead

    # -- the chip ----------------------------------------------------------------

    def _erase(self, block):
        if not 0 <= block < self.block_count:
            raise OSError(_EIO)
        torn = self._tear()
        start = block * self.block_size
        half = self.block_size // 2 if torn else 0
        start += half if self._keep_head else 0
        self._fill(start, start + self.block_size - half)
        self.erases += 1
        self.typ_us += self.timing[2]
        self.max_us += self.timing[3]
        if torn:
            raise PowerLost()

    def _program(self, addr, buf):
        n = len(buf)
        if addr < 0 or addr + n > self.size:
            raise OSError(_EIO)
        # misaligned: the board's driver would program other bytes than these
        if addr % self.prog_size or n % self.prog_size or self._walk(addr, buf, n, 0):
            self.violations += 1
            if self.strict:
                raise OSError(_EIO)
            if self.violations <= 3:
                import sys

                print("flash: program at 0x%x, %d bytes, not aligned to %d or setting bits "
                      "no erase set: the chip ANDs (violation %d)"
                      % (addr, n, self.prog_size, self.violations), file=sys.stderr)
        torn = self._tear()
        n -= n // 2 if torn else 0
        self._walk(addr, buf, n, 1)
        pages = (addr + max(n, 1) - 1) // self.page_size - addr // self.page_size + 1
        self.programs += pages
        self.program_bytes += n
        self.typ_us += pages * self.timing[0]
        self.max_us += pages * self.timing[1]
        if torn:
            raise PowerLost()

    def _walk(self, addr, buf, n, store):
        # A chunk at a time. store 0: True if buf wants a 1 where the flash holds a 0
        # (a 0xFF byte excepted). store 1: flash &= buf. A chunk still erased takes
        # buf as it is: one comparison in C. No allocation for a program of one
        # chunk away from the end of the image.
        old = self._old
        f = self._f
        done = 0
        while done < n:
            k = min(_CHUNK, n - done)
            at = addr + done
            f.seek(at)
            f.readinto(old)
            if old == self._ff:
                if store:
                    f.seek(at)
                    f.write(buf if k == len(buf) else memoryview(buf)[done:done + k])
            elif store:
                for i in range(k):
                    old[i] &= buf[done + i]
                f.seek(at)
                f.write(old if at + _CHUNK <= self.size else memoryview(old)[:k])
            else:
                for i in range(k):
                    b = buf[done + i]
                    if b & ~old[i] and b != 0xFF:
                        return True
            done += k
        return False

    def _fill(self, start, end):
        f = self._f
        f.seek(start)
        while end - start >= _CHUNK:
            f.write(self._ff)
            start += _CHUNK
        f.write(memoryview(self._ff)[: end - start])
