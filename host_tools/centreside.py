"""The centre's side of a simulated world, the same for every fleet: what happens
before, between and after the taps, and what the taps cost.

    side = CentreSide(world, policy, workdir / "centre.db", ring)
    push = side.opening_list()                  # installed on every terminal first
    for day in range(world.days):
        plan = side.morning(day, counters)       # the day's timeline: blocks, pushes, taps
        for ev in plan.events: ...               # a fleet runs it; blocks via side.block()
        side.record(tap, outcome)                # each tap's outcome, in timeline order
        push = side.evening(day, batches)         # clearing in, detector, the next list
    result = side.finish()

The emulated boards (host_tools.demo) and the fast fleet (host_tools.simulate) both
drive this, so a seeded world gives the same timeline, lists and accounting in both.

A day's timeline: holders' reports block their cards at the report time (the
centre declines them online from then on); with hourly pushes, each report reaches
the terminals as a delta list at the next full hour; taps in `world.tap_order`.
Reports, pushes and taps at the same second come in that order.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path

from host_tools import listbuild
from host_tools.centre import Centre, day_of
from host_tools.detector import Detector
from host_tools.errors import ToolError
from host_tools.keyring import BENCH_ISSUERS
from host_tools.simcard import card_image, decode_card
from host_tools.simfleet import EV_BLOCK, EV_PUSH, EV_TAP, Push
from host_tools.world import FRAUD_KINDS, Policy, Tap, World, tap_order
from terminal import card as C
from terminal import nl_format as nl
from terminal import tap as T

OUTCOME_NAMES = {T.APPROVED_OFFLINE: "APPROVED_OFFLINE", T.APPROVED_ONLINE: "APPROVED_ONLINE",
                 T.DECLINED_OFFLINE: "DECLINED_OFFLINE", T.DECLINED_ONLINE: "DECLINED_ONLINE"}
OUTCOME_CODES = {v: k for k, v in OUTCOME_NAMES.items()}
PRODUCT_CODES = {"credit": C.PRODUCT_CREDIT, "prepaid": C.PRODUCT_PREPAID,
                 "debit": C.PRODUCT_DEBIT}


@dataclass
class Attack:
    """Card testing and brute force: where the attempts ended."""

    attempts: int = 0
    reached_issuer: int = 0  # went online (the issuer answered)
    declined_offline: int = 0  # refused by the terminal (listed, decline limit, ...)
    approved: int = 0

    def add(self, code: int) -> None:
        self.attempts += 1
        if code in (T.APPROVED_ONLINE, T.DECLINED_ONLINE):
            self.reached_issuer += 1
        elif code == T.DECLINED_OFFLINE:
            self.declined_offline += 1
        if code in (T.APPROVED_ONLINE, T.APPROVED_OFFLINE):
            self.approved += 1

    def merge(self, other: Attack) -> None:
        for k in ("attempts", "reached_issuer", "declined_offline", "approved"):
            setattr(self, k, getattr(self, k) + getattr(other, k))


@dataclass
class PolicyResult:
    policy: str
    losses: dict[str, int]  # fraud token -> approved fraudulent yen
    usable_days: dict[str, int]  # stolen token -> days with an approved fraudulent sale
    daily_losses: list[int]  # per day, all fraud
    post_report_loss: int = 0  # approved after the card's holder reported it
    shopper_taps: int = 0
    shopper_online: int = 0
    shopper_declined: int = 0
    prepaid: Attack = field(default_factory=Attack)  # the brute force on one prepaid card
    testing: Attack = field(default_factory=Attack)  # card-testing rings
    enumeration: Attack = field(default_factory=Attack)
    online_requests: int = 0  # every tap that went online (fees)
    alerts: int = 0
    clearing_losses: int = 0  # the same losses, read back from the centre's clearing
    taps: int = 0
    pn532_taps: int = 0  # taps read by the board's PN532 driver on the emulated PN532
    skipped: int = 0  # attempts a thief dropped after a decline that day
    seconds: float = 0.0
    fleet_seconds: float = 0.0  # fast fleet: running the terminals' days (wall time)
    fleet_cpu: float = 0.0  # ... the process time that took, every group's
    tap_cpu: float = 0.0  # ... of which the taps themselves (not issuing cards, rows)
    centre_seconds: float = 0.0  # ... and the centre's day ends
    terminal_moves: int = 0  # fast fleet: terminals moved to join a card's shops
    key: str = ""
    outcomes: list[tuple[int, int, str, str]] = field(default_factory=list)  # day, shop, token
    digest: str = ""  # of every (day, shop, token, outcome) in order

    @property
    def total_loss(self) -> int:
        return sum(self.losses.values())

    def taps_per_core_second(self) -> float:
        """Fast fleet: taps per second of one core's time on the tap path."""
        return self.taps / max(self.tap_cpu, 1e-9)

    def online_rate(self) -> float:
        return self.shopper_online / max(self.shopper_taps, 1)

    def fees(self, fee: int) -> int:
        return self.online_requests * fee


@dataclass
class DayPlan:
    day: int
    taps: list[Tap]
    events: list[tuple]  # fleet.EV_* tuples in timeline order (taps: their index)


class CentreSide:
    def __init__(self, world: World, policy: Policy, db_path: str | Path, ring, fee: int = 5,
                 keep_outcomes: bool = True):
        self.t0 = time.monotonic()
        self.world = world
        self.policy = policy
        self.fee = fee
        self.keep_outcomes = keep_outcomes
        self.key_id = ring.list_key()[0]
        self.quota = policy.quota_for(world)
        self.push = policy.push_for(world)
        self.centre = open_centre(world, self.quota, db_path, ring)
        self.version = 0  # of the list the terminals have
        self.reports: dict[str, int] = {}  # token -> Unix time of the holder's report
        self.later_reports: dict[int, list[tuple[int, str]]] = {}  # notifications
        self.declined_days: dict[str, int] = {}  # adaptive thieves' view
        self._declined_today: set[str] = set()
        self._notified: set[str] = set()
        self._digest = hashlib.sha256()
        fraud = [c.token for c in world.cards.values() if c.kind in FRAUD_KINDS]
        stolen = world.fraud_tokens()
        self.result = PolicyResult(policy.name, {t: 0 for t in fraud}, {t: 0 for t in stolen},
                                   [0] * world.days, key=policy.key)
        self.ring = ring
        self.wallet: dict[str, bytes] = {}  # token -> card image, issued at first use

    def image(self, token: str) -> bytes:
        """The card's image as it is now (issued when first asked for)."""
        img = self.wallet.get(token)
        if img is None:
            img = self.wallet[token] = card_image(self.world.cards[token], self.ring,
                                                  self.world.start)
        return img

    def counters(self, token: str):
        return decode_card(self.image(token))

    # -- lists -------------------------------------------------------------------------

    def opening_list(self) -> Push:
        return self._full_list(day_of(self.world.unix(0)) - 1)

    def _full_list(self, business_day: int) -> Push:
        self.version += 1
        data = next_list(self.centre, self.policy, self.quota, business_day, self.version,
                         self.key_id)
        return Push(nl.KIND_FULL, self.version, 0, data)

    def _delta(self, tokens: list[str], business_day: int) -> Push:
        sections: dict[int, list] = {}
        for token in tokens:
            c = self.world.cards[token]
            sections.setdefault(c.issuer, []).append((self.centre.token_hash(token), 0, False))
        self.version += 1
        data = listbuild.encode_delta(sections, version=self.version,
                                      base_version=self.version - 1, base_day=business_day,
                                      key_id=self.key_id)
        return Push(nl.KIND_DELTA, self.version, self.version - 1, data)

    # -- the day -----------------------------------------------------------------------

    def morning(self, day: int, counters) -> DayPlan:
        """The day's timeline. counters(token) -> CardRecord: what a thief sees on its
        card (for the adaptive ones)."""
        world = self.world
        reports = sorted(world.reports[day] + self.later_reports.pop(day, []))
        seen = set()
        blocks = []
        for second, token in reports:
            if token in self.reports or token in seen:
                continue
            seen.add(token)
            blocks.append((second, token))
        # a phone that is online gets the issuer's remote wipe at the report
        wiped = {t: -1 for t in self.reports if self._phone_online(t)}
        wiped.update((t, s) for s, t in blocks if self._phone_online(t))
        taps = [t for t in world.taps[day] + world.plan(day, self.policy.params, counters,
                                                         self.declined_days)
                if not (t.token in wiped and t.second >= wiped[t.token])]
        taps.sort(key=tap_order)
        events: list[tuple] = [(s, EV_BLOCK, token) for s, token in blocks]
        if self.push == "hourly":
            bday = day_of(world.unix(day), self.centre.cutover_min)
            by_hour: dict[int, list[str]] = {}
            for s, token in blocks:
                hour = (s // 3600 + 1) * 3600
                if hour < 86400:
                    by_hour.setdefault(hour, []).append(token)
            for hour in sorted(by_hour):
                events.append((hour, EV_PUSH, self._delta(by_hour[hour], bday)))
        for i, t in enumerate(taps):
            events.append((t.second, EV_TAP, i, t.shop, t.token, t.amount, t.draw,
                           t.stop_after_decline))
        events.sort(key=lambda e: (e[0], e[1], e[2] if e[1] == EV_TAP else 0))
        self._declined_today = set()
        self._used_today: set[str] = set()
        self._day = day
        return DayPlan(day, taps, events)

    def _phone_online(self, token: str) -> bool:
        theft = self.world.thefts.get(token)
        return theft is not None and not theft.phone_offline

    def block(self, token: str, second: int) -> None:
        when = self.world.unix(self._day, second)
        self.centre.block(token, when, "reported by the holder")
        self.reports[token] = when

    def record(self, tap: Tap, code: int) -> None:
        """One tap's final outcome (terminal.tap APPROVED_* / DECLINED_*)."""
        r = self.result
        r.taps += 1
        card = self.world.cards[tap.token]
        kind = card.kind
        approved = code <= T.APPROVED_ONLINE
        online = code == T.APPROVED_ONLINE or code == T.DECLINED_ONLINE
        r.online_requests += online
        name = OUTCOME_NAMES.get(code, str(code))
        if self.keep_outcomes:
            r.outcomes.append((tap.day, tap.shop, tap.token, name))
        self._digest.update(f"{tap.day},{tap.shop},{tap.token},{code};".encode())
        if not approved:
            self._declined_today.add(tap.token)
        if kind == "shopper":
            r.shopper_taps += 1
            r.shopper_online += online
            r.shopper_declined += not approved
            return
        if kind == "prepaid-attacked":
            r.prepaid.add(code)
        elif kind == "tester":
            r.testing.add(code)
        elif kind == "enum":
            r.enumeration.add(code)
        if tap.fraud and approved:
            r.losses[tap.token] += tap.amount
            r.daily_losses[tap.day] += tap.amount
            if tap.token in r.usable_days:
                self._used_today.add(tap.token)
            reported = self.reports.get(tap.token)
            if reported is not None and self.world.unix(tap.day, tap.second) >= reported:
                r.post_report_loss += tap.amount
            theft = self.world.thefts.get(tap.token)
            if online and theft and theft.notify_report_days and tap.token not in \
                    self._notified and tap.token not in self.reports:
                self._notified.add(tap.token)
                when = tap.day + theft.notify_report_days
                if when < self.world.days:
                    self.later_reports.setdefault(when, []).append(
                        (theft.report_hour * 3600, tap.token))

    def skipped(self) -> None:
        self.result.skipped += 1

    def evening(self, day: int, batches, rows: bool = False) -> Push:
        """batches: [(terminal id, records)] of every terminal, in shop order (records:
        64-byte journal records or their dicts; with rows, centre.clearing_row's rows).
        Returns the night's list."""
        r = self.result
        for token in self._declined_today:
            if token in self.world.thefts:
                self.declined_days[token] = self.declined_days.get(token, 0) + 1
        for token in self._used_today:
            r.usable_days[token] += 1
        if rows:  # the night's clearing in one transaction
            self.centre.ingest_rows_many(batches)
        else:
            for terminal_id, records in batches:
                self.centre.ingest_clearing(terminal_id, records)
        business_day = day_of(self.world.unix(day), self.centre.cutover_min)
        if self.policy.detector and not self.policy.overflow_online_only:
            Detector(self.centre).run(business_day)  # (else next_list runs it)
        return self._full_list(business_day)

    def finish(self) -> PolicyResult:
        r = self.result
        r.alerts = len(self.centre.alerts())
        for token in self.world.fraud_tokens():
            r.clearing_losses += sum(x["amount"] for x in self.centre.clearing(token=token)
                                     if x["approved"])
        for kind in ("prepaid-attacked", "tester", "enum"):
            for c in self.world.cards.values():
                if c.kind == kind:
                    r.clearing_losses += sum(x["amount"] for x in
                                             self.centre.clearing(token=c.token)
                                             if x["approved"])
        r.digest = self._digest.hexdigest()[:16]
        r.seconds = time.monotonic() - self.t0
        return r

    def close(self) -> None:
        self.centre.close()


def open_centre(world: World, quota: int | None, path: str | Path, ring) -> Centre:
    key_id, list_key = ring.list_key()
    centre = Centre(path, list_key=list_key, key_id=key_id)
    names = dict(BENCH_ISSUERS)
    for issuer in sorted({c.issuer for c in world.cards.values()}):
        centre.add_issuer(issuer, names.get(issuer, f"issuer {issuer}"), quota)
    before = world.unix(0) - 86400
    centre.add_cards(((c.token, c.issuer, c.product, c.balance, c.credit_limit)
                      for c in world.cards.values() if not c.forged),  # forged: made up
                     now=before)
    for k, token in enumerate(world.background_blocked):
        centre.block(token, before - 3600 * (len(world.background_blocked) - k), "reported")
    return centre


def next_list(centre: Centre, policy: Policy, quota: int | None, day: int, version: int,
              key_id: int) -> bytes:
    """The evening's full list. iD as reported: the reported cards, oldest first, as
    many as the quota holds (a full quota refuses new entries, and nobody knows).
    The project: reported plus detector-flagged tokens, as `termctl centre
    next-list` builds it: each issuer within its quota, and the list says how many
    entries it withheld, so the terminal puts that issuer online-only (the safe
    degradation)."""
    if policy.overflow_online_only:
        nxt = Detector(centre).next_negative_list(day)
        withheld = {i: len(v) for i, v in nxt.overflow.items() if v}
        return listbuild.encode_full(nxt.sections(), version=version, base_day=day,
                                     key_id=key_id, quotas=nxt.quotas, withheld=withheld)
    blocked = sorted(centre.cards(status="blocked"), key=lambda c: c["blocked_at"])
    listed: dict[int, list] = {}
    for card in blocked:
        entries = listed.setdefault(card["issuer"], [])
        if quota is None or len(entries) < quota:
            entries.append((card["token_hash"], 0))
    return listbuild.encode_full(listed, version=version, base_day=day, key_id=key_id)


def check_world(world: World, ring) -> None:
    """Every issuer of the world has a card key in the keyring."""
    known = {int(i) for i in ring.deployment()["issuers"]}
    missing = sorted({c.issuer for c in world.cards.values()} - known)
    if missing:
        raise ToolError(f"issuer {missing[0]} has no card key (the bench keyring has "
                        f"{', '.join(str(i) for i in sorted(known))})")
