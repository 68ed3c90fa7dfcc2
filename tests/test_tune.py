"""termctl tune (host_tools/tune.py): the frontier, the recommended point and its
reason, on small worlds; points are measured against iD on the same world."""

import json
import subprocess
import sys

from host_tools import scenario, tune
from host_tools.keyring import Keyring
from host_tools.world import POLICIES, resize


def test_pareto_keeps_only_points_nothing_beats():
    a = tune.Point({"a": 1}, online=0.05, loss_mean=0.3, fees=100)
    b = tune.Point({"a": 2}, online=0.08, loss_mean=0.2, fees=120)
    c = tune.Point({"a": 3}, online=0.09, loss_mean=0.35, fees=130)  # worse than a
    d = tune.Point({"a": 4}, online=0.05, loss_mean=0.3, fees=100)  # equal to a
    assert tune.pareto([a, b, c, d]) == [a, b, d]


def test_a_point_is_the_designed_policy_with_its_settings():
    p = tune.policy_of({"lower_consecutive_offline": 12, "list": "quota", "push": "daily"})
    assert p.params["lower_consecutive_offline"] == 12
    assert p.params["upper_consecutive_offline"] == 24
    assert (p.list_quota, p.push, p.overflow_online_only) == ("world", "daily", True)
    assert tune.policy_of({}).params == POLICIES["designed"].params
    # the terminal refuses a random threshold at or above the floor
    assert tune.policy_of({"floor_limit": 5000, "random_threshold": 6000}) is None


def test_tune_measures_against_id_and_recommends(tmp_path):
    ring = Keyring.open(tmp_path / "keyring.json")
    worlds = {n: resize(scenario.load(n), days=4, shops=3, shoppers=10)
              for n in ("incident", "card-testing")}
    t = tune.tune(worlds, [1], ring, budget=3, say=lambda *_: None)
    assert 1 <= len(t.points) <= 3 and t.frontier
    assert t.recommended in t.frontier
    for p in t.points:
        assert len(p.runs) == 2
        for run in p.runs:
            assert run["id_loss"] > 0 and 0 <= run["loss"]
    assert t.points[0].label() == "defaults"
    text = t.table()
    assert "recommended:" in text and "why:" in text
    assert json.loads(t.to_json())["recommended"] == t.recommended.settings
    assert t.plot(tmp_path / "f.png").read_bytes()[:4] == b"\x89PNG"


def test_termctl_tune_writes_table_plot_and_json(tmp_path):
    r = subprocess.run([sys.executable, "-m", "host_tools.cli", "tune", "--serial",
                        "--world", "incident", "--seeds", "1", "--budget", "2", "--days", "4",
                        "--shops", "2", "--shoppers", "8", "--out", str(tmp_path / "o")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "recommended:" in r.stdout
    out = tmp_path / "o"
    assert (out / "tune.txt").read_text().startswith("2 points on 1 worlds x 1 seeds") or \
        (out / "tune.txt").read_text().startswith("1 points on 1 worlds x 1 seeds")
    assert (out / "frontier.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((out / "tune.json").read_text())["seeds"] == [1]


def test_termctl_tune_refuses_bad_seeds():
    r = subprocess.run([sys.executable, "-m", "host_tools.cli", "tune", "--seeds", "one"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert r.stderr.strip() == "termctl: --seeds 'one': give integers, e.g. 1,2,3"
