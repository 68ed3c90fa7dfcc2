"""Fleet simulation: the demo's world on in-process terminals, for policy tuning.

    results = sweep(world, base=POLICIES["hardened"],
                    grid={"floor_limit": [5000, 10000], "random_target_pct": [0, 10]})

Each run is `demo.run_policy` on `demo.InProcessFleet`: the firmware's own
service, decision, list and journal code under CPython, driven through the same
TerminalLink, centre and detector as the emulated boards, so a small world with
the same seed makes the same decisions in both (tests/test_simulate.py).
"""

from __future__ import annotations

import itertools
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

from host_tools import demo
from host_tools.errors import ToolError
from host_tools.progress import Progress
from host_tools.world import Policy, World
from terminal.params import index_of

# Sweepable names that are not terminal parameters.
POLICY_FIELDS = ("list_quota",)


@dataclass
class SweepRow:
    settings: dict[str, int]
    result: demo.PolicyResult

    @property
    def loss(self) -> int:
        return self.result.total_loss


def parse_grid(specs: list[str]) -> dict[str, list[int]]:
    grid: dict[str, list[int]] = {}
    for spec in specs:
        name, eq, values = spec.partition("=")
        if not eq or not values:
            raise ToolError(f"bad --sweep {spec!r}: use NAME=V1,V2,...")
        if index_of(name) < 0 and name not in POLICY_FIELDS:
            raise ToolError(f"--sweep {name}: not a terminal parameter nor one of "
                            f"{', '.join(POLICY_FIELDS)}")
        try:
            grid[name] = [int(v.replace("_", "")) for v in values.split(",")]
        except ValueError:
            raise ToolError(f"--sweep {name}: values must be integers") from None
    return grid


def variant(base: Policy, settings: dict[str, int]) -> Policy:
    params = dict(base.params)
    quota = base.list_quota
    for name, value in settings.items():
        if name == "list_quota":
            quota = value
        else:
            params[name] = value
    label = ", ".join(f"{k}={v}" for k, v in settings.items()) or "as is"
    return replace(base, params=params, name=f"{base.key}: {label}", list_quota=quota)


def run(world: World, policy: Policy, ring, fee: int = 5, say=None) -> demo.PolicyResult:
    with tempfile.TemporaryDirectory(prefix="sim-") as tmp:
        work = Path(tmp)
        with demo.InProcessFleet(world.shops, work, ring) as links:
            return demo.run_policy(world, policy, links, work, ring, fee,
                                   say=say or (lambda *_: None))


def sweep(world: World, base: Policy, grid: dict[str, list[int]], ring,
          fee: int = 5) -> list[SweepRow]:
    names = list(grid)
    combos = list(itertools.product(*(grid[n] for n in names))) or [()]
    rows = []
    with Progress("sweep", len(combos), "runs") as bar:
        for values in combos:
            settings = dict(zip(names, values, strict=True))
            try:
                result = run(world, variant(base, settings), ring, fee)
            except ToolError as e:  # e.g. a combination the terminal refuses
                raise ToolError(f"sweep {settings}: {e}") from None
            rows.append(SweepRow(settings, result))
            bar.update(1)
    return rows


def table(rows: list[SweepRow], fee: int) -> str:
    names = list(rows[0].settings) if rows else []
    head = "".join(f"{n:>24}" for n in names) + f"{'fraud loss':>14}{'online rate':>13}" \
        f"{'auth fees':>11}{'days usable':>13}{'declined':>10}"
    lines = [head]
    for r in rows:
        res = r.result
        days = max(res.usable_days.values()) if res.usable_days else 0
        lines.append("".join(f"{r.settings[n]:>24}" for n in names)
                     + f"{res.total_loss:>14,}{res.online_rate():>13.1%}"
                     + f"{res.shopper_online * fee:>11,}{days:>13}{res.shopper_declined:>10}")
    return "\n".join(lines)


def plot(rows: list[SweepRow], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    xs = [100 * r.result.online_rate() for r in rows]
    ys = [r.loss for r in rows]
    ax.scatter(xs, ys)
    for r, x, y in zip(rows, xs, ys, strict=True):
        ax.annotate(", ".join(f"{v}" for v in r.settings.values()), (x, y), fontsize=7,
                    xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("online authorisation rate, ordinary shoppers (%)")
    ax.set_ylabel("fraud losses (yen)")
    ax.set_title("Loss against online rate: " + ", ".join(rows[0].settings) if rows
                 and rows[0].settings else "Loss against online rate")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def throughput(result: demo.PolicyResult) -> float:
    return result.taps / max(result.seconds, 1e-9)


__all__ = ["sweep", "run", "table", "plot", "parse_grid", "throughput", "time"]
