"""Benchmarks: `make bench` runs every bench/bench_*.py module.

Each module has `run(quick=False) -> list of tables`, a table being
`{"title": str, "columns": [str], "rows": [[...]], "notes": str}`, and
optionally `"goals": [goal(...), ...]`: figures with the goal they must meet.

    from bench import goal
    table["goals"] = [goal("flash reads per lookup, 1M entries", 2.0, "<=", 2),
                      goal("wire bytes / record bytes, 1 % delta", 1.04, "<=", 1.15, fmt="%.3fx")]

The runner prints every table, then one "Goals" table (figure, measured,
goal, met), writes them all to bench/results/results.md and .json, and exits
1 when any goal is missed, so `make bench` (and its quick form in `make
test`) goes red. A quick run checks the goals its module chose to measure at
quick sizes; a goal that only means something at full size is left out there
by the module, not faked.
"""

_OPS = {
    "<=": lambda v, g: v <= g,
    "<": lambda v, g: v < g,
    ">=": lambda v, g: v >= g,
    ">": lambda v, g: v > g,
    "==": lambda v, g: v == g,
}


def goal(figure, value, op, limit, fmt="%s", unit=""):
    """One figure and its goal: `value op limit` must hold.

    `value` and `limit` are numbers; `fmt` formats both for the table; `unit`
    follows them (" ms", " B").
    """
    if op not in _OPS:
        raise ValueError("goal op must be one of " + " ".join(_OPS))
    ok = bool(_OPS[op](value, limit))
    return {"figure": figure, "value": value, "op": op, "limit": limit,
            "measured": (fmt % value) + unit, "goal": "%s %s%s" % (op, fmt % limit, unit),
            "ok": ok}
