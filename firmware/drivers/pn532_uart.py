"""The PN532 on its HSU (UART): drivers.pn532.Pn532's link for a board wired so,
and the emulated board's (the emulated PN532 on a pty, drivers/ptyuart.py).

    nfc = Pn532(UARTLink(UART(1, 115200)))
"""

from drivers.pn532 import pause_ms
from terminal.compat import ticks_add, ticks_diff, ticks_ms

# HSU wake-up from power-down: 0x55 0x55, then a long preamble of zeros (UM0701-02).
_HSU_WAKE = b"\x55\x55\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"


class UARTLink:
    """PN532 on its high-speed UART (115200 8N1 after power-up).

    A byte stream has no ready line: read() collects bytes until a whole frame
    is in, and flush() drops what a timed-out exchange left behind, so the next
    command never parses a stale answer.
    """

    def __init__(self, uart):
        self.uart = uart
        self._one = bytearray(1)

    def wake(self):
        self.uart.write(_HSU_WAKE)
        pause_ms(2)

    def flush(self):
        u = self.uart
        while u.any():
            u.readinto(self._one)

    def write(self, frame):
        self.uart.write(frame)

    def ready(self):
        return self.uart.any()

    def read(self, buf, timeout_ms):
        """Collect bytes until one whole frame is in (DCS included; ACK and NACK
        after their LCS); 0 if nothing came, what came if only part of a frame."""
        u = self.uart
        one = self._one
        n = 0
        s = -1  # where 00 FF starts
        need = 0  # bytes that make the frame whole, once LEN is known
        size = len(buf)
        deadline = ticks_add(ticks_ms(), timeout_ms)
        while n < size:
            if not u.any():
                if ticks_diff(deadline, ticks_ms()) <= 0:
                    return n
                continue
            u.readinto(one)
            buf[n] = one[0]
            n += 1
            if s < 0:
                if n >= 2 and buf[n - 2] == 0x00 and buf[n - 1] == 0xFF:
                    s = n - 2
            elif n == s + 4:
                ln = buf[s + 2]
                lcs = buf[s + 3]
                if (ln + lcs) & 0xFF or ln == 0:  # ACK, NACK, or a broken length
                    return n
                need = s + 5 + ln
            elif n == need:
                return n
        return n
