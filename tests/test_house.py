"""The house: the Makefile and .gitignore do what the README promises."""

import re
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


def _docs():
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_every_doc_a_page_names_exists():
    for page in _docs():
        for name in set(re.findall(r"docs/([a-z_]+\.md)", page.read_text())):
            assert (ROOT / "docs" / name).exists(), f"{page.name} names docs/{name}"


def test_the_newcomers_pages_speak_to_users_not_to_the_team():
    internal = re.compile(r"the lead\b|the brief\b|brief's|still to be written|to be written",
                          re.I)
    for name in ("README.md", "docs/architecture.md", "docs/domain.md", "docs/centre.md"):
        text = (ROOT / name).read_text()
        assert not internal.findall(text), f"{name}: {internal.findall(text)}"


def test_the_readme_fences_are_closed_and_termctl_is_explained_before_use():
    text = (ROOT / "README.md").read_text()
    fences = [ln for ln in text.splitlines() if ln.lstrip().startswith("```")]
    assert len(fences) % 2 == 0
    assert all(ln.strip() == "```" for ln in fences[1::2]), "a closing fence with text after"
    first_use = re.search(r"^termctl ", text, re.M).start()
    assert text.index("source .venv/bin/activate") < first_use
