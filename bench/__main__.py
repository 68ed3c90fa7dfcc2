"""Run the benchmarks: python -m bench [--quick] [--out DIR] [NAME ...]"""

import argparse
import importlib
import json
import pkgutil
import platform
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def format_table(table):
    cols = table["columns"]
    rows = [[str(c) for c in row] for row in table["rows"]]
    widths = [max(len(str(c)), *(len(r[i]) for r in rows)) if rows else len(str(c))
              for i, c in enumerate(cols)]
    line = lambda cells: "| " + " | ".join(s.ljust(w) for s, w in zip(cells, widths)) + " |"
    out = ["### " + table["title"], "", line([str(c) for c in cols]),
           "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(r) for r in rows]
    if table.get("notes"):
        out += ["", table["notes"]]
    return "\n".join(out) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    ap.add_argument("names", nargs="*", help="run only these (e.g. negative_list)")
    ap.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    ap.add_argument("--out", type=Path, default=RESULTS,
                    help="where results.md and results.json go (default: bench/results)")
    args = ap.parse_args(argv)
    pkg = Path(__file__).resolve().parent
    names = sorted(m.name[len("bench_"):] for m in pkgutil.iter_modules([str(pkg)])
                   if m.name.startswith("bench_"))
    if args.names:
        unknown = set(args.names) - set(names)
        if unknown:
            ap.error("unknown benchmark(s): %s (have: %s)" % (", ".join(sorted(unknown)),
                                                              ", ".join(names)))
        names = args.names
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    tables = []
    for name in names:
        print("== bench %s" % name, file=sys.stderr, flush=True)
        t0 = time.monotonic()
        mod = importlib.import_module("bench.bench_" + name)
        for table in mod.run(quick=args.quick):
            table["bench"] = name
            tables.append(table)
            print(format_table(table), flush=True)
        print("   (%s took %.1f s)" % (name, time.monotonic() - t0), file=sys.stderr)
    return report(tables, out)


def report(tables, out):
    """Write results.md/.json for `tables` into out; print the goals; returns the
    exit code: 1 when a goal is missed."""
    header = "# Benchmark results\n\n%s, Python %s, %s\n\n" % (
        time.strftime("%Y-%m-%d %H:%M:%S"), platform.python_version(), platform.machine())
    goals = goals_table(tables)
    shown = tables + ([goals] if goals["rows"] else [])
    if goals["rows"]:
        print(format_table(goals), flush=True)
    (out / "results.md").write_text(header + "\n".join(format_table(t) for t in shown))
    (out / "results.json").write_text(json.dumps(tables, indent=1))
    print("written: %s" % (out / "results.md"))
    missed = [g for t in tables for g in t.get("goals", ()) if not g["ok"]]
    for g in missed:
        print("bench: goal missed: %s: %s, goal %s" % (g["figure"], g["measured"], g["goal"]),
              file=sys.stderr)
    return 1 if missed else 0


def goals_table(tables):
    """Every goal of every table, in one table: figure, measured, goal, met."""
    rows = []
    for t in tables:
        for g in t.get("goals", ()):
            rows.append([t["bench"], g["figure"], g["measured"], g["goal"],
                         "yes" if g["ok"] else "**MISSED**"])
    return {"title": "Goals", "columns": ["bench", "figure", "measured", "goal", "met"],
            "rows": rows, "bench": "goals"}


if __name__ == "__main__":
    sys.exit(main())
