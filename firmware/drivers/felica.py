"""FeliCa (NFC-F, Type 3) commands over any reader that can exchange frames.

    card = Felica(nfc, max_blocks=4)          # nfc: drivers.pn532.Pn532 or drivers.nfc_udp.NfcUdp
    sensf_res = nfc.sense_ttf(0xFFFF)         # None: no card in the field
    card.activate(sensf_res)                  # IDm and PMm of the card that answered
    n = card.read_without_encryption(0x000B, b"\\x00\\x01\\x02", out48)
    card.write_without_encryption(0x0009, b"\\x01\\x02", data32)

The reader below this module needs one method, `exchange(frame, timeout_ms,
rsp_len)`: `frame` is a FeliCa frame whose first byte is its length (LEN counts
itself), so a caller may hand in its whole command buffer and only `frame[0]`
bytes go out; `rsp_len` is the length of the response the command should get
(a hint: a bus reads that many bytes); it returns the card's response frame
(LEN first) as a memoryview that stays valid until the next call, or raises
NfcTimeout / NfcProtocolError.
Both the PN532 driver (InCommunicateThru) and the nfcpy UDP link driver
provide it, so the card code is the same on a board and on the emulated board.

Names follow the NFC Forum / FeliCa specs: `sensf_res` is the polling
response without its LEN byte (01, IDm 8, PMm 8, request data 0 or 2), as
nfcpy names it. Service codes and block numbers go little-endian on the air,
the system code in a polling big-endian. Block lists use 2-byte elements for
blocks 0..255 and 3-byte ones above.

Errors are terminal.errors' NFC tree (NfcTimeout, NfcProtocolError,
FelicaStatusError, NfcBusError under NfcError).

Nothing allocates once warm: commands are built in one buffer made in
__init__, and block data is copied into the caller's buffer.
"""

from terminal.compat import const
from terminal.errors import FelicaStatusError, NfcProtocolError

SYSTEM_CODE_ANY = const(0xFFFF)
REQUEST_NONE = const(0)
REQUEST_SYSTEM_CODE = const(1)
REQUEST_COMM_PERFORMANCE = const(2)
BLOCK_SIZE = const(16)
MAX_BLOCKS = const(12)  # LEN is one byte: 14 + 19 * 12 = 242 bytes for a write of 12 blocks

_POLLING = const(0x00)
_READ = const(0x06)
_WRITE = const(0x08)
_HEAD = const(14)  # LEN, code, IDm (8), services (1), service code (2), blocks (1)
_IDM = const(2)  # IDm offset in commands and responses
_RSP_MIN = const(12)  # LEN, code, IDm, status flag 1, status flag 2


def polling_frame(buf, system_code=SYSTEM_CODE_ANY, request_code=REQUEST_SYSTEM_CODE,
                  time_slots=0):
    """Write a Polling command (SENSF_REQ with its LEN) into buf[0:6]; returns 6."""
    buf[0] = 6
    buf[1] = _POLLING
    buf[2] = system_code >> 8
    buf[3] = system_code & 0xFF
    buf[4] = request_code
    buf[5] = time_slots
    return 6


def polling_time_ms(time_slots=0):
    """Longest a card may take to answer a Polling: 2.417 ms + 1.208 ms per extra slot."""
    return (2417 + 1208 * time_slots) // 1000 + 1


def response_time_ms(pmm_byte, n):
    """Maximum response time a card announces in one PMm byte, for n blocks.

    T = 0.3021 ms * ((B + 1) * n + A + 1) * 4**E, with the byte = E(2) B(3) A(3)
    bits (PMm[5] for Read, PMm[6] for Write Without Encryption). Rounded up, in
    whole ms, in small-int arithmetic.
    """
    a = pmm_byte & 7
    b = (pmm_byte >> 3) & 7
    e = pmm_byte >> 6
    return ((3021 * ((b + 1) * n + a + 1)) << (2 * e)) // 10000 + 1


class Felica:
    """The FeliCa commands a payment terminal needs, for the card last activated."""

    def __init__(self, nfc, max_blocks=4):
        if not 0 < max_blocks <= MAX_BLOCKS:
            raise ValueError("max_blocks must be 1..%d" % MAX_BLOCKS)
        self.nfc = nfc
        self.max_blocks = max_blocks
        self.idm = bytearray(8)
        self.pmm = bytearray(8)
        self.request_data = -1  # system code or comm performance from the last polling
        self._cmd = bytearray(_HEAD + 19 * max_blocks)

    def activate(self, sensf_res):
        """Address the card that answered a reader's sense_ttf (01 | IDm | PMm [| RD])."""
        if len(sensf_res) < 17 or sensf_res[0] != 0x01:
            raise NfcProtocolError("not a SENSF_RES")
        self._load(sensf_res, 1)

    def polling(self, system_code=SYSTEM_CODE_ANY, request_code=REQUEST_SYSTEM_CODE,
                time_slots=0, timeout_ms=0):
        """Send a Polling and activate the card that answers; returns the SENSF_RES
        frame (LEN first). Raises NfcTimeout if no card answers."""
        polling_frame(self._cmd, system_code, request_code, time_slots)
        rsp = self.nfc.exchange(self._cmd, timeout_ms or polling_time_ms(time_slots),
                                20 if request_code else 18)
        n = len(rsp)
        if n < 18 or rsp[0] != n or rsp[1] != 0x01:
            raise NfcProtocolError("bad polling response")
        self._load(rsp, 2)
        return rsp

    def read_without_encryption(self, service_code, blocks, out, timeout_ms=0):
        """Read len(blocks) 16-byte blocks of one service into out; returns bytes read.

        `blocks` is any sequence of block numbers (bytes, a tuple: iterating it
        does not allocate).
        """
        n = self._begin(_READ, service_code, blocks)
        if len(out) < BLOCK_SIZE * n:
            raise ValueError("out holds fewer than %d blocks" % n)
        rsp = self.nfc.exchange(self._cmd, timeout_ms or response_time_ms(self.pmm[5], n),
                                13 + BLOCK_SIZE * n)
        self._check(rsp, _READ, "read")
        if len(rsp) != 13 + BLOCK_SIZE * n or rsp[12] != n:
            raise NfcProtocolError("read response holds the wrong number of blocks")
        for i in range(BLOCK_SIZE * n):
            out[i] = rsp[13 + i]
        return BLOCK_SIZE * n

    def write_without_encryption(self, service_code, blocks, data, timeout_ms=0):
        """Write len(blocks) blocks of one service from data (16 bytes each)."""
        n = self._begin(_WRITE, service_code, blocks)
        if len(data) < BLOCK_SIZE * n:
            raise ValueError("data holds fewer than %d blocks" % n)
        c = self._cmd
        p = c[0]
        for i in range(BLOCK_SIZE * n):
            c[p + i] = data[i]
        c[0] = p + BLOCK_SIZE * n
        rsp = self.nfc.exchange(c, timeout_ms or response_time_ms(self.pmm[6], n), _RSP_MIN)
        self._check(rsp, _WRITE, "write")
        if len(rsp) != _RSP_MIN:
            raise NfcProtocolError("write response has the wrong length")

    # -- internals ----------------------------------------------------------------

    def _load(self, src, at):
        idm = self.idm
        pmm = self.pmm
        for i in range(8):
            idm[i] = src[at + i]
            pmm[i] = src[at + 8 + i]
        n = len(src) - at
        self.request_data = (src[at + 16] << 8 | src[at + 17]) if n >= 18 else -1

    def _begin(self, code, service_code, blocks):
        """Command head and block list into _cmd; returns the block count, LEN set."""
        n = len(blocks)
        if not 0 < n <= self.max_blocks:
            raise ValueError("1..%d blocks per command" % self.max_blocks)
        c = self._cmd
        c[1] = code
        c[_IDM : _IDM + 8] = self.idm  # copied in C, no allocation
        c[10] = 1
        c[11] = service_code & 0xFF
        c[12] = service_code >> 8
        c[13] = n
        p = _HEAD
        for b in blocks:
            if b < 256:
                c[p] = 0x80  # 2-byte element, service 0 of the list, no access mode
                c[p + 1] = b
                p += 2
            else:
                c[p] = 0x00
                c[p + 1] = b & 0xFF
                c[p + 2] = b >> 8
                p += 3
        c[0] = p
        return n

    def _check(self, rsp, code, what):
        n = len(rsp)
        if n < _RSP_MIN or rsp[0] != n or rsp[1] != code + 1:
            raise NfcProtocolError("bad %s response" % what)
        idm = self.idm
        for i in range(8):
            if rsp[_IDM + i] != idm[i]:
                raise NfcProtocolError("%s response from another card" % what)
        if rsp[10]:
            raise FelicaStatusError(what, rsp[10], rsp[11])
