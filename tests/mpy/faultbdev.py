"""Power-cut injection for LittleFS tests under the unix port (and CPython).

    cut = PowerCut(bdev, after_writes=7)   # the 8th block write never happens
    try:
        do_commit()                         # raises PowerLost at the cut
    except PowerLost:
        pass
    # remount the same image through a fresh FileBlockDevice and check state

Wrap a block device; after `after_writes` successful writeblocks calls every
further write raises PowerLost and nothing more reaches the image, as if the
supply had dropped between two flash program operations.
"""


class PowerLost(Exception):
    pass


class PowerCut:
    def __init__(self, bdev, after_writes):
        self._bdev = bdev
        self.after_writes = after_writes
        self.writes = 0
        self.cut = False

    def readblocks(self, block, buf, offset=0):
        if self.cut:
            raise PowerLost()
        self._bdev.readblocks(block, buf, offset)

    def writeblocks(self, block, buf, offset=0):
        if self.cut or self.writes >= self.after_writes:
            self.cut = True
            raise PowerLost()
        self.writes += 1
        self._bdev.writeblocks(block, buf, offset)

    def ioctl(self, op, arg):
        if self.cut and op in (3, 6):
            raise PowerLost()
        return self._bdev.ioctl(op, arg)
