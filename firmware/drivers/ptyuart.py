"""The emulated board's UART: a pty, with the calls drivers.pn532.UARTLink makes
of machine.UART (write, readinto, any).

    uart = PtyUart("/dev/pts/7")           # the emulated PN532's end (host_tools.pn532emu)
    nfc = Pn532(UARTLink(uart))            # the same link a board with the PN532 on HSU uses

The launcher makes the pty raw before the firmware starts, as a board's UART
is 8N1 with no line discipline; the unix port opens the slave path like a
file. Reads take what the pty holds (`any()` says whether it holds anything),
writes go out whole. `any()` waits up to 1 ms for a byte when none is there,
so UARTLink's wait loop sleeps in the kernel instead of spinning a core (a
board's UART.any() returns at once; the link's timeouts are the same).

Nothing allocates once open: select.poll's ipoll reuses its result.
"""

import select


class PtyUart:
    def __init__(self, path):
        self._f = open(path, "r+b", buffering=0)  # unbuffered: a byte written is on the wire
        self._poll = select.poll()
        self._poll.register(self._f, select.POLLIN)
        self._wait = getattr(self._poll, "ipoll", self._poll.poll)

    def write(self, buf):
        f = self._f
        n = len(buf)
        sent = 0
        while sent < n:
            k = f.write(buf if not sent else memoryview(buf)[sent:])
            sent += k or 0
        return n

    def readinto(self, buf):
        return self._f.readinto(buf) or 0

    def any(self):
        for _ in self._wait(1):
            return 1
        return 0

    def close(self):
        self._f.close()

