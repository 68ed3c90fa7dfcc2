"""termctl demo: the incident's offline fraud on emulated boards, under three policies."""

from __future__ import annotations

import time
from pathlib import Path

from host_tools.commands.common import DAY_LINES, day_done, make_world, world_args
from host_tools.errors import ToolError
from host_tools.keyring import Keyring
from host_tools.progress import Progress


def argparse_demo(sub):
    p = sub.add_parser(
        "demo", help="the incident's offline fraud on emulated boards, three policies",
        description="A scripted world (shops, ordinary shoppers, stolen cards used once a "
        "day just under the floor limit at a different shop, a prepaid card hit by repeated "
        "attempts) on emulated boards with a fast clock, under three policies: 'iD as "
        "reported'; this project with the same 20-entry list quota (an issuer whose entries "
        "overflow it goes online-only); this project as designed (a list sized to the "
        "flash, hourly delta pushes where the world's terminals take them). Every card is "
        "tapped with nfcpy on the board's RF field and every sale goes through the host "
        "link; each evening the centre pulls the clearing, runs the detector and pushes the "
        "next negative list. Prints a report and writes it with a chart to --out.")
    world_args(p, days=14, shops=4, shoppers=40, stolen=3)
    p.add_argument("--policy", choices=["all", "id", "quota", "designed"], default="all",
                   help="'iD as reported', the project with the 20-entry quota, the project "
                   "as designed, or all three")
    p.add_argument("--out", default="demo-out", help="report, chart and journals go here")
    p.add_argument("--ports", default=None,
                   help="comma-separated serial ports of real boards, one per shop, instead "
                   "of emulated boards")
    p.add_argument("--nfc", default=None,
                   help="with --ports: an nfcpy device that presents each card to the "
                   "board's reader (else cards are injected)")
    p.add_argument("--inject", action="store_true",
                   help="inject card images instead of tapping them over nfcpy (faster)")


def do_demo(state, args):
    import shutil

    from host_tools import demo
    from host_tools.fleet import real_fleet
    from host_tools.world import POLICIES

    world = make_world(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    keys = [args.policy] if args.policy != "all" else list(POLICIES)
    ring = Keyring.open(state.keyring_path or out / "keyring.json")
    t0 = time.monotonic()
    print(f"world: {world.name}, {world.days} days, {world.shops} shops, "
          f"{sum(len(t) for t in world.taps)} taps, {len(world.fraud_tokens())} stolen cards "
          f"(seed {world.seed})", flush=True)
    results = []
    for key in keys:
        policy = POLICIES[key]
        work = out / f"work-{key}"  # flash images, journals, the centre: kept to look at
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        print(f"policy: {policy.name}", flush=True)
        if args.ports:
            ports = args.ports.split(",")
            if len(ports) != world.shops:
                raise ToolError(f"--ports gives {len(ports)} ports for {world.shops} shops")
            fleet = real_fleet(ports, ring, state.timeout, args.nfc)
        else:
            fleet = demo.EmulatedFleet(world.shops, work, ring, rf=not args.inject)
        with fleet as links, Progress(policy.key, world.days, "days", interval=DAY_LINES) as bar:
            results.append(demo.run_policy(world, policy, links, work, ring, args.fee,
                                           say=day_done(bar)))
    text = demo.report(world, results, args.fee)
    print()
    print(text)
    (out / "report.txt").write_text(text + "\n")
    png = demo.chart(world, results, out / "losses.png")
    print(f"\nreport: {out / 'report.txt'}   chart: {png}   "
          f"wall time {time.monotonic() - t0:.1f} s")
    return 0
