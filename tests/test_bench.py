"""`make bench` stays runnable: every benchmark runs in its quick form (smaller
sizes) and writes its tables, into a temporary directory."""

import json
import pkgutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_benchmark_runs_quick(tmp_path):
    names = sorted(m.name[len("bench_"):] for m in pkgutil.iter_modules([str(ROOT / "bench")])
                   if m.name.startswith("bench_"))
    proc = subprocess.run([sys.executable, "-m", "bench", "--quick", "--out", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    tables = json.loads((tmp_path / "results.json").read_text())
    assert {t["bench"] for t in tables} == set(names)
    assert all(t["rows"] for t in tables)
    assert (tmp_path / "results.md").read_text().count("### ") == len(tables)
