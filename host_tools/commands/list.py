"""termctl list build / push / status: the negative list."""

from __future__ import annotations

from pathlib import Path

from host_tools.commands.common import board_value, json_output, print_json, print_kv, typed
from host_tools.errors import ToolError


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
                   help="over quota: keep the newest entries; the list says how many were "
                   "withheld and the terminal sends that issuer's cards online")
    b.add_argument("--board", default="emulator",
                   help="board whose list capacity bounds the list")
    p_push = lsub.add_parser("push", help="send a list file to the terminal and install it")
    p_push.add_argument("file", help="list file from `termctl list build`")
    json_output(lsub.add_parser("status", help="version, entries and quotas on the terminal"))


def do_list(state, args):
    from host_tools.transfer import list_status, push_list_file

    if args.list_cmd == "build":
        return _build(state, args)
    if args.list_cmd == "status":
        fields = list_status(state.link())
        print_json(typed(fields)) if args.json else print_kv(fields)
        return 0
    print(push_list_file(state.link(), args.file))
    return 0


def _quotas(specs: list[str]) -> dict[int, int]:
    quotas = {}
    for q in specs:
        issuer, eq, n = q.partition("=")
        if not eq or not issuer.isdigit() or not n.isdigit():
            raise ToolError(f"bad --quota {q!r}: use ISSUER=N")
        quotas[int(issuer)] = int(n)
    return quotas


def _build(state, args):
    import datetime as dt

    from host_tools import listbuild

    ring = state.keyring()
    key_id, list_key = ring.list_key()
    quotas = _quotas(args.quota)
    issuers = {int(i): quotas.get(int(i)) for i in ring.deployment()["issuers"]}
    unknown = set(quotas) - set(issuers)
    if unknown:
        raise ToolError(f"--quota for unknown issuer(s) {sorted(unknown)}")
    text = listbuild.read_csv(args.csv)
    common = dict(issuers=issuers, list_key=list_key,
                  capacity=board_value(args.board, "LIST_CAPACITY"),
                  today=listbuild.day_number(dt.date.today()), resolve=args.resolve,
                  name=args.csv)
    if args.base:
        try:
            base = Path(args.base).read_bytes()
        except OSError as e:
            raise ToolError(f"cannot read --base {args.base}: {e.strerror}") from None
        built = listbuild.build_delta(text, base=base, version=args.version, **common)
    else:
        built = listbuild.build_full(text, version=1 if args.version is None else args.version,
                                     key_id=key_id, **common)
    try:
        Path(args.out).write_bytes(built.data)
    except OSError as e:
        raise ToolError(f"cannot write {args.out}: {e.strerror}") from None
    kind = "full" if built.kind == 1 else f"delta on v{built.base_version}"
    print(f"list v{built.version} ({kind}): {built.entries} entries on the terminal, "
          f"{built.adds} adds, {built.removes} removes, {built.duplicates} duplicates merged, "
          f"{len(built.data)} bytes -> {args.out}")
    for issuer, n in sorted(built.per_issuer.items()):
        quota = issuers.get(issuer)
        print(f"  issuer {issuer}: {n} entries" + (f" (quota {quota})" if quota else ""))
    for issuer, n in sorted(built.dropped_quota.items()):
        print(f"  issuer {issuer}: {n} entries over quota dropped (--resolve keep-newest)")
    for issuer, n in sorted(built.withheld.items()):
        print(f"  issuer {issuer}: {n} withheld in the list: the terminal sends its cards "
              "online")
    for w in built.warnings:
        print(f"  warning: {w}")
    return 0
