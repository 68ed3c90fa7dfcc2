"""The host link over the board's stdin/stdout (USB CDC on a board, a pty on
the emulated board).

    port = StdioPort(nonblocking=True)    # emulator: the launcher set O_NONBLOCK
    if port.wait(50): n = port.readinto(buf)
    port.write(frame)

On a board stdin blocks until its buffer is full, so without `nonblocking`
the port reads only as many bytes as poll says are there, one at a time.
"""

import select
import sys


class StdioPort:
    def __init__(self, nonblocking=False):
        self._in = sys.stdin.buffer
        self._out = sys.stdout.buffer
        self._nonblocking = nonblocking
        self.stalled = 0
        self._poll_in = select.poll()
        self._poll_in.register(sys.stdin, select.POLLIN)
        self._poll_out = select.poll()
        self._poll_out.register(sys.stdout, select.POLLOUT)

    def wait(self, timeout_ms):
        return bool(self._poll_in.poll(timeout_ms))

    def readinto(self, mv):
        if self._nonblocking:
            n = self._in.readinto(mv)
            return n or 0
        n = 0
        while n < len(mv) and self._poll_in.poll(0):
            got = self._in.readinto(mv[n : n + 1])
            if not got:
                break
            n += 1
        return n

    def write(self, mv):
        """Write all of mv; False if the host stopped reading (the rest is dropped,
        as on a UART with nobody listening, rather than stopping the terminal)."""
        sent = 0
        total = len(mv)
        while sent < total:
            n = self._out.write(mv[sent:])
            if n:
                sent += n
            elif not self._poll_out.poll(1000):
                self.stalled += 1
                return False
        return True
