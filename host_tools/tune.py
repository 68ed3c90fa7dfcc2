"""termctl tune: the parameters' Pareto frontier of fraud loss against the ordinary
shoppers' online rate and the authorisation fees, over worlds and seeds.

    t = tune(worlds, seeds=(1, 2, 3), ring=ring, budget=40, client=None)
    print(t.table())                  # the frontier, best loss first
    t.plot(Path("tune.png"))
    t.recommended, t.why              # the point it recommends, and why

Every candidate is the project's policy as designed with some parameters changed
(SPACE), run on every (world, seed) beside "iD as reported" on the same world, so
a loss is a share of what iD loses there. A candidate's figures: its worst and mean
share of iD's losses (total, and after the holders' reports), its worst ordinary
online rate, and its fees per 1,000 taps. The search: the defaults, random points
of SPACE, then the neighbours (one value changed) of the frontier's points; every
draw comes from `search_seed`, so a tune is repeatable.

The goals of docs/decision.md: online rate <= 10 %, losses after the report <= 5 %
and all losses <= 40 % of iD's, on every world and seed. The recommended point:
of the points that meet them with their worst online rate at most ONLINE_MARGIN
of its goal (8 %), those whose mean loss is within LOSS_TOLERANCE (2 % of iD's
losses) of the smallest, and of those the cheapest (fees, then online rate):
nearly the least fraud for the least cost. If none does, the frontier point
that misses the goals by the least.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field, replace
from pathlib import Path

from host_tools.simulate import run_many
from host_tools.world import DEFAULTS, POLICIES, Policy, WorldSpec, generate
from terminal.params import check_consistent

# What the search varies. upper_consecutive_offline follows lower (twice it). The
# random threshold stays at or below 4,000: the terminal refuses a threshold at or
# above the floor, so a higher default would refuse floors an operator may set.
SPACE: dict[str, list] = {
    "floor_limit": [5_000, 7_000, 10_000],
    "daily_offline_cap": [10_000, 20_000, 30_000],
    "cumulative_offline_cap": [20_000, 30_000, 50_000],
    "lower_consecutive_offline": [3, 5, 8, 12, 16],
    "random_target_pct": [0, 1, 2, 5],
    "random_max_target_pct": [10, 25, 50],
    "random_threshold": [2_000, 3_000, 4_000],
    "new_card_online": [0, 1],
    "decline_limit": [2, 3, 5],
    "list": ["flash", "quota"],  # flash: sized to the flash; quota: the world's quota
    "push": ["world", "daily"],  # world: the schedule the world's terminals take
}
GOALS = {"online": 0.10, "post": 0.05, "loss": 0.40}
# Points whose mean loss is within this share of iD's losses of the best count as
# losing as little: of those, the recommended point is the cheapest.
LOSS_TOLERANCE = 0.02
# A recommended point keeps its worst online rate this far under the goal: the
# worst of a few seeds understates the worst of more (make bench runs five).
ONLINE_MARGIN = 0.8


@dataclass
class Point:
    settings: dict
    online: float = 0.0  # worst ordinary online rate over worlds and seeds
    online_mean: float = 0.0
    loss: float = 0.0  # worst share of iD's losses
    loss_mean: float = 0.0
    post: float = 0.0  # worst share of iD's losses after the holders' reports
    fees: float = 0.0  # yen per 1,000 taps, mean
    runs: list[dict] = field(default_factory=list)

    def meets(self) -> bool:
        return (self.online <= GOALS["online"] and self.post <= GOALS["post"]
                and self.loss <= GOALS["loss"])

    def shortfall(self) -> float:
        return (max(0, self.online - GOALS["online"]) / GOALS["online"]
                + max(0, self.post - GOALS["post"]) / GOALS["post"]
                + max(0, self.loss - GOALS["loss"]) / GOALS["loss"])

    def label(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.settings.items()
                         if DEFAULT_SETTINGS.get(k) != v) or "defaults"


DEFAULT_SETTINGS = {**{k: DEFAULTS[k] for k in SPACE if k in DEFAULTS}, "list": "flash",
                    "push": "world"}


def policy_of(settings: dict, base: Policy | None = None) -> Policy | None:
    """The designed policy with these settings, or None if the terminal refuses them."""
    base = base or POLICIES["designed"]
    params = dict(base.params)
    for k, v in settings.items():
        if k in DEFAULTS:
            params[k] = v
    if "lower_consecutive_offline" in settings:
        params["upper_consecutive_offline"] = min(255, 2 * settings["lower_consecutive_offline"])
    values = [params.get(name, DEFAULTS[name]) for name in DEFAULTS]
    if check_consistent(values):
        return None
    quota = {"flash": "flash", "quota": "world"}[settings.get("list", "flash")]
    return replace(base, params=params, list_quota=quota, push=settings.get("push", "world"),
                   name="tuned")


@dataclass
class Tuning:
    points: list[Point]
    frontier: list[Point]
    recommended: Point
    why: str
    worlds: list[str]
    seeds: list[int]

    def table(self) -> str:
        head = (f"{'online worst':>12}{'mean':>7}{'loss worst':>12}{'mean':>7}"
                f"{'post worst':>12}{'fees/1k':>9}  goals  settings (changed from defaults)")
        lines = [f"{len(self.points)} points on {len(self.worlds)} worlds x "
                 f"{len(self.seeds)} seeds; frontier of {len(self.frontier)}:", head]
        for p in sorted(self.frontier, key=lambda p: (p.loss_mean, p.online)):
            mark = "*" if p is self.recommended else " "
            lines.append(f"{p.online:>12.1%}{p.online_mean:>7.1%}{p.loss:>12.1%}"
                         f"{p.loss_mean:>7.1%}{p.post:>12.1%}{p.fees:>9.0f}  "
                         f"{'met ' if p.meets() else 'miss'}{mark} {p.label()}")
        lines += ["", f"recommended: {self.recommended.label()}", f"  why: {self.why}"]
        return "\n".join(lines)

    def plot(self, path: Path) -> Path:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(8, 5))
        xs = [100 * p.online for p in self.points]
        ys = [100 * p.loss_mean for p in self.points]
        sc = ax.scatter(xs, ys, c=[p.fees for p in self.points], cmap="viridis", s=18)
        fig.colorbar(sc, ax=ax, label="authorisation fees, yen per 1,000 taps")
        front = sorted(self.frontier, key=lambda p: p.online)
        ax.plot([100 * p.online for p in front], [100 * p.loss_mean for p in front],
                color="black", linewidth=1, label="Pareto frontier")
        r = self.recommended
        ax.scatter([100 * r.online], [100 * r.loss_mean], marker="*", s=240, color="red",
                   label="recommended", zorder=5)
        ax.axvline(100 * GOALS["online"], color="red", alpha=0.3, linestyle="--")
        ax.axhline(100 * GOALS["loss"], color="red", alpha=0.3, linestyle="--")
        ax.set_xlabel("ordinary shoppers' online rate, worst world and seed (%)")
        ax.set_ylabel("fraud losses, mean share of iD as reported (%)")
        ax.set_title(f"termctl tune: {len(self.points)} points, {len(self.worlds)} worlds x "
                     f"{len(self.seeds)} seeds")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return path

    def to_json(self) -> str:
        return json.dumps({"worlds": self.worlds, "seeds": self.seeds, "goals": GOALS,
                           "recommended": self.recommended.settings, "why": self.why,
                           "points": [{"settings": p.settings, "online": p.online,
                                       "online_mean": p.online_mean, "loss": p.loss,
                                       "loss_mean": p.loss_mean, "post": p.post,
                                       "fees": p.fees, "frontier": p in self.frontier,
                                       "runs": p.runs} for p in self.points]}, indent=1)


def measure(settings: dict, results, baselines, fee: int) -> Point:
    """A point from its results and iD's, run for run."""
    p = Point(dict(settings))
    online, losses, posts, fees = [], [], [], []
    for (name, seed), r in results.items():
        b = baselines[(name, seed)]
        online.append(r.online_rate())
        losses.append(r.total_loss / max(b.total_loss, 1))
        posts.append(r.post_report_loss / max(b.post_report_loss, 1))
        fees.append(1000 * r.fees(fee) / max(r.taps, 1))
        p.runs.append({"world": name, "seed": seed, "online": r.online_rate(),
                       "loss": r.total_loss, "id_loss": b.total_loss,
                       "post": r.post_report_loss, "id_post": b.post_report_loss})
    p.online, p.online_mean = max(online), sum(online) / len(online)
    p.loss, p.loss_mean = max(losses), sum(losses) / len(losses)
    p.post = max(posts)
    p.fees = sum(fees) / len(fees)
    return p


def pareto(points: list[Point]) -> list[Point]:
    """Points no other point beats on mean loss, worst online rate and fees at once."""
    def beats(a, b):
        ka = (a.loss_mean, a.online, a.fees)
        kb = (b.loss_mean, b.online, b.fees)
        return all(x <= y for x, y in zip(ka, kb)) and ka != kb

    return [p for p in points if not any(beats(q, p) for q in points)]


def tune(worlds: dict[str, WorldSpec], seeds, ring, budget: int = 40, fee: int = 5,
         client=None, search_seed: int = 1, say=print) -> Tuning:
    rnd = random.Random(search_seed)
    built = {(n, s): generate(spec, s) for n, spec in worlds.items() for s in seeds}
    keys = list(built)
    baseline_runs = run_many([(built[k], POLICIES["id"]) for k in keys], ring, fee, client,
                             label="iD as reported")
    baselines = dict(zip(keys, baseline_runs))
    seen: dict[str, Point] = {}
    refused: set[str] = set()  # combinations the terminal's parameter rules refuse

    def evaluate(candidates: list[dict]) -> None:
        todo = []
        for c in candidates:
            key = json.dumps(c, sort_keys=True)
            if key in seen or key in refused:
                continue
            policy = policy_of(c)
            if policy is None:
                refused.add(key)
                continue
            seen[key] = Point(c)
            todo.append((key, c, policy))
        jobs = [(built[k], policy) for _, _, policy in todo for k in keys]
        results = run_many(jobs, ring, fee, client, label="tune")
        for i, (key, c, _) in enumerate(todo):
            mine = dict(zip(keys, results[i * len(keys):(i + 1) * len(keys)]))
            seen[key] = measure(c, mine, baselines, fee)

    first = [dict(DEFAULT_SETTINGS)]
    while len(first) < max(1, budget * 2 // 3):
        first.append({k: rnd.choice(v) for k, v in SPACE.items()})
    evaluate(first)
    say(f"tune: {len(seen)} points measured; refining from the frontier")
    left = budget - len(seen)
    while left > 0:
        # greedy: the unmeasured neighbours of the frontier point nearest the goals
        # (then the next), a batch at a time, so the batch runs in parallel
        front = pareto([p for p in seen.values() if p.runs])
        near = sorted(front, key=lambda p: (p.shortfall(), p.loss_mean, p.online))
        batch: list[dict] = []
        for p in near:
            moves = [{**p.settings, k: v} for k, values in SPACE.items() for v in values
                     if v != p.settings.get(k)]
            rnd.shuffle(moves)
            batch += [m for m in moves if json.dumps(m, sort_keys=True) not in seen
                      and json.dumps(m, sort_keys=True) not in refused
                      and m not in batch][:min(left, 8) - len(batch)]
            if len(batch) >= min(left, 8):
                break
        if not batch:
            break
        before = len(seen)
        evaluate(batch)
        left -= max(1, len(seen) - before)
    points = list(seen.values())
    points = [p for p in points if p.runs]
    front = pareto(points)
    ok = [p for p in points if p.meets() and p.online <= ONLINE_MARGIN * GOALS["online"]]
    if ok:
        least = min(p.loss_mean for p in ok)
        close = [p for p in ok if p.loss_mean <= least + LOSS_TOLERANCE]
        best = min(close, key=lambda p: (p.fees, p.online, p.loss_mean))
        why = (f"it meets every goal on every world and seed (worst online rate "
               f"{best.online:.1%} <= {ONLINE_MARGIN * GOALS['online']:.0%}, a margin under "
               f"10 %; worst post-report loss {best.post:.1%} <= 5 %, worst total loss "
               f"{best.loss:.1%} <= 40 % of iD's); of the {len(ok)} points that do, "
               f"{len(close)} lose within {LOSS_TOLERANCE:.0%} of iD's losses of the "
               f"least (mean {least:.1%}), and it is the cheapest of those "
               f"({best.fees:.0f} yen of fees per 1,000 taps, mean loss {best.loss_mean:.1%})")
        if best not in front:
            front.append(best)
    else:
        best = min(front, key=lambda p: (p.shortfall(), p.loss_mean))
        why = ("no point met every goal; this frontier point misses them by the least "
               f"(worst online {best.online:.1%}, post {best.post:.1%}, loss {best.loss:.1%})")
    return Tuning(points, front, best, why, list(worlds), list(seeds))
