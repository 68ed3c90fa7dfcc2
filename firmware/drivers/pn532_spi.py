"""The PN532 on SPI: drivers.pn532.Pn532's link for a board wired so.

    nfc = Pn532(SPILink(spi, Pin(10, Pin.OUT, value=1), lsb_first=True))
"""

from drivers.pn532 import pause_ms
from terminal.compat import ticks_add, ticks_diff, ticks_ms


class SPILink:
    """PN532 on SPI, mode 0, at most 5 MHz; `cs` is a Pin (only .value() is used).

    The PN532 sends and expects LSB first. Give lsb_first=True only if the bus
    was made with firstbit=SPI.LSB (ESP32 can); otherwise (RP2, SoftSPI) every
    byte is bit-reversed here, through a 256-byte table.
    """

    reads_exact = True

    def __init__(self, spi, cs, lsb_first=False):
        self.spi = spi
        self.cs = cs
        self._one = bytearray(1)
        self._rev = None
        if not lsb_first:
            rev = bytearray(256)
            for i in range(256):
                r = 0
                for b in range(8):
                    if i & (1 << b):
                        r |= 0x80 >> b
                rev[i] = r
            self._rev = rev
        cs.value(1)

    def _byte(self, value):
        self._one[0] = self._rev[value] if self._rev else value
        self.spi.write(self._one)

    def _reverse(self, buf):
        rev = self._rev
        if rev:
            for i in range(len(buf)):
                buf[i] = rev[buf[i]]

    def wake(self):
        self.cs.value(0)
        pause_ms(2)  # NSS low wakes the chip from power-down
        self._byte(0x00)
        self.cs.value(1)
        pause_ms(2)

    def flush(self):
        pass

    def write(self, frame):
        self._reverse(frame)  # in place, undone below: a resend sends the same bytes
        self.cs.value(0)
        try:
            self._byte(0x01)  # DW: data write
            self.spi.write(frame)
        finally:
            self.cs.value(1)
            self._reverse(frame)

    def ready(self):
        self.cs.value(0)
        try:
            self._byte(0x02)  # SR: status read
            self.spi.readinto(self._one)
        finally:
            self.cs.value(1)
        s = self._one[0]
        return (self._rev[s] if self._rev else s) & 1

    def read(self, buf, timeout_ms):
        deadline = ticks_add(ticks_ms(), timeout_ms)
        while not self.ready():
            if ticks_diff(deadline, ticks_ms()) <= 0:
                return 0
        self.cs.value(0)
        try:
            self._byte(0x03)  # DR: data read
            self.spi.readinto(buf)
        finally:
            self.cs.value(1)
        self._reverse(buf)
        return len(buf)
