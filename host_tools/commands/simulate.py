"""termctl simulate: the fleet simulation on the fast fleet, with sweeps, on Dask."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from host_tools.commands.common import DAY_LINES, day_done, make_world, world_args
from host_tools.keyring import Keyring
from host_tools.progress import Progress

# A run of at least this many taps (all runs together) goes to a Dask cluster
# unless --serial: below it, starting a LocalCluster costs more than it saves.
LARGE = 200_000


def cluster_args(p) -> None:
    """Where the runs go (simulate, tune)."""
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                   help="worker processes of the LocalCluster (default: one per core)")
    p.add_argument("--scheduler", default=None, metavar="tcp://HOST:PORT",
                   help="run on this Dask cluster instead of a LocalCluster")
    p.add_argument("--serial", action="store_true",
                   help="run everything in this process (no Dask)")


def argparse_simulate(sub):
    p = sub.add_parser(
        "simulate", help="fleet simulation on the firmware's tap path, sweeps, Dask",
        description="A world (the built-in one, or --world FILE) on the fast fleet: each "
        "tap runs the firmware's own sale, card check, keyed hash, list lookup, decision, "
        "counters and journal record in this process, without link or files; each evening "
        "the centre replays the online requests, ingests the clearing, runs the detector "
        "and builds the next list, as for `termctl demo`. Without --sweep it runs the "
        "policies and reports like `termctl demo`; with --sweep NAME=V1,V2 (terminal "
        "parameters, or list_quota) it runs the project's policy as designed for every "
        "combination and tabulates fraud loss against the online rate, with a plot. Sweeps "
        f"and worlds of {LARGE:,} taps or more run on Dask: a LocalCluster, or "
        "--scheduler's cluster.")
    world_args(p, days=30, shops=20, shoppers=400, stolen=6)
    p.add_argument("--policy", choices=["all", "id", "quota", "designed"], default="all")
    p.add_argument("--sweep", action="append", default=[], metavar="NAME=V1,V2,...",
                   help="a terminal parameter (or list_quota) and its values; repeat to "
                   "sweep a grid")
    cluster_args(p)
    p.add_argument("--out", default="simulate-out", help="report, table and plots go here")


@contextlib.contextmanager
def client_for(args, taps: int):
    """A Dask client when the work is large enough (or --scheduler), else None."""
    from host_tools import simulate

    if args.serial or (not args.scheduler and taps < LARGE):
        yield None
        return
    with simulate.dask_client(args.scheduler, args.workers) as client:
        yield client


def do_simulate(state, args):
    from host_tools import demo, simulate
    from host_tools.world import POLICIES

    world = make_world(args)
    grid = simulate.parse_grid(args.sweep)
    out = Path(args.out)
    taps = world.tap_count()
    keys = [args.policy] if args.policy != "all" else list(POLICIES)
    runs = max(1, len(simulate.combinations(grid))) if grid else len(keys)
    print(f"world: {world.name}, {world.days} days, {world.shops} terminals, "
          f"{len(world.cards):,} cards, {taps:,} scripted taps per run (seed {world.seed})",
          flush=True)
    with client_for(args, taps * runs) as client:
        if client is not None:
            print(f"dask: {len(client.nthreads())} workers at {client.scheduler.address}",
                  flush=True)
        out.mkdir(parents=True, exist_ok=True)  # once the cluster answers
        ring = Keyring.open(state.keyring_path or out / "keyring.json")
        if grid:
            rows = simulate.sweep(world, POLICIES["designed"], grid, ring, args.fee,
                                  client=client)
            text = simulate.table(rows, args.fee)
            png = simulate.plot(rows, out / "sweep.png")
            results = [r.result for r in rows]
        else:
            if client is not None and taps < LARGE:  # small runs: one per worker
                results = simulate.run_many([(world, POLICIES[k]) for k in keys], ring,
                                            args.fee, client, label="policies")
            else:
                results = []
                groups = len(client.nthreads()) if client is not None else 1
                for key in keys:
                    print(f"policy: {POLICIES[key].name}", flush=True)
                    with Progress(key, world.days, "days", interval=DAY_LINES) as bar:
                        results.append(simulate.run(world, POLICIES[key], ring, args.fee,
                                                    say=day_done(bar), groups=groups,
                                                    client=client, keep_outcomes=False))
            text = demo.report(world, results, args.fee)
            png = demo.chart(world, results, out / "losses.png")
    rate = sum(r.taps for r in results) / max(sum(r.seconds for r in results), 1e-9)
    print()
    print(text)
    (out / "report.txt").write_text(text + "\n")
    print(f"\n{rate:,.0f} simulated transactions per second; report: {out / 'report.txt'}"
          f"   plot: {png}")
    return 0
