"""Small helpers several commands share: printing key=value tables, board values,
the scripted world's options (demo and simulate)."""

from __future__ import annotations

import json
import re

from host_tools.errors import ToolError

# status fields that look like numbers but are names (a terminal id can be all digits)
_TEXT_FIELDS = {"terminal_id", "firmware", "board", "platform", "clock"}
_PAIR = re.compile(r"(\w+)=(-?\d+)$")


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
    """The world: a scenario file or the built-in one, its size and seed (demo,
    simulate). Size options override the file's values."""
    p.add_argument("--world", default=None, metavar="FILE",
                   help="a scenario file (TOML), or the name of a shipped one (incident, "
                   "adaptive, card-testing); default: the built-in world")
    p.add_argument("--days", type=int, default=None,
                   help=f"days to run (default: {defaults['days']}); with --world, the file's")
    p.add_argument("--shops", type=int, default=None,
                   help=f"one terminal each (default: {defaults['shops']}); with --world, the "
                   "file's")
    p.add_argument("--shoppers", type=int, default=None,
                   help=f"ordinary shoppers (default: {defaults['shoppers']}); with --world, "
                   "the file's")
    p.add_argument("--stolen", type=int, default=None,
                   help=f"stolen cards (default: {defaults['stolen']}); with --world, the "
                   "file's")
    p.add_argument("--seed", type=int, default=1, help="the world's random seed")
    p.add_argument("--fee", type=int, default=5, help="yen per online authorisation")
    p.set_defaults(world_defaults=defaults)


# Off a terminal the day lines are the periodic lines: no others in between.
DAY_LINES = float("inf")


def day_done(bar):
    """demo.run_policy's say(), called once at the end of each day: the day's line,
    printed above the bar, and the bar one day on."""
    def say(text: str) -> None:
        bar.write(text)
        bar.update(1)

    return say


def world_spec(args):
    """The WorldSpec the options describe."""
    from host_tools import scenario
    from host_tools.world import WorldSpec, resize

    if args.world:
        spec = scenario.load(args.world)
        sizes = {}
    else:
        spec = WorldSpec()
        sizes = dict(args.world_defaults)
    for name in ("days", "shops", "shoppers", "stolen"):
        if getattr(args, name) is not None:
            sizes[name] = getattr(args, name)
    for name, value in sizes.items():
        if value < (2 if name in ("days", "shops") else 0):
            raise ToolError(f"--{name} {value}: must be at least "
                            f"{2 if name in ('days', 'shops') else 0}")
    return resize(spec, **sizes)


def make_world(args, seed: int | None = None):
    from host_tools.world import generate

    try:
        return generate(world_spec(args), args.seed if seed is None else seed)
    except ValueError as e:
        raise ToolError(str(e)) from None


def json_output(p) -> None:
    """This command prints JSON under the global --json."""
    p.set_defaults(json_output=True)


def print_json(obj) -> None:
    print(json.dumps(obj, indent=1))


def typed(fields: dict[str, str]) -> dict:
    """A terminal's key=value reply with numbers as numbers: '1024' -> 1024, and
    '120 overflow=0' -> {'entries': 120, 'overflow': 0} (list_issuer_N)."""
    out: dict = {}
    for k, v in fields.items():
        words = v.split()
        if k in _TEXT_FIELDS or not words:
            out[k] = v
        elif len(words) == 1 and re.fullmatch(r"-?\d+", v):
            out[k] = int(v)
        elif re.fullmatch(r"-?\d+", words[0]) and all(_PAIR.match(w) for w in words[1:]):
            out[k] = {"entries": int(words[0])}
            out[k].update((m[1], int(m[2])) for m in map(_PAIR.match, words[1:]) if m)
        else:
            out[k] = v
    return out
