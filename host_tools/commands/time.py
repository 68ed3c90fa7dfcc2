"""termctl time set: the terminal's wall clock (UTC)."""

from __future__ import annotations

import datetime as dt
import time

from host_tools.errors import ToolError


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


def do_time(state, args):
    seconds = int(time.time()) if args.now else parse_iso(args.iso)
    print(f"clock set: {state.link().set_time(seconds)}")
    return 0
