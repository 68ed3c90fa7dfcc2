"""The terminal's end of the host link: frames in, replies and events out.

    link = HostLink(port, board.MAX_FRAME)
    kind, payload = link.poll(50)        # frame.FRAME / frame.CORRUPT / frame.NONE
    link.reply(cmd, req, protocol.OK, b"...")

`port` is the byte stream to the host, with three methods: `wait(ms)` -> bool
(readable), `readinto(mv)` -> bytes read (0 if none; never blocks after wait
said readable) and `write(mv)` (writes everything). The emulator's port is the
pty on stdin/stdout; a board's is USB CDC or a UART.
"""

from terminal import frame, protocol
from terminal.compat import const, ticks_diff, ticks_ms

# A partial frame that gets no new byte for this long is a length lie or a
# cut transfer: skip a byte so the next good frame is found.
_IDLE_MS = const(250)


class HostLink:
    def __init__(self, port, max_payload):
        self.port = port
        self.rx = frame.FrameReader(max_payload)
        self.tx = frame.FrameWriter(max_payload)
        self.max_body = max_payload - 4
        self._last_rx = ticks_ms()
        self._event_seq = 0

    def poll(self, timeout_ms):
        kind, payload = self.rx.pop()
        if kind != frame.NONE:
            return kind, payload
        if self.port.wait(timeout_ms):
            n = self.port.readinto(self.rx.space())
            if n:
                self.rx.commit(n)
                self._last_rx = ticks_ms()
        elif self.rx.pending() and ticks_diff(ticks_ms(), self._last_rx) > _IDLE_MS:
            self.rx.expire()
        return self.rx.pop()

    def reply(self, cmd, req, status, body=b""):
        """Send a reply; body may be bytes, bytearray, memoryview or str."""
        p = self.tx.payload
        p[0] = cmd | protocol.REPLY_BIT
        protocol.put_u16(p, 1, req)
        p[3] = status
        n = self._put_body(4, body)
        self.port.write(self.tx.finish(n))

    def reply_into(self, cmd, req, status, n):
        """Send a reply whose body the caller already wrote at body_buffer()[:n]."""
        p = self.tx.payload
        p[0] = cmd | protocol.REPLY_BIT
        protocol.put_u16(p, 1, req)
        p[3] = status
        self.port.write(self.tx.finish(4 + n))

    def body_buffer(self):
        return self.tx.payload[4:]

    def event(self, evt, body=b""):
        p = self.tx.payload
        p[0] = evt | protocol.EVENT_BIT
        self._event_seq = (self._event_seq + 1) & 0xFFFF
        protocol.put_u16(p, 1, self._event_seq)
        n = self._put_body(3, body)
        self.port.write(self.tx.finish(n))
        return self._event_seq

    def _put_body(self, at, body):
        if isinstance(body, str):
            body = body.encode()
        n = len(body)
        if at + n > len(self.tx.payload):
            raise ValueError("reply body too long for the link")
        self.tx.payload[at : at + n] = body
        return at + n
