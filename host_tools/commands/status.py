"""termctl status: the terminal's firmware, board, heap, flash, clock and versions."""

from __future__ import annotations

import json

from host_tools.commands.common import print_kv


def argparse_status(sub):
    p = sub.add_parser("status", help="show the terminal's status",
                       description="Firmware version, board, heap, flash, clock and versions.")
    p.add_argument("--json", action="store_true", help="print as JSON")


def do_status(state, args):
    st = state.link().status()
    if args.json:
        print(json.dumps(st, indent=1))
    else:
        print_kv(st)
    return 0
