"""The card record a FeliCa card/token carries, and the issuer MAC over it.

    keys = IssuerKeys(8)
    keys.add(0x0101, 1, issuer_key16)            # start-up: a small fixed table
    rec = CardRecord()
    status = read_into(raw48, rec, keys)         # decode + verify; CARD_OK if the MAC holds
    ...                                          # decide, then after an approval:
    seal(rec, keys)                              # new MAC over the new counters
    encode_into(rec, out48)                      # blocks to write back

Layout: RECORD_LEN = 48 bytes = 3 FeliCa blocks of 16 (docs/card_profile.md).
Little-endian integers; amounts are stored as u32 but must be < 2**30 so they
stay small ints on a 32-bit board (a larger value makes the record unreadable).

  block 0   0-15  token number, zero padded
  block 1  16     format version (1)
           17     token length (1..16)
           18-19  issuer id
           20     product (PRODUCT_CREDIT / PRODUCT_PREPAID / PRODUCT_DEBIT)
           21     issuer key version
           22-23  expiry: last valid day, days since 1970-01-01 (UTC)
           24-25  ATC: transactions completed (offline or online approvals)
           26-27  ATC at the last online approval (0: never online, a new card)
           28-29  business day (days since 1970) of the offline amount today
           30-31  offline count since last online
  block 2  32-35  offline amount on that business day
           36-39  offline amount since last online
           40-47  MAC: the first 8 bytes of AES-CMAC (NIST SP 800-38B) over bytes 0-39
                  under the issuer's key

Only blocks 1 and 2 change when counters are written back. A torn write leaves
a record whose MAC fails: the card then goes online (never offline approval).
Nothing after construction allocates: decoding, verifying and sealing work in
buffers made once.
"""

from array import array

from terminal.compat import Aes, const

RECORD_LEN = const(48)
BLOCKS = const(3)
FORMAT_VERSION = const(1)
TOKEN_MAX = const(16)
_MAC_OFF = const(40)
_MAC_LEN = const(8)

PRODUCT_CREDIT = const(1)
PRODUCT_PREPAID = const(2)
PRODUCT_DEBIT = const(3)

# CardRecord.status
CARD_OK = const(0)  # decoded and the issuer MAC verified
CARD_UNVERIFIED = const(1)  # decoded, MAC not checked yet
CARD_MAC_BAD = const(2)  # decoded, MAC does not match (tampered or torn write)
CARD_ISSUER_UNKNOWN = const(3)  # decoded, no key for its issuer / key version
CARD_NO_COUNTERS = const(4)  # identified by UID only (ISO14443A bench card)
CARD_UNREADABLE = const(5)  # not a record of this format

AMOUNT_LIMIT = const(0x3FFFFFFF)  # largest amount a counter holds (saturates there)
_U16 = const(0xFFFF)


class CardRecord:
    """Decoded card data. Fields are plain ints; `token` is a 16-byte zero-padded buffer."""

    def __init__(self):
        self.token = bytearray(TOKEN_MAX)
        self.token_len = 0
        self.mac = bytearray(_MAC_LEN)
        self._clear(0, CARD_UNREADABLE)

    def _clear(self, expiry_day, status):
        """Issuer data, counters and MAC to zero (no allocation)."""
        self.issuer_id = 0
        self.product = 0
        self.key_version = 0
        self.expiry_day = expiry_day
        self.atc = 0
        self.last_online_atc = 0
        self.offline_day = 0
        self.offline_count = 0
        self.offline_today = 0
        self.offline_since_online = 0
        for i in range(_MAC_LEN):
            self.mac[i] = 0
        self.status = status

    def set_token(self, token):
        """Host/test helper: copy a token number (bytes, 1..16) into the record."""
        n = len(token)
        if n < 1 or n > TOKEN_MAX:
            raise ValueError("token number must be 1..16 bytes")
        for i in range(TOKEN_MAX):
            self.token[i] = token[i] if i < n else 0
        self.token_len = n

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


def _get16(b, o):
    return b[o] | (b[o + 1] << 8)


def _put16(b, o, v):
    b[o] = v & 0xFF
    b[o + 1] = (v >> 8) & 0xFF


def _put32(b, o, v):
    b[o] = v & 0xFF
    b[o + 1] = (v >> 8) & 0xFF
    b[o + 2] = (v >> 16) & 0xFF
    b[o + 3] = (v >> 24) & 0xFF


def decode_into(buf, rec):
    """Parse RECORD_LEN bytes into rec; returns and sets rec.status
    (CARD_UNVERIFIED, or CARD_UNREADABLE if the bytes are not a valid record)."""
    rec.status = CARD_UNREADABLE
    if len(buf) < RECORD_LEN or buf[16] != FORMAT_VERSION:
        return CARD_UNREADABLE
    n = buf[17]
    if n < 1 or n > TOKEN_MAX:
        return CARD_UNREADABLE
    for i in range(n, TOKEN_MAX):
        if buf[i]:
            return CARD_UNREADABLE  # padding must be zero: one record, one encoding
    p = buf[20]
    if p < PRODUCT_CREDIT or p > PRODUCT_DEBIT:
        return CARD_UNREADABLE
    # u32 amounts: the top byte must keep the value below 2**30.
    if buf[35] >= 0x40 or buf[39] >= 0x40:
        return CARD_UNREADABLE
    tok = rec.token
    for i in range(TOKEN_MAX):
        tok[i] = buf[i]
    rec.token_len = n
    rec.issuer_id = _get16(buf, 18)
    rec.product = p
    rec.key_version = buf[21]
    rec.expiry_day = _get16(buf, 22)
    rec.atc = _get16(buf, 24)
    rec.last_online_atc = _get16(buf, 26)
    rec.offline_day = _get16(buf, 28)
    rec.offline_count = _get16(buf, 30)
    rec.offline_today = buf[32] | (buf[33] << 8) | (buf[34] << 16) | (buf[35] << 24)
    rec.offline_since_online = buf[36] | (buf[37] << 8) | (buf[38] << 16) | (buf[39] << 24)
    mac = rec.mac
    for i in range(_MAC_LEN):
        mac[i] = buf[_MAC_OFF + i]
    rec.status = CARD_UNVERIFIED
    return CARD_UNVERIFIED


def encode_into(rec, buf):
    """Write the record (with rec.mac as it stands) as RECORD_LEN bytes into buf."""
    tok = rec.token
    n = rec.token_len
    for i in range(TOKEN_MAX):
        buf[i] = tok[i] if i < n else 0
    buf[16] = FORMAT_VERSION
    buf[17] = n
    _put16(buf, 18, rec.issuer_id)
    buf[20] = rec.product
    buf[21] = rec.key_version
    _put16(buf, 22, rec.expiry_day)
    _put16(buf, 24, rec.atc)
    _put16(buf, 26, rec.last_online_atc)
    _put16(buf, 28, rec.offline_day)
    _put16(buf, 30, rec.offline_count)
    _put32(buf, 32, rec.offline_today)
    _put32(buf, 36, rec.offline_since_online)
    mac = rec.mac
    for i in range(_MAC_LEN):
        buf[_MAC_OFF + i] = mac[i]


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
    """One issuer key with its CMAC subkeys, computed once."""

    def __init__(self, key):
        if len(key) != 16:
            raise ValueError("issuer key must be 16 bytes")
        self.aes = Aes(key)
        zero = bytearray(16)
        el = bytearray(16)
        self.aes.encrypt(zero, el)
        self.k1 = bytearray(16)
        self.k2 = bytearray(16)
        _double(el, self.k1)
        _double(self.k1, self.k2)


def cmac_into(mk, data, n, out, m):
    """AES-CMAC of data[0:n] under MacKey mk: the 16-byte tag goes to out; m is
    16 bytes of scratch. No allocation."""
    for i in range(16):
        out[i] = 0
    last = (n + 15) >> 4
    if last == 0:
        last = 1
    off = 0
    for _ in range(last - 1):
        for i in range(16):
            m[i] = out[i] ^ data[off + i]
        mk.aes.encrypt(m, out)
        off += 16
    rem = n - off
    if rem == 16:
        k = mk.k1
        for i in range(16):
            m[i] = out[i] ^ data[off + i] ^ k[i]
    else:
        k = mk.k2
        for i in range(16):
            if i < rem:
                v = data[off + i]
            elif i == rem:
                v = 0x80
            else:
                v = 0
            m[i] = out[i] ^ v ^ k[i]
    mk.aes.encrypt(m, out)


class IssuerKeys:
    """A small fixed table of issuer MAC keys, keyed by (issuer id, key version)."""

    def __init__(self, capacity=8):
        self.capacity = capacity
        self._ids = array("i", [-1] * capacity)
        self._keys = [None] * capacity
        self._enc = bytearray(RECORD_LEN)
        self._tag = bytearray(16)
        self._m = bytearray(16)

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

    def find(self, issuer_id, key_version):
        """Index of the key, or -1."""
        ident = (issuer_id << 8) | key_version
        ids = self._ids
        for i in range(self.capacity):
            if ids[i] == ident:
                return i
        return -1

    def _tag_into(self, rec, i):
        encode_into(rec, self._enc)
        cmac_into(self._keys[i], self._enc, _MAC_OFF, self._tag, self._m)


def verify(rec, keys):
    """Check rec.mac under its issuer's key; returns and sets rec.status.
    Only a CARD_UNVERIFIED record is checked; any other status is returned as is."""
    if rec.status != CARD_UNVERIFIED:
        return rec.status
    i = keys.find(rec.issuer_id, rec.key_version)
    if i < 0:
        rec.status = CARD_ISSUER_UNKNOWN
        return CARD_ISSUER_UNKNOWN
    keys._tag_into(rec, i)
    tag = keys._tag
    mac = rec.mac
    diff = 0
    for j in range(_MAC_LEN):  # no early exit: the time does not tell where it differs
        diff |= tag[j] ^ mac[j]
    rec.status = CARD_OK if diff == 0 else CARD_MAC_BAD
    return rec.status


def seal(rec, keys):
    """Compute rec.mac over the record's current fields. False if no key for its issuer."""
    i = keys.find(rec.issuer_id, rec.key_version)
    if i < 0:
        return False
    keys._tag_into(rec, i)
    tag = keys._tag
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
