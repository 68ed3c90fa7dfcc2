"""The fleet simulation (host_tools/simulate.py): the fast fleet's taps per second
per core and its cost per tap across fleet sizes, a scaling table (days x shops),
Dask with one and two workers, and the project's defaults against "iD as
reported" on the demo's world and every shipped scenario, over several seeds.

Taps per second per core: taps over the process time the groups spent (the tap
path and the clearing rows), so the figure does not move with other load on the
machine; wall times are wall times. The quick form (inside `make test`) runs
small worlds for the per-tap figures and the defaults, and leaves out the
scaling table and Dask (tests/test_simulate.py runs a 2-worker cluster).
"""

import os
import tempfile
import time
from pathlib import Path

from bench import goal

# The large world of issue 13: 30 days, 1,000 shops, 100,000 cards (shoppers of the
# built-in world: each buys on 55 % of days, 0.55 taps a card a day).
LARGE = {"days": 30, "shops": 1000, "shoppers": 100_000}


def run(quick=False):
    from host_tools import simulate
    from host_tools.keyring import Keyring

    with tempfile.TemporaryDirectory() as tmp:
        ring = Keyring.open(Path(tmp) / "keyring.json")
        tables = [_per_tap(ring, quick)]
        # The quick form (in `make test`) leaves Dask out: starting its clusters was
        # most of its time, and tests/test_simulate.py already runs a 2-worker cluster
        # against a serial run.
        if not quick:
            with simulate.dask_client(workers=2) as client:  # one cluster start for both
                tables += [_scaling(ring, client), _dask(ring, client)]
        return tables + [_defaults(ring, quick)]


def _world(days, shops, shoppers, seed=1, name=None):
    from host_tools import scenario
    from host_tools.world import WorldSpec, generate, resize

    spec = scenario.load(name) if name else WorldSpec()
    return generate(resize(spec, days=days, shops=shops, shoppers=shoppers), seed)


def _per_tap(ring, quick):
    from host_tools import simulate
    from host_tools.world import POLICIES

    per_shop, days, sizes = (40, 3, (20, 60, 160)) if quick else (100, 5, (10, 100, 1000))
    rows, rates, cost = [], [], {}
    for shops in sizes:
        world = _world(days, shops, shops * per_shop)
        r = simulate.run(world, POLICIES["designed"], ring, keep_outcomes=False)
        rate = r.taps_per_core_second()
        rates.append(rate)
        cost[shops] = 1e6 / rate
        rows.append([shops, f"{r.taps:,}", f"{rate:,.0f}", f"{cost[shops]:.0f}",
                     f"{r.taps / r.fleet_cpu:,.0f}", f"{r.fleet_seconds:.1f}",
                     f"{r.centre_seconds:.1f}"])
    t = {"title": f"Fast fleet: taps per second per core; {per_shop} cards a shop, {days} days",
         "columns": ["shops", "taps", "taps/s per core", "us per tap",
                     "with cards and rows", "fleet wall s", "centre wall s"],
         "rows": rows,
         "notes": "One group in this process, the project's policy as designed, the "
                  "built-in world grown with its shops (the same taps per terminal). Per "
                  "core: taps over the process time of the tap path (the SALE as the "
                  "firmware runs it, list installs); 'with cards and rows' also counts "
                  "issuing each card at its first tap and making the clearing rows, which "
                  "the groups do for the centre. A flat us per tap: cost linear in taps, "
                  "no term in the fleet's size."}
    small, large = sizes[0], sizes[-1]
    t["goals"] = [goal("fast fleet taps/s per core (slowest fleet size)", min(rates), ">=",
                       5000, fmt="%.0f"),
                  goal(f"cost per tap, {large:,} shops / {small} shops",
                       cost[large] / cost[small], "<=", 1.5, fmt="%.2f", unit="x")]
    return t


def _scaling(ring, client):
    from host_tools import simulate
    from host_tools.world import POLICIES

    grid = [(10, 100), (10, 1000), (30, 100), (30, 1000)]
    rows = []
    large = None
    for days, shops in grid:
        world = _world(days, shops, shops * 100)
        t0 = time.monotonic()
        r = simulate.run(world, POLICIES["designed"], ring, groups=2, client=client,
                         keep_outcomes=False)
        wall = time.monotonic() - t0
        rows.append([days, shops, f"{shops * 100:,}", f"{r.taps:,}", f"{wall:.1f}",
                     f"{r.taps / wall:,.0f}", f"{r.centre_seconds:.1f}"])
        if (days, shops) == (LARGE["days"], LARGE["shops"]):
            large = wall
    t = {"title": "Scaling: days x shops -> seconds (2-worker LocalCluster)",
         "columns": ["days", "shops", "cards", "taps", "wall s", "taps/s", "centre s"],
         "rows": rows,
         "notes": "100 shoppers' cards per shop, the project's policy as designed; wall "
                  "time from the world built to the result, cluster start not included. "
                  "centre s: the day ends in the driver (replay, clearing, detector, list)."}
    if large is not None:
        t["goals"] = [goal("30-day x 1,000-shop x 100,000-card world, wall", large, "<=",
                           120, fmt="%.0f", unit=" s")]
    return t


def _dask(ring, client2):
    from host_tools import simulate
    from host_tools.world import POLICIES

    days, shops, reps = 10, 300, 3
    world = _world(days, shops, shops * 100)
    policy = POLICIES["designed"]
    t0 = time.monotonic()
    serial = simulate.run(world, policy, ring, keep_outcomes=False)
    rows = [["serial, this process", f"{time.monotonic() - t0:.1f}", "", serial.digest]]
    walls: dict[int, list[float]] = {1: [], 2: []}
    digests: dict[int, set[str]] = {1: set(), 2: set()}
    with simulate.dask_client(workers=1) as client1:
        # side by side: 1 and 2 workers in turn, so both see the same load on the machine
        for _ in range(reps):
            for workers, client in ((1, client1), (2, client2)):
                t0 = time.monotonic()
                r = simulate.run(world, policy, ring, groups=workers, client=client,
                                 keep_outcomes=False)
                walls[workers].append(time.monotonic() - t0)
                digests[workers].add(r.digest)
    for workers in (1, 2):
        w = walls[workers]
        rows.append([f"LocalCluster, {workers} worker{'s' if workers > 1 else ''}",
                     f"{min(w):.1f}", " ".join(f"{x:.1f}" for x in w),
                     " ".join(sorted(digests[workers]))])
    speedup = min(walls[1]) / min(walls[2])
    rows.append(["speedup, 2 workers over 1 (best runs)", f"{speedup:.2f}x", "", ""])
    t = {"title": f"Dask: {days} days x {shops} shops x {shops * 100:,} cards, "
                  f"{serial.taps:,} taps",
         "columns": ["run", "wall s (best)", f"each of {reps} runs", "digest of every outcome"],
         "rows": rows,
         "notes": f"{os.cpu_count()} cores, shared with other work: the 1- and 2-worker runs "
                  "take turns, and the best of each is compared. One group per worker, "
                  "resident there; the centre's day end runs in the driver between the "
                  "groups' days. The digest covers every tap's day, shop, card and outcome "
                  "in order."}
    t["goals"] = [goal("Dask runs equal the serial run (digests)",
                       int(digests[1] | digests[2] == {serial.digest}), "==", 1)]
    # What is claimed: two workers beat one. On 2 cores they share them with the
    # driver (the centre's nights) and the scheduler: 1.22-1.44x measured here.
    t["goals"].append(goal("Dask 2 workers over 1 worker, wall time", speedup, ">=", 1.1,
                           fmt="%.2f", unit="x"))
    return t


def _defaults(ring, quick):
    from host_tools import scenario, simulate
    from host_tools.world import POLICIES, generate

    seeds = (1,) if quick else (1, 2, 3, 4, 5)
    rows, goals = [], []
    for name in scenario.names():
        spec = scenario.load(name)
        jobs = [(generate(spec, s), POLICIES[k]) for s in seeds for k in ("id", "designed")]
        results = simulate.run_many(jobs, ring)
        worst = [0.0, 0.0, 0.0]
        for i, seed in enumerate(seeds):
            base, r = results[2 * i], results[2 * i + 1]
            post = r.post_report_loss / max(base.post_report_loss, 1)
            loss = r.total_loss / max(base.total_loss, 1)
            worst = [max(worst[0], r.online_rate()), max(worst[1], post), max(worst[2], loss)]
            rows.append([name, seed, f"{r.online_rate():.1%}", f"{base.online_rate():.1%}",
                         f"{r.post_report_loss:,} ({post:.1%})",
                         f"{base.post_report_loss:,}", f"{r.total_loss:,} ({loss:.1%})",
                         f"{base.total_loss:,}"])
        goals += [goal(f"{name}: ordinary online rate, worst seed", 100 * worst[0], "<=", 10,
                       fmt="%.1f", unit=" %"),
                  goal(f"{name}: post-report loss / iD's, worst seed", 100 * worst[1], "<=", 5,
                       fmt="%.1f", unit=" %"),
                  goal(f"{name}: total loss / iD's, worst seed", 100 * worst[2], "<=", 40,
                       fmt="%.1f", unit=" %")]
    t = {"title": "The project's defaults against iD as reported, per scenario and seed",
         "columns": ["scenario", "seed", "online", "iD online", "post-report loss",
                     "iD post-report", "total loss", "iD total"],
         "rows": rows,
         "notes": "The project as designed (terminal/params.py defaults, list sized to the "
                  "flash, the scenario's push schedule); the incident scenario is the "
                  "demo's built-in world. Shares are of iD's loss on the same world."}
    t["goals"] = goals
    return t
