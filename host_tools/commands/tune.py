"""termctl tune: the parameters' Pareto frontier over worlds and seeds."""

from __future__ import annotations

import contextlib
from pathlib import Path

from host_tools.commands.simulate import cluster_args
from host_tools.errors import ToolError
from host_tools.keyring import Keyring


def argparse_tune(sub):
    p = sub.add_parser(
        "tune", help="search the parameters for the frontier of fraud loss against cost",
        description="Runs the project's policy as designed with parameters drawn from the "
        "search space (floor limit, card-side caps, consecutive-offline limits, random "
        "selection TP/MTP/threshold, new-card rule, decline limit, list quota policy, push "
        "schedule) on every world and seed, beside 'iD as reported' on the same worlds. "
        "Prints the Pareto frontier of fraud loss (share of iD's) against the ordinary "
        "shoppers' online rate and the authorisation fees, plots it, and recommends the "
        "point that meets the goals (online <= 10 %, with a margin: <= 8 %; post-report loss "
        "<= 5 %, total loss <= 40 % of iD's, on every world and seed), loses within 2 % of "
        "iD's losses of the least, and costs least. Runs go to a Dask LocalCluster (or "
        "--scheduler's cluster) unless --serial.")
    p.add_argument("--world", action="append", default=[], metavar="FILE",
                   help="a scenario file or shipped name; repeatable (default: every shipped "
                   "scenario)")
    p.add_argument("--seeds", default="1,2,3", help="world seeds (default 1,2,3)")
    p.add_argument("--budget", type=int, default=40,
                   help="points to measure (default 40), each on every world and seed")
    p.add_argument("--search-seed", type=int, default=1, help="seed of the search's draws")
    p.add_argument("--days", type=int, default=None, help="override every world's days")
    p.add_argument("--shops", type=int, default=None, help="override every world's shops")
    p.add_argument("--shoppers", type=int, default=None,
                   help="override every world's shoppers")
    p.add_argument("--fee", type=int, default=5, help="yen per online authorisation")
    cluster_args(p)
    p.add_argument("--out", default="tune-out", help="table, plot and JSON go here")


def do_tune(state, args):
    from host_tools import scenario, simulate, tune
    from host_tools.world import resize

    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        raise ToolError(f"--seeds {args.seeds!r}: give integers, e.g. 1,2,3") from None
    if not seeds:
        raise ToolError("--seeds: give at least one seed")
    if args.budget < 1:
        raise ToolError("--budget must be at least 1")
    names = args.world or scenario.names()
    worlds = {Path(n).stem: resize(scenario.load(n), days=args.days, shops=args.shops,
                                   shoppers=args.shoppers) for n in names}
    out = Path(args.out)
    print(f"tune: {len(worlds)} worlds ({', '.join(worlds)}) x {len(seeds)} seeds, "
          f"budget {args.budget} points", flush=True)
    cluster = (contextlib.nullcontext() if args.serial
               else simulate.dask_client(args.scheduler, args.workers))
    with cluster as client:
        out.mkdir(parents=True, exist_ok=True)  # once the cluster answers
        ring = Keyring.open(state.keyring_path or out / "keyring.json")
        result = tune.tune(worlds, seeds, ring, args.budget, args.fee, client=client,
                           search_seed=args.search_seed)
    text = result.table()
    print()
    print(text)
    (out / "tune.txt").write_text(text + "\n")
    (out / "tune.json").write_text(result.to_json() + "\n")
    png = result.plot(out / "frontier.png")
    print(f"\ntable: {out / 'tune.txt'}   plot: {png}   all points: {out / 'tune.json'}")
    return 0
