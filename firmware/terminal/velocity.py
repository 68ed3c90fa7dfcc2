"""The terminal's own per-card counters: one fixed-capacity table in one bytearray.

    t = VelocityTable(board.COUNTER_CAPACITY)
    day = business_day(now, cutover_min)
    slot = t.lookup(hash8, now, day, window_s)      # -1: card not in the table
    if slot < 0:
        slot = t.insert(hash8, now, day, window_s)   # may evict; never allocates
    t.offline_today(slot), t.declines(slot), ...     # read by decision.decide
    t.record_approval(slot, amount, now, online, atc) / t.record_decline(slot)
    flash.write(t.buffer())                          # persistence is the caller's
    t.load_from(data)                                # after a reboot; None or a message

Time is terminal time, the scale of terminal.clock: seconds since
clock.EPOCH_OFFSET (2020-01-01 00:00 UTC), a small int (< 2**30) on a 32-bit
board until 2054; clock.now() gives it (-1 while unset). Day numbers are
days since 1970-01-01. The business day starts at `cutover_min` minutes past
00:00 UTC; the per-day counters of an entry roll over lazily the first time the
entry is touched on a new business day, so a roll-over costs nothing up front.

Per entry (32 bytes): token hash (8), business day (2), declines today (1),
flags (1), offline amount today (4), offline amount since the last online
approval seen here, this business day (4), last approved amount (4) and time
(4) for split sales, highest ATC seen (2, replay check), last touch minute (2).

Eviction, and why no card escapes a cap through it: when the table is full a
victim is chosen with a clock hand. An entry is *harmless* to evict when its
per-day counters are from an earlier business day (or all zero) and its last
approval is older than the split window: nothing a rule reads is lost. Only
when no entry is harmless is a *live* entry evicted (fewest declines, least
recently touched first); the table then records that history was lost (time
and business day). From then until the end of that business day, and for a
split window after the eviction, any card that is not in the table is entered
with the "history unknown" flag and the decision sends it online
(R_COUNTERS_EVICTED): a card the table forgot can only come back through the
issuer, never through an offline approval. See docs/decision.md.
"""

from terminal.clock import EPOCH_OFFSET
from terminal.compat import const

EPOCH_DAY = const(18262)  # day number (since 1970) of clock.EPOCH_OFFSET, 2020-01-01
TIME_LIMIT = const(0x3FFFFFFF)  # terminal time must stay below this

KEY_LEN = const(8)
ENTRY_LEN = const(32)
HEADER_LEN = const(32)
_MAGIC0 = const(0x56)  # "VT"
_MAGIC1 = const(0x54)
_VERSION = const(1)
_SAT = const(0x3FFFFFFF)

# entry field offsets
_E_DAY = const(8)
_E_DECLINES = const(10)
_E_FLAGS = const(11)
_E_TODAY = const(12)
_E_SINCE = const(16)
_E_LAST_AMOUNT = const(20)
_E_LAST_TIME = const(24)
_E_ATC = const(28)
_E_TOUCH = const(30)

# entry flags
_F_USED = const(1)
_F_HAS_LAST = const(2)
_F_HAS_ATC = const(4)
_F_UNKNOWN = const(8)


def terminal_time(unix_s):
    """Unix seconds -> terminal time (host side, or the board's clock code)."""
    return unix_s - EPOCH_OFFSET


def business_day(now, cutover_min):
    """Business day number (days since 1970) of terminal time `now`."""
    return EPOCH_DAY + (now - cutover_min * 60) // 86400


def calendar_day(now):
    """UTC calendar day number (days since 1970) of terminal time `now`."""
    return EPOCH_DAY + now // 86400


def _get16(b, o):
    return b[o] | (b[o + 1] << 8)


def _put16(b, o, v):
    b[o] = v & 0xFF
    b[o + 1] = (v >> 8) & 0xFF


def _get32(b, o):
    return b[o] | (b[o + 1] << 8) | (b[o + 2] << 16) | (b[o + 3] << 24)


def _put32(b, o, v):
    b[o] = v & 0xFF
    b[o + 1] = (v >> 8) & 0xFF
    b[o + 2] = (v >> 16) & 0xFF
    b[o + 3] = (v >> 24) & 0xFF


def _slots_for(capacity):
    s = 1
    while s < 2 * capacity:
        s <<= 1
    return s


def buffer_len(capacity):
    """Bytes of the one buffer a table of this capacity uses."""
    return HEADER_LEN + 2 * _slots_for(capacity) + ENTRY_LEN * capacity


class VelocityTable:
    """Fixed-capacity per-card counters. Buffer layout: header, an open-addressed
    index of u16 entry numbers (2 * capacity slots or more, linear probing), entries."""

    def __init__(self, capacity):
        if capacity < 1 or capacity > 0x7FFF:
            raise ValueError("counter capacity must be 1..32767")
        self.capacity = capacity
        self._slots = _slots_for(capacity)
        self._ix = HEADER_LEN
        self._en = HEADER_LEN + 2 * self._slots
        self.buf = bytearray(buffer_len(capacity))
        self._clear()
        self._victim_lossy = False
        self.dirty = False

    def _clear(self):
        # The header's fields for an empty table (the buffer is the caller's).
        self.count = 0
        self.evictions = 0
        self.lossy_evictions = 0
        self._hand = 0
        self._lost = False
        self._lost_day = 0
        self._lost_time = 0

    # -- index -----------------------------------------------------------------

    def _home(self, key):
        return (key[0] | (key[1] << 8) | (key[2] << 16)) & (self._slots - 1)

    def _same_key(self, base, key):
        b = self.buf
        for i in range(KEY_LEN):
            if b[base + i] != key[i]:
                return False
        return True

    def _index_find(self, key):
        """Index slot holding key, or -1."""
        b = self.buf
        mask = self._slots - 1
        s = self._home(key)
        while True:
            o = self._ix + 2 * s
            e = b[o] | (b[o + 1] << 8)
            if e == 0:
                return -1
            if self._same_key(self._en + (e - 1) * ENTRY_LEN, key):
                return s
            s = (s + 1) & mask

    def _index_put(self, key, ent):
        b = self.buf
        mask = self._slots - 1
        s = self._home(key)
        while True:
            o = self._ix + 2 * s
            if b[o] == 0 and b[o + 1] == 0:
                _put16(b, o, ent + 1)
                return
            s = (s + 1) & mask

    def _index_delete(self, s):
        """Remove index slot s, shifting later members of its cluster back."""
        b = self.buf
        mask = self._slots - 1
        ix = self._ix
        en = self._en
        hole = s
        j = s
        while True:
            j = (j + 1) & mask
            o = ix + 2 * j
            e = b[o] | (b[o + 1] << 8)
            if e == 0:
                break
            base = en + (e - 1) * ENTRY_LEN
            h = (b[base] | (b[base + 1] << 8) | (b[base + 2] << 16)) & mask
            # the member at j may move to the hole only if its home is not in (hole, j]
            if hole <= j:
                stays = hole < h <= j
            else:
                stays = h > hole or h <= j
            if stays:
                continue
            _put16(b, ix + 2 * hole, e)
            hole = j
        _put16(b, ix + 2 * hole, 0)

    # -- lookup, insert, eviction ------------------------------------------------

    def history_lost(self, now, day, window):
        """True while a live entry evicted earlier may still matter to a rule."""
        if not self._lost:
            return False
        return self._lost_day >= day or now - self._lost_time <= window

    def _roll(self, base, now, day, window):
        b = self.buf
        if day > _get16(b, base + _E_DAY):
            _put16(b, base + _E_DAY, day)
            b[base + _E_DECLINES] = 0
            _put32(b, base + _E_TODAY, 0)
            _put32(b, base + _E_SINCE, 0)
            if b[base + _E_FLAGS] & _F_UNKNOWN and not self.history_lost(now, day, window):
                b[base + _E_FLAGS] &= ~_F_UNKNOWN & 0xFF
            self.dirty = True
        _put16(b, base + _E_TOUCH, now // 60)

    def lookup(self, key, now, day, window):
        """Entry number of the card with this token hash, rolled over to `day`; or -1."""
        s = self._index_find(key)
        if s < 0:
            return -1
        o = self._ix + 2 * s
        ent = (self.buf[o] | (self.buf[o + 1] << 8)) - 1
        self._roll(self._en + ent * ENTRY_LEN, now, day, window)
        return ent

    def _harmless(self, base, now, day, window):
        b = self.buf
        if b[base + _E_FLAGS] & _F_HAS_LAST and now - _get32(b, base + _E_LAST_TIME) <= window:
            return False
        if _get16(b, base + _E_DAY) < day:
            return True
        return (
            b[base + _E_DECLINES] == 0
            and _get32(b, base + _E_TODAY) == 0
            and _get32(b, base + _E_SINCE) == 0
        )

    def _victim(self, now, day, window):
        """Entry to evict: the first harmless one from the hand, else the live one
        with the fewest declines touched longest ago (sets _victim_lossy)."""
        b = self.buf
        cap = self.capacity
        minute = now // 60
        best = -1
        best_rank = 0
        h = self._hand
        for _ in range(cap):
            ent = h
            h += 1
            if h == cap:
                h = 0
            base = self._en + ent * ENTRY_LEN
            if self._harmless(base, now, day, window):
                self._hand = h
                self._victim_lossy = False
                return ent
            age = (minute - _get16(b, base + _E_TOUCH)) & 0xFFFF
            rank = (b[base + _E_DECLINES] << 16) | (0xFFFF - age)
            if best < 0 or rank < best_rank:
                best = ent
                best_rank = rank
        self._hand = best + 1 if best + 1 < cap else 0
        self._victim_lossy = True
        return best

    def insert(self, key, now, day, window):
        """Enter a card that lookup() did not find; returns its entry number.
        When the table is full an entry is evicted (see the module notes)."""
        b = self.buf
        unknown = self.history_lost(now, day, window)
        if self.count < self.capacity:
            ent = self.count
            self.count += 1
        else:
            ent = self._victim(now, day, window)
            base = self._en + ent * ENTRY_LEN
            s = self._find_slot_of(ent)
            self._index_delete(s)
            if self.evictions < _SAT:
                self.evictions += 1
            if self._victim_lossy:
                if self.lossy_evictions < _SAT:
                    self.lossy_evictions += 1
                self._lost = True
                self._lost_day = day
                self._lost_time = now
        base = self._en + ent * ENTRY_LEN
        for i in range(KEY_LEN):
            b[base + i] = key[i]
        for i in range(KEY_LEN, ENTRY_LEN):
            b[base + i] = 0
        _put16(b, base + _E_DAY, day)
        b[base + _E_FLAGS] = _F_USED | (_F_UNKNOWN if unknown else 0)
        _put16(b, base + _E_TOUCH, now // 60)
        self._index_put(key, ent)
        self.dirty = True
        return ent

    def _find_slot_of(self, ent):
        """Index slot pointing at entry ent (probing from the entry's own key)."""
        b = self.buf
        mask = self._slots - 1
        base = self._en + ent * ENTRY_LEN
        s = (b[base] | (b[base + 1] << 8) | (b[base + 2] << 16)) & mask
        want = ent + 1
        while True:
            o = self._ix + 2 * s
            if (b[o] | (b[o + 1] << 8)) == want:
                return s
            s = (s + 1) & mask

    # -- reads (decision.decide) ----------------------------------------------

    def offline_today(self, ent):
        return _get32(self.buf, self._en + ent * ENTRY_LEN + _E_TODAY)

    def since_online(self, ent):
        return _get32(self.buf, self._en + ent * ENTRY_LEN + _E_SINCE)

    def declines(self, ent):
        return self.buf[self._en + ent * ENTRY_LEN + _E_DECLINES]

    def has_last(self, ent):
        return bool(self.buf[self._en + ent * ENTRY_LEN + _E_FLAGS] & _F_HAS_LAST)

    def last_amount(self, ent):
        return _get32(self.buf, self._en + ent * ENTRY_LEN + _E_LAST_AMOUNT)

    def last_time(self, ent):
        return _get32(self.buf, self._en + ent * ENTRY_LEN + _E_LAST_TIME)

    def has_atc(self, ent):
        return bool(self.buf[self._en + ent * ENTRY_LEN + _E_FLAGS] & _F_HAS_ATC)

    def atc(self, ent):
        return _get16(self.buf, self._en + ent * ENTRY_LEN + _E_ATC)

    def day(self, ent):
        return _get16(self.buf, self._en + ent * ENTRY_LEN + _E_DAY)

    def history_unknown(self, ent, now, day, window):
        """The card was entered after live history was evicted, and that still matters."""
        f = self.buf[self._en + ent * ENTRY_LEN + _E_FLAGS]
        return bool(f & _F_UNKNOWN) and self.history_lost(now, day, window)

    # -- updates ------------------------------------------------------------------

    def observe(self, ent, atc, last_online_atc):
        """A tap with MAC-verified card counters: keep the highest ATC seen, and
        forget the offline amount since online if the card went online elsewhere."""
        b = self.buf
        base = self._en + ent * ENTRY_LEN
        f = b[base + _E_FLAGS]
        if f & _F_HAS_ATC:
            seen = _get16(b, base + _E_ATC)
            if last_online_atc > seen:
                _put32(b, base + _E_SINCE, 0)
            if atc > seen:
                _put16(b, base + _E_ATC, atc)
        else:
            _put16(b, base + _E_ATC, atc)
            b[base + _E_FLAGS] = f | _F_HAS_ATC
        self.dirty = True

    def record_approval(self, ent, amount, now, online, atc):
        """An approval was completed: offline amounts grow (offline) or the amount
        since online restarts (online); it becomes the card's last approved sale.
        atc: the ATC written to the card, or -1 if none was written."""
        b = self.buf
        base = self._en + ent * ENTRY_LEN
        if online:
            _put32(b, base + _E_SINCE, 0)
        else:
            v = _get32(b, base + _E_TODAY) + amount
            _put32(b, base + _E_TODAY, v if v < _SAT else _SAT)
            v = _get32(b, base + _E_SINCE) + amount
            _put32(b, base + _E_SINCE, v if v < _SAT else _SAT)
        _put32(b, base + _E_LAST_AMOUNT, amount)
        _put32(b, base + _E_LAST_TIME, now)
        f = b[base + _E_FLAGS] | _F_HAS_LAST
        if atc >= 0:
            if not f & _F_HAS_ATC or atc > _get16(b, base + _E_ATC):
                _put16(b, base + _E_ATC, atc)
            f |= _F_HAS_ATC
        b[base + _E_FLAGS] = f
        self.dirty = True

    def record_decline(self, ent):
        b = self.buf
        o = self._en + ent * ENTRY_LEN + _E_DECLINES
        if b[o] < 0xFF:
            b[o] += 1
        self.dirty = True

    # -- persistence ------------------------------------------------------------

    def _write_header(self):
        b = self.buf
        b[0] = _MAGIC0
        b[1] = _MAGIC1
        b[2] = _VERSION
        b[3] = 1 if self._lost else 0
        _put16(b, 4, self.capacity)
        _put16(b, 6, self.count)
        _put16(b, 8, self._hand)
        _put16(b, 10, self._lost_day)
        _put32(b, 12, self._lost_time)
        _put32(b, 16, self.evictions)
        _put32(b, 20, self.lossy_evictions)

    def buffer(self):
        """The table's one buffer, header brought up to date: write it to flash as is."""
        self._write_header()
        self.dirty = False
        return self.buf

    def to_bytes(self):
        """A copy of buffer() (host and tests; on the board write buffer() instead)."""
        return bytes(self.buffer())

    def load_from(self, data):
        """Restore a persisted table of the same capacity. Returns None, or a message
        (then the table is left empty and usable)."""
        b = self.buf
        n = len(b)
        if len(data) != n:
            return self._reset("counter table has %d bytes, expected %d" % (len(data), n))
        if data[0] != _MAGIC0 or data[1] != _MAGIC1 or data[2] != _VERSION:
            return self._reset("not a counter table (magic/version)")
        if _get16(data, 4) != self.capacity:
            return self._reset("counter table capacity differs")
        count = _get16(data, 6)
        if count > self.capacity:
            return self._reset("counter table count out of range")
        for i in range(n):
            b[i] = data[i]
        self.count = count
        hand = _get16(b, 8)
        self._hand = hand if hand < self.capacity else 0
        self._lost = b[3] == 1
        self._lost_day = _get16(b, 10)
        self._lost_time = _get32(b, 12)
        self.evictions = _get32(b, 16)
        self.lossy_evictions = _get32(b, 20)
        # Rebuild the index from the entries rather than trust it.
        for i in range(self._ix, self._en):
            b[i] = 0
        for ent in range(count):
            base = self._en + ent * ENTRY_LEN
            if not b[base + _E_FLAGS] & _F_USED or b[base + 15] >= 0x40 \
                    or b[base + 19] >= 0x40 or b[base + 23] >= 0x40 or b[base + 27] >= 0x40:
                return self._reset("counter table entry %d is damaged" % ent)
            self._index_put(memoryview(b)[base : base + KEY_LEN], ent)
        self.dirty = False
        return None

    def lost_at(self, now, day):
        """The caller could not restore the table (missing or damaged after a reboot):
        today's history is unknown, so treat absent cards as history unknown."""
        self._lost = True
        self._lost_day = day
        self._lost_time = now
        self.dirty = True

    def _reset(self, message):
        b = self.buf
        for i in range(len(b)):
            b[i] = 0
        self._clear()
        self.dirty = True
        return message
