"""The host link's request counter, appended to pre-erased flash.

    log = CounterLog("/flash/auth", terminal_id, bdev, prog=board.FLASH_PROG_SIZE)
    log.value               # the last counter accepted under this key (0: none yet)
    log.store(counter)      # before the request is applied; raises OSError if not stored
    log.idle()              # the link is quiet: erase the spare sector if it needs it

Every signed request, a sale included, moves the counter, and it must be on
flash before the request takes effect (terminal.service). Rewriting a file
for it is a LittleFS commit, and now and then a compaction with an erase,
inside the tap. So the counter is appended instead: 16-byte entries (u64
counter, the terminal id, CRC-32) into the first erased slot of one of two
sectors (terminal.sectors); when one is full the other takes over and the full
one is erased in idle time. The last whole entry of this terminal id is the
counter: a torn entry (power cut while it was programmed) fails its CRC and
counts for nothing, and its request was never applied; entries of another id
are a key replaced (`termctl flash` without --keep-key), whose counter starts
again at 0. The scan at start is terminal.sectors_make's.
"""

import struct

from terminal import sectors
from terminal.compat import const
from terminal.journal import crc32_into

_ENTRY = const(16)


class CounterLog:
    def __init__(self, root, terminal_id, bdev=None, prog=1, sector=4096):
        self.terminal_id = terminal_id
        self._s = sectors.open(root, "c", 2, sector, bdev, prog)
        self._n = self._s.size // _ENTRY
        self._buf = bytearray(_ENTRY)
        self._crc = bytearray(4)
        self.value = 0
        self.tap_erases = 0  # erases a store had to make itself
        self._active = 0
        self._slot = 0  # next free slot in the active sector
        self._spare_ready = self._s.created  # the other sector verified erased
        from terminal import sectors_make

        sectors_make.log_scan(self)

    def store(self, counter):
        """Append counter (above the last one); OSError if the flash failed."""
        if self._slot == self._n:
            spare = 1 - self._active
            if not self._spare_ready:  # idle time did not come: erase here, and count it
                from terminal import sectors_make

                self.tap_erases += sectors_make.log_ready(self, spare)
            self._active = spare
            self._slot = 0
            self._spare_ready = False  # the full one: erased in idle time
        b = self._buf
        struct.pack_into("<QI", b, 0, counter, self.terminal_id)
        crc32_into(b, 12, b, 12)
        slot = self._slot
        self._slot = slot + 1  # a failed program may have left bits: never again here
        self._s.program(self._active, slot * _ENTRY, b)
        self.value = counter

    def idle(self):
        """Verify (and erase if need be) the spare sector; True if it did work."""
        if self._spare_ready:
            return False
        from terminal import sectors_make

        sectors_make.log_ready(self, 1 - self._active)
        return True
