"""termctl centre: cards, blocks, reports, the fraud detector, the next list, serve."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from host_tools.commands.common import board_value, json_output, print_json
from host_tools.errors import ToolError


def argparse_centre(sub):
    p = sub.add_parser(
        "centre", help="the centre: cards, blocks, reports, the fraud detector, next list",
        description="The authorisation and clearing centre on SQLite (--db, default "
        "$TERMCTL_CENTRE or .termctl/centre.db). `termctl sale --centre DB` uses it for "
        "online authorisation and `termctl batch pull --centre DB` fills its clearing. "
        "A database named by --centre or $TERMCTL_CENTRE that does not exist is refused "
        "unless --create is given; the default is started by the first `add-card`.")
    _centre_options(p, top=True)
    csub = p.add_subparsers(dest="centre_cmd", required=True)
    a = csub.add_parser("add-card", help="issue a card/token")
    a.add_argument("token", help="token number, 1-16 letters or digits")
    a.add_argument("--issuer", type=int, default=1, help="issuer id")
    a.add_argument("--product", default="credit", choices=["credit", "prepaid", "debit"],
                   help="card product")
    a.add_argument("--balance", type=int, default=None, help="prepaid/debit balance, yen")
    a.add_argument("--credit-limit", type=int, default=None,
                   help="credit limit, yen (credit cards; default 300,000)")
    a.add_argument("--expiry", default=None, help="YYYY-MM-DD")
    b = csub.add_parser("block", help="block a token (reported stolen)")
    b.add_argument("token", help="token number")
    b.add_argument("--reason", default="reported", help="why, kept with the block")
    r = csub.add_parser("report", help="per day: offline/online counts and amounts, declines")
    json_output(r)
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
    for leaf in csub.choices.values():
        _centre_options(leaf, top=False)


def _centre_options(p, top: bool) -> None:
    """--centre/--db and --create, before the subcommand or after it."""
    def d(value):
        return value if top else argparse.SUPPRESS

    p.add_argument("--centre", "--db", dest="centre", metavar="DB", default=d(None),
                   help="centre database (default: $TERMCTL_CENTRE, else .termctl/centre.db)")
    p.add_argument("--create", action="store_true", default=d(False),
                   help="start a new database if the file does not exist")


def do_centre(state, args):
    from host_tools.centre import Centre
    from host_tools.statefiles import DEFAULT_CENTRE, state_file

    path = state_file(args.centre, "TERMCTL_CENTRE", DEFAULT_CENTRE, "centre database",
                      create=args.create, may_start=args.centre_cmd == "add-card")
    path.parent.mkdir(parents=True, exist_ok=True)
    c = Centre.for_deployment(path, state.keyring())
    return _HANDLERS[args.centre_cmd](state, args, c)


def _today(c) -> int:
    """The centre's business day now (UTC plus its cutover), not the host's local date."""
    return c.day(int(time.time()))


def _add_card(state, args, c):
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
    return 0


def _block(state, args, c):
    c.block(args.token, int(time.time()), args.reason)
    print(f"blocked {args.token}: it goes on the next negative list")
    return 0


def _report(state, args, c):
    from host_tools.centre import as_day

    hi = as_day(args.to_day) if args.to_day else _today(c)
    lo = as_day(args.from_day) if args.from_day else hi - 6
    rows = c.report(lo, hi)
    if args.json:
        print_json([{k: v for k, v in row.items() if k != "day"} for row in rows])
        return 0
    if not rows:
        print("no days")
        return 0
    print(_REPORT_HEAD)
    for r in rows:
        print(f"{r['date']:<10}  {r['offline_count']:>7,} {r['offline_amount']:>13,}  "
              f"{r['online_count']:>7,} {r['online_amount']:>13,}  "
              f"{r['offline_declines']:>8,} {r['online_declines']:>7,}  {r['alerts']:>6,}"
              f"  {r['list_withheld']:>8,}")
    return 0


# 91 columns: offline and online approvals (count, yen), declines, alerts per day, and
# the entries the day's next list withheld over issuers' quotas (online-only issuers)
_REPORT_HEAD = (
    "            -- approved offline --  -- approved online ---  --- declined ---"
    "          list\n"
    "date          count           yen    count           yen   offline  online  alerts"
    "  withheld")


def _serve(state, args, c):
    from host_tools import console

    return console.serve(state.link(), c, args.pull_every, args.wait)


def _detect(state, args, c):
    from host_tools.centre import as_day, day_text
    from host_tools.detector import Detector

    day = as_day(args.day) if args.day else _today(c)
    findings = Detector(c).run(day)
    for f in findings:
        print(f"{f.kind:<20} {f.masked_token:<10} issuer {f.issuer}: {f.summary}")
    print(f"{len(findings)} finding(s) for {day_text(day)}")
    return 0


def _next_list(state, args, c):
    from host_tools import listbuild
    from host_tools.centre import as_day
    from host_tools.detector import Detector

    day = as_day(args.day) if args.day else _today(c)
    nxt = Detector(c).next_negative_list(day)
    key_id = state.keyring().list_key()[0]
    over = {i: len(v) for i, v in nxt.overflow.items() if v}
    data = listbuild.encode_full(nxt.sections(), version=args.version, base_day=day,
                                 key_id=key_id, quotas=nxt.quotas,
                                 capacity=board_value(args.board, "LIST_CAPACITY"),
                                 withheld=over)
    Path(args.out).write_bytes(data)
    print(f"list v{args.version}: {len(nxt.entries)} entries, {len(data)} bytes -> "
          f"{args.out}" + (f"; withheld over quota (those issuers go online-only): {over}"
                           if over else ""))
    for note in nxt.notes:
        print(f"  {note}")
    return 0


_HANDLERS = {"add-card": _add_card, "block": _block, "report": _report, "serve": _serve,
             "detect": _detect, "next-list": _next_list}
