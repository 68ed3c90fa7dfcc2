"""The PN532 on I2C: drivers.pn532.Pn532's link for a board wired so.

    nfc = Pn532(I2CLink(SoftI2C(scl=Pin(5), sda=Pin(4), freq=400_000, timeout=100_000)))

UM0701-02 6.2.4: the chip answers at address 0x24; every read starts with a
status byte (01 = a frame is ready), and the host reads as many bytes after it
as it asks for (Pn532 asks for the frame it expects).
"""

from drivers.pn532 import pause_ms
from terminal.compat import const, ticks_add, ticks_diff, ticks_ms

I2C_ADDRESS = const(0x24)


class I2CLink:
    """PN532 on I2C (address 0x24). Every read starts with a status byte: 01 = ready."""

    reads_exact = True

    def __init__(self, i2c, address=I2C_ADDRESS):
        self.i2c = i2c
        self.address = address
        self._status = bytearray(1)

    def wake(self):
        # The chip wakes on its address; it may not ACK that first transfer.
        try:
            self.i2c.writeto(self.address, b"\x00")
        except OSError:
            pass
        pause_ms(2)

    def flush(self):
        pass

    def write(self, frame):
        self.i2c.writeto(self.address, frame)

    def ready(self):
        try:
            self.i2c.readfrom_into(self.address, self._status)
        except OSError:  # address NACKed, or stretched past the bus timeout: not yet
            return False
        return self._status[0] & 1

    def read(self, buf, timeout_ms):
        """Wait until ready, then read status byte + frame into buf; 0 on timeout."""
        deadline = ticks_add(ticks_ms(), timeout_ms)
        while not self.ready():
            if ticks_diff(deadline, ticks_ms()) <= 0:
                return 0
        self.i2c.readfrom_into(self.address, buf)
        return len(buf)
