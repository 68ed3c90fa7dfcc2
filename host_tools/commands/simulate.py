"""termctl simulate: the fleet simulation in-process, with parameter sweeps."""

from __future__ import annotations

from pathlib import Path

from host_tools.commands.common import DAY_LINES, day_done, make_world, world_args
from host_tools.keyring import Keyring
from host_tools.progress import Progress


def argparse_simulate(sub):
    p = sub.add_parser(
        "simulate", help="fleet simulation in-process, with parameter sweeps",
        description="The demo's world on in-process terminals: the same firmware code "
        "(service, decision, list, journal) under CPython, through the same link, centre "
        "and detector, so it scales to larger worlds. Without --sweep it runs both policies "
        "and reports like `termctl demo`; with --sweep NAME=V1,V2 (terminal parameters, or "
        "list_quota) it runs the hardened policy for every combination and tabulates fraud "
        "loss against the online rate, with a plot.")
    world_args(p, days=30, shops=20, shoppers=400, stolen=6)
    p.add_argument("--sweep", action="append", default=[], metavar="NAME=V1,V2,...",
                   help="a terminal parameter (or list_quota) and its values; repeat to "
                   "sweep a grid")
    p.add_argument("--out", default="simulate-out", help="report, table and plots go here")


def do_simulate(state, args):
    from host_tools import demo, simulate
    from host_tools.world import POLICIES

    world = make_world(args)
    grid = simulate.parse_grid(args.sweep)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ring = Keyring.open(state.keyring_path or out / "keyring.json")
    taps = sum(len(t) for t in world.taps)
    print(f"world: {world.days} days, {world.shops} terminals, {len(world.cards)} cards, "
          f"{taps} taps per run (seed {world.seed})", flush=True)
    if grid:
        rows = simulate.sweep(world, POLICIES["hardened"], grid, ring, args.fee)
        text = simulate.table(rows, args.fee)
        png = simulate.plot(rows, out / "sweep.png")
        rate = sum(r.result.taps for r in rows) / sum(r.result.seconds for r in rows)
    else:
        results = []
        for key in ("id", "hardened"):
            print(f"policy: {POLICIES[key].name}", flush=True)
            with Progress(key, world.days, "days", interval=DAY_LINES) as bar:
                results.append(simulate.run(world, POLICIES[key], ring, args.fee,
                                            say=day_done(bar)))
        text = demo.report(world, results, args.fee)
        png = demo.chart(world, results, out / "losses.png")
        rate = sum(r.taps for r in results) / sum(r.seconds for r in results)
    print()
    print(text)
    (out / "report.txt").write_text(text + "\n")
    print(f"\n{rate:,.0f} simulated transactions per second; report: {out / 'report.txt'}"
          f"   plot: {png}")
    return 0
