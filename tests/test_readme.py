"""The README's termctl examples, run in order in one fresh shell, as a newcomer
would: every command must succeed (a sale may also decline, exit 3), and the
sample output the README shows under a command must match what it printed
(under `wait`: what the command it waited for printed).

Run as written, with three differences only: the shell starts in an empty
directory with its own HOME (so the keyring is new), `source .venv/bin/activate`
becomes this interpreter's bin/ on PATH (`make venv` is skipped: the venv is
there), and the RF example's UDP port 50001 becomes a free one, so that two
test runs on one machine do not collide.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# the part of the README a user runs by hand, in this order
FIRST, LAST = "## termctl", "## More make targets"
VARIABLE = ("approval", "pid:")  # a number after these differs from run to run


def readme_steps() -> list[tuple[str, list[str]]]:
    """[(command, [sample output lines])] from the README's sh blocks."""
    text = (ROOT / "README.md").read_text()
    text = text[text.index(FIRST):text.index(LAST)]
    steps: list[tuple[str, list[str]]] = []
    for block in re.findall(r"```sh\n(.*?)```", text, re.S):
        lines = block.splitlines()
        i = 0
        while i < len(lines):
            line = lines[i]
            i += 1
            if line.startswith("#   "):
                steps[-1][1].append(line[4:])
                continue
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            while line.rstrip().endswith("\\"):
                line = line.rstrip()[:-1] + " " + lines[i].strip()
                i += 1
            steps.append((line, []))
    return steps


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def matches(sample: str, output: str) -> bool:
    """Each word of the sample is in the output, numbers included, except those a
    run chooses (approval codes, pids, pty names) and what follows '...'."""
    words = sample.split("...")[0].split()
    for before, word in zip([""] + words, words):
        if "/dev/" in word or before in VARIABLE:
            continue
        if word.strip("(),;") not in output:
            return False
    return True


def test_every_readme_example_runs_in_order_in_a_fresh_shell(tmp_path):
    steps = readme_steps()
    assert len(steps) > 25 and any("card present" in c for c, _ in steps)
    rf_port = str(free_udp_port())
    script = ["cd " + str(tmp_path / "work")]
    run = []
    for n, (cmd, _samples) in enumerate(steps):
        if cmd.startswith(("make ", "source ")):
            continue
        body = re.sub(r"\s+#.*$", "", cmd.replace("50001", rf_port)).rstrip()  # no comment
        background = body.endswith("&")
        if background:
            body = body[:-1]
        line = f"{{ {body}\n echo $? > rc.{n}; }} > out.{n} 2>&1"
        script.append(line + (" &" if background else ""))
        run.append(n)
    (tmp_path / "work").mkdir()
    (tmp_path / "home").mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TERMCTL_")}
    env.update(HOME=str(tmp_path / "home"), COLUMNS="100",
               PATH=str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", ""))
    env.pop("XDG_CONFIG_HOME", None)
    try:
        subprocess.run(["bash", "-c", "\n".join(script)], env=env, timeout=600,
                       stdin=subprocess.DEVNULL, check=True)
        work = tmp_path / "work"
        waited = ""
        for n in run:
            cmd, samples = steps[n]
            out = (work / f"out.{n}").read_text()
            if re.sub(r"\s+#.*$", "", cmd).rstrip().endswith("&"):
                waited = out
            elif cmd.split()[0] == "wait":  # the README shows the waited-for line here
                out = waited
            code = int((work / f"rc.{n}").read_text())
            ok = (0, 3) if cmd.startswith("termctl sale") else (0,)
            assert code in ok, f"`{cmd}` exited {code}:\n{out}"
            assert "Traceback" not in out, f"`{cmd}`:\n{out}"
            for sample in samples:
                assert matches(sample, out), f"`{cmd}` printed\n{out}\nnot like\n{sample}"
    finally:  # a failed step must not leave boards running
        for image in (tmp_path / "work").glob("**/*.img"):
            subprocess.run([sys.executable, "-m", "host_tools.cli", "emulate", "--flash",
                            str(image), "--stop"], env=env, capture_output=True, timeout=30)
    left = list((tmp_path / "work").glob("**/*.run.json"))
    assert not left, f"the README leaves boards running: {left}"
