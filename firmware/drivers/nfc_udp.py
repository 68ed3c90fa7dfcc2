"""The emulated board's RF field: nfcpy's UDP link, as a reader (initiator).

    nfc = NfcUdp("127.0.0.1", 54321)         # where the card emulator listens
    sensf_res = nfc.sense_ttf(0xFFFF)         # None: no card answered
    rsp = nfc.exchange(felica_frame, 30)      # memoryview of the card's frame, LEN first
    uid = nfc.sense_tta()                     # ISO14443A anticollision (bench cards)
    nfc.rf_off()                              # "RFOFF": the card's session ends

The same interface as drivers.pn532.Pn532, so drivers.felica and the card
code run unchanged on the emulated board. nfcpy's `udp` device
(nfc/clf/udp.py) carries one frame per datagram as ASCII "<brty> <hex>",
e.g. "212F 0600ffff0100" (a FeliCa polling with its LEN byte): the card
emulator (`clf.listen`) binds the port and answers to whatever address a
command came from; the reader (this driver) sends first, from any port, and
ends the link with the bare datagram "RFOFF". There is no RF field to sense:
a polling nobody answers is simply a timeout (or ICMP port unreachable while
the emulator is between two listens, which reads as no card too).

The socket is connected to the emulator's address, non-blocking, and waited
on with select.poll; datagrams are built and parsed as hex in preallocated
buffers, so a warm tap allocates nothing on MicroPython (`ipoll`, stream
`write(buf, n)` and `readinto`).
"""

import select
import socket

from drivers.felica import polling_frame
from terminal.compat import const, ticks_add, ticks_diff, ticks_ms
from terminal.errors import NfcProtocolError, NfcTimeout

_SENSE_TIMEOUT_MS = const(100)
_SLACK_MS = const(200)  # the link and the emulator process, beyond the card's own time
_HEX = b"0123456789abcdef"
_RFOFF = b"RFOFF"
_BR_212F = b"212F"
_BR_424F = b"424F"
_BR_106A = b"106A"


class _CPythonSocket:
    # CPython's socket lacks the stream methods MicroPython's has; only used there.
    def __init__(self, sock):
        self._s = sock

    def fileno(self):
        return self._s.fileno()

    def write(self, buf, n):
        return self._s.send(memoryview(buf)[:n])

    def readinto(self, buf):
        try:
            return self._s.recv_into(buf)
        except BlockingIOError:
            return None

    def close(self):
        self._s.close()


class NfcUdp:
    """Reader end of nfcpy's UDP link; max_frame: longest frame either way (bytes)."""

    def __init__(self, host, port, max_frame=255, slack_ms=_SLACK_MS):
        self.addr = socket.getaddrinfo(host, port, socket.AF_INET, socket.SOCK_DGRAM)[0][-1]
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.connect(self.addr)
        sock.setblocking(False)
        self._poll = select.poll()
        self._poll.register(sock, select.POLLIN)
        self._wait = getattr(self._poll, "ipoll", self._poll.poll)
        if not hasattr(sock, "readinto"):
            sock = _CPythonSocket(sock)
        self._sock = sock
        self.max_frame = max_frame
        self.slack_ms = slack_ms
        self._tx = bytearray(5 + 2 * max_frame)
        self._rx = bytearray(8 + 2 * max_frame)
        self._frame = bytearray(max_frame)
        self._frame_views = {}
        self._sensf = bytearray(19)
        self._sensf_views = {}
        self._uid = bytearray(10)
        self._uid_views = {}
        self._sdd = bytearray(7)  # SEL_REQ: SEL, NVB, 4 UID bytes, BCC
        self._brty = _BR_212F
        self._linked = False  # a card answered since the last RFOFF

    def close(self):
        self.rf_off()
        self._sock.close()

    def start(self):
        """Nothing to set up: the link is a socket (Pn532.start's counterpart)."""

    def reset(self):
        self.rf_off()

    # -- reader -------------------------------------------------------------------------

    def sense_ttf(self, system_code=0xFFFF, request_code=1, brty=212,
                  timeout_ms=_SENSE_TIMEOUT_MS):
        """Send a FeliCa polling; returns the SENSF_RES (01 | IDm | PMm [| RD], a
        memoryview valid until the next sense) or None when no card answers."""
        self._brty = _BR_424F if brty == 424 else _BR_212F
        polling_frame(self._frame, system_code, request_code, 0)
        n = self._transceive(self._frame, 6, timeout_ms)
        f = self._frame
        if n < 18 or f[0] != n or f[1] != 0x01:
            return None
        out = self._sensf
        for i in range(n - 1):
            out[i] = f[1 + i]
        return _view(self._sensf_views, out, 0, n - 1)

    def sense_tta(self, timeout_ms=_SENSE_TIMEOUT_MS):
        """ISO14443A SENS_REQ, then anticollision and select per cascade level
        (as nfcpy's own udp reader does); returns the UID or None."""
        self._brty = _BR_106A
        f = self._frame
        f[0] = 0x26
        if self._transceive(f, 1, timeout_ms) != 2:
            return None
        uid = self._uid
        got = 0
        sel = self._sdd
        for level in range(3):
            sel[0] = 0x93 + 2 * level
            sel[1] = 0x20  # SDD_REQ
            if self._transceive(sel, 2, timeout_ms) != 5:
                return None
            for i in range(5):
                sel[2 + i] = f[i]
            sel[1] = 0x70  # SEL_REQ with the UID bytes and BCC just received
            if self._transceive(sel, 7, timeout_ms) != 1:
                return None
            cascade = f[0] & 0x04
            start = 3 if cascade else 2  # skip the cascade tag 0x88
            for i in range(start, 6):
                uid[got] = sel[i]
                got += 1
            if not cascade:
                return _view(self._uid_views, uid, 0, got)
        return None

    def exchange(self, frame, timeout_ms, rsp_len=0):
        """Send a FeliCa frame (frame[0] = its length) to the card sensed last;
        returns its response frame (LEN first), valid until the next call.
        rsp_len (the expected length) is not needed: a datagram is one frame."""
        n = frame[0]
        if n < 1 or n > self.max_frame:
            raise ValueError("frame length %d" % n)
        k = self._transceive(frame, n, timeout_ms + self.slack_ms)
        if k <= 0:
            raise NfcTimeout("card did not answer")
        if self._frame[0] != k:
            raise NfcProtocolError("FeliCa response length mismatch")
        return _view(self._frame_views, self._frame, 0, k)

    def rf_off(self):
        """End the link like nfcpy's reader does: RFOFF if a card answered."""
        if self._linked:
            self._linked = False
            t = self._tx
            for i in range(5):
                t[i] = _RFOFF[i]
            self._send(5)

    # -- datagrams ----------------------------------------------------------------------

    def _send(self, n):
        try:
            self._sock.write(self._tx, n)
        except OSError:  # nobody listening right now: the answer will time out
            pass

    def _transceive(self, src, n, timeout_ms):
        """Send src[:n] as one datagram; decode the answer into _frame; returns its
        length, 0 on timeout or no listener, -1 if the card ended the link."""
        self._drain()
        t = self._tx
        br = self._brty
        for i in range(4):
            t[i] = br[i]
        t[4] = 0x20
        p = 5
        hx = _HEX
        for i in range(n):
            b = src[i]
            t[p] = hx[b >> 4]
            t[p + 1] = hx[b & 15]
            p += 2
        self._send(p)
        deadline = ticks_add(ticks_ms(), timeout_ms)
        while True:
            left = ticks_diff(deadline, ticks_ms())
            if left <= 0:
                return 0
            for _ in self._wait(left):
                break
            try:
                got = self._sock.readinto(self._rx)
            except OSError:  # ECONNREFUSED: the emulator is not listening
                return 0
            if not got:
                continue
            k = self._decode(got)
            if k >= 0:
                if k > 0:
                    self._linked = True
                return k
            if k == -2:
                return -1

    def _decode(self, got):
        """Parse "<brty> <hex>" in _rx[:got] into _frame: its length, -1 for a
        datagram of another bit rate (ignored, as nfcpy does), -2 for RFOFF."""
        r = self._rx
        if got >= 5 and r[0] == 0x52 and r.find(_RFOFF, 0, 5) == 0:
            return -2
        br = self._brty
        if got < 4 or (got > 4 and r[4] != 0x20):
            raise NfcProtocolError("datagram is not '<brty> <hex>'")
        for i in range(4):
            if r[i] != br[i]:
                return -1
        end = got
        if end == 4:  # nfcpy strips the space of an empty frame
            return 0
        while end > 5 and r[end - 1] <= 0x20:  # trailing whitespace
            end -= 1
        n = (end - 5) >> 1
        if (end - 5) & 1 or n > len(self._frame):
            raise NfcProtocolError("bad hex frame in datagram")
        f = self._frame
        p = 5
        for i in range(n):
            hi = _nibble(r[p])
            lo = _nibble(r[p + 1])
            if hi < 0 or lo < 0:
                raise NfcProtocolError("bad hex frame in datagram")
            f[i] = (hi << 4) | lo
            p += 2
        return n

    def _drain(self):
        # Late answers to a timed-out command must not pass for the next one's.
        sock = self._sock
        while True:
            try:
                if not sock.readinto(self._rx):
                    return
            except OSError:
                return


def _nibble(c):
    if 0x30 <= c <= 0x39:
        return c - 0x30
    if 0x61 <= c <= 0x66:
        return c - 0x57
    if 0x41 <= c <= 0x46:
        return c - 0x37
    return -1


def _view(cache, buf, at, n):
    # memoryview(buf)[at:at + n], made once per length and reused (slicing allocates).
    key = (at << 9) | n
    v = cache.get(key)
    if v is None:
        if len(cache) >= 24:
            cache.clear()
        v = memoryview(buf)[at : at + n]
        cache[key] = v
    return v
