"""The fleet simulation runs the same firmware in-process: on the demo's small
world with the same seed it makes the same decisions as the emulated boards."""

import subprocess
import sys

from host_tools import demo, simulate
from host_tools.keyring import Keyring
from host_tools.world import POLICIES, make_world


def test_same_decisions_as_the_emulated_boards(tmp_path):
    world = make_world(days=4, shops=2, shoppers=8, stolen=2, seed=5)
    ring = Keyring.open(tmp_path / "keyring.json")
    policy = POLICIES["hardened"]
    # emulated boards reading the cards over nfcpy RF; in-process terminals get images
    with demo.EmulatedFleet(world.shops, tmp_path, ring, tag="emu", rf=True) as links:
        emulated = demo.run_policy(world, policy, links, tmp_path, ring, say=lambda *_: None)
    simulated = simulate.run(world, policy, ring)
    assert len(emulated.outcomes) == sum(len(t) for t in world.taps)
    assert simulated.outcomes == emulated.outcomes
    assert simulated.total_loss == emulated.total_loss
    # and the world is not trivial: both approvals and declines happened
    kinds = {o[3] for o in emulated.outcomes}
    assert {"APPROVED_OFFLINE", "APPROVED_ONLINE"} <= kinds and any("DECLINED" in k
                                                                     for k in kinds)


def test_sweep_tabulates_loss_against_online_rate(tmp_path):
    r = subprocess.run([sys.executable, "-m", "host_tools.cli", "simulate", "--days", "4",
                        "--shops", "2", "--shoppers", "6", "--stolen", "1",
                        "--sweep", "random_target_pct=0,20", "--out", str(tmp_path / "o")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    lines = [ln for ln in r.stdout.splitlines() if ln.strip().startswith(("0 ", "20 "))
             or ln.split()[:1] in (["0"], ["20"])]
    assert len(lines) == 2, r.stdout
    assert "simulated transactions per second" in r.stdout
    assert (tmp_path / "o" / "sweep.png").read_bytes()[:4] == b"\x89PNG"


def test_sweep_refuses_an_unknown_name():
    r = subprocess.run([sys.executable, "-m", "host_tools.cli", "simulate", "--sweep",
                        "floor=1,2"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "not a terminal parameter" in r.stderr
