"""The offline decision on every tap: approve offline, go online, or decline.

    eng = Engine(params, issuers, keys, board.COUNTER_CAPACITY)
    res = eng.tap(amount, card, hash8, listed, now, r, link_up)   # an int, no allocation
    outcome(res)    -> APPROVE_OFFLINE / GO_ONLINE / DECLINE
    reasons(res)    -> bit set of R_* (why)
    # GO_ONLINE: ask the centre; on a timeout:  res = eng.unable(res, card)
    # approved (offline, or online by the centre):
    eng.new_card_counters(card, amount, now, online)  # counters + MAC to write back
    eng.record_approval(card, amount, now, online, written)  # once the sale stands
    # declined (here or by the centre):
    eng.record_decline()

A result is one small int: the outcome in the low 2 bits, the reasons above
(result = outcome | reasons << 2, always < 2**30), so nothing is allocated to
return it. All inputs are arguments: `now` is terminal time (clock.Clock.now():
seconds since 2020-01-01 UTC, -1 while unset), `r` the caller's uniform draw from
1..99, `listed` the negative-list verdict, `link_up` whether the host link is up.

Rules (docs/decision.md): every check sets its reason bit, as EMV's terminal
verification results do; then a denial bit declines, any other bit goes online,
and no bit approves offline. When the terminal cannot go online the issuer's
Default mask decides (absent one: params offline_default; 0 = decline); hard
reasons (listed, expired, bad card data...) are never approved that way.
"""

from terminal.card import seal
from terminal.compat import const
from terminal.guard import EnumerationGuard
from terminal.velocity import VelocityTable, business_day, calendar_day

# Indices and codes of terminal.params, terminal.issuers and terminal.card, as
# private consts so the compiler folds them (no RAM, no lookups on the tap
# path). tests/test_consts.py pins each one to its module's public name.
_P_FLOOR_LIMIT = const(0)
_P_DAILY_OFFLINE_CAP = const(1)
_P_CUMULATIVE_OFFLINE_CAP = const(2)
_P_TERMINAL_DAILY_CAP = const(3)
_P_LOWER_CONSECUTIVE_OFFLINE = const(4)
_P_UPPER_CONSECUTIVE_OFFLINE = const(5)
_P_RANDOM_TARGET_PCT = const(6)
_P_RANDOM_MAX_TARGET_PCT = const(7)
_P_RANDOM_THRESHOLD = const(8)
_P_SPLIT_WINDOW_S = const(9)
_P_DECLINE_LIMIT = const(10)
_P_ENUM_DISTINCT_LIMIT = const(11)
_P_ENUM_WINDOW_MIN = const(12)
_P_ENUM_LOCKOUT_MIN = const(13)
_P_BUSINESS_DAY_CUTOVER_MIN = const(14)
_P_LISTED_ACTION = const(16)
_P_OFFLINE_DEFAULT = const(17)
_P_NEW_CARD_ONLINE = const(19)
_I_FLOOR_LIMIT = const(0)
_I_DAILY_OFFLINE_CAP = const(1)
_I_CUMULATIVE_OFFLINE_CAP = const(2)
_I_TERMINAL_DAILY_CAP = const(3)
_I_LOWER_CONSECUTIVE_OFFLINE = const(4)
_I_UPPER_CONSECUTIVE_OFFLINE = const(5)
_I_DEFAULT_MASK = const(6)
_CARD_OK = const(0)
_CARD_ISSUER_UNKNOWN = const(3)
_CARD_UNREADABLE = const(5)
_PRODUCT_CREDIT = const(1)
_AMOUNT_LIMIT = const(0x3FFFFFFF)
_TIME_LIMIT = const(0x3FFFFFFF)

APPROVE_OFFLINE = const(1)
GO_ONLINE = const(2)
DECLINE = const(3)
OUTCOME_MASK = const(3)
REASON_SHIFT = const(2)

R_FLOOR_LIMIT = const(1 << 0)  # amount >= floor limit
R_PRODUCT_ONLINE = const(1 << 1)  # prepaid / debit: every sale authorised (floor 0)
R_SPLIT_SALE = const(1 << 2)  # amount + this card's last approved sale here >= floor
R_DAILY_CAP = const(1 << 3)  # card-side offline amount today + amount > daily cap
R_CUMULATIVE_CAP = const(1 << 4)  # card-side offline amount since online + amount > cap
R_TERMINAL_DAILY_CAP = const(1 << 5)  # this terminal's offline amount today + amount > cap
R_TERMINAL_CUMULATIVE_CAP = const(1 << 6)  # this terminal's amount since online + amount > cap
R_LOWER_CONSECUTIVE = const(1 << 7)  # ATC - last online ATC > lower limit
R_UPPER_CONSECUTIVE = const(1 << 8)  # ATC - last online ATC > upper limit
R_COUNTERS_BAD = const(1 << 9)  # counters missing, MAC bad or unverifiable
R_RANDOM_SELECTED = const(1 << 10)  # EMV biased random selection
R_LISTED = const(1 << 11)  # negative-list hit
R_EXPIRED = const(1 << 12)
R_TOO_MANY_DECLINES = const(1 << 13)  # decline_limit declines of this card today
R_ENUMERATION = const(1 << 14)  # enumeration alert: terminal online-only
R_UNABLE_ONLINE = const(1 << 15)  # resolved by the Default mask (Y3 / Z3)
R_NEW_CARD = const(1 << 16)  # last online ATC 0: never online
R_ISSUER_UNKNOWN = const(1 << 17)  # no MAC key for this issuer / key version
R_ISSUER_ONLINE_ONLY = const(1 << 18)  # issuer's list quota overflowed
R_ATC_REPLAY = const(1 << 19)  # card ATC below one this terminal saw: copied/rolled back
R_COUNTERS_EVICTED = const(1 << 20)  # terminal-side history of this card may be lost
R_CARD_DATA_BAD = const(1 << 21)  # record unreadable
R_AMOUNT_INVALID = const(1 << 22)  # amount not in 1..100,000,000
R_CLOCK_INVALID = const(1 << 23)  # terminal time not set / out of range
R_TERMINAL_ONLINE_ONLY = const(1 << 24)  # caller's condition (journal near full, forced)
REASON_COUNT = const(25)

# One string, not 25 interned names: it is read only for reports.
_NAMES = (
    "floor_limit product_online split_sale daily_cap cumulative_cap terminal_daily_cap"
    " terminal_cumulative_cap lower_consecutive upper_consecutive counters_bad"
    " random_selected listed expired too_many_declines enumeration unable_online new_card"
    " issuer_unknown issuer_online_only atc_replay counters_evicted card_data_bad"
    " amount_invalid clock_invalid terminal_online_only"
)

_ALL = const((1 << REASON_COUNT) - 1)
# Decline whatever the link: the card or the request is refused outright.
_DENY = const(R_EXPIRED | R_TOO_MANY_DECLINES | R_CARD_DATA_BAD | R_AMOUNT_INVALID)
# Never approved by a Default mask when the terminal cannot go online. Counters
# evicted is hard because what was forgotten may be a hard reason (declines, replay).
HARD = const(
    R_PRODUCT_ONLINE | R_UPPER_CONSECUTIVE | R_COUNTERS_BAD | R_LISTED | R_EXPIRED
    | R_TOO_MANY_DECLINES | R_ISSUER_UNKNOWN | R_ATC_REPLAY | R_COUNTERS_EVICTED
    | R_CARD_DATA_BAD | R_AMOUNT_INVALID | R_CLOCK_INVALID
)
# What offline_default=1 approves when unable to go online: everything not hard.
SOFT = const(_ALL & ~(HARD | R_UNABLE_ONLINE))

_MAX_AMOUNT = const(100_000_000)
_ATC_MAX = const(0xFFFF)
_U16 = const(0xFFFF)


def outcome(result):
    return result & OUTCOME_MASK


def reasons(result):
    return result >> REASON_SHIFT


def reason_names(bits):
    """Names of the reason bits, lowest first (reports and host tools: allocates)."""
    names = _NAMES.split()
    return [names[i] for i in range(REASON_COUNT) if bits >> i & 1]


def response_code(result):
    """EMV-style code: Y1/Z1 decided offline, Y3/Z3 unable to go online, '' for online."""
    o = result & OUTCOME_MASK
    unable = (result >> REASON_SHIFT) & R_UNABLE_ONLINE
    if o == APPROVE_OFFLINE:
        return "Y3" if unable else "Y1"
    if o == DECLINE:
        return "Z3" if unable else "Z1"
    return ""


def _mul_le(a, b, c, d):
    """a*b <= c*d for 0 <= a, c < 2**8 and 0 <= b, d < 2**28, exactly, with every
    intermediate below 2**23 (a 30-bit small int on a 32-bit board)."""
    xl = a * (b & 0x3FFF)
    xh = a * (b >> 14) + (xl >> 14)
    xl &= 0x3FFF
    yl = c * (d & 0x3FFF)
    yh = c * (d >> 14) + (yl >> 14)
    yl &= 0x3FFF
    return xh < yh or (xh == yh and xl <= yl)


def random_selected(amount, r, floor, threshold, tp, mtp):
    """EMV Book 3 10.6.2 biased random selection, r drawn uniformly from 1..99.
    The ramp R <= TP + (MTP-TP)(amount-T)/(F-T) is compared as
    (R-TP)(F-T) <= (MTP-TP)(amount-T): exact, nothing truncated."""
    if amount >= floor:
        return False  # it goes online anyway
    if r < 1 or r > 99:
        return True  # a broken draw must not open a way to offline approval
    if amount < threshold:
        return r <= tp
    if r <= tp:
        return True
    return _mul_le(r - tp, floor - threshold, mtp - tp, amount - threshold)


def decide(amount, card, listed, now, r, link_up, online_only, params, issuers, table, slot,
           guard):
    """The outcome and reasons of one tap, as an int. Pure: reads card, params,
    issuers, the counter table entry `slot` (already looked up and rolled to today)
    and the enumeration guard; changes nothing."""
    v = params.values
    bits = 0
    if amount < 1 or amount > _MAX_AMOUNT:
        bits |= R_AMOUNT_INVALID
        amount = 0
    if now < 0 or now >= _TIME_LIMIT:
        bits |= R_CLOCK_INVALID
        now = 0
    st = card.status
    if st == _CARD_UNREADABLE:
        return DECLINE | (bits | R_CARD_DATA_BAD) << REASON_SHIFT
    day = business_day(now, v[_P_BUSINESS_DAY_CUTOVER_MIN])
    window = v[_P_SPLIT_WINDOW_S]
    iss = issuers.find(card.issuer_id)

    # Card-side data.
    if card.product != _PRODUCT_CREDIT:
        bits |= R_PRODUCT_ONLINE
    if calendar_day(now) > card.expiry_day:
        bits |= R_EXPIRED
    if st == _CARD_OK:
        today = card.offline_today if card.offline_day >= day else 0
        if today + amount > issuers.get(iss, _I_DAILY_OFFLINE_CAP, v[_P_DAILY_OFFLINE_CAP]):
            bits |= R_DAILY_CAP
        cum_cap = issuers.get(iss, _I_CUMULATIVE_OFFLINE_CAP, v[_P_CUMULATIVE_OFFLINE_CAP])
        if card.offline_since_online + amount > cum_cap:
            bits |= R_CUMULATIVE_CAP
        if card.atc >= _ATC_MAX or card.atc < card.last_online_atc:
            bits |= R_LOWER_CONSECUTIVE | R_UPPER_CONSECUTIVE
        else:
            # This sale would be the (atc + 1 - last_online)-th since the last online.
            run = card.atc + 1 - card.last_online_atc
            if run > issuers.get(iss, _I_LOWER_CONSECUTIVE_OFFLINE,
                                 v[_P_LOWER_CONSECUTIVE_OFFLINE]):
                bits |= R_LOWER_CONSECUTIVE
            if run > issuers.get(iss, _I_UPPER_CONSECUTIVE_OFFLINE,
                                 v[_P_UPPER_CONSECUTIVE_OFFLINE]):
                bits |= R_UPPER_CONSECUTIVE
        if card.last_online_atc == 0 and v[_P_NEW_CARD_ONLINE]:
            bits |= R_NEW_CARD
        if table.has_atc(slot) and card.atc < table.atc(slot):
            bits |= R_ATC_REPLAY
    else:
        # EMV: missing counters count as both consecutive limits exceeded.
        bits |= R_COUNTERS_BAD | R_LOWER_CONSECUTIVE | R_UPPER_CONSECUTIVE
        if st == _CARD_ISSUER_UNKNOWN:
            bits |= R_ISSUER_UNKNOWN
        cum_cap = issuers.get(iss, _I_CUMULATIVE_OFFLINE_CAP, v[_P_CUMULATIVE_OFFLINE_CAP])

    # Floor limit, split sale, random selection (credit only: others have floor 0).
    if card.product == _PRODUCT_CREDIT:
        floor = issuers.get(iss, _I_FLOOR_LIMIT, v[_P_FLOOR_LIMIT])
        if amount >= floor:
            bits |= R_FLOOR_LIMIT
        else:
            if window > 0 and table.has_last(slot):
                dt = now - table.last_time(slot)
                if 0 <= dt <= window and amount + table.last_amount(slot) >= floor:
                    bits |= R_SPLIT_SALE
            if random_selected(amount, r, floor, v[_P_RANDOM_THRESHOLD], v[_P_RANDOM_TARGET_PCT],
                               v[_P_RANDOM_MAX_TARGET_PCT]):
                bits |= R_RANDOM_SELECTED

    # The terminal's own counters for this card, independent of the card's.
    if table.offline_today(slot) + amount > issuers.get(iss, _I_TERMINAL_DAILY_CAP,
                                                        v[_P_TERMINAL_DAILY_CAP]):
        bits |= R_TERMINAL_DAILY_CAP
    if table.since_online(slot) + amount > cum_cap:
        bits |= R_TERMINAL_CUMULATIVE_CAP
    if table.declines(slot) >= v[_P_DECLINE_LIMIT]:
        bits |= R_TOO_MANY_DECLINES
    if table.history_unknown(slot, now, day, window):
        bits |= R_COUNTERS_EVICTED

    # Lists and terminal-wide states.
    if listed:
        bits |= R_LISTED
    if guard.online_only(now):
        bits |= R_ENUMERATION
    if issuers.online_only(iss):
        bits |= R_ISSUER_ONLINE_ONLY
    if online_only:
        bits |= R_TERMINAL_ONLINE_ONLY

    deny = _DENY | (R_LISTED if v[_P_LISTED_ACTION] == 0 else 0)
    if bits & deny:
        return DECLINE | bits << REASON_SHIFT
    if bits == 0:
        return APPROVE_OFFLINE
    if link_up:
        return GO_ONLINE | bits << REASON_SHIFT
    return _default_action(bits, iss, params, issuers)


def default_mask(iss, params, issuers):
    """The Default mask in force for issuer row iss (hard bits removed)."""
    mask = issuers.get(iss, _I_DEFAULT_MASK, -1)
    if mask < 0:
        mask = SOFT if params.values[_P_OFFLINE_DEFAULT] else 0
    return mask & SOFT


def _default_action(bits, iss, params, issuers):
    bits |= R_UNABLE_ONLINE
    if bits & ~(default_mask(iss, params, issuers) | R_UNABLE_ONLINE) & _ALL:
        return DECLINE | bits << REASON_SHIFT
    return APPROVE_OFFLINE | bits << REASON_SHIFT


def unable_to_go_online(result, issuer_id, params, issuers):
    """A GO_ONLINE result the centre did not answer: the Default mask approves
    (Y3) or, by default, declines (Z3). Other results are returned unchanged."""
    if result & OUTCOME_MASK != GO_ONLINE:
        return result
    return _default_action(result >> REASON_SHIFT, issuers.find(issuer_id), params, issuers)


def card_after_approval(card, amount, day, online):
    """Item 5: update the card-side counters in `card` for an approved sale on
    business day `day`. Returns False (card unchanged) if the ATC is exhausted.
    Offline: ATC+1, amount added to today's (and since-online) amounts, count+1.
    Online: ATC+1 and it becomes the last online ATC; since-online amounts reset;
    the offline amount today is kept (an online sale is not an offline one)."""
    if card.atc >= _ATC_MAX:
        return False
    atc = card.atc + 1
    card.atc = atc
    if online:
        card.last_online_atc = atc
        card.offline_since_online = 0
        card.offline_count = 0
        return True
    if card.offline_day >= day:  # same day (or a day ahead, from a fast clock elsewhere)
        t = card.offline_today + amount
    else:
        card.offline_day = day
        t = amount
    card.offline_today = t if t < _AMOUNT_LIMIT else _AMOUNT_LIMIT
    t = card.offline_since_online + amount
    card.offline_since_online = t if t < _AMOUNT_LIMIT else _AMOUNT_LIMIT
    if card.offline_count < _U16:
        card.offline_count += 1
    return True


class Engine:
    """The decision with its state: params and issuers (shared, changed by the host
    protocol), issuer keys, the counter table and the enumeration guard. Methods on
    the tap path allocate nothing once constructed."""

    def __init__(self, params, issuers, keys, capacity, table=None, guard=None):
        self.params = params
        self.issuers = issuers
        self.keys = keys
        self.table = table if table is not None else VelocityTable(capacity)
        self.guard = guard if guard is not None else EnumerationGuard()
        self.slot = -1  # counter-table entry of the current tap

    def tap(self, amount, card, hash8, listed, now, r, link_up, online_only=False):
        """Find (or enter) the card in the counter table, count unknown cards for the
        enumeration guard, note MAC-verified counters, then decide."""
        v = self.params.values
        if card.status == _CARD_UNREADABLE:
            # No token to key counters by: only the enumeration guard hears of it.
            self.slot = -1
            if 0 <= now < _TIME_LIMIT:
                self.guard.note_unknown(now, v[_P_ENUM_DISTINCT_LIMIT], v[_P_ENUM_WINDOW_MIN],
                                        v[_P_ENUM_LOCKOUT_MIN])
            return decide(amount, card, listed, now, r, link_up, online_only, self.params,
                          self.issuers, self.table, -1, self.guard)
        if 0 <= now < _TIME_LIMIT:
            t = now
        else:
            t = 0
        day = business_day(t, v[_P_BUSINESS_DAY_CUTOVER_MIN])
        window = v[_P_SPLIT_WINDOW_S]
        table = self.table
        slot = table.lookup(hash8, t, day, window)
        if slot < 0:
            self.guard.note_unknown(t, v[_P_ENUM_DISTINCT_LIMIT], v[_P_ENUM_WINDOW_MIN],
                                    v[_P_ENUM_LOCKOUT_MIN])
            slot = table.insert(hash8, t, day, window)
        if card.status == _CARD_OK:
            table.observe(slot, card.atc, card.last_online_atc)
        self.slot = slot
        return decide(amount, card, listed, now, r, link_up, online_only, self.params,
                      self.issuers, table, slot, self.guard)

    def unable(self, result, card):
        """The centre did not answer in time."""
        return unable_to_go_online(result, card.issuer_id, self.params, self.issuers)

    def new_card_counters(self, card, amount, now, online):
        """Update card's counters for an approval and seal them with the issuer MAC.
        True: encode it (card.encode_into(card, buf)) and write it back; False: nothing
        to write (ATC exhausted, or no key for the issuer)."""
        day = business_day(now, self.params.values[_P_BUSINESS_DAY_CUTOVER_MIN])
        if card.status != _CARD_OK and not online:
            return False  # only verified counters are carried forward offline
        if not card_after_approval(card, amount, day, online):
            return False
        return seal(card, self.keys)

    def record_approval(self, card, amount, now, online, written=True):
        """The approval is final. written: the new counters reached the card (then
        their ATC becomes the lowest this terminal accepts from it again)."""
        if self.slot < 0:
            return
        if not 0 <= now < _TIME_LIMIT:
            now = 0  # an online approval with the clock unset: keep the table in range
        atc = card.atc if written and card.status == _CARD_OK else -1
        self.table.record_approval(self.slot, amount, now, online, atc)

    def record_decline(self):
        """The sale was declined, here or by the centre: it counts towards decline_limit."""
        if self.slot >= 0:
            self.table.record_decline(self.slot)
