"""A block device backed by a file, for LittleFS on the emulated board.

    bdev = FileBlockDevice("flash.img", 4096, 4096)   # creates a sparse 16 MB file
    vfs.VfsLfs2.mkfs(bdev); vfs.mount(vfs.VfsLfs2(bdev), "/flash")

Implements the extended block protocol LittleFS uses (offset within a block,
ioctl 3 sync, 4 count, 5 size, 6 erase) and counts block reads and writes so
benchmarks can report flash reads per operation.
"""


class FileBlockDevice:
    def __init__(self, path, block_size, block_count):
        self.block_size = block_size
        self.block_count = block_count
        self.reads = 0
        self.writes = 0
        try:
            self._f = open(path, "r+b")
        except OSError:
            f = open(path, "wb")
            f.seek(block_size * block_count - 1)
            f.write(b"\xff")
            f.close()
            self._f = open(path, "r+b")

    def readblocks(self, block, buf, offset=0):
        self.reads += 1
        self._f.seek(block * self.block_size + offset)
        self._f.readinto(buf)

    def writeblocks(self, block, buf, offset=0):
        self.writes += 1
        self._f.seek(block * self.block_size + offset)
        self._f.write(buf)

    def ioctl(self, op, arg):
        if op == 3:  # sync
            self._f.flush()
            return 0
        if op == 4:
            return self.block_count
        if op == 5:
            return self.block_size
        if op == 6:  # erase: a file needs none
            return 0
        return 0

    def close(self):
        self._f.close()
