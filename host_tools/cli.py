"""termctl: talk to an offline payment terminal (a board or the emulated one).

Each command is an argparse factory plus a `do_<name>(args)` handler; a
ToolError anywhere is printed as `termctl: message` with exit status 1.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import signal
import sys
import time
from pathlib import Path

from host_tools import __version__
from host_tools.errors import ToolError
from host_tools.keyring import Keyring

PROG = "termctl"

EPILOG = """\
examples:
  termctl demo                             the incident on emulated boards, two policies
  termctl emulate --detach                 start an emulated board, print its port
  export TERMCTL_PORT=/dev/pts/5           (or give --port to every command)
  termctl keys push && termctl time set --now
  termctl status
  termctl params set floor_limit=9000 daily_offline_cap=20000
  termctl sale 5000 --token 4980000000000001 --wallet wallet.json --centre centre.db
  termctl batch pull --centre centre.db
  termctl centre next-list --out next.bin --version 2 && termctl list push next.bin

exit status: 0 done, 1 error (one line on stderr), 3 sale declined
"""


def _link(args):
    from host_tools.link import TerminalLink

    ring = Keyring.open(args.keyring) if args.keyring else None
    return TerminalLink.open(args.port, timeout=args.timeout, keyring=ring)


# -- emulate --------------------------------------------------------------------

def argparse_emulate(sub):
    p = sub.add_parser(
        "emulate", help="run the firmware on an emulated board (unix port + pty + LittleFS)",
        description="Run firmware/main.py in the MicroPython unix port under the board's heap "
        "cap, on a LittleFS2 flash image in a file, with a pty as its serial port. Prints the "
        "port; stop with Ctrl-C or SIGTERM (the flash image is kept).")
    p.add_argument("--board", default="emulator", help="board file in boards/ (default emulator)")
    p.add_argument("--flash", default=None,
                   help="flash image file (default .termctl/emulator.img; created if missing)")
    p.add_argument("--heap", default=None, help="heap cap, e.g. 64k (default: the board's)")
    p.add_argument("--rf-port", type=int, default=None,
                   help="UDP port of the RF field: cards presented with `termctl card present "
                   "--rf-port N` are read over nfcpy's UDP link (default: no reader)")
    p.add_argument("--detach", action="store_true",
                   help="start in the background, print port and pid, return")
    p.add_argument("--stop", action="store_true",
                   help="stop the detached emulator that runs on --flash")
    p.add_argument("--announce-json", action="store_true", help=argparse.SUPPRESS)


def do_emulate(args):
    from host_tools import emulator

    flash = Path(args.flash or emulator.DEFAULT_FLASH).resolve()
    heap = emulator.parse_size(args.heap) if args.heap else None
    if args.stop:
        return _stop_detached(flash)
    if args.detach:
        info = emulator.detach(args.board, flash, heap, rf_port=args.rf_port)
        print(f"port: {info['port']}\npid: {info['pid']}\nterminal: {info['terminal_id']}\n"
              f"boot: {info['boot_ms']:.0f} ms\nflash: {flash}\n"
              f"stop: termctl emulate --flash {flash} --stop   (or kill {info['pid']})")
        return 0
    ring = Keyring.open(args.keyring) if args.keyring else None
    emu = emulator.Emulator(board=args.board, flash=flash, heap=heap, keyring=ring,
                            rf_port=args.rf_port)

    def announce(e):
        if args.announce_json:
            print(json.dumps({"port": e.port, "pid": os.getpid(), "boot_ms": e.boot_ms,
                              "terminal_id": "%08x" % e.terminal_id}), flush=True)
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
        else:
            print(f"emulated board '{e.board}' ready in {e.boot_ms:.0f} ms "
                  f"(heap cap {e.heap} bytes, flash {e.flash})")
            print(f"port: {e.port}")
            print("stop with Ctrl-C", flush=True)

    return emulator.serve(emu, announce)


def _stop_detached(flash: Path) -> int:
    from host_tools.emulator import state_path

    st = state_path(flash)
    if not st.exists():
        raise ToolError(f"no detached emulator runs on {flash}")
    pid = json.loads(st.read_text())["pid"]
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        st.unlink()
        raise ToolError(f"emulator pid {pid} is gone; removed its stale state file") from None
    for _ in range(100):
        if not st.exists():
            print(f"stopped emulator pid {pid}")
            return 0
        time.sleep(0.05)
    raise ToolError(f"emulator pid {pid} did not stop within 5 s")


# -- status -----------------------------------------------------------------------

def argparse_status(sub):
    p = sub.add_parser("status", help="show the terminal's status",
                       description="Firmware version, board, heap, flash, clock and versions.")
    p.add_argument("--json", action="store_true", help="print as JSON")


def do_status(args):
    with _link(args) as t:
        st = t.status()
    if args.json:
        print(json.dumps(st, indent=1))
    else:
        _print_kv(st)
    return 0


def _print_kv(fields: dict, indent: str = "") -> None:
    width = max(len(k) for k in fields)
    for k, v in fields.items():
        print(f"{indent}{k:<{width}}  {v}")


# -- time -------------------------------------------------------------------------

def argparse_time(sub):
    p = sub.add_parser("time", help="set the terminal's clock",
                       description="Set the terminal's wall clock (UTC). Authenticated.")
    tsub = p.add_subparsers(dest="time_cmd", required=True)
    s = tsub.add_parser("set", help="set the clock")
    g = s.add_mutually_exclusive_group(required=True)
    g.add_argument("--now", action="store_true", help="this host's current time")
    g.add_argument("iso", nargs="?", help="ISO 8601 time, e.g. 2026-11-21T09:30:00Z")


def parse_iso(text: str) -> int:
    try:
        t = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ToolError(f"bad time {text!r}: use ISO 8601, e.g. 2026-11-21T09:30:00Z") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.timezone.utc)
    return int(t.timestamp())


def do_time(args):
    seconds = int(time.time()) if args.now else parse_iso(args.iso)
    with _link(args) as t:
        shown = t.set_time(seconds)
    print(f"clock set: {shown}")
    return 0


# -- params -----------------------------------------------------------------------

def argparse_params(sub):
    p = sub.add_parser("params", help="show or set the terminal's parameters",
                       description="Parameters are integers (amounts in yen). `set` checks "
                       "every value first: one bad value and nothing changes. Authenticated.")
    psub = p.add_subparsers(dest="params_cmd", required=True)
    psub.add_parser("show", help="list every parameter and its value")
    s = psub.add_parser("set", help="set KEY=VALUE ... atomically")
    s.add_argument("assignments", nargs="+", metavar="KEY=VALUE")


def do_params(args):
    with _link(args) as t:
        if args.params_cmd == "show":
            from host_tools.paramdoc import MEANING
            from terminal.params import TABLE

            values = t.params()
            print(f"version {values.pop('version', 0)}")
            ranges = {row[0]: f"{row[2]}..{row[3]}" for row in TABLE}
            for k, v in values.items():
                rng = ranges.get(k, "")
                note = MEANING.get(k, "")
                print(f"{k:<28} {v:>10}   {rng:<14} {note}")
            return 0
        changes = {}
        for a in args.assignments:
            k, eq, v = a.partition("=")
            if not eq or not k:
                raise ToolError(f"expected KEY=VALUE, got {a!r}")
            try:
                changes[k] = int(v.replace("_", ""))
            except ValueError:
                raise ToolError(f"{k}: {v!r} is not an integer") from None
        shown = t.set_params(changes)
        print(f"params set ({shown})")
    return 0


# -- demo -------------------------------------------------------------------------

def argparse_demo(sub):
    p = sub.add_parser(
        "demo", help="the incident's offline fraud on emulated boards, two policies",
        description="A scripted world (shops, ordinary shoppers, stolen cards used once a "
        "day just under the floor limit at a different shop, a prepaid card hit by repeated "
        "attempts) on emulated boards, under the policy 'iD as reported' and under this "
        "project's hardened defaults, with a fast clock. Every card is tapped with nfcpy on "
        "the board's RF field and every sale goes through the host link; each evening the "
        "centre pulls the clearing, runs the detector and pushes the next negative list. "
        "Prints a report and writes it with a chart to --out.")
    _world_args(p, days=14, shops=4, shoppers=40, stolen=3)
    p.add_argument("--policy", choices=["both", "id", "hardened"], default="both")
    p.add_argument("--out", default="demo-out", help="report, chart and journals go here")
    p.add_argument("--ports", default=None,
                   help="comma-separated serial ports of real boards, one per shop, instead "
                   "of emulated boards")
    p.add_argument("--nfc", default=None,
                   help="with --ports: an nfcpy device that presents each card to the "
                   "board's reader (else cards are injected)")
    p.add_argument("--inject", action="store_true",
                   help="inject card images instead of tapping them over nfcpy (faster)")


def _world_args(p, **defaults):
    """The scripted world's size and seed (demo and simulate)."""
    p.add_argument("--days", type=int, default=defaults["days"])
    p.add_argument("--shops", type=int, default=defaults["shops"], help="one terminal each")
    p.add_argument("--shoppers", type=int, default=defaults["shoppers"])
    p.add_argument("--stolen", type=int, default=defaults["stolen"], help="stolen cards")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--fee", type=int, default=5, help="yen per online authorisation")


def _make_world(args):
    from host_tools.world import make_world

    try:
        return make_world(days=args.days, shops=args.shops, shoppers=args.shoppers,
                          stolen=args.stolen, seed=args.seed)
    except ValueError as e:
        raise ToolError(str(e)) from None


def do_demo(args):
    import shutil

    from host_tools import demo
    from host_tools.world import POLICIES

    world = _make_world(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    keys = [args.policy] if args.policy != "both" else ["id", "hardened"]
    ring = Keyring.open(args.keyring or out / "keyring.json")
    t0 = time.monotonic()
    print(f"world: {world.days} days, {world.shops} shops, "
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
            fleet = _real_fleet(ports, ring, args.timeout, args.nfc)
        else:
            fleet = demo.EmulatedFleet(world.shops, work, ring, rf=not args.inject)
        with fleet as links:
            results.append(demo.run_policy(world, policy, links, work, ring, args.fee))
    text = demo.report(world, results, args.fee)
    print()
    print(text)
    (out / "report.txt").write_text(text + "\n")
    png = demo.chart(world, results, out / "losses.png")
    print(f"\nreport: {out / 'report.txt'}   chart: {png}   "
          f"wall time {time.monotonic() - t0:.1f} s")
    return 0


# -- simulate -----------------------------------------------------------------------

def argparse_simulate(sub):
    p = sub.add_parser(
        "simulate", help="fleet simulation in-process, with parameter sweeps",
        description="The demo's world on in-process terminals: the same firmware code "
        "(service, decision, list, journal) under CPython, through the same link, centre "
        "and detector, so it scales to larger worlds. Without --sweep it runs both policies "
        "and reports like `termctl demo`; with --sweep NAME=V1,V2 (terminal parameters, or "
        "list_quota) it runs the hardened policy for every combination and tabulates fraud "
        "loss against the online rate, with a plot.")
    _world_args(p, days=30, shops=20, shoppers=400, stolen=6)
    p.add_argument("--sweep", action="append", default=[], metavar="NAME=V1,V2,...")
    p.add_argument("--out", default="simulate-out", help="report, table and plots go here")


def do_simulate(args):
    from host_tools import demo, simulate
    from host_tools.world import POLICIES

    world = _make_world(args)
    grid = simulate.parse_grid(args.sweep)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ring = Keyring.open(args.keyring or out / "keyring.json")
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
            results.append(simulate.run(world, POLICIES[key], ring, args.fee, say=print))
        text = demo.report(world, results, args.fee)
        png = demo.chart(world, results, out / "losses.png")
        rate = sum(r.taps for r in results) / sum(r.seconds for r in results)
    print()
    print(text)
    (out / "report.txt").write_text(text + "\n")
    print(f"\n{rate:,.0f} simulated transactions per second; report: {out / 'report.txt'}"
          f"   plot: {png}")
    return 0


def _centre_serve(centre, args) -> int:
    import select

    from host_tools.pos import run_sale
    from host_tools.transfer import ack_batch, pull_batch

    def pull(t):
        batch = pull_batch(t)
        inserted, dup = centre.ingest_clearing(batch.terminal_id, batch.records)
        ack_batch(t, batch.batch_id)
        print(f"clearing: batch {batch.batch_id}, {inserted} new, {dup} already there",
              flush=True)

    with _link(args) as t:
        t.set_time(int(time.time()))
        print(f"serving terminal {t.status()['terminal_id']} on {args.port}: type an amount "
              "(yen) for a sale, 'pull' for clearing, 'quit' to stop", flush=True)
        next_pull = time.monotonic() + args.pull_every
        while True:
            ready, _, _ = select.select([sys.stdin], [], [], 1.0)
            if time.monotonic() >= next_pull:
                pull(t)
                next_pull = time.monotonic() + args.pull_every
            if not ready:
                continue
            line = sys.stdin.readline()
            word = line.strip().lower()
            if not line or word == "quit":
                pull(t)
                return 0
            if not word:
                continue
            if word == "pull":
                pull(t)
                continue
            try:
                amount = int(word.replace(",", "").replace("_", ""))
            except ValueError:
                print(f"not an amount: {word!r} (an amount in yen, 'pull' or 'quit')",
                      flush=True)
                continue
            try:
                print(run_sale(t, amount, None, centre=centre, wait_ms=int(args.wait * 1000)),
                      flush=True)
            except ToolError as e:
                print(f"sale refused: {e}", flush=True)


def _real_fleet(ports, ring, timeout, nfc=None):
    import contextlib

    from host_tools.link import TerminalLink
    from host_tools.provision import push_keys

    @contextlib.contextmanager
    def fleet():
        links = [TerminalLink.open(p, timeout=timeout, keyring=ring) for p in ports]
        for link in links:
            link.rf_device = nfc
        try:
            for link in links:
                push_keys(link, ring)
            yield links
        finally:
            for link in links:
                link.close()

    return fleet()


# -- flash ------------------------------------------------------------------------

def argparse_flash(sub):
    p = sub.add_parser(
        "flash", help="compile the firmware for a board and copy it there (mpremote)",
        description="Compile firmware/ to .mpy with mpy-cross for the board's CPU (-march "
        "from the board file), copy it with mpremote together with the board file (as "
        "board.py) and a new terminal key (added to the keyring), then reset the board. "
        "--dry-run prints what would be written.")
    p.add_argument("--board", required=True, help="board file in boards/, e.g. pico_pn532")
    p.add_argument("--keep-key", action="store_true",
                   help="leave the board's terminal key as it is")
    p.add_argument("--dry-run", action="store_true", help="compile and list, copy nothing")


def do_flash(args):
    from host_tools.flash import flash, plan_flash

    plan = plan_flash(args.board)
    print(f"{plan.board}: mpy-cross -march={plan.march or 'bytecode'}, {len(plan.files)} files, "
          f"{plan.total:,} bytes")
    for _local, remote, n in plan.files:
        print(f"  {remote:<34} {n:>7,} B")
    if args.dry_run:
        print("dry run: nothing written")
        return 0
    if not args.port:
        raise ToolError("give the board's serial port: --port /dev/ttyACM0 (or TERMCTL_PORT)")
    tid = flash(plan, args.port, Keyring.open(args.keyring), keep_key=args.keep_key)
    print(f"written to {args.port}" + (f"; terminal {tid:08x}, key in the keyring"
                                       if tid is not None else "; key kept"))
    return 0


# -- keys -------------------------------------------------------------------------

def argparse_keys(sub):
    p = sub.add_parser("keys", help="install the deployment keys on a terminal",
                       description="Push the token-hash (list) key and the issuers' card MAC "
                       "keys from the keyring to the terminal, wrapped and signed. The keys "
                       "are made on first use and kept in the keyring.")
    ksub = p.add_subparsers(dest="keys_cmd", required=True)
    ksub.add_parser("push", help="install the keys")


def do_keys(args):
    from host_tools.provision import push_keys

    with _link(args) as t:
        print(f"keys installed: {push_keys(t, t.keyring)}")
    return 0


# -- sale ---------------------------------------------------------------------------

def argparse_sale(sub):
    p = sub.add_parser(
        "sale", help="play the POS: ask the terminal for a sale",
        description="Ask for a sale of AMOUNT yen. With --token the card is injected "
        "(bench, no RF): its image comes from --wallet (issued on first use) and its new "
        "counters go back there. With --centre DB the online requests the sale raises are "
        "answered by the centre; without, the terminal cannot go online and the issuer's "
        "default action decides.")
    p.add_argument("amount", type=int, help="amount in yen")
    p.add_argument("--token", default=None,
                   help="inject this card (bench, no RF); without it the terminal reads a "
                   "card over RF (termctl card present), waiting --wait seconds")
    p.add_argument("--wait", type=float, default=10.0, help="seconds to wait for a card on RF")
    p.add_argument("--issuer", type=int, default=1, help="issuer id (default 1)")
    p.add_argument("--product", default="credit", choices=["credit", "prepaid", "debit"])
    p.add_argument("--expiry", default=None, help="card expiry YYYY-MM for a new card")
    p.add_argument("--wallet", default=None, help="JSON wallet keeping the card's counters")
    p.add_argument("--centre", default=None, metavar="DB", help="centre database (SQLite)")
    p.epilog = "exit status: 0 approved, 3 declined, 1 error"


def do_sale(args):
    from host_tools.pos import run_sale
    from host_tools.wallet import Wallet

    wallet = Wallet.open(args.wallet)
    centre = _centre(args.centre, args.keyring) if args.centre else None
    with _link(args) as t:
        image = None
        if args.token:
            image = wallet.card(args.token, args.issuer, args.product, t.keyring, args.expiry)
        else:
            print(f"waiting up to {args.wait:g} s for a card on the terminal's reader ...",
                  file=sys.stderr, flush=True)
        result = run_sale(t, args.amount, image, centre=centre, wait_ms=int(args.wait * 1000))
    if args.token:
        wallet.store(args.token, result.card_image)
        wallet.save()
    print(result)
    return 0 if result.approved else 3


def _centre(path, keyring=None):
    """The centre's database, keyed with the deployment's list key and knowing the
    deployment's issuers (so lists it builds match what terminals hash)."""
    from host_tools.centre import Centre
    from host_tools.keyring import BENCH_ISSUERS

    ring = Keyring.open(keyring)
    key_id, list_key = ring.list_key()
    centre = Centre(path, list_key=list_key, key_id=key_id)
    known = {row["id"] for row in centre.issuers()}
    names = dict(BENCH_ISSUERS)
    for issuer in ring.deployment()["issuers"]:
        if int(issuer) not in known:
            centre.add_issuer(int(issuer), names.get(int(issuer), f"issuer {issuer}"))
    return centre


# -- centre -------------------------------------------------------------------------

def argparse_centre(sub):
    p = sub.add_parser(
        "centre", help="the centre: cards, blocks, reports, the fraud detector, next list",
        description="The authorisation and clearing centre on SQLite (--db, default "
        "$TERMCTL_CENTRE or .termctl/centre.db). `termctl sale --centre DB` uses it for "
        "online authorisation and `termctl batch pull --centre DB` fills its clearing.")
    p.add_argument("--db", default=os.environ.get("TERMCTL_CENTRE", ".termctl/centre.db"),
                   help="centre database file")
    csub = p.add_subparsers(dest="centre_cmd", required=True)
    a = csub.add_parser("add-card", help="issue a card/token")
    a.add_argument("token")
    a.add_argument("--issuer", type=int, default=1)
    a.add_argument("--product", default="credit", choices=["credit", "prepaid", "debit"])
    a.add_argument("--balance", type=int, default=None, help="prepaid/debit balance, yen")
    a.add_argument("--credit-limit", type=int, default=None,
                   help="credit limit, yen (credit cards; default 300,000)")
    a.add_argument("--expiry", default=None, help="YYYY-MM-DD")
    b = csub.add_parser("block", help="block a token (reported stolen)")
    b.add_argument("token")
    b.add_argument("--reason", default="reported")
    r = csub.add_parser("report", help="per day: offline/online counts and amounts, declines")
    r.add_argument("--from", dest="from_day", default=None, help="YYYY-MM-DD (default: 6 days "
                   "before --to)")
    r.add_argument("--to", dest="to_day", default=None, help="YYYY-MM-DD (default today)")
    d = csub.add_parser("detect", help="run the fraud detector over the clearing for a day")
    d.add_argument("--day", default=None, help="YYYY-MM-DD (default today)")
    sv = csub.add_parser(
        "serve", help="serve a terminal: POS console, online authorisation, clearing",
        description="Hold the terminal's port (--port): read sale amounts from standard "
        "input (one per line; the terminal then waits for a card on its reader), answer the "
        "online requests those sales raise from the centre, and pull the terminal's clearing "
        "into the centre every --pull-every seconds and on the line 'pull'. 'quit' or end "
        "of input stops.")
    sv.add_argument("--pull-every", type=float, default=300.0, help="seconds between pulls")
    sv.add_argument("--wait", type=float, default=30.0, help="seconds to wait for a card")
    n = csub.add_parser("next-list", help="build the next full negative list from the centre")
    n.add_argument("--out", required=True, help="list file to write")
    n.add_argument("--version", type=int, required=True, help="list version")
    n.add_argument("--day", default=None, help="YYYY-MM-DD (default today)")
    n.add_argument("--board", default="emulator", help="board whose capacity bounds the list")


def do_centre(args):
    import datetime as _dt

    from host_tools import centre as centre_mod

    Path(args.db).parent.mkdir(parents=True, exist_ok=True)
    c = _centre(args.db, args.keyring)
    today = centre_mod.as_day(_dt.date.today())
    if args.centre_cmd == "add-card":
        known = sorted(row["id"] for row in c.issuers())
        if args.issuer not in known:
            raise ToolError(f"unknown issuer {args.issuer} (the centre has "
                            f"{', '.join(map(str, known))})")
        limit = args.credit_limit
        if args.product == "credit" and limit is None:
            limit = 300_000
        balance = args.balance
        if args.product != "credit" and balance is None:
            balance = 0
        c.add_card(args.token, args.issuer, args.product, balance=balance,
                   credit_limit=limit, expiry=args.expiry)
        money = f"credit limit {limit:,}" if args.product == "credit" else f"balance {balance:,}"
        print(f"card {args.token}: issuer {args.issuer} {args.product}, {money} yen")
    elif args.centre_cmd == "block":
        c.block(args.token, int(time.time()), args.reason)
        print(f"blocked {args.token}: it goes on the next negative list")
    elif args.centre_cmd == "report":
        hi = centre_mod.as_day(args.to_day) if args.to_day else today
        lo = centre_mod.as_day(args.from_day) if args.from_day else hi - 6
        rows = c.report(lo, hi)
        if not rows:
            print("no days")
            return 0
        cols = list(rows[0])
        print("  ".join(f"{k:>14}" for k in cols))
        for row in rows:
            print("  ".join(f"{row[k]!s:>14}" for k in cols))
    elif args.centre_cmd == "serve":
        return _centre_serve(c, args)
    elif args.centre_cmd == "detect":
        from host_tools.detector import Detector

        day = centre_mod.as_day(args.day) if args.day else today
        findings = Detector(c).run(day)
        for f in findings:
            print(f"{f.kind:<20} {f.masked_token:<10} issuer {f.issuer}: {f.summary}")
        print(f"{len(findings)} finding(s) for {centre_mod.day_text(day)}")
    else:
        from host_tools import listbuild
        from host_tools.detector import Detector

        day = centre_mod.as_day(args.day) if args.day else today
        nxt = Detector(c).next_negative_list(day)
        key_id = Keyring.open(args.keyring).list_key()[0]
        data = listbuild.encode_full(nxt.sections(), version=args.version, base_day=day,
                                     key_id=key_id, quotas=nxt.quotas,
                                     capacity=_board_value(args.board, "LIST_CAPACITY"))
        Path(args.out).write_bytes(data)
        over = {i: len(v) for i, v in nxt.overflow.items() if v}
        print(f"list v{args.version}: {len(nxt.entries)} entries, {len(data)} bytes -> "
              f"{args.out}" + (f"; over quota (not listed): {over}" if over else ""))
        for note in nxt.notes:
            print(f"  {note}")
    return 0


# -- list ---------------------------------------------------------------------------

def argparse_list(sub):
    p = sub.add_parser(
        "list", help="build, push and inspect the negative list",
        description="Negative lists are keyed by a keyed hash of the token number (the "
        "deployment's list key in the keyring). `build` turns a CSV "
        "(issuer,token,add|remove[,YYYY-MM-DD]) into a full list, or with --base into the "
        "delta from that full list; `push` sends one to a terminal, resumably, and installs it "
        "atomically; `status` shows what the terminal holds.")
    lsub = p.add_subparsers(dest="list_cmd", required=True)
    b = lsub.add_parser("build", help="build a list file from CSV")
    b.add_argument("csv", help="CSV file of list actions")
    b.add_argument("--out", required=True, help="list file to write")
    b.add_argument("--version", type=int, default=None,
                   help="list version (full lists; deltas are base + 1)")
    b.add_argument("--base", default=None, help="full list file the delta applies to")
    b.add_argument("--quota", action="append", default=[], metavar="ISSUER=N",
                   help="per-issuer entry quota (repeat); over quota is refused unless "
                   "--resolve says how")
    b.add_argument("--resolve", choices=["keep-newest"], default=None,
                   help="over quota: keep the newest entries (dropped ones are reported)")
    b.add_argument("--board", default="emulator",
                   help="board whose list capacity bounds the list (default emulator)")
    p_push = lsub.add_parser("push", help="send a list file to the terminal and install it")
    p_push.add_argument("file", help="list file from `termctl list build`")
    lsub.add_parser("status", help="version, entries and quotas on the terminal")


def _board_value(board: str, name: str) -> int:
    from host_tools.build import board_values

    return int(board_values(board)[name])




def do_list(args):
    if args.list_cmd == "build":
        return _list_build(args)
    with _link(args) as t:
        if args.list_cmd == "status":
            _print_kv(_list_status(t))
            return 0
        return _list_push(t, args.file)


def _list_status(t) -> dict[str, str]:
    from host_tools.link import parse_kv
    from terminal import protocol

    return parse_kv(t.call(protocol.CMD_LIST_STATUS).decode())


def _list_build(args):
    import datetime as _dt

    from host_tools import listbuild

    ring = Keyring.open(args.keyring)
    key_id, list_key = ring.list_key()
    quotas = {}
    for q in args.quota:
        issuer, eq, n = q.partition("=")
        if not eq or not issuer.isdigit() or not n.isdigit():
            raise ToolError(f"bad --quota {q!r}: use ISSUER=N")
        quotas[int(issuer)] = int(n)
    issuers = {int(i): quotas.get(int(i)) for i in ring.deployment()["issuers"]}
    unknown = set(quotas) - set(issuers)
    if unknown:
        raise ToolError(f"--quota for unknown issuer(s) {sorted(unknown)}")
    try:
        text = Path(args.csv).read_text()
    except OSError as e:
        raise ToolError(f"cannot read {args.csv}: {e.strerror}") from None
    common = dict(issuers=issuers, list_key=list_key,
                  capacity=_board_value(args.board, "LIST_CAPACITY"),
                  today=listbuild.day_number(_dt.date.today()), resolve=args.resolve,
                  name=args.csv)
    if args.base:
        built = listbuild.build_delta(text, base=Path(args.base).read_bytes(),
                                      version=args.version, **common)
    else:
        built = listbuild.build_full(text, version=args.version or 1, key_id=key_id, **common)
    Path(args.out).write_bytes(built.data)
    kind = "full" if built.kind == 1 else f"delta on v{built.base_version}"
    print(f"list v{built.version} ({kind}): {built.entries} entries on the terminal, "
          f"{built.adds} adds, {built.removes} removes, {built.duplicates} duplicates merged, "
          f"{len(built.data)} bytes -> {args.out}")
    for issuer, n in sorted(built.per_issuer.items()):
        quota = issuers.get(issuer)
        print(f"  issuer {issuer}: {n} entries" + (f" (quota {quota})" if quota else ""))
    for issuer, n in sorted(built.dropped_quota.items()):
        print(f"  issuer {issuer}: {n} entries over quota dropped (--resolve keep-newest)")
    for w in built.warnings:
        print(f"  warning: {w}")
    return 0


def _list_push(t, path):
    from host_tools.transfer import push_list
    from terminal import negative_list as nl

    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise ToolError(f"cannot read {path}: {e.strerror}") from None
    head = nl.parse_header(data[:nl.HEADER_LEN])
    if head is None:
        raise ToolError(f"{path} is not a list file (bad header)")
    kind, version, base, _day, key_id = head
    from host_tools.listbuild import decode as decode_list

    entries = decode_list(data).entries()
    capacity = int(_list_status(t)["list_capacity"])
    if kind == nl.KIND_FULL and entries > capacity:
        raise ToolError(f"{path}: {entries} entries, the terminal holds {capacity}: "
                        "not sent")
    print(push_list(t, data, kind, version, base))
    return 0


# -- card ---------------------------------------------------------------------------

def argparse_card(sub):
    p = sub.add_parser(
        "card", help="present a card to a terminal's reader (nfcpy card emulation)",
        description="Emulate the FeliCa card of TOKEN with nfcpy until a reader has read it "
        "(--taps times). On the emulated board the RF field is nfcpy's UDP link: give the "
        "--rf-port the board was started with. The card's image comes from --wallet (issued "
        "on first use) and the counters the terminal writes back are saved there, so the "
        "same card carries its counters from terminal to terminal.")
    csub = p.add_subparsers(dest="card_cmd", required=True)
    c = csub.add_parser("present", help="emulate the card until it is read")
    c.add_argument("--token", required=True)
    c.add_argument("--issuer", type=int, default=1)
    c.add_argument("--product", default="credit", choices=["credit", "prepaid", "debit"])
    c.add_argument("--expiry", default=None, help="card expiry YYYY-MM for a new card")
    c.add_argument("--wallet", default="wallet.json", help="JSON wallet (default wallet.json)")
    c.add_argument("--rf-port", type=int, default=None,
                   help="the emulated board's RF UDP port (emulated board)")
    c.add_argument("--device", default=None,
                   help="an nfcpy device path instead, e.g. usb:054c:06c3 (bench reader)")
    c.add_argument("--taps", type=int, default=1, help="taps to serve (default 1)")
    c.add_argument("--timeout", type=float, default=60.0, help="give up after seconds")


def do_card(args):
    from host_tools.cardemu import CardEmulator
    from host_tools.wallet import Wallet, card_memory

    if not (args.rf_port or args.device):
        raise ToolError("give --rf-port (emulated board) or --device (nfcpy reader)")
    wallet = Wallet.open(args.wallet)
    ring = Keyring.open(args.keyring)
    image = wallet.card(args.token, args.issuer, args.product, ring, args.expiry)
    memory = card_memory(args.token, image)
    device = args.device or f"udp:127.0.0.1:{args.rf_port}"
    with CardEmulator(memory, device) as card:
        print(f"card {args.token} on {device}: waiting for a reader ...", file=sys.stderr,
              flush=True)
        served = card.serve(taps=args.taps, timeout=args.timeout)
    wallet.store(args.token, bytes(memory.image[:len(image)]))
    wallet.save()
    if not served:
        raise ToolError(f"no reader read the card within {args.timeout:g} s")
    from host_tools.wallet import describe

    d = describe(bytes(memory.image[:len(image)]))
    print(f"card {args.token}: read {served} time(s); counters now atc {d['atc']}, "
          f"offline today {d['offline_today']}, since online {d['offline_since_online']}")
    return 0


# -- batch --------------------------------------------------------------------------

def argparse_batch(sub):
    p = sub.add_parser("batch", help="pull and acknowledge the clearing batch",
                       description="Close the terminal's batch, read every record not yet "
                       "acknowledged, check the batch MAC, store the records (centre "
                       "database, CSV, JSONL), then acknowledge so the terminal frees them. "
                       "Safe to repeat: the centre de-duplicates by terminal and sequence.")
    bsub = p.add_subparsers(dest="batch_cmd", required=True)
    pull = bsub.add_parser("pull", help="pull, store, acknowledge")
    pull.add_argument("--centre", default=None, metavar="DB", help="centre database to fill")
    pull.add_argument("--csv", default=None, help="also write the records as CSV")
    pull.add_argument("--jsonl", default=None, help="also write the records as JSON lines")
    pull.add_argument("--no-ack", action="store_true",
                      help="do not acknowledge (the terminal keeps the records)")


def do_batch(args):
    from host_tools.transfer import ack_batch, pull_batch

    if not (args.centre or args.csv or args.jsonl or args.no_ack):
        raise ToolError("batch pull needs somewhere to store the records before they are "
                        "acknowledged: --centre DB, --csv FILE or --jsonl FILE "
                        "(or --no-ack to only look)")
    with _link(args) as t:
        batch = pull_batch(t)
        stored = []
        if args.centre:
            inserted, dup = _centre(args.centre, args.keyring).ingest_clearing(
                batch.terminal_id, batch.records)
            stored.append(f"centre: {inserted} new, {dup} already there")
        if args.csv:
            _write_csv(args.csv, batch.records)
            stored.append(f"csv: {args.csv}")
        if args.jsonl:
            _write_jsonl(args.jsonl, batch.records)
            stored.append(f"jsonl: {args.jsonl}")
        print(f"batch {batch.batch_id}: {batch.count} records (seq {batch.first_seq}.."
              f"{batch.first_seq + batch.count - 1}), {batch.wire_bytes} bytes on the wire, "
              f"{batch.seconds:.2f} s; " + "; ".join(stored or ["not stored"]))
        if not args.no_ack:
            print(f"acknowledged: {ack_batch(t, batch.batch_id)}")
    return 0


_ASCII_FIELDS = ("approval_code", "masked_token")


def _plain(rec: dict) -> dict:
    """A record for CSV/JSON: ASCII fields as text, other bytes as hex."""
    out = {}
    for k, v in rec.items():
        if isinstance(v, bytes | bytearray):
            v = bytes(v).decode("ascii", "replace") if k in _ASCII_FIELDS else bytes(v).hex()
        out[k] = v
    return out


def _write_csv(path, records):
    import csv

    exists = Path(path).exists()
    with open(path, "a", newline="") as f:
        rows = [_plain(r) for r in records]
        if not rows:
            return
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        if not exists:
            w.writeheader()
        w.writerows(rows)


def _write_jsonl(path, records):
    with open(path, "a") as f:
        for r in records:
            f.write(json.dumps(_plain(r)) + "\n")


COMMANDS = {
    "emulate": (argparse_emulate, do_emulate),
    "status": (argparse_status, do_status),
    "time": (argparse_time, do_time),
    "params": (argparse_params, do_params),
    "keys": (argparse_keys, do_keys),
    "sale": (argparse_sale, do_sale),
    "batch": (argparse_batch, do_batch),
    "card": (argparse_card, do_card),
    "list": (argparse_list, do_list),
    "centre": (argparse_centre, do_centre),
    "demo": (argparse_demo, do_demo),
    "simulate": (argparse_simulate, do_simulate),
    "flash": (argparse_flash, do_flash),
}


def build_parser():
    ap = argparse.ArgumentParser(
        prog=PROG, description="Talk to an offline NFC payment terminal: a board on a serial "
        "port or the emulated board.", epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", default=os.environ.get("TERMCTL_PORT"),
                    help="terminal serial port or pyserial URL (default $TERMCTL_PORT)")
    ap.add_argument("--timeout", type=float, default=3.0,
                    help="seconds to wait for each reply (default 3)")
    ap.add_argument("--keyring", default=None,
                    help="keyring file (default $TERMCTL_KEYRING or ~/.config/termctl/)")
    ap.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for factory, _ in COMMANDS.values():
        factory(sub)
    return ap


def main(argv=None) -> int:
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `termctl status | head` exits quietly
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command][1](args) or 0
    except ToolError as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
