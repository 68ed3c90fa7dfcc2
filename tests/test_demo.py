"""The demo's small world on emulated boards, as CI runs it (cards tapped with
nfcpy on each board's RF field): the report is consistent with the centre's
clearing, and the hardened policy loses less."""

import subprocess
import sys

import pytest

from host_tools import demo
from host_tools.keyring import Keyring
from host_tools.world import POLICIES, make_world


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    work = tmp_path_factory.mktemp("demo")
    world = make_world(days=6, shops=3, shoppers=15, stolen=3, seed=1)
    ring = Keyring.open(work / "keyring.json")
    out = {}
    for key in ("id", "designed"):
        with demo.EmulatedFleet(world.shops, work, ring, tag=key, rf=True) as links:
            out[key] = demo.run_policy(world, POLICIES[key], links, work, ring,
                                       say=lambda *_: None)
    return world, out


def test_losses_equal_the_approved_fraud_in_the_centres_clearing(results):
    world, out = results
    for r in out.values():
        assert r.total_loss > 0
        assert r.clearing_losses == r.total_loss
        assert sum(r.daily_losses) == r.total_loss


def test_the_project_loses_strictly_less_than_id_as_reported(results):
    _, out = results
    assert out["designed"].total_loss < out["id"].total_loss


def test_the_prepaid_brute_force_never_succeeds(results):
    _, out = results
    for r in out.values():
        p = r.prepaid
        assert p.attempts == 6 and p.approved == 0
        assert p.reached_issuer + p.declined_offline == 6
    # iD sends every attempt to the issuer; the project's decline limit stops the rest
    assert out["id"].prepaid.reached_issuer == 6
    assert out["designed"].prepaid.declined_offline > 0


def test_every_tap_was_decided(results):
    world, out = results
    taps = sum(len(t) for t in world.taps)
    assert all(r.taps + r.skipped == taps for r in out.values())


def test_termctl_demo_writes_report_and_chart(tmp_path):
    r = subprocess.run([sys.executable, "-m", "host_tools.cli", "demo", "--days", "3",
                        "--shops", "2", "--shoppers", "4", "--stolen", "1", "--out",
                        str(tmp_path / "out")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "fraud losses, total" in r.stdout
    assert (tmp_path / "out" / "report.txt").read_text().startswith(
        "World: built-in: the seed's incident, seed 1")
    assert (tmp_path / "out" / "losses.png").read_bytes()[:4] == b"\x89PNG"
