"""Small helpers several commands share: printing key=value tables, board values,
the scripted world's options (demo and simulate)."""

from __future__ import annotations

from host_tools.errors import ToolError


def yen(text: str) -> int:
    """argparse type: an amount in yen, 5000 or 5,000 or 5_000."""
    import argparse

    from host_tools.pos import parse_amount

    try:
        return parse_amount(text)
    except ToolError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def print_kv(fields: dict, indent: str = "") -> None:
    width = max(len(k) for k in fields)
    for k, v in fields.items():
        print(f"{indent}{k:<{width}}  {v}")


def board_value(board: str, name: str) -> int:
    from host_tools.build import board_values

    return int(board_values(board)[name])


def world_args(p, **defaults) -> None:
    """The scripted world's size and seed (demo and simulate)."""
    p.add_argument("--days", type=int, default=defaults["days"], help="days to run")
    p.add_argument("--shops", type=int, default=defaults["shops"], help="one terminal each")
    p.add_argument("--shoppers", type=int, default=defaults["shoppers"],
                   help="ordinary shoppers")
    p.add_argument("--stolen", type=int, default=defaults["stolen"], help="stolen cards")
    p.add_argument("--seed", type=int, default=1, help="the world's random seed")
    p.add_argument("--fee", type=int, default=5, help="yen per online authorisation")


def make_world(args):
    from host_tools.world import make_world as make

    try:
        return make(days=args.days, shops=args.shops, shoppers=args.shoppers,
                    stolen=args.stolen, seed=args.seed)
    except ValueError as e:
        raise ToolError(str(e)) from None
