"""The card record a FeliCa Lite-S card/token carries, and the issuer MAC over it.

    keys = IssuerKeys(8)
    keys.add(0x0101, 1, issuer_key16)            # start-up: a small fixed table
    rec = CardRecord()
    status = read_into(image104, rec, keys)      # decode + verify; CARD_OK if a slot holds
    ...                                          # decide, then after an approval:
    seal(rec, keys)                              # the next state, into the other slot
    encode_into(rec, image104)                   # then write rec.slot's two blocks back

A card image is RECORD_LEN = 104 bytes: the card's IDm (8) then its blocks 0-5
(6 FeliCa blocks of 16, S_PAD0-5 on a Lite-S; docs/card_profile.md). Blocks 0
and 1 hold what the issuer wrote once; blocks 2-3 and 4-5 are two counter
slots, A and B, each self-contained: a sequence number, the counters and a MAC.
The terminal reads both, uses the valid slot with the higher sequence, and
writes the next state into the other slot, one block per Write Without
Encryption (all a Lite-S takes). A card pulled away between the two writes
leaves the slot it read intact and the half-written one failing its MAC.

Little-endian integers; amounts are stored as u32 but must be < 2**30 so they
stay small ints on a 32-bit board (a larger value makes the slot invalid).

  image  0-7    IDm of the card (from its polling response, not from its blocks)
  block 0  8-23 token number, zero padded
  block 1 24    format version (2)
          25    token length (1..16)
          26-27 issuer id
          28    product (PRODUCT_CREDIT / PRODUCT_PREPAID / PRODUCT_DEBIT)
          29    issuer key version
          30-31 expiry: last valid day, days since 1970-01-01 (UTC)
          32-39 reserved, zero
  slot A 40-71 (blocks 2-3), slot B 72-103 (blocks 4-5), each:
          +0-1   sequence number (u16, serial arithmetic: one up per write)
          +2-3   ATC: transactions completed (offline or online approvals)
          +4-5   ATC at the last online approval (0: never online, a new card)
          +6-7   business day (days since 1970) of the offline amount today
          +8-9   offline count since last online
          +10-13 offline amount on that business day
          +14-17 offline amount since last online
          +18-23 reserved, zero
          +24-31 MAC: the first 8 bytes of AES-CMAC (NIST SP 800-38B) under the
                 issuer's key over IDm | block 0 | block 1 | slot bytes 0-23

The MAC binds the IDm, so a record copied onto another card fails. Nothing
after construction allocates: decoding, verifying and sealing work in buffers
made once.
"""

from array import array

from terminal.compat import Aes, const

RECORD_LEN = const(104)  # a card image: IDm + BLOCKS blocks
IDM_LEN = const(8)
BLOCK_SIZE = const(16)
BLOCKS = const(6)  # blocks 0-5 of the card (S_PAD0-5 on a Lite-S)
SLOT_FIRST_BLOCK = const(2)  # slot A: blocks 2-3, slot B: blocks 4-5
SLOT_BLOCKS = const(2)
FORMAT_VERSION = const(2)
TOKEN_MAX = const(16)
# Where the profile lives on the card: a FeliCa Lite-S's own system and services
# (Lite-S user's manual: system code 88B4, service 0009 read/write, 000B read only).
SYSTEM_CODE = const(0x88B4)
SERVICE_RW = const(0x0009)
SERVICE_RO = const(0x000B)

_STATIC = const(8)  # image offset of block 0
_B1 = const(24)  # image offset of block 1
_SLOTS = const(40)  # image offset of slot A; slot B follows at 72
_SLOT_LEN = const(32)
_BODY = const(24)  # slot bytes under the MAC (the MAC follows them)
_MAC_IN = const(64)  # IDm | block 0 | block 1 | slot body: four AES blocks
_MAC_LEN = const(8)

PRODUCT_CREDIT = const(1)
PRODUCT_PREPAID = const(2)
PRODUCT_DEBIT = const(3)

# CardRecord.status
CARD_OK = const(0)  # decoded and a slot's issuer MAC verified
CARD_UNVERIFIED = const(1)  # decoded, MAC not checked yet
CARD_MAC_BAD = const(2)  # decoded, no slot's MAC matches (tampered, copied, or never sealed)
CARD_ISSUER_UNKNOWN = const(3)  # decoded, no key for its issuer / key version
CARD_NO_COUNTERS = const(4)  # identified by UID only (ISO14443A bench card)
CARD_UNREADABLE = const(5)  # not a record of this format

AMOUNT_LIMIT = const(0x3FFFFFFF)  # largest amount a counter holds (saturates there)
_U16 = const(0xFFFF)


class CardRecord:
    """Decoded card data. Fields are plain ints; `token` is a 16-byte zero-padded
    buffer, `idm` the 8-byte IDm the MAC binds. `slot` (0 = A, 1 = B) is the slot
    the counters came from, and after seal() the one they go to; `seq` its number."""

    def __init__(self):
        self.token = bytearray(TOKEN_MAX)
        self.token_len = 0
        self.idm = bytearray(IDM_LEN)
        self.mac = bytearray(_MAC_LEN)
        self._img = bytearray(RECORD_LEN)  # the image decoded last: verify() reads its slots
        self._clear(0, CARD_UNREADABLE)

    def _clear(self, expiry_day, status):
        """Issuer data, counters and MAC to zero (no allocation)."""
        self.issuer_id = 0
        self.product = 0
        self.key_version = 0
        self.expiry_day = expiry_day
        self._zero_counters()
        self.status = status

    def _zero_counters(self):
        self.seq = 0
        self.slot = 1  # so that the first seal() fills slot A with sequence 1
        self.atc = 0
        self.last_online_atc = 0
        self.offline_day = 0
        self.offline_count = 0
        self.offline_today = 0
        self.offline_since_online = 0
        for i in range(_MAC_LEN):
            self.mac[i] = 0

    def set_token(self, token):
        """Host/test helper: copy a token number (bytes, 1..16) into the record."""
        n = len(token)
        if n < 1 or n > TOKEN_MAX:
            raise ValueError("token number must be 1..16 bytes")
        for i in range(TOKEN_MAX):
            self.token[i] = token[i] if i < n else 0
        self.token_len = n

    def set_idm(self, idm):
        """Host/test helper: the card's IDm (8 bytes)."""
        if len(idm) != IDM_LEN:
            raise ValueError("IDm must be 8 bytes")
        for i in range(IDM_LEN):
            self.idm[i] = idm[i]

    def token_bytes(self):
        """Host/test helper: the token number as new bytes."""
        return bytes(self.token[: self.token_len])

    def load_uid(self, uid):
        """An ISO14443A bench card read by UID: no issuer data, no counters."""
        n = len(uid)
        if n > TOKEN_MAX:
            n = TOKEN_MAX
        for i in range(TOKEN_MAX):
            self.token[i] = uid[i] if i < n else 0
        self.token_len = n
        self._clear(_U16, CARD_NO_COUNTERS)


def slot_offset(slot):
    """Image offset of slot 0 (A) or 1 (B); its first block is SLOT_FIRST_BLOCK + 2 * slot."""
    return _SLOTS + _SLOT_LEN * slot


def _get16(b, o):
    return b[o] | (b[o + 1] << 8)


def _get32(b, o):
    return b[o] | (b[o + 1] << 8) | (b[o + 2] << 16) | (b[o + 3] << 24)


def _put16(b, o, v):
    b[o] = v & 0xFF
    b[o + 1] = (v >> 8) & 0xFF


def _put32(b, o, v):
    b[o] = v & 0xFF
    b[o + 1] = (v >> 8) & 0xFF
    b[o + 2] = (v >> 16) & 0xFF
    b[o + 3] = (v >> 24) & 0xFF


def _zero(b, start, end):
    for i in range(start, end):
        if b[i]:
            return False
    return True


def _slot_ok(b, o):
    """A slot is well formed: amounts below 2**30, reserved bytes zero."""
    return b[o + 13] < 0x40 and b[o + 17] < 0x40 and _zero(b, o + 18, o + _BODY)


def _newer(a, b):
    """Sequence a is after b (u16 serial arithmetic)."""
    return a != b and ((a - b) & _U16) < 0x8000


def _load_slot(rec, b, slot):
    o = _SLOTS + _SLOT_LEN * slot
    rec.slot = slot
    rec.seq = _get16(b, o)
    rec.atc = _get16(b, o + 2)
    rec.last_online_atc = _get16(b, o + 4)
    rec.offline_day = _get16(b, o + 6)
    rec.offline_count = _get16(b, o + 8)
    rec.offline_today = _get32(b, o + 10)
    rec.offline_since_online = _get32(b, o + 14)
    mac = rec.mac
    for i in range(_MAC_LEN):
        mac[i] = b[o + _BODY + i]


def decode_into(buf, rec):
    """Parse a RECORD_LEN card image into rec; returns and sets rec.status
    (CARD_UNVERIFIED, or CARD_UNREADABLE if the issuer blocks are not this format).
    The counters come from the well-formed slot with the higher sequence (zero if
    neither is); verify() then checks its MAC and falls back to the other slot."""
    rec.status = CARD_UNREADABLE
    if len(buf) < RECORD_LEN or buf[_B1] != FORMAT_VERSION:
        return CARD_UNREADABLE
    n = buf[_B1 + 1]
    if n < 1 or n > TOKEN_MAX:
        return CARD_UNREADABLE
    # padding and reserved bytes must be zero: one record, one encoding
    if not _zero(buf, _STATIC + n, _B1) or not _zero(buf, _B1 + 8, _SLOTS):
        return CARD_UNREADABLE
    p = buf[_B1 + 4]
    if p < PRODUCT_CREDIT or p > PRODUCT_DEBIT:
        return CARD_UNREADABLE
    rec._img[0:RECORD_LEN] = buf  # copied in C; an image longer than RECORD_LEN would grow it
    idm = rec.idm
    for i in range(IDM_LEN):
        idm[i] = buf[i]
    tok = rec.token
    for i in range(TOKEN_MAX):
        tok[i] = buf[_STATIC + i]
    rec.token_len = n
    rec.issuer_id = _get16(buf, _B1 + 2)
    rec.product = p
    rec.key_version = buf[_B1 + 5]
    rec.expiry_day = _get16(buf, _B1 + 6)
    a = _slot_ok(buf, _SLOTS)
    b = _slot_ok(buf, _SLOTS + _SLOT_LEN)
    if a and b:
        _load_slot(rec, buf, 1 if _newer(_get16(buf, _SLOTS + _SLOT_LEN),
                                          _get16(buf, _SLOTS)) else 0)
    elif a or b:
        _load_slot(rec, buf, 0 if a else 1)
    else:
        rec._zero_counters()
    rec.status = CARD_UNVERIFIED
    return CARD_UNVERIFIED


def _encode_static(rec, buf):
    # IDm, block 0 and block 1 into buf[0:40]
    idm = rec.idm
    for i in range(IDM_LEN):
        buf[i] = idm[i]
    tok = rec.token
    n = rec.token_len
    for i in range(TOKEN_MAX):
        buf[_STATIC + i] = tok[i] if i < n else 0
    buf[_B1] = FORMAT_VERSION
    buf[_B1 + 1] = n
    _put16(buf, _B1 + 2, rec.issuer_id)
    buf[_B1 + 4] = rec.product
    buf[_B1 + 5] = rec.key_version
    _put16(buf, _B1 + 6, rec.expiry_day)
    for i in range(_B1 + 8, _SLOTS):
        buf[i] = 0


def _encode_body(rec, buf, o):
    # the slot's 24 bytes under the MAC, at buf[o:o + 24]
    _put16(buf, o, rec.seq)
    _put16(buf, o + 2, rec.atc)
    _put16(buf, o + 4, rec.last_online_atc)
    _put16(buf, o + 6, rec.offline_day)
    _put16(buf, o + 8, rec.offline_count)
    _put32(buf, o + 10, rec.offline_today)
    _put32(buf, o + 14, rec.offline_since_online)
    for i in range(o + 18, o + _BODY):
        buf[i] = 0


def encode_into(rec, buf):
    """Write the IDm, blocks 0-1 and the record's slot `rec.slot` (with rec.mac as it
    stands) into the RECORD_LEN image buf. The other slot's bytes are left as
    they are: they hold the state a torn write must leave valid."""
    _encode_static(rec, buf)
    o = _SLOTS + _SLOT_LEN * rec.slot
    _encode_body(rec, buf, o)
    mac = rec.mac
    for i in range(_MAC_LEN):
        buf[o + _BODY + i] = mac[i]


def _double(src, dst):
    """dst = src * x in GF(2**128) (the CMAC subkey step, big-endian bit order)."""
    carry = 0
    for i in range(15, -1, -1):
        b = src[i]
        dst[i] = ((b << 1) | carry) & 0xFF
        carry = b >> 7
    if src[0] & 0x80:
        dst[15] ^= 0x87


class MacKey:
    """One issuer key with its CMAC subkeys, computed once. Its AES runs in CBC
    mode (compat.Aes(key, True)): CMAC is CBC-MAC, so a whole message's blocks go
    through one call in C. The object chains from call to call; `chain` mirrors
    its IV (the last block it wrote), and a MAC starts by XORing it into its first
    block, which makes that block's IV zero again."""

    def __init__(self, key):
        if len(key) != 16:
            raise ValueError("issuer key must be 16 bytes")
        self.aes = Aes(key, True)
        self.chain = bytearray(16)  # the CBC IV: zero until the first call
        el = bytearray(16)
        self.aes.encrypt(el, self.chain)  # L = AES(0): the IV was zero
        self.k1 = bytearray(16)
        self.k2 = bytearray(16)
        _double(self.chain, self.k1)
        _double(self.k1, self.k2)


def cmac_into(mk, data, n, out, m):
    """AES-CMAC (NIST SP 800-38B) of data[0:n] under MacKey mk: the 16-byte tag goes
    to out; m is 16 bytes of scratch. Any length, data left as it is; no
    allocation. (The tap's 64-byte MACs take IssuerKeys._mac64, one AES call.)"""
    c = mk.chain
    last = (n + 15) >> 4
    if last == 0:
        last = 1
    off = 0
    for k in range(last - 1):
        for i in range(16):  # CBC: the object XORs in the chain; the first block cancels it
            m[i] = data[off + i] ^ c[i] if k == 0 else data[off + i]
        mk.aes.encrypt(m, c)
        off += 16
    rem = n - off
    k = mk.k1 if rem == 16 else mk.k2
    first = last == 1
    for i in range(16):
        if i < rem:
            v = data[off + i]
        elif i == rem:
            v = 0x80
        else:
            v = 0
        m[i] = v ^ k[i] ^ c[i] if first else v ^ k[i]
    mk.aes.encrypt(m, c)
    for i in range(16):
        out[i] = c[i]


class IssuerKeys:
    """A small fixed table of issuer MAC keys, keyed by (issuer id, key version)."""

    def __init__(self, capacity=8):
        self.capacity = capacity
        self._ids = array("i", [-1] * capacity)
        self._keys = [None] * capacity
        self._enc = bytearray(_MAC_IN)
        self._tag = bytearray(16)
        self._m = bytearray(16)
        self._cbc = bytearray(_MAC_IN)  # the CBC output of a 64-byte MAC; the tag at 48
        self._cbc_tag = memoryview(self._cbc)[_MAC_IN - 16 :]

    def add(self, issuer_id, key_version, key):
        """Install (or replace) a key. Start-up/configuration only: it allocates."""
        if not 0 <= issuer_id <= _U16 or not 0 <= key_version <= 0xFF:
            raise ValueError("issuer id is u16, key version u8")
        ident = (issuer_id << 8) | key_version
        free = -1
        for i in range(self.capacity):
            if self._ids[i] == ident:
                free = i
                break
            if free < 0 and self._ids[i] < 0:
                free = i
        if free < 0:
            raise ValueError("issuer key table full (%d)" % self.capacity)
        self._keys[free] = MacKey(key)
        self._ids[free] = ident

    def remove(self, issuer_id, key_version):
        ident = (issuer_id << 8) | key_version
        for i in range(self.capacity):
            if self._ids[i] == ident:
                self._ids[i] = -1
                self._keys[i] = None

    def _mac64(self, mk):
        """AES-CMAC of the 64 bytes in _enc (overwritten) under mk: the tag, a view
        valid until the next MAC. Four whole blocks, so the last is XORed with K1 and
        the first with the CBC chain (its IV made zero); then one call in C."""
        enc = self._enc
        c = mk.chain
        k = mk.k1
        for j in range(16):
            enc[j] ^= c[j]
            enc[_MAC_IN - 16 + j] ^= k[j]
        mk.aes.encrypt(enc, self._cbc)
        tag = self._cbc_tag
        c[0:16] = tag  # the object's IV now; copied in C
        return tag

    def find(self, issuer_id, key_version):
        """Index of the key, or -1."""
        ident = (issuer_id << 8) | key_version
        ids = self._ids
        for i in range(self.capacity):
            if ids[i] == ident:
                return i
        return -1

    def _slot_verifies(self, i, img, slot):
        """The MAC stored in slot `slot` of image img matches (constant time)."""
        enc = self._enc
        for j in range(_SLOTS):
            enc[j] = img[j]
        o = _SLOTS + _SLOT_LEN * slot
        for j in range(_BODY):
            enc[_SLOTS + j] = img[o + j]
        tag = self._mac64(self._keys[i])
        diff = 0
        for j in range(_MAC_LEN):  # no early exit: the time does not tell where it differs
            diff |= tag[j] ^ img[o + _BODY + j]
        return diff == 0


def verify(rec, keys):
    """Check the MAC of the slot decode_into chose, else of the other slot (then
    its counters are loaded); returns and sets rec.status. Only a CARD_UNVERIFIED
    record is checked; any other status is returned as is."""
    if rec.status != CARD_UNVERIFIED:
        return rec.status
    i = keys.find(rec.issuer_id, rec.key_version)
    if i < 0:
        rec.status = CARD_ISSUER_UNKNOWN
        return CARD_ISSUER_UNKNOWN
    img = rec._img
    first = rec.slot
    if _slot_ok(img, slot_offset(first)) and keys._slot_verifies(i, img, first):
        rec.status = CARD_OK
        return CARD_OK
    other = first ^ 1
    if _slot_ok(img, slot_offset(other)) and keys._slot_verifies(i, img, other):
        _load_slot(rec, img, other)  # the newer slot is torn (or forged): the older holds
        rec.status = CARD_OK
        return CARD_OK
    rec.status = CARD_MAC_BAD
    return CARD_MAC_BAD


def seal(rec, keys):
    """Make the record's current fields its next state: sequence + 1, in the slot it
    was not read from, with a new MAC over IDm, blocks 0-1 and that slot. False
    if there is no key for its issuer (nothing changes then)."""
    i = keys.find(rec.issuer_id, rec.key_version)
    if i < 0:
        return False
    rec.slot ^= 1
    rec.seq = (rec.seq + 1) & _U16
    enc = keys._enc
    _encode_static(rec, enc)
    _encode_body(rec, enc, _SLOTS)
    tag = keys._mac64(keys._keys[i])
    mac = rec.mac
    for j in range(_MAC_LEN):
        mac[j] = tag[j]
    rec.status = CARD_OK
    return True


def read_into(buf, rec, keys):
    """decode_into then verify: the status a tap starts from."""
    if decode_into(buf, rec) != CARD_UNVERIFIED:
        return rec.status
    return verify(rec, keys)


def days_from_civil(y, m, d):
    """Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm)."""
    if m <= 2:
        y -= 1
    era = (y if y >= 0 else y - 399) // 400
    yoe = y - era * 400
    mp = m - 3 if m > 2 else m + 9
    doy = (153 * mp + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def expiry_from_yyyymm(yyyymm):
    """Expiry 'YYYYMM' as printed on cards -> the last valid day (days since 1970)."""
    y = yyyymm // 100
    m = yyyymm % 100
    if m < 1 or m > 12:
        raise ValueError("expiry month must be 01..12")
    if m == 12:
        return days_from_civil(y + 1, 1, 1) - 1
    return days_from_civil(y, m + 1, 1) - 1
