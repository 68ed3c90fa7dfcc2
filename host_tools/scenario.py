"""Worlds as TOML scenario files: `termctl simulate --world FILE`.

    spec = load("host_tools/scenarios/adaptive.toml")   # a world.WorldSpec
    world = world.generate(spec, seed=1)
    names()                                              # the shipped scenarios

Every key is optional: what a file leaves out keeps the built-in world's value
(world.WorldSpec and its parts). A file is checked as a whole before anything
runs; the first problem is one line that names the file and the key, e.g.
`adaptive.toml: stolen[1].per_day: must be an integer 1..24, got 0`.
docs/simulation.md lists the keys.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import sys
from pathlib import Path
from typing import Any

from host_tools import world as W
from host_tools.errors import ToolError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

SHIPPED = Path(__file__).parent / "scenarios"
_MAX_AMOUNT = 100_000_000

# Per key: (kind, lo, hi) for ints, int pairs and int lists; ("choice", options);
# ("prob",) a probability; ("bands",) amount bands; ("issuer_counts",) {issuer: n}.
_RULES: dict[str, dict[str, tuple]] = {
    "world": {"name": ("str",), "days": ("int", 2, 3650), "shops": ("int", 2, 100_000),
              "start": ("date",)},
    "shoppers": {"count": ("int", 0, 10_000_000), "issuers": ("ints", 0, 0xFFFF),
                 "purchase_prob": ("prob",), "home_shops": ("ints", 1, 100),
                 "hours": ("hours",), "amounts": ("bands",),
                 "online_history": ("pair", 0, 60_000), "credit_limit": ("int", 0, _MAX_AMOUNT)},
    "stolen": {"count": ("int", 0, 1_000_000), "issuer": ("int", 0, 0xFFFF),
               "strategy": ("choice", W.STRATEGIES), "amounts": ("ints", 1, _MAX_AMOUNT),
               "per_day": ("int", 1, 24), "shop_choice": ("choice", W.SHOP_CHOICES),
               "hours": ("hours",), "first_day": ("pair", 0, 3650),
               "report_delay": ("pair", 0, 3650), "report_hour": ("int", 0, 23),
               "phone_offline": ("bool",), "notify_report_days": ("int", 0, 3650),
               "online_history": ("pair", 0, 60_000), "credit_limit": ("int", 0, _MAX_AMOUNT),
               "give_up_after": ("int", 0, 3650)},
    "card_testing": {"cards": ("int", 1, 1_000_000), "issuer": ("int", 0, 0xFFFF),
                     "balances": ("ints", 0, _MAX_AMOUNT), "amounts": ("ints", 1, _MAX_AMOUNT),
                     "attempts_per_day": ("int", 1, 1000), "days": ("ints", 0, 3650),
                     "hour": ("int", 0, 23), "interval_s": ("int", 1, 86_400),
                     "shops": ("choice", ("one", "spread")), "stop_after_decline": ("bool",)},
    "enumeration": {"cards": ("int", 1, 1_000_000), "issuer": ("int", 0, 0xFFFF),
                    "amount": ("int", 1, _MAX_AMOUNT), "day": ("int", 0, 3650),
                    "hour": ("int", 0, 23), "interval_s": ("int", 1, 86_400),
                    "forged_pct": ("int", 0, 100)},
    "lists": {"quota": ("int", 0, 10_000_000), "background_blocked": ("issuer_counts",),
              "push": ("choice", W.PUSH_SCHEDULES)},
}
_ARRAYS = {"stolen": W.Stolen, "card_testing": W.CardTesting, "enumeration": W.Enumeration}
_TABLES = {"shoppers": W.Shoppers, "lists": W.Lists}


def names() -> list[str]:
    return sorted(p.stem for p in SHIPPED.glob("*.toml"))


def resolve(name: str) -> Path:
    """A path, or the name of a shipped scenario (`incident`, `adaptive`, ...)."""
    p = Path(name)
    if p.exists() or p.suffix == ".toml" or "/" in name:
        return p
    shipped = SHIPPED / f"{name}.toml"
    if shipped.exists():
        return shipped
    raise ToolError(f"no scenario file {name!r} (shipped: {', '.join(names())})")


def load(path: str | Path) -> W.WorldSpec:
    p = resolve(str(path))
    try:
        text = p.read_bytes().decode("utf-8")
    except OSError as e:
        raise ToolError(f"{p}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise ToolError(f"{p.name}: not UTF-8 text (a TOML file is UTF-8)") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ToolError(f"{p.name}: not valid TOML: {e}") from None
    try:
        return parse(data)
    except _Bad as e:
        raise ToolError(f"{p.name}: {e}") from None


class _Bad(Exception):
    pass


def parse(data: dict[str, Any]) -> W.WorldSpec:
    """A WorldSpec from a decoded TOML document (raises _Bad: 'key: problem')."""
    known = set(_RULES)
    for key in data:
        if key not in known:
            raise _Bad(f"{key}: unknown section (one of {', '.join(sorted(known))})")
    top = _table(data, "world")
    spec = W.WorldSpec()
    fields = {k: _value(f"world.{k}", v, _rule("world", k)) for k, v in top.items()}
    if fields:
        spec = dataclasses.replace(spec, **fields)
    for section, cls in _TABLES.items():
        if section in data:
            got = {k: _value(f"{section}.{k}", v, _rule(section, k))
                   for k, v in _table(data, section).items()}
            spec = dataclasses.replace(spec, **{section: cls(**got)})
    for section, cls in _ARRAYS.items():
        if section not in data:
            continue
        items = data[section]
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            raise _Bad(f"{section}: must be an array of tables ([[{section}]])")
        groups = []
        for n, item in enumerate(items, 1):
            got = {k: _value(f"{section}[{n}].{k}", v, _rule(section, k, f"{section}[{n}]"))
                   for k, v in item.items()}
            groups.append(cls(**got))
        spec = dataclasses.replace(spec, **{section: tuple(groups)})  # type: ignore[arg-type]
    _check_whole(spec)
    return spec


def _table(data, section) -> dict:
    t = data.get(section, {})
    if not isinstance(t, dict):
        raise _Bad(f"{section}: must be a table ([{section}])")
    return t


def _rule(section: str, key: str, where: str | None = None) -> tuple:
    rules = _RULES[section]
    if key not in rules:
        raise _Bad(f"{where or section}.{key}: unknown key (one of {', '.join(sorted(rules))})")
    return rules[key]


def _value(key: str, v: Any, rule: tuple) -> Any:
    kind = rule[0]
    if kind == "str":
        if not isinstance(v, str) or not v.strip():
            raise _Bad(f"{key}: must be a non-empty string")
        return v
    if kind == "bool":
        if not isinstance(v, bool):
            raise _Bad(f"{key}: must be true or false, got {v!r}")
        return v
    if kind == "date":
        if isinstance(v, str):
            try:
                return dt.date.fromisoformat(v)
            except ValueError:
                pass
        elif isinstance(v, dt.date) and not isinstance(v, dt.datetime):
            return v
        raise _Bad(f"{key}: must be a date (2026-11-02), got {v!r}")
    if kind == "int":
        return _int(key, v, rule[1], rule[2])
    if kind == "prob":
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1:
            raise _Bad(f"{key}: must be a probability 0..1, got {v!r}")
        return float(v)
    if kind == "choice":
        if v not in rule[1]:
            raise _Bad(f"{key}: must be one of {', '.join(rule[1])}, got {v!r}")
        return v
    if kind == "ints":
        if not isinstance(v, list) or not v:
            raise _Bad(f"{key}: must be a non-empty list of integers")
        return tuple(_int(key, x, rule[1], rule[2]) for x in v)
    if kind in ("pair", "hours"):
        lo, hi = (0, 24) if kind == "hours" else (rule[1], rule[2])
        if not isinstance(v, list) or len(v) != 2:
            raise _Bad(f"{key}: must be a pair [low, high]")
        a, b = (_int(key, x, lo, hi) for x in v)
        if a > b:
            raise _Bad(f"{key}: low {a} is above high {b}")
        return (a, b)
    if kind == "bands":
        return _bands(key, v)
    if kind == "issuer_counts":
        if not isinstance(v, dict):
            raise _Bad(f"{key}: must be a table of issuer = count, e.g. {{ 1 = 18 }}")
        out = []
        for issuer, n in v.items():
            if not issuer.isdigit() or int(issuer) > 0xFFFF:
                raise _Bad(f"{key}: issuer {issuer!r} must be a number 0..65535")
            out.append((int(issuer), _int(f"{key}.{issuer}", n, 0, 1_000_000)))
        return tuple(out)
    raise AssertionError(kind)


def _int(key: str, v: Any, lo: int, hi: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise _Bad(f"{key}: must be an integer {lo:,}..{hi:,}, got {v!r}")
    return v


def _bands(key: str, v: Any) -> tuple:
    if not isinstance(v, list) or not v:
        raise _Bad(f"{key}: must be a list of [probability, lowest, highest, step]")
    out = []
    for band in v:
        if not isinstance(band, list) or len(band) != 4:
            raise _Bad(f"{key}: each band is [probability, lowest, highest, step]")
        p = _value(key, band[0], ("prob",))
        lo, hi, step = (_int(key, x, 1, _MAX_AMOUNT) for x in band[1:])
        if hi <= lo:
            raise _Bad(f"{key}: band [{lo}, {hi}] is empty")
        out.append((p, lo, hi, step))
    total = sum(b[0] for b in out)
    if abs(total - 1) > 1e-6:
        raise _Bad(f"{key}: band probabilities add up to {total:g}, not 1")
    return tuple(out)


def _check_whole(spec: W.WorldSpec) -> None:
    from host_tools.keyring import BENCH_ISSUERS

    known = {i for i, _ in BENCH_ISSUERS}

    def issuer(key, i):
        if i not in known:
            raise _Bad(f"{key}: issuer {i} has no card key (the bench issuers are "
                       f"{', '.join(str(k) for k in sorted(known))})")

    for i in spec.shoppers.issuers:
        issuer("shoppers.issuers", i)
    for name in ("stolen", "card_testing", "enumeration"):
        for n, g in enumerate(getattr(spec, name), 1):
            issuer(f"{name}[{n}].issuer", g.issuer)
    for i, _ in spec.lists.background_blocked:
        issuer("lists.background_blocked", i)
    for n, g in enumerate(spec.stolen, 1):
        if g.first_day[0] >= spec.days:
            raise _Bad(f"stolen[{n}].first_day: day {g.first_day[0]} is past the world's "
                       f"{spec.days} days")
        if not g.amounts and g.strategy == "fixed":
            raise _Bad(f"stolen[{n}].amounts: a fixed thief needs amounts")
    for n, g in enumerate(spec.card_testing, 1):
        late = [d for d in g.days if d >= spec.days]
        if late:
            raise _Bad(f"card_testing[{n}].days: day {late[0]} is past the world's "
                       f"{spec.days} days")
    for n, g in enumerate(spec.enumeration, 1):
        if g.day >= spec.days:
            raise _Bad(f"enumeration[{n}].day: day {g.day} is past the world's {spec.days} days")
