"""The fast fleet runs the firmware's own tap path in process: on seeded worlds it
makes the same decisions, tap by tap, as terminals reached over the link (emulated
boards reading cards over nfcpy RF, and the firmware's service in process), and a
Dask LocalCluster gives the same results as a serial run."""

import subprocess
import sys
from dataclasses import replace

import pytest

from host_tools import demo, scenario, simulate
from host_tools.keyring import Keyring
from host_tools.world import POLICIES, generate, make_world, resize


@pytest.fixture(scope="module")
def ring(tmp_path_factory):
    return Keyring.open(tmp_path_factory.mktemp("ring") / "keyring.json")


def _nontrivial(result):
    kinds = {o[3] for o in result.outcomes}
    assert "APPROVED_OFFLINE" in kinds and len(kinds) >= 3, kinds


def test_same_decisions_as_the_emulated_boards(tmp_path, ring):
    world = make_world(days=4, shops=2, shoppers=8, stolen=2, seed=5)
    policy = POLICIES["designed"]
    # emulated boards reading the cards over nfcpy RF; the fast fleet gets images
    with demo.EmulatedFleet(world.shops, tmp_path, ring, tag="emu", rf=True) as links:
        emulated = demo.run_policy(world, policy, links, tmp_path, ring, say=lambda *_: None)
    fast = simulate.run(world, policy, ring)
    assert len(emulated.outcomes) == world.tap_count()
    assert fast.outcomes == emulated.outcomes
    assert fast.total_loss == emulated.total_loss
    _nontrivial(emulated)


@pytest.mark.parametrize("name, key", [("incident", "id"), ("incident", "quota"),
                                       ("adaptive", "designed"), ("card-testing", "designed")])
def test_same_decisions_as_the_firmware_service_over_the_link(tmp_path, ring, name, key):
    # every scenario feature: hourly delta pushes, adaptive thieves, notified holders,
    # card testing with stop-after-decline, enumeration, quota overflow
    spec = resize(scenario.load(name), days=5, shops=3, shoppers=16)
    # a smaller ring: every feature, fewer taps over the link
    spec = replace(spec, card_testing=tuple(replace(g, cards=min(g.cards, 8))
                                            for g in spec.card_testing))
    world = generate(spec, seed=3)
    policy = POLICIES[key]
    with demo.InProcessFleet(world.shops, tmp_path, ring, tag=key) as links:
        linked = demo.run_policy(world, policy, links, tmp_path, ring, say=lambda *_: None)
    fast = simulate.run(world, policy, ring)
    assert fast.outcomes == linked.outcomes
    assert (fast.total_loss, fast.post_report_loss, fast.online_requests) == \
        (linked.total_loss, linked.post_report_loss, linked.online_requests)
    assert fast.clearing_losses == linked.clearing_losses == fast.total_loss
    _nontrivial(fast)


def test_groups_and_a_two_worker_cluster_equal_a_serial_run(ring):
    spec = resize(scenario.load("adaptive"), days=6, shops=10, shoppers=300)
    world = generate(spec, seed=4)
    policy = POLICIES["designed"]
    serial = simulate.run(world, policy, ring)
    grouped = simulate.run(world, policy, ring, groups=3)
    with simulate.dask_client(workers=2) as client:
        dask = simulate.run(world, policy, ring, groups=2, client=client)
        many = simulate.run_many([(world, POLICIES["id"]), (world, policy)], ring,
                                 client=client)
    assert serial.taps > 1000
    assert grouped.outcomes == serial.outcomes == dask.outcomes
    assert dask.digest == serial.digest and dask.total_loss == serial.total_loss
    assert many[1].digest == serial.digest
    assert many[0].digest == simulate.run(world, POLICIES["id"], ring).digest


def test_a_card_seen_at_two_shops_in_a_day_moves_their_terminals_together(ring):
    # the adaptive thief buys at up to three shops a day: each day its shops are
    # joined in one group, so six groups of one shop each must move terminals
    spec = resize(scenario.load("adaptive"), days=5, shops=6, shoppers=30)
    world = generate(spec, seed=9)
    policy = POLICIES["id"]
    grouped = simulate.run(world, policy, ring, groups=6)
    assert grouped.terminal_moves > 0
    assert grouped.outcomes == simulate.run(world, policy, ring).outcomes


def test_sweep_tabulates_loss_against_online_rate(tmp_path):
    r = subprocess.run([sys.executable, "-m", "host_tools.cli", "simulate", "--days", "4",
                        "--shops", "2", "--shoppers", "6", "--stolen", "1", "--serial",
                        "--sweep", "random_target_pct=0,5", "--out", str(tmp_path / "o")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    lines = [ln.split() for ln in r.stdout.splitlines()]
    assert [ln[0] for ln in lines if ln and ln[0] in ("0", "5")] == ["0", "5"], r.stdout
    assert "simulated transactions per second" in r.stdout
    assert (tmp_path / "o" / "sweep.png").read_bytes()[:4] == b"\x89PNG"


def test_a_combination_the_terminal_refuses_is_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "host_tools.cli", "simulate", "--days", "3",
                        "--shops", "2", "--shoppers", "4", "--serial", "--sweep",
                        "random_target_pct=0,50", "--out", str(tmp_path / "o")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1
    assert r.stderr.strip() == ("termctl: designed: random_target_pct=50: the terminal refuses "
                                "these parameters: random_target_pct must not exceed "
                                "random_max_target_pct")


def test_sweep_refuses_an_unknown_name():
    r = subprocess.run([sys.executable, "-m", "host_tools.cli", "simulate", "--sweep",
                        "floor=1,2"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "not a terminal parameter" in r.stderr


def test_termctl_simulate_runs_on_a_given_scheduler(tmp_path):
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address=":0",
                      silence_logs=40) as cluster:
        r = subprocess.run([sys.executable, "-m", "host_tools.cli", "simulate", "--days", "3",
                            "--shops", "2", "--shoppers", "6", "--stolen", "1", "--policy",
                            "designed", "--scheduler", cluster.scheduler_address, "--out",
                            str(tmp_path / "o")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert f"dask: 1 workers at {cluster.scheduler_address}" in r.stdout
    assert "project as designed" in r.stdout


def test_an_unreachable_scheduler_is_one_line_and_writes_nothing(tmp_path):
    r = subprocess.run([sys.executable, "-m", "host_tools.cli", "simulate", "--days", "3",
                        "--shops", "2", "--shoppers", "4", "--scheduler", "tcp://127.0.0.1:9",
                        "--out", str(tmp_path / "o")], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 1
    assert r.stderr.startswith("termctl: cannot reach the Dask scheduler tcp://127.0.0.1:9")
    assert len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()
