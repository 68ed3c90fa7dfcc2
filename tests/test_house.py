"""The house: the Makefile and .gitignore do what the README promises."""

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(shutil.which("make") is None, reason="no make")
def test_lint_installs_the_stubs_once_not_after_every_venv_rebuild(tmp_path):
    shutil.copy(ROOT / "Makefile", tmp_path)
    (tmp_path / "pyproject.toml").write_text("")
    for stamp in (".venv/.installed", "build/stubs/rp2/.installed",
                  "build/stubs/esp32/.installed"):
        (tmp_path / stamp).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / stamp).write_text("")
    # -W: as if pyproject.toml had just changed, which rebuilds the venv
    plan = subprocess.run(["make", "-n", "-W", "pyproject.toml", "lint"], cwd=tmp_path,
                          capture_output=True, text=True, check=True).stdout
    assert "-e '.[dev]'" in plan  # the venv is rebuilt ...
    assert "build/stubs" in plan and "--target" not in plan  # ... the stubs are not
    shutil.rmtree(tmp_path / "build" / "stubs" / "esp32")
    plan = subprocess.run(["make", "-n", "lint"], cwd=tmp_path, capture_output=True,
                          text=True, check=True).stdout
    assert "--target build/stubs/esp32" in plan and "build/stubs/rp2 micro" not in plan


def test_gitignore_covers_what_the_readme_commands_make():
    made = [".termctl/emulator.img", ".termctl/centre.db", ".termctl/wallet.json",
            "demo-out/report.txt", "simulate-out/sweep.png", "build/unix/main.py",
            "rf.img", "rf.img.key", "rf.img.log", "rf.img.launcher.log", "rf.img.run.json",
            "next.bin", "v1.bin", "v2.bin", "list.csv", "wallet.json", "bench/results/x.txt"]
    r = subprocess.run(["git", "check-ignore", "--no-index", *made], cwd=ROOT,
                       capture_output=True, text=True)
    assert sorted(r.stdout.split()) == sorted(made)
