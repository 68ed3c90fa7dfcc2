"""`make bench` stays runnable: every benchmark runs in its quick form (smaller
sizes) and writes its tables, into a temporary directory."""

import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


BENCHES = sorted(m.name[len("bench_"):] for m in pkgutil.iter_modules([str(ROOT / "bench")])
                 if m.name.startswith("bench_"))
# Benchmarks whose goals must be measured even in the quick form.
WITH_GOALS = {"negative_list", "decision"}


@pytest.mark.parametrize("name", BENCHES)
def test_every_benchmark_runs_quick(tmp_path, name):
    """One benchmark a test, so pytest-xdist spreads them over the cores (together
    they are the longest test by far)."""
    proc = subprocess.run([sys.executable, "-m", "bench", "--quick", "--out", str(tmp_path),
                           name], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    tables = json.loads((tmp_path / "results.json").read_text())
    assert tables and {t["bench"] for t in tables} == {name}
    assert all(t["rows"] for t in tables)
    md = (tmp_path / "results.md").read_text()
    # every table, then the Goals table: each goal beside its figure, all met
    assert md.count("### ") - md.count("### Goals") == len(tables)
    goals = [g for t in tables for g in t.get("goals", ())]
    assert all(g["ok"] for g in goals)
    if goals:
        assert "### Goals" in md
    if name in WITH_GOALS:
        assert goals


def test_a_missed_goal_fails_the_bench(tmp_path, capsys):
    from bench import goal
    from bench.__main__ import report

    met = {"title": "t", "columns": ["a"], "rows": [[1]], "bench": "x",
           "goals": [goal("reads per lookup", 2.0, "<=", 2, fmt="%.2f")]}
    assert report([met], tmp_path) == 0
    missed = dict(met, goals=[goal("reads per lookup", 2.5, "<=", 2, fmt="%.2f")])
    assert report([met, missed], tmp_path) == 1
    out = capsys.readouterr()
    assert "goal missed: reads per lookup: 2.50, goal <= 2.00" in out.err
    md = (tmp_path / "results.md").read_text()
    assert "### Goals" in md and "**MISSED**" in md


def test_goal_ops():
    import pytest

    from bench import goal

    assert goal("f", 5, "<", 6)["ok"] and not goal("f", 6, "<", 6)["ok"]
    assert goal("f", 6, ">=", 6)["ok"] and not goal("f", 5, ">=", 6)["ok"]
    with pytest.raises(ValueError):
        goal("f", 1, "=<", 2)
