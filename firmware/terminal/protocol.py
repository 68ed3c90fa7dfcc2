"""Messages of the host link (inside frames) and their authentication.

Request  (host -> terminal):  cmd u8 | req u16 LE | body
Reply    (terminal -> host):  cmd|0x80 u8 | req u16 LE | status u8 | body
Event    (terminal -> host):  0x40|evt u8 | seq u16 LE | body   (e.g. an online request)

A state-changing command (AUTH_MIN <= cmd < 0x40) has the body

    counter u64 LE | args | mac (32 bytes)

where mac = HMAC-SHA256(terminal key, terminal_id u32 LE || cmd .. args), i.e.
over the whole payload but the MAC, bound to this terminal. The terminal keeps
the last counter it accepted in flash and refuses any counter not above it, so
a replayed or forged request changes nothing. Replies carry a status: OK or an
ERR_ code with a one-line UTF-8 message as the body.

    auth = Authenticator(key32, terminal_id)
    mac = auth.sign(payload_without_mac)
    auth.verify(payload_without_mac, mac)  -> bool
"""

import hashlib

from terminal.compat import const

VERSION = const(1)

# Queries: no authentication, change nothing the terminal decides with.
CMD_STATUS = const(0x01)
CMD_PARAMS_GET = const(0x02)
CMD_LIST_STATUS = const(0x03)
# A list chunk only fills the staging area; LIST_COMMIT checks the MAC over
# the whole list before anything is installed.
CMD_LIST_CHUNK = const(0x04)
CMD_BATCH_READ = const(0x05)
# What a host needs before a signed request, in 15 bytes: terminal id u32,
# provisioned u8, max frame u16, last accepted counter u64 (STATUS is ~800 bytes).
CMD_IDENT = const(0x06)
# State-changing: counter + MAC.
AUTH_MIN = const(0x10)
CMD_TIME_SET = const(0x10)
CMD_PARAMS_SET = const(0x11)
CMD_LIST_BEGIN = const(0x12)
CMD_LIST_COMMIT = const(0x13)
CMD_BATCH_CLOSE = const(0x14)
CMD_BATCH_ACK = const(0x15)
CMD_SALE = const(0x16)
CMD_ONLINE_RESULT = const(0x17)
CMD_KEYS_SET = const(0x18)

# Events (terminal -> host), sent as EVENT_BIT | code.
EVT_ONLINE_REQUEST = const(0x01)

REPLY_BIT = const(0x80)
EVENT_BIT = const(0x40)
CMD_FRAME_ERROR = const(0x7F)  # reply to a frame that failed its checksum (req 0)

MAC_LEN = const(32)
COUNTER_LEN = const(8)
# The counter is a u64 that only goes up. A request signed at or above this is
# refused: accepting 2**64 - 1 left no counter for the next request (and the host
# stored 2**64). The last 2**32 are kept back; a new terminal key restarts at 1.
COUNTER_END = (1 << 64) - (1 << 32)
REKEY_HINT = ("re-key the terminal: a new key restarts the counter (`termctl flash` "
              "without --keep-key on a board, a new --flash image for an emulated one)")

OK = const(0)
ERR_CHECKSUM = const(1)
ERR_UNKNOWN_COMMAND = const(2)
ERR_MALFORMED = const(3)
ERR_BAD_MAC = const(4)
ERR_REPLAY = const(5)
ERR_INVALID = const(6)
ERR_STATE = const(7)
ERR_INTERNAL = const(8)
ERR_FULL = const(9)

def is_authenticated(cmd):
    return AUTH_MIN <= cmd < EVENT_BIT


def u16(b, i):
    return b[i] | (b[i + 1] << 8)


def put_u16(b, i, v):
    b[i] = v & 0xFF
    b[i + 1] = (v >> 8) & 0xFF


def u64(b, i):
    v = 0
    for k in range(7, -1, -1):
        v = (v << 8) | b[i + k]
    return v


def put_u64(b, i, v):
    for k in range(8):
        b[i + k] = (v >> (8 * k)) & 0xFF


def equal_time(a, b):
    """Compare two MACs in time independent of where they differ."""
    if len(a) != len(b):
        return False
    d = 0
    for i in range(len(a)):
        d |= a[i] ^ b[i]
    return d == 0


class Authenticator:
    """HMAC-SHA256 under one terminal's key (MicroPython has no hmac module)."""

    def __init__(self, key, terminal_id):
        if len(key) != 32:
            raise ValueError("terminal key must be 32 bytes")
        self._ipad = bytes(k ^ 0x36 for k in key) + bytes([0x36] * 32)
        self._opad = bytes(k ^ 0x5C for k in key) + bytes([0x5C] * 32)
        self._tid = bytes((terminal_id >> (8 * i)) & 0xFF for i in range(4))

    def hmac(self, *parts):
        inner = hashlib.sha256(self._ipad)
        for p in parts:
            inner.update(p)
        outer = hashlib.sha256(self._opad)
        outer.update(inner.digest())
        return outer.digest()

    def sign(self, message):
        return self.hmac(self._tid, message)

    def stream(self, label):
        """Incremental MAC over a long transfer (a list, a batch): update() the
        returned hash, then finish(it). Bound to this terminal and to `label`."""
        inner = hashlib.sha256(self._ipad)
        inner.update(self._tid)
        inner.update(label)
        return inner

    def finish(self, inner):
        outer = hashlib.sha256(self._opad)
        outer.update(inner.digest())
        return outer.digest()

    def verify(self, message, mac):
        return equal_time(self.sign(message), mac)
