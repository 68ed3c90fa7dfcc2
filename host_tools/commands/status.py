"""termctl status: the terminal's firmware, board, heap, flash, clock and versions."""

from __future__ import annotations

from host_tools.commands.common import json_output, print_json, print_kv, typed


def argparse_status(sub):
    p = sub.add_parser("status", help="show the terminal's status",
                       description="Firmware version, board, heap, flash, clock and versions.")
    json_output(p)


def do_status(state, args):
    st = state.link().status()
    if args.json:
        print_json(typed(st))
    else:
        print_kv(st)
    return 0
