"""One tap, from the card's bytes to a journalled result, allocating nothing.

    tap = Tap(engine, keystore, negative_list, journal)
    # the card source has filled tap.raw (the card image: IDm, blocks 0-5)
    res = tap.decide(amount, now, r, centre_up)          # decision.* result int
    # GO_ONLINE: ask the centre; no answer -> res = tap.unable(res)
    res = tap.conclude(res, amount, now, online, approved)
    # tap.write_back: the new state is in tap.raw, slot tap.rec.slot; write its blocks, then
    res = tap.card_written(res, ok)                      # offline approval needs the write
    # from conclude() on, res is a final result: res & FINAL_MASK, res >> FINAL_SHIFT
    seq = tap.record(res, amount, now, approval_code)    # journal, before the result shows

Final outcomes (journal, replies): APPROVED_OFFLINE, APPROVED_ONLINE,
DECLINED_OFFLINE, DECLINED_ONLINE; reason bits are decision's R_* (R_UNABLE_ONLINE
marks a Default-mask result, EMV's Y3/Z3).
"""

from terminal import decision
from terminal.card import CARD_OK, CARD_UNREADABLE, RECORD_LEN, CardRecord, encode_into, read_into
from terminal.compat import const
from terminal.journal import OFFLINE_APPROVAL, mask_token_into
from terminal.velocity import business_day

APPROVED_OFFLINE = const(1)
APPROVED_ONLINE = const(2)
DECLINED_OFFLINE = const(3)
DECLINED_ONLINE = const(4)
# A final result int: outcome in the low 3 bits, decision's R_* reasons above
# (< 2**28, a small int on any board).
FINAL_MASK = const(7)
FINAL_SHIFT = const(3)

_P_BUSINESS_DAY_CUTOVER_MIN = const(14)
_NO_KEYS = const(1 << 21)  # decision.R_CARD_DATA_BAD: cannot hash or verify without keys


class Tap:
    def __init__(self, engine, keystore, negative_list, journal):
        self.engine = engine
        self.keystore = keystore
        self.nl = negative_list
        self.journal = journal
        self.rec = CardRecord()
        self.raw = bytearray(RECORD_LEN)
        self.hash8 = bytearray(8)
        self.masked = bytearray(8)
        self.write_back = False
        self.written = True  # the new counters reached the card
        self.final = 0  # APPROVED_* / DECLINED_*

    def decide(self, amount, now, r, centre_up, online_only=False):
        rec = self.rec
        ks = self.keystore
        if ks.hasher is None:
            rec.status = CARD_UNREADABLE
            return decision.DECLINE | (_NO_KEYS << decision.REASON_SHIFT)
        read_into(self.raw, rec, ks.issuer_keys)
        listed = False
        if rec.status != CARD_UNREADABLE:
            ks.hasher.hash_into(rec.token, self.hash8)
            mask_token_into(rec.token, self.masked)
            day = business_day(now, self.engine.params.values[_P_BUSINESS_DAY_CUTOVER_MIN])
            listed = self.nl.lookup(self.hash8, rec.issuer_id, day)
        if self.journal.near_full:
            online_only = True
        return self.engine.tap(amount, rec, self.hash8, listed, now, r, centre_up, online_only)

    def unable(self, res):
        return self.engine.unable(res, self.rec)

    def conclude(self, res, amount, now, online, approved):
        """Settle the outcome; if approved, update the card's counters (self.raw
        holds the new image when self.write_back is set)."""
        reasons = res >> decision.REASON_SHIFT
        self.written = True
        if not online:
            approved = (res & decision.OUTCOME_MASK) == decision.APPROVE_OFFLINE
        self.write_back = False
        if approved:
            self.final = APPROVED_ONLINE if online else APPROVED_OFFLINE
            if self.engine.new_card_counters(self.rec, amount, now, online):
                encode_into(self.rec, self.raw)
                self.write_back = True
            elif not online:
                # an offline approval must move the card's counters; if they cannot
                # be moved (ATC exhausted, no key), the card goes to the issuer next time
                self.final = DECLINED_OFFLINE
                reasons |= decision.R_CARD_DATA_BAD
        else:
            self.final = DECLINED_ONLINE if online else DECLINED_OFFLINE
        return self.final | (reasons << FINAL_SHIFT)

    def card_written(self, res, ok):
        """An offline approval stands only if the counters reached the card: a card
        pulled away mid-write must not keep an approval its counters do not show."""
        if not ok and self.final == APPROVED_OFFLINE:
            self.final = DECLINED_OFFLINE
            return DECLINED_OFFLINE | (((res >> FINAL_SHIFT) | decision.R_CARD_DATA_BAD)
                                       << FINAL_SHIFT)
        return res

    def record(self, res, amount, now, approval_code):
        """Counters and journal; returns the journal sequence number. Raises
        journal.JournalFull / JournalError: then the caller reports no result."""
        rec = self.rec
        final = res & FINAL_MASK
        if final == APPROVED_OFFLINE or final == APPROVED_ONLINE:
            self.engine.record_approval(rec, amount, now, final == APPROVED_ONLINE, self.written)
        else:
            self.engine.record_decline()
        return self.journal.append(
            now, self.hash8, self.masked, rec.issuer_id, amount, final,
            res >> FINAL_SHIFT,
            approval_code if final == APPROVED_ONLINE else OFFLINE_APPROVAL,
            rec.atc, rec.last_online_atc, rec.offline_today, rec.offline_since_online,
            rec.offline_count)


def outcome_name(final):
    names = ("?", "approved offline", "approved online", "declined offline", "declined online")
    return names[final if 0 < final < 5 else 0]


__all__ = ["Tap", "CARD_OK"]
