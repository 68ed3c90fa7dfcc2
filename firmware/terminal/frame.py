"""Framing of the host link, shared byte for byte by firmware and host.

A frame on the wire:

    A5 5A | len (u16 LE) | hchk (u8) | payload (len bytes) | crc32 (u32 LE)

`hchk = len_lo ^ len_hi ^ 0x5A` catches a corrupted length before the reader
waits for bytes that will never come; the CRC32 covers len, hchk and payload.
A reader that meets junk, a bad header or a bad CRC drops one byte and looks
for the next magic, so the link resynchronises on the next good frame; a
header that lies about its length stalls it until the link is idle, and then
expire() drops every stalled header at once. All the
per-byte work (search, CRC) runs in C (`bytearray.find`, `binascii.crc32`).

    rx = FrameReader(1024)
    n = port.readinto(rx.space()); rx.commit(n)
    kind, payload = rx.pop()      # FRAME + memoryview, NONE, or CORRUPT

    tx = FrameWriter(1024)
    tx.payload[0] = 1; frame = tx.finish(1)   # memoryview of the whole frame
"""

import binascii

from terminal.compat import const

HEADER_LEN = const(5)
TRAILER_LEN = const(4)
OVERHEAD = const(9)
_M0 = const(0xA5)
_M1 = const(0x5A)
_MAGIC = b"\xa5\x5a"

NONE = const(0)  # no complete frame yet
FRAME = const(1)  # a good frame: payload is a memoryview into the reader's buffer
CORRUPT = const(2)  # a complete frame with a good header failed its CRC


def _crc(mv):
    return binascii.crc32(mv) & 0xFFFFFFFF


def header_check(length):
    return (length & 0xFF) ^ (length >> 8) ^ _M1


class FrameWriter:
    """Builds frames in one preallocated buffer: write into `payload`, then finish(n)."""

    def __init__(self, max_payload):
        self.max_payload = max_payload
        self.buf = bytearray(max_payload + OVERHEAD)
        self._mv = memoryview(self.buf)
        self.payload = self._mv[HEADER_LEN : HEADER_LEN + max_payload]

    def finish(self, n):
        if n > self.max_payload:
            raise ValueError("frame payload too long")
        b = self.buf
        b[0] = _M0
        b[1] = _M1
        b[2] = n & 0xFF
        b[3] = n >> 8
        b[4] = header_check(n)
        crc = binascii.crc32(self._mv[2 : HEADER_LEN + n]) & 0xFFFFFFFF
        end = HEADER_LEN + n
        b[end] = crc & 0xFF
        b[end + 1] = (crc >> 8) & 0xFF
        b[end + 2] = (crc >> 16) & 0xFF
        b[end + 3] = crc >> 24
        return self._mv[: end + TRAILER_LEN]


def encode(payload):
    """Host-side convenience: the frame for `payload` as new bytes."""
    n = len(payload)
    head = bytes((_M0, _M1, n & 0xFF, n >> 8, header_check(n)))
    crc = binascii.crc32(head[2:] + bytes(payload)) & 0xFFFFFFFF
    return head + bytes(payload) + crc.to_bytes(4, "little")


class FrameReader:
    """Finds frames in a byte stream; see the module docstring."""

    def __init__(self, max_payload):
        self.max_payload = max_payload
        self.buf = bytearray(2 * (max_payload + OVERHEAD))
        self._mv = memoryview(self.buf)
        self.start = 0
        self.end = 0
        self.dropped = 0  # bytes skipped while looking for a frame
        self.corrupt = 0  # frames with a good header and a bad CRC

    def pending(self):
        return self.end - self.start

    def space(self):
        """Free tail of the buffer to read into (compacts first)."""
        if self.start:
            n = self.end - self.start
            if n:
                self.buf[0:n] = self._mv[self.start : self.end]
            self.start = 0
            self.end = n
        return self._mv[self.end :]

    def commit(self, n):
        self.end += n

    def feed(self, data):
        """Copy bytes in (host and tests); returns how many fitted."""
        space = self.space()
        n = min(len(space), len(data))
        space[:n] = data[:n]
        self.end += n
        return n

    def expire(self):
        """The link went quiet with a partial frame buffered: nothing will complete it.

        Only a header that lies about its length stalls the reader; the caller
        calls this after an idle timeout. Every stalled header goes at once, the
        first and any later one the buffer holds, up to the next frame that is
        complete (pop() then returns it, or reports it corrupt) or to the end: a
        burst of lies costs one idle timeout, not one each.
        """
        b = self.buf
        while self.end > self.start:
            self.start += 1
            self.dropped += 1
            pos = b.find(_MAGIC, self.start, self.end)
            if pos < 0:  # the link is quiet: a trailing A5 is dead too
                self.dropped += self.end - self.start
                self.start = self.end
                return
            self.dropped += pos - self.start
            self.start = pos
            if self.end - pos >= HEADER_LEN:
                n = b[pos + 2] | (b[pos + 3] << 8)
                if (n > self.max_payload or b[pos + 4] != header_check(n)
                        or self.end - pos >= HEADER_LEN + n + TRAILER_LEN):
                    return  # not a stall: pop() skips a bad header or checks the frame

    def pop(self):
        """(FRAME, payload) | (CORRUPT, None) | (NONE, None)."""
        b = self.buf
        while True:
            start = self.start
            avail = self.end - start
            if avail < 2:
                if avail == 1 and b[start] != _M0:
                    self.start += 1
                    self.dropped += 1
                return NONE, None
            pos = b.find(_MAGIC, start, self.end)
            if pos < 0:
                # keep a trailing A5: it may be the first half of a magic
                keep = 1 if b[self.end - 1] == _M0 else 0
                self.dropped += avail - keep
                self.start = self.end - keep
                return NONE, None
            if pos > start:
                self.dropped += pos - start
                self.start = pos
            if self.end - pos < HEADER_LEN:
                return NONE, None
            n = b[pos + 2] | (b[pos + 3] << 8)
            if n > self.max_payload or b[pos + 4] != header_check(n):
                self.start = pos + 1
                self.dropped += 1
                continue
            total = HEADER_LEN + n + TRAILER_LEN
            if self.end - pos < total:
                return NONE, None
            end = pos + HEADER_LEN + n
            want = b[end] | (b[end + 1] << 8) | (b[end + 2] << 16) | (b[end + 3] << 24)
            if _crc(self._mv[pos + 2 : end]) != want:
                self.start = pos + 1
                self.dropped += 1
                self.corrupt += 1
                return CORRUPT, None
            self.start = pos + total
            return FRAME, self._mv[pos + HEADER_LEN : end]
