"""termctl params show / set: the terminal's parameters."""

from __future__ import annotations

from host_tools.commands.common import json_output, print_json


def argparse_params(sub):
    p = sub.add_parser("params", help="show or set the terminal's parameters",
                       description="Parameters are integers (amounts in yen). `set` checks "
                       "every value first: one bad value and nothing changes. Authenticated.")
    psub = p.add_subparsers(dest="params_cmd", required=True)
    json_output(psub.add_parser("show", help="list every parameter and its value"))
    s = psub.add_parser("set", help="set KEY=VALUE ... atomically")
    s.add_argument("assignments", nargs="+", metavar="KEY=VALUE",
                   help="e.g. floor_limit=9000 issuer.3.floor_limit=0")


def do_params(state, args):
    from host_tools import paramset

    t = state.link()
    if args.params_cmd == "show":
        if args.json:
            print_json(t.params())
            return 0
        return _show(t)
    changes = paramset.parse(args.assignments)
    before = t.params()
    paramset.check(changes, before, t.keyring.deployment()["issuers"])
    reply = t.set_params(changes)
    for line in paramset.changed(before, t.params(), changes):
        print(line)
    print(f"params set ({reply})")
    return 0


def _show(t) -> int:
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
