"""Scenario files (host_tools/scenario.py): the shipped ones load and make the
worlds they describe; a bad file is refused with one line naming the key."""

import subprocess
import sys

import pytest

from host_tools import scenario
from host_tools.errors import ToolError
from host_tools.world import generate, make_world


def test_the_incident_file_is_the_built_in_world():
    inc = generate(scenario.load("incident"), seed=1)
    built_in = make_world(seed=1)
    assert [t for day in inc.taps for t in day] == [t for day in built_in.taps for t in day]
    assert inc.reports == built_in.reports and inc.cards == built_in.cards


@pytest.mark.parametrize("name", ["incident", "adaptive", "card-testing"])
def test_shipped_scenarios_load_and_make_worlds(name):
    assert name in scenario.names()
    spec = scenario.load(name)
    world = generate(spec, seed=2)
    assert world.name == spec.name and world.days == spec.days
    assert world.tap_count() > 100
    kinds = {c.kind for c in world.cards.values()}
    assert {"shopper", "stolen"} <= kinds


def test_the_adaptive_thief_stays_under_the_caps_it_can_infer(tmp_path):
    from host_tools.centreside import card_image, decode_card
    from host_tools.keyring import Keyring
    from host_tools.world import DEFAULTS

    world = generate(scenario.load("adaptive"), seed=3)
    ring = Keyring.open(tmp_path / "keyring.json")

    thieves = [t for t, th in world.thefts.items() if th.strategy == "adaptive"]
    params = dict(DEFAULTS, floor_limit=10_000, random_threshold=3_000, daily_offline_cap=8_000)
    day = max(world.stolen_on[t] for t in thieves)
    taps = world.plan(day, params, lambda t: decode_card(card_image(world.cards[t], ring,
                                                                    world.start)), {})
    assert taps and all(t.token in thieves for t in taps)
    for token in thieves:
        mine = [t for t in taps if t.token == token]
        assert sum(t.amount for t in mine) <= 8_000  # the card's daily offline cap
        assert all(t.amount < 3_000 for t in mine)  # below the random-selection ramp
        assert len({t.shop for t in mine}) == len(mine)  # a different shop each time
        assert all(t.stop_after_decline for t in mine)


BAD = [
    ("[world]\ndays = 1\n", "bad.toml: world.days: must be an integer 2..3,650, got 1"),
    ("[world]\ndayz = 3\n", "bad.toml: world.dayz: unknown key"),
    ("[shop]\n", "bad.toml: shop: unknown section"),
    ("[[stolen]]\nper_day = 0\n", "bad.toml: stolen[1].per_day: must be an integer 1..24"),
    ("[[stolen]]\n[[stolen]]\nstrategy = 'clever'\n",
     "bad.toml: stolen[2].strategy: must be one of fixed, adaptive, got 'clever'"),
    ("[shoppers]\npurchase_prob = 1.5\n",
     "bad.toml: shoppers.purchase_prob: must be a probability 0..1"),
    ("[shoppers]\namounts = [[0.5, 100, 200, 10]]\n",
     "bad.toml: shoppers.amounts: band probabilities add up to 0.5, not 1"),
    ("[lists]\npush = 'weekly'\n", "bad.toml: lists.push: must be one of daily, hourly"),
    ("[lists]\nbackground_blocked = { x = 3 }\n",
     "bad.toml: lists.background_blocked: issuer 'x' must be a number"),
    ("[[card_testing]]\ndays = [40]\n", "bad.toml: card_testing[1].days: day 40 is past"),
    ("[[stolen]]\nissuer = 7\n", "bad.toml: stolen[1].issuer: issuer 7 has no card key"),
    ("stolen = 3\n", "bad.toml: stolen: must be an array of tables"),
    ("[world\n", "bad.toml: not valid TOML"),
]


@pytest.mark.parametrize("text, message", BAD)
def test_a_bad_file_is_one_line_naming_the_key(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ToolError) as e:
        scenario.load(path)
    assert str(e.value).startswith(message), str(e.value)
    assert "\n" not in str(e.value)


def test_a_missing_file_or_name(tmp_path):
    with pytest.raises(ToolError, match="no scenario file 'nosuch'.*shipped: adaptive"):
        scenario.load("nosuch")
    with pytest.raises(ToolError, match="gone.toml: No such file"):
        scenario.load(tmp_path / "gone.toml")
    (tmp_path / "bin.toml").write_bytes(b"\xff\xfe[world]")
    with pytest.raises(ToolError, match="bin.toml: not UTF-8"):
        scenario.load(tmp_path / "bin.toml")


def test_termctl_says_the_key_and_exits_1(tmp_path):
    path = tmp_path / "w.toml"
    path.write_text("[world]\nshops = 'many'\n")
    r = subprocess.run([sys.executable, "-m", "host_tools.cli", "simulate", "--world",
                        str(path), "--out", str(tmp_path / "o")], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 1
    assert r.stderr.strip() == ("termctl: w.toml: world.shops: must be an integer "
                                "2..100,000, got 'many'")
    assert not (tmp_path / "o").exists()
