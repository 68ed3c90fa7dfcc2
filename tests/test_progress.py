"""Progress: a tqdm bar on a terminal, plain periodic lines elsewhere, nothing for a
quick step; and the operations that report through it."""

import io
import sys
import time

from host_tools.progress import Progress


class Tty(io.StringIO):
    def isatty(self):
        return True


def test_not_on_a_terminal_a_quick_step_prints_nothing():
    out = io.StringIO()
    with Progress("batch pull", 3, "records", stream=out) as bar:
        bar.update(3)
    assert out.getvalue() == ""


def test_not_on_a_terminal_plain_lines_come_every_interval_and_at_the_end():
    out = io.StringIO()
    with Progress("list push", 1_000_000, "B", stream=out, interval=0.05) as bar:
        bar.update(400_000)
        time.sleep(0.06)
        bar.update(100_000)  # a line: the interval has passed
        with bar.waiting("commit"):
            time.sleep(0.12)  # lines from the ticker while nothing counts
        bar.update(500_000)
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("list push: 50% (500,000/1,000,000 B), ")
    assert any(ln.endswith("commit, 0 s") for ln in lines)
    assert lines[-1].startswith("list push: 100% (1,000,000/1,000,000 B)")
    assert lines[-1].endswith("done") and "\r" not in out.getvalue()


def test_on_a_terminal_a_tqdm_bar_and_nested_bars_below_it():
    out = Tty()
    with Progress("hardened", 2, "days", stream=out) as days:
        with Progress("day 1 clearing", 10, "records", stream=out) as inner:
            time.sleep(0.35)  # past the bar's delay: quick steps draw nothing
            inner.update(10)
        days.update(2)
    text = out.getvalue()
    assert "hardened" in text and "2/2" in text and "\r" in text
    assert "day 1 clearing" in text
    assert Progress._open == 0


def test_flash_moves_the_bar_as_mpremote_names_each_file(tmp_path, monkeypatch):
    from host_tools import flash
    from host_tools.keyring import Keyring

    fake = tmp_path / "mpremote"
    fake.write_text(f"#!{sys.executable}\nimport sys\nargs = sys.argv[1:]\n"
                    "for i, a in enumerate(args):\n"
                    "    if a == 'cp': print('cp', args[i + 1], args[i + 2])\n"
                    "sys.exit(0 if 'mkdir' in args or 'bad' not in args[1] else 1)\n")
    fake.chmod(0o755)
    monkeypatch.setattr(flash, "venv_tool", lambda *a: str(fake))
    seen = []
    real_update = Progress.update
    monkeypatch.setattr(Progress, "update", lambda self, n: (seen.append(n),
                                                             real_update(self, n)))
    plan = flash.plan_flash("pico_pn532")
    ring = Keyring.open(tmp_path / "ring.json")
    tid = flash.flash(plan, "/dev/ttyFAKE", ring)
    assert tid is not None and ring.get(tid)
    assert sum(seen) == plan.total and len([n for n in seen if n]) == len(plan.files)
    try:
        flash.flash(plan, "bad", ring)
    except flash.ToolError as e:
        assert str(e).startswith("mpremote on bad failed: cp ")
    else:
        raise AssertionError("a failing mpremote must be an error")
