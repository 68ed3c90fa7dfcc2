"""The scripted world of the bench demonstration and the fleet simulation.

    world = make_world(days=14, shops=4, shoppers=40, stolen=3, seed=1)
    for day in range(world.days):
        world.reports[day]      # tokens whose holders report them stolen that morning
        world.taps[day]         # the day's taps, in time order

Ordinary shoppers buy at one or two home shops. Stolen credit cards (issuer 1,
the "iD" issuer) are used once a day just under the 10,000 yen floor limit, at a
different shop each day, with the phone offline; their holders report them a
few days later. A prepaid card with no balance is hit by repeated attempts of
17,600 yen. The issuer's negative-list quota is already nearly full with
earlier blocked cards (the fraud surge). Everything follows from the seed.
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass, field

from terminal import params as P

ISSUER_ID = 1  # "iD Bank": the stolen cards' issuer
ISSUER_QP = 2
ISSUER_PREPAID = 3
FLOOR = 10_000
CRIMINAL_AMOUNTS = (9_800, 9_800, 9_500, 5_800, 9_980)
PREPAID_ATTEMPT = 17_600


@dataclass(frozen=True)
class Card:
    token: str
    issuer: int
    product: str  # credit / prepaid
    kind: str  # shopper / stolen / prepaid-attacked / background
    credit_limit: int | None = None
    balance: int | None = None


@dataclass(frozen=True)
class Tap:
    day: int
    second: int  # of the day
    shop: int
    token: str
    amount: int
    fraud: bool
    draw: int  # the random-selection R (1..99) the terminal uses for this tap


@dataclass
class World:
    seed: int
    days: int
    shops: int
    start: dt.date
    cards: dict[str, Card]
    taps: list[list[Tap]]
    reports: list[list[str]]
    stolen_on: dict[str, int] = field(default_factory=dict)
    background_blocked: list[str] = field(default_factory=list)

    def unix(self, day: int, second: int = 0) -> int:
        t0 = dt.datetime.combine(self.start, dt.time(), tzinfo=dt.timezone.utc)
        return int(t0.timestamp()) + day * 86400 + second

    def fraud_tokens(self) -> list[str]:
        return [c.token for c in self.cards.values() if c.kind == "stolen"]


def make_world(days: int = 14, shops: int = 4, shoppers: int = 40, stolen: int = 3,
               seed: int = 1, background: int = 18,
               start: dt.date = dt.date(2026, 11, 2)) -> World:
    if days < 2 or shops < 2:
        raise ValueError("a world needs at least 2 days and 2 shops")
    rnd = random.Random(seed)
    cards: dict[str, Card] = {}
    taps: list[list[Tap]] = [[] for _ in range(days)]
    reports: list[list[str]] = [[] for _ in range(days)]
    world = World(seed, days, shops, start, cards, taps, reports)

    def tap(day, second, shop, token, amount, fraud):
        taps[day].append(Tap(day, second, shop, token, amount, fraud, rnd.randint(1, 99)))

    for i in range(shoppers):
        issuer = ISSUER_ID if i % 2 == 0 else ISSUER_QP
        token = ("4980%012d" if issuer == ISSUER_ID else "3528%012d") % (100 + i)
        cards[token] = Card(token, issuer, "credit", "shopper", credit_limit=500_000)
        homes = rnd.sample(range(shops), min(shops, rnd.choice((1, 1, 2))))
        for day in range(days):
            if rnd.random() < 0.55:
                amount = shopper_amount(rnd)
                tap(day, rnd.randint(8 * 3600, 21 * 3600), rnd.choice(homes), token, amount,
                    False)
    for i in range(stolen):
        token = "4980%012d" % (900_000 + i)
        cards[token] = Card(token, ISSUER_ID, "credit", "stolen", credit_limit=500_000)
        first = rnd.randint(0, max(0, min(2, days - 2)))
        world.stolen_on[token] = first
        report_day = first + rnd.randint(2, 4)
        if report_day < days:
            reports[report_day].append(token)
        shop = rnd.randrange(shops)
        for day in range(first, days):
            shop = rnd.choice([s for s in range(shops) if s != shop])
            tap(day, rnd.randint(10 * 3600, 20 * 3600), shop, token,
                rnd.choice(CRIMINAL_AMOUNTS), True)
    token = "5000%012d" % 7
    cards[token] = Card(token, ISSUER_PREPAID, "prepaid", "prepaid-attacked", balance=0)
    attack_shop = rnd.randrange(shops)
    for day in (1, 2):
        if day < days:
            for k in range(3):
                tap(day, 3 * 3600 + k * 60, attack_shop, token, PREPAID_ATTEMPT, True)
    for i in range(background):
        token = "4980%012d" % (500_000 + i)
        cards[token] = Card(token, ISSUER_ID, "credit", "background", credit_limit=500_000)
        world.background_blocked.append(token)
    for day_taps in taps:
        day_taps.sort(key=lambda t: (t.second, t.shop, t.token))
    return world


def shopper_amount(rnd: random.Random) -> int:
    """Mostly small, sometimes near the floor, rarely above it."""
    x = rnd.random()
    if x < 0.70:
        return rnd.randrange(150, 2_000, 10)
    if x < 0.92:
        return rnd.randrange(2_000, 6_000, 10)
    if x < 0.98:
        return rnd.randrange(6_000, FLOOR, 10)
    return rnd.randrange(FLOOR, 30_000, 100)


@dataclass(frozen=True)
class Policy:
    key: str
    name: str
    params: dict[str, int]
    list_quota: int  # entries per issuer on the negative list
    overflow_online_only: bool  # push every entry and let the quota overflow go online
    detector: bool  # the centre lists flagged tokens, not only reported ones


_NO_LIMIT = 100_000_000

POLICIES = {
    "id": Policy(
        "id", "iD as reported",
        {"floor_limit": FLOOR, "daily_offline_cap": FLOOR, "cumulative_offline_cap": _NO_LIMIT,
         "terminal_daily_cap": _NO_LIMIT, "lower_consecutive_offline": 255,
         "upper_consecutive_offline": 255, "random_target_pct": 0,
         "random_max_target_pct": 0, "random_threshold": 0, "split_window_s": 0,
         "decline_limit": 100, "new_card_online": 0},
        list_quota=20, overflow_online_only=False, detector=False),
    "hardened": Policy(
        "hardened", "hardened (project defaults)",
        {name: default for name, default, _lo, _hi in P.TABLE},
        list_quota=20, overflow_online_only=True, detector=True),
}
