"""The worlds of the bench demonstration and the fleet simulation, and the policies.

    world = make_world(days=14, shops=4, shoppers=40, stolen=3, seed=1)   # built in
    world = generate(scenario.load("host_tools/scenarios/adaptive.toml"), seed=3)
    for day in range(world.days):
        world.reports[day]       # [(second, token)]: holders who report that day
        world.taps[day]          # the day's scripted taps, in time order
        world.plan(day, ...)     # plus what the adaptive thieves decide that morning

A world is a `WorldSpec` (scenario files give one; docs/simulation.md has their
keys) and a seed; everything follows from the two. The built-in world (the
seed article's incident): ordinary shoppers buy at one or two home shops; stolen
credit cards (issuer 1, the "iD" issuer, new phone wallets) are used once a day
just under the 10,000 yen floor limit at a different shop each day with the phone
offline, and their holders report them a few days later; a prepaid card with no
balance is hit by repeated attempts of 17,600 yen; the issuer's negative-list quota
is already nearly full with earlier blocked cards (the fraud surge).

Holders are told of online sales: the issuer notifies the holder of every sale it
authorises (offline sales reach it only with the clearing), so a fraudulent sale
approved online makes its holder report the card `notify_report_days` later.
"""

from __future__ import annotations

import datetime as dt
import random
import zlib
from dataclasses import dataclass, field, replace
from typing import NamedTuple

from terminal import params as P

ISSUER_ID = 1  # "iD Bank": the stolen cards' issuer
ISSUER_QP = 2
ISSUER_PREPAID = 3
FLOOR = 10_000
CRIMINAL_AMOUNTS = (9_800, 9_800, 9_500, 5_800, 9_980)
PREPAID_ATTEMPT = 17_600
# (probability, lowest, highest + 1, step): mostly small, sometimes near the floor,
# rarely above it
SHOPPER_AMOUNTS = ((0.70, 150, 2_000, 10), (0.22, 2_000, 6_000, 10),
                   (0.06, 6_000, FLOOR, 10), (0.02, FLOOR, 30_000, 100))
_PREFIX = {ISSUER_ID: "4980", ISSUER_QP: "3528", ISSUER_PREPAID: "5000"}
PUSH_SCHEDULES = ("daily", "hourly")
STRATEGIES = ("fixed", "adaptive")
SHOP_CHOICES = ("new_each_day", "random", "same")
FRAUD_KINDS = ("stolen", "prepaid-attacked", "tester", "enum")


# -- what a scenario file describes --------------------------------------------------


@dataclass(frozen=True)
class Shoppers:
    count: int = 40
    issuers: tuple[int, ...] = (ISSUER_ID, ISSUER_QP)  # shopper i has issuers[i % n]
    purchase_prob: float = 0.55  # chance of one purchase on a given day
    home_shops: tuple[int, ...] = (1, 1, 2)  # how many home shops: one of these
    hours: tuple[int, int] = (8, 21)
    amounts: tuple[tuple[float, int, int, int], ...] = SHOPPER_AMOUNTS
    # ATC at issue, from this range (the same for the last online ATC): established
    # cards that have been online before. (0, 0): new cards, never online.
    online_history: tuple[int, int] = (20, 400)
    credit_limit: int = 500_000


@dataclass(frozen=True)
class Stolen:
    count: int = 3
    issuer: int = ISSUER_ID
    strategy: str = "fixed"  # fixed: amounts, shops, times as scripted; adaptive: see plan
    amounts: tuple[int, ...] = CRIMINAL_AMOUNTS  # fixed: one of these per purchase
    per_day: int = 1  # purchases a day (adaptive: at most)
    shop_choice: str = "new_each_day"
    hours: tuple[int, int] = (10, 20)
    first_day: tuple[int, int] = (0, 2)
    report_delay: tuple[int, int] = (2, 4)  # days from first use to the holder's report
    report_hour: int = 7
    phone_offline: bool = True  # False: the issuer's remote wipe reaches it at the report
    notify_report_days: int = 1  # after an online-approved sale; 0: holder never notified
    online_history: tuple[int, int] = (0, 0)  # new phone wallets: never online
    credit_limit: int = 500_000
    give_up_after: int = 2  # adaptive: abandon the card after this many days with a decline


@dataclass(frozen=True)
class CardTesting:
    cards: int = 1
    issuer: int = ISSUER_PREPAID
    balances: tuple[int, ...] = (0,)  # card j has balances[j % n]
    amounts: tuple[int, ...] = (PREPAID_ATTEMPT,)  # attempt k: amounts[min(k, n - 1)]
    attempts_per_day: int = 3
    days: tuple[int, ...] = (1, 2)
    hour: int = 3
    interval_s: int = 60
    shops: str = "one"  # one: every card at one shop; spread: a random shop per card and day
    stop_after_decline: bool = False  # a card's later attempts that day only if none declined


@dataclass(frozen=True)
class Enumeration:
    cards: int = 60  # distinct credit cards tried once each in one burst
    issuer: int = ISSUER_QP
    amount: int = 300
    day: int = 5
    hour: int = 2
    interval_s: int = 10
    forged_pct: int = 50  # share of the images made up (their MAC does not verify)


@dataclass(frozen=True)
class Lists:
    quota: int = 20  # entries per issuer on the scheme's list ("iD as reported")
    background_blocked: tuple[tuple[int, int], ...] = ((ISSUER_ID, 18),)  # already listed
    push: str = "hourly"  # what the terminals can take: daily lists, or hourly deltas too


@dataclass(frozen=True)
class WorldSpec:
    name: str = "built-in: the seed's incident"
    days: int = 14
    shops: int = 4
    start: dt.date = dt.date(2026, 11, 2)
    shoppers: Shoppers = Shoppers()
    stolen: tuple[Stolen, ...] = (Stolen(),)
    card_testing: tuple[CardTesting, ...] = (CardTesting(),)
    enumeration: tuple[Enumeration, ...] = ()
    lists: Lists = Lists()


# -- the world a spec and a seed make -------------------------------------------------


@dataclass(frozen=True)
class Card:
    token: str
    issuer: int
    product: str  # credit / prepaid
    kind: str  # shopper / stolen / prepaid-attacked / tester / enum / background
    credit_limit: int | None = None
    balance: int | None = None
    online_atc: int = 0  # ATC and last online ATC at issue (0: a new card)
    forged: bool = False  # the image's MAC does not verify


class Tap(NamedTuple):
    day: int
    second: int  # of the day
    shop: int
    token: str
    amount: int
    fraud: bool
    draw: int  # the random-selection R (1..99) the terminal uses for this tap
    stop_after_decline: bool = False  # skipped if this card was declined earlier today


@dataclass
class World:
    seed: int
    days: int
    shops: int
    start: dt.date
    cards: dict[str, Card]
    taps: list[list[Tap]]
    reports: list[list[tuple[int, str]]]  # per day: (second, token) of holders' reports
    stolen_on: dict[str, int] = field(default_factory=dict)  # token -> first day of use
    background_blocked: list[str] = field(default_factory=list)
    thefts: dict[str, Stolen] = field(default_factory=dict)  # stolen token -> its thief
    spec: WorldSpec = WorldSpec()

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def push(self) -> str:
        return self.spec.lists.push

    @property
    def quota(self) -> int:
        return self.spec.lists.quota

    def unix(self, day: int, second: int = 0) -> int:
        t0 = dt.datetime.combine(self.start, dt.time(), tzinfo=dt.timezone.utc)
        return int(t0.timestamp()) + day * 86400 + second

    def fraud_tokens(self) -> list[str]:
        return [c.token for c in self.cards.values() if c.kind == "stolen"]

    def tap_count(self) -> int:
        return sum(len(t) for t in self.taps)

    def plan(self, day: int, params: dict[str, int], counters, history) -> list[Tap]:
        """The taps the adaptive thieves decide on this morning, from what they can
        see: their card's counters (`counters(token)` -> a CardRecord) and their own
        past outcomes (`history[token]`: days with a decline); `params` are the
        terminal parameters in force, every cap they can infer."""
        out = []
        params = {**DEFAULTS, **params}  # what a policy leaves out is the terminal's default
        for token, theft in self.thefts.items():
            if theft.strategy != "adaptive" or day < self.stolen_on[token]:
                continue
            if theft.give_up_after and history.get(token, 0) >= theft.give_up_after:
                continue
            rnd = random.Random(f"{self.seed}/{token}/{day}")
            out += _adaptive_day(self, theft, token, day, counters(token), params, rnd)
        return out


def make_world(days: int = 14, shops: int = 4, shoppers: int = 40, stolen: int = 3,
               seed: int = 1, background: int = 18,
               start: dt.date = dt.date(2026, 11, 2)) -> World:
    """The built-in world (the seed's incident) at this size."""
    spec = WorldSpec(days=days, shops=shops, start=start,
                     shoppers=replace(WorldSpec.shoppers, count=shoppers),
                     stolen=(replace(Stolen(), count=stolen),),
                     lists=replace(Lists(), background_blocked=((ISSUER_ID, background),)))
    return generate(spec, seed)


def resize(spec: WorldSpec, **sizes) -> WorldSpec:
    """The spec with days, shops, shoppers (count) or stolen (count of the first
    group) replaced; None leaves one as it is."""
    out = spec
    if sizes.get("days") is not None:
        out = replace(out, days=sizes["days"])
    if sizes.get("shops") is not None:
        out = replace(out, shops=sizes["shops"])
    if sizes.get("shoppers") is not None:
        out = replace(out, shoppers=replace(out.shoppers, count=sizes["shoppers"]))
    if sizes.get("stolen") is not None and out.stolen:
        out = replace(out, stolen=(replace(out.stolen[0], count=sizes["stolen"]),)
                      + out.stolen[1:])
    return out


def generate(spec: WorldSpec, seed: int) -> World:
    if spec.days < 2 or spec.shops < 2:
        raise ValueError("a world needs at least 2 days and 2 shops")
    rnd = random.Random(seed)
    world = World(seed, spec.days, spec.shops, spec.start, {}, [[] for _ in range(spec.days)],
                  [[] for _ in range(spec.days)], spec=spec)
    serial: dict[int, int] = {}

    def token_for(issuer: int, base: int) -> str:
        n = serial[base] = serial.get(base, -1) + 1
        return _PREFIX.get(issuer, "%04d" % (9000 + issuer % 1000)) + "%012d" % (base + n)

    def tap(day, second, shop, token, amount, fraud, stop=False):
        world.taps[day].append(Tap(day, second, shop, token, amount, fraud,
                                   rnd.randint(1, 99), stop))

    _shoppers(world, spec.shoppers, rnd, token_for, tap)
    for group in spec.stolen:
        _stolen(world, group, rnd, token_for, tap)
    for k, ring in enumerate(spec.card_testing):
        _card_testing(world, ring, k, rnd, token_for, tap)
    for issuer, n in spec.lists.background_blocked:
        for _ in range(n):
            token = token_for(issuer, 500_000)
            world.cards[token] = Card(token, issuer, "credit", "background",
                                      credit_limit=500_000)
            world.background_blocked.append(token)
    for burst in spec.enumeration:
        _enumeration(world, burst, rnd, token_for, tap)
    for day_taps in world.taps:
        day_taps.sort(key=tap_order)
    return world


def tap_order(t: Tap) -> tuple[int, int, str]:
    """The order taps of a day happen in (both fleets, and the serial centre)."""
    return (t.second, t.shop, t.token)


def _history(token: str, span: tuple[int, int]) -> int:
    lo, hi = span
    return lo + zlib.crc32(token.encode()) % (hi - lo + 1) if hi else 0


def _shoppers(world, spec: Shoppers, rnd, token_for, tap) -> None:
    for i in range(spec.count):
        issuer = spec.issuers[i % len(spec.issuers)]
        token = token_for(issuer, 100)
        world.cards[token] = Card(token, issuer, "credit", "shopper",
                                  credit_limit=spec.credit_limit,
                                  online_atc=_history(token, spec.online_history))
        homes = rnd.sample(range(world.shops), min(world.shops, rnd.choice(spec.home_shops)))
        for day in range(world.days):
            if rnd.random() < spec.purchase_prob:
                amount = shopper_amount(rnd, spec.amounts)
                tap(day, rnd.randint(spec.hours[0] * 3600, spec.hours[1] * 3600),
                    rnd.choice(homes), token, amount, False)


def _stolen(world, spec: Stolen, rnd, token_for, tap) -> None:
    for _ in range(spec.count):
        token = token_for(spec.issuer, 900_000)
        world.cards[token] = Card(token, spec.issuer, "credit", "stolen",
                                  credit_limit=spec.credit_limit,
                                  online_atc=_history(token, spec.online_history))
        world.thefts[token] = spec
        first = rnd.randint(spec.first_day[0], max(spec.first_day[0],
                                                   min(spec.first_day[1], world.days - 2)))
        world.stolen_on[token] = first
        report_day = first + rnd.randint(*spec.report_delay)
        if report_day < world.days:
            world.reports[report_day].append((spec.report_hour * 3600, token))
        shop = rnd.randrange(world.shops)
        if spec.strategy != "fixed":
            continue  # planned each morning (World.plan)
        for day in range(first, world.days):
            used: list[int] = []
            for _ in range(spec.per_day):
                shop = _next_shop(spec.shop_choice, shop, used, world.shops, rnd)
                used.append(shop)
                tap(day, rnd.randint(spec.hours[0] * 3600, spec.hours[1] * 3600), shop, token,
                    rnd.choice(spec.amounts), True)


def _next_shop(choice: str, last: int, used: list[int], shops: int, rnd) -> int:
    if choice == "same":
        return last
    if choice == "random":
        return rnd.randrange(shops)
    avoid = set(used) | {last}
    options = [s for s in range(shops) if s not in avoid] or [s for s in range(shops)
                                                              if s != last]
    return rnd.choice(options)


def _card_testing(world, spec: CardTesting, k: int, rnd, token_for, tap) -> None:
    tokens = []
    for j in range(spec.cards):
        token = token_for(spec.issuer, 7 + 100_000 * k)
        kind = "prepaid-attacked" if k == 0 and spec.cards == 1 else "tester"
        world.cards[token] = Card(token, spec.issuer, "prepaid", kind,
                                  balance=spec.balances[j % len(spec.balances)])
        tokens.append(token)
    shop = rnd.randrange(world.shops)
    for day in spec.days:
        if not 0 <= day < world.days:
            continue
        for j, token in enumerate(tokens):
            if spec.shops == "spread":
                shop = rnd.randrange(world.shops)
            base = spec.hour * 3600 + j * spec.attempts_per_day * spec.interval_s
            for a in range(spec.attempts_per_day):
                amount = spec.amounts[min(a, len(spec.amounts) - 1)]
                tap(day, min(base + a * spec.interval_s, 86_399), shop, token, amount, True,
                    spec.stop_after_decline and a > 0)


def _enumeration(world, spec: Enumeration, rnd, token_for, tap) -> None:
    if not 0 <= spec.day < world.days:
        return
    shop = rnd.randrange(world.shops)
    for j in range(spec.cards):
        token = token_for(spec.issuer, 700_000)
        forged = rnd.randrange(100) < spec.forged_pct
        world.cards[token] = Card(token, spec.issuer, "credit", "enum", credit_limit=500_000,
                                  online_atc=_history(token, (20, 400)), forged=forged)
        tap(spec.day, min(spec.hour * 3600 + j * spec.interval_s, 86_399), shop, token,
            spec.amount, True)


def shopper_amount(rnd: random.Random, bands=SHOPPER_AMOUNTS) -> int:
    x = rnd.random()
    acc = 0.0
    for p, lo, hi, step in bands:
        acc = round(acc + p, 9)  # 0.70 + 0.22 is 0.9199999999999999 in binary
        if x < acc:
            return rnd.randrange(lo, hi, step)
    _, lo, hi, step = bands[-1]
    return rnd.randrange(lo, hi, step)


def _adaptive_day(world: World, theft: Stolen, token: str, day: int, card, params, rnd
                  ) -> list[Tap]:
    """An adaptive thief's purchases today: below every cap it can infer (floor,
    card-side daily and since-online amounts, the terminal's daily cap, the lower
    consecutive-offline count) and below the random-selection ramp when there is
    one; a different shop and time for each, the amounts varied. It stops for the
    day at a decline (the flag on each tap)."""
    p = params
    floor = p["floor_limit"]
    top = floor - 1
    if 0 < p["random_threshold"] < floor and p["random_max_target_pct"] > p[
            "random_target_pct"]:
        top = p["random_threshold"] - 1  # the ramp would raise its odds of going online
    top = min(top, p["daily_offline_cap"], p["terminal_daily_cap"],
              p["cumulative_offline_cap"])
    bday = (world.unix(day, 12 * 3600) - p["business_day_cutover_min"] * 60) // 86400
    today = card.offline_today if card.offline_day >= bday else 0
    since = card.offline_since_online
    run = card.atc - card.last_online_atc
    lowest = 500
    times = sorted(rnd.randint(theft.hours[0] * 3600, theft.hours[1] * 3600)
                   for _ in range(theft.per_day))
    shops = rnd.sample(range(world.shops), min(world.shops, theft.per_day))
    out = []
    for k in range(theft.per_day):
        if run + 1 > p["lower_consecutive_offline"]:
            break  # the next sale would be sent online
        room = min(top, p["daily_offline_cap"] - today, p["cumulative_offline_cap"] - since)
        if room < lowest:
            break
        amount = rnd.randrange(max(lowest, room * 6 // 10), room + 1, 10) // 10 * 10
        amount = max(lowest, amount)
        out.append(Tap(day, times[k], shops[k % len(shops)], token, amount, True,
                       rnd.randint(1, 99), True))
        run += 1
        today += amount
        since += amount
    return out


# -- policies ------------------------------------------------------------------------


@dataclass(frozen=True)
class Policy:
    key: str
    name: str
    params: dict[str, int]
    # entries per issuer on the list: "world" (the scheme's quota of the world),
    # "flash" (no quota: as many as the board's flash holds) or a number
    list_quota: str | int
    overflow_online_only: bool  # a quota overflow puts that issuer online-only
    detector: bool  # the centre lists flagged tokens, not only reported ones
    push: str = "daily"  # daily, or "world": the schedule the world's terminals take

    def quota_for(self, world: World) -> int | None:
        if self.list_quota == "world":
            return world.quota
        if self.list_quota == "flash":
            return None
        return int(self.list_quota)

    def push_for(self, world: World) -> str:
        return world.push if self.push == "world" else self.push


_NO_LIMIT = 100_000_000
DEFAULTS = {name: default for name, default, _lo, _hi in P.TABLE}

POLICIES = {
    "id": Policy(
        "id", "iD as reported",
        {"floor_limit": FLOOR, "daily_offline_cap": FLOOR, "cumulative_offline_cap": _NO_LIMIT,
         "terminal_daily_cap": _NO_LIMIT, "lower_consecutive_offline": 255,
         "upper_consecutive_offline": 255, "random_target_pct": 0,
         "random_max_target_pct": 0, "random_threshold": 0, "split_window_s": 0,
         "decline_limit": 100, "new_card_online": 0, "enum_distinct_limit": 10_000},
        list_quota="world", overflow_online_only=False, detector=False),
    "quota": Policy(
        "quota", "project, 20-entry quota", dict(DEFAULTS),
        list_quota="world", overflow_online_only=True, detector=True),
    "designed": Policy(
        "designed", "project as designed", dict(DEFAULTS),
        list_quota="flash", overflow_online_only=True, detector=True, push="world"),
}
