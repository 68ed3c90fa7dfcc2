"""Fleet simulation: a world under a policy on the fast fleet, serial or on Dask.

    result = run(world, POLICIES["designed"], ring)                    # this process
    with dask_client(workers=2) as client:                             # a LocalCluster
        result = run(world, policy, ring, client=client)               # groups on workers
        rows = sweep(world, base, grid, ring, client=client)           # runs on workers

A day runs in two parts, along the seams a real deployment has:

- the terminals, in parallel: shops are split into groups (host_tools.simfleet), each
  group runs its shops' taps of the day in time order. Every tap of one card on one
  day runs in one group (shops a card visits that day are joined: union-find), so
  a card's image and the issuer's answers to it never depend on another group;
  a shop's terminal moves to another group on a day its cards need it there.
- the centre, at the day's end and in this process: the groups' online requests are
  replayed to the centre in timeline order (its answers must be the ones the
  groups got from the centre's card rows: checked), the clearing is ingested, the
  detector runs and the next list is built (host_tools.centreside, as for the
  emulated boards).

So the result does not depend on how many groups or workers there are: a 2-worker
run equals a serial one tap by tap (tests/test_simulate.py).
"""

from __future__ import annotations

import contextlib
import itertools
import operator
import time
from dataclasses import dataclass, replace
from pathlib import Path

from host_tools.centre.clearing import CLEARING_COLS
from host_tools.centreside import (
    PRODUCT_CODES,
    CentreSide,
    PolicyResult,
    check_world,
)
from host_tools.errors import ToolError, did_you_mean
from host_tools.progress import Progress
from host_tools.simfleet import (
    EV_BLOCK,
    EV_PUSH,
    EV_TAP,
    LEDGER_FIELDS,
    DayInput,
    DeploymentKeys,
    TerminalGroup,
    run_group_day,
)
from host_tools.world import Policy, World
from terminal.params import Params, index_of

# Sweepable names that are not terminal parameters.
POLICY_FIELDS = ("list_quota",)
TERMINAL_ID_BASE = 0x51000000
_LEDGER_ROW = operator.itemgetter(*LEDGER_FIELDS)  # a card row's LEDGER_FIELDS, as a tuple
_SEQ, _CODE, _HASH, _AMOUNT, _APPROVED, _ONLINE = (CLEARING_COLS.index(c) for c in (
    "seq", "approval_code", "token_hash", "amount", "approved", "online"))


# -- the fast fleet -----------------------------------------------------------------


class _Groups:
    """Where each shop's terminal is, and the groups themselves: objects in this
    process, or futures on a Dask cluster."""

    def __init__(self, world: World, policy: Policy, keys: DeploymentKeys, n: int, client):
        self.client = client
        self.n = n
        self.home = [shop % n for shop in range(world.shops)]
        groups = []
        for g in range(n):
            group = TerminalGroup(keys)
            for shop in range(g, world.shops, n):
                group.add(shop, TERMINAL_ID_BASE + shop, policy.params)
            groups.append(group)
        self.moves = 0
        self.where: list[list[str] | None] = [None] * n
        if client is not None:
            # each group stays on one worker: only its day's input and output travel.
            # hash=False: Dask would tokenize the data to name it, walking every tuple
            # in Python (1 s for a day of 8,000 taps; pickling them takes 0.03 s)
            workers = sorted(client.scheduler_info()["workers"])
            self.where = [[workers[g % len(workers)]] for g in range(n)]
            self.groups = [client.scatter(grp, workers=w, hash=False)
                           for grp, w in zip(groups, self.where)]
        else:
            self.groups = groups

    def assign(self, taps) -> None:
        """Join the shops each card visits today; move terminals so that each set of
        joined shops is in one group (the group that has most of its taps)."""
        parent = list(range(len(self.home)))

        def find(x):
            while parent[x] != x:
                parent[x] = parent[parent[x]]
                x = parent[x]
            return x

        first: dict[str, int] = {}
        load = [0] * len(self.home)
        for t in taps:
            load[t.shop] += 1
            s = first.setdefault(t.token, t.shop)
            if s != t.shop:
                a, b = find(s), find(t.shop)
                if a != b:
                    parent[b] = a
        members: dict[int, list[int]] = {}
        for shop in range(len(self.home)):
            members.setdefault(find(shop), []).append(shop)
        moves: dict[tuple[int, int], list[int]] = {}
        for shops in members.values():
            if len({self.home[s] for s in shops}) < 2:
                continue
            weight: dict[int, int] = {}
            for s in shops:
                weight[self.home[s]] = weight.get(self.home[s], 0) + load[s] + 1
            dst = max(sorted(weight), key=lambda g: weight[g])
            for s in shops:
                if self.home[s] != dst:
                    moves.setdefault((self.home[s], dst), []).append(s)
                    self.home[s] = dst
        for (src, dst), shops in sorted(moves.items()):
            self._move(src, dst, shops)
            self.moves += len(shops)

    def _move(self, src: int, dst: int, shops: list[int]) -> None:
        if self.client is None:
            self.groups[dst].put(self.groups[src].take(shops))
            return
        c = self.client
        on_src, on_dst = self.where[src], self.where[dst]
        taken = c.submit(_take, self.groups[src], shops, pure=False, workers=on_src)
        self.groups[src] = c.submit(operator.getitem, taken, 0, workers=on_src)
        moved = c.submit(operator.getitem, taken, 1, workers=on_src)
        self.groups[dst] = c.submit(_put, self.groups[dst], moved, pure=False, workers=on_dst)

    def run(self, inputs: list[DayInput]):
        if self.client is None:
            return [g.run_day(inp) for g, inp in zip(self.groups, inputs)]
        c = self.client
        futs = [c.submit(run_group_day, g, c.scatter(inp, workers=w, hash=False), pure=False,
                         workers=w)
                for g, inp, w in zip(self.groups, inputs, self.where)]
        self.groups = [c.submit(operator.getitem, f, 0, workers=w)
                       for f, w in zip(futs, self.where)]
        return c.gather([c.submit(operator.getitem, f, 1, workers=w)
                         for f, w in zip(futs, self.where)])


def _take(group: TerminalGroup, shops):
    return group, group.take(shops)


def _put(group: TerminalGroup, terminals):
    group.put(terminals)
    return group


class _Ledger:
    """The centre's card rows the issuer's rule reads (host_tools.centre.authorise),
    kept in step with what the centre does to them: blocks, online approvals, offline
    approvals charged at the clearing. The replay checks every answer the groups got
    from these rows against the centre's own, so a step missed here stops the run."""

    def __init__(self, centre):
        self.rows = {r["token"]: dict(r) for r in centre.db.execute("SELECT * FROM cards")}
        self.by_hash = {r["token_hash"]: r for r in self.rows.values()}

    def values(self, token: str) -> tuple | None:
        """The row as the groups get it (simfleet.LEDGER_FIELDS)."""
        row = self.rows.get(token)
        return None if row is None else _LEDGER_ROW(row)

    def block(self, token: str) -> None:
        self.rows[token]["status"] = "blocked"

    def approved_online(self, token: str, amount: int) -> None:
        row = self.rows[token]
        if row["product"] == "credit":
            row["credit_used"] += amount
        else:
            row["balance"] -= amount

    def cleared(self, rows) -> None:
        for r in rows:  # centre.clearing: offline approvals are charged now
            if r[_APPROVED] and not r[_ONLINE]:
                card = self.by_hash.get(r[_HASH])
                if card is not None:
                    if card["balance"] is not None:
                        card["balance"] -= r[_AMOUNT]
                    if card["product"] == "credit":
                        card["credit_used"] += r[_AMOUNT]


def run(world: World, policy: Policy, ring, fee: int = 5, say=None, groups: int = 1,
        client=None, keep_outcomes: bool = True, db: str | Path = ":memory:") -> PolicyResult:
    """The world under the policy on the fast fleet. groups: how many groups the
    shops are split into (with a client, one per worker is a good start)."""
    check_world(world, ring)
    err = Params().update(policy.params)
    if err:
        raise ToolError(f"the terminal refuses these parameters: {err}")
    side = CentreSide(world, policy, db, ring, fee, keep_outcomes=keep_outcomes)
    try:
        return _run(world, policy, side, DeploymentKeys.from_ring(ring), say, groups, client)
    finally:
        side.close()


def _run(world, policy, side: CentreSide, keys, say, n_groups, client) -> PolicyResult:
    fleet = _Groups(world, policy, keys, max(1, min(n_groups, world.shops)), client)
    centre = side.centre
    cutover = centre.cutover_min
    ledger = _Ledger(centre)
    wallet = side.wallet
    cards = world.cards
    push = side.opening_list()
    # say: the caller's line per day (and its progress bar); else a bar of our own
    bar_of_our_own = say is None
    progress = (Progress(f"simulate {policy.key}", world.days, "days") if bar_of_our_own
                else contextlib.nullcontext())
    with progress as bar:  # None when the caller says
        for day in range(world.days):
            plan = side.morning(day, side.counters)
            fleet.assign(plan.taps)
            tokens_of: list[set[str]] = [set() for _ in range(fleet.n)]
            events_of: list[list[tuple]] = [[(-1, EV_PUSH, push)] for _ in range(fleet.n)]
            for ev in plan.events:
                if ev[1] == EV_TAP:
                    g = fleet.home[ev[3]]
                    tokens_of[g].add(ev[4])
                    events_of[g].append(ev)
                elif ev[1] == EV_PUSH:
                    for events in events_of:
                        events.append(ev)
            blocked = {ev[2]: ev for ev in plan.events if ev[1] == EV_BLOCK}
            inputs = []
            for g in range(fleet.n):
                events = events_of[g]
                mine = [ev for t, ev in blocked.items() if t in tokens_of[g]]
                if mine:
                    events = sorted(events + mine, key=_event_key)
                images = {t: wallet.get(t) for t in tokens_of[g]}
                inputs.append(DayInput(day, world.unix(day), cutover, events, images,
                                       {t: ledger.values(t) for t in tokens_of[g]},
                                       {t: cards[t] for t, i in images.items() if i is None},
                                       world.start))
            t0 = time.perf_counter()
            outputs = fleet.run(inputs)
            t1 = time.perf_counter()
            push = _centre_day(world, side, plan, outputs, ledger)
            side.result.fleet_seconds += t1 - t0
            side.result.fleet_cpu += sum(o.cpu_seconds for o in outputs)
            side.result.tap_cpu += sum(o.tap_cpu for o in outputs)
            side.result.centre_seconds += time.perf_counter() - t1
            if bar is not None:
                bar.update(1)
            else:
                daily = side.result.daily_losses
                say(f"  {policy.key:<9} day {day + 1:>2}/{world.days}: {len(plan.taps):>6} "
                    f"taps, fraud approved {daily[day]:>8,} yen, total "
                    f"{sum(daily[:day + 1]):>9,} yen")
    side.result.terminal_moves = fleet.moves
    return side.finish()


def _event_key(ev):
    return (ev[0], ev[1], ev[2] if ev[1] == EV_TAP else 0)


def _centre_day(world: World, side: CentreSide, plan, outputs, ledger: _Ledger):
    """The day's end at the centre: the groups' results in timeline order, online
    requests replayed, the clearing ingested; returns the night's list."""
    codes: dict[int, int] = {}
    online: dict[int, tuple] = {}
    clearing = []
    for out in outputs:
        codes.update(out.outcomes)
        for o in out.online:
            online[o[0]] = o
        side.wallet.update(out.images)
        clearing += out.clearing
    centre = side.centre
    approval: dict[tuple[int, int], str] = {}
    for ev in plan.events:
        kind = ev[1]
        if kind == EV_BLOCK:
            side.block(ev[2], ev[0])
            ledger.block(ev[2])
            continue
        if kind != EV_TAP:
            continue
        index = ev[2]
        tap = plan.taps[index]
        code = codes.get(index)
        if code is None:
            side.skipped()
            continue
        o = online.get(index)
        if o is not None:
            card = world.cards[tap.token]
            answer = centre.authorize(tap.token, card.issuer, tap.amount,
                                      PRODUCT_CODES[card.product], o[1],
                                      world.unix(plan.day, tap.second))
            if answer["approved"] != o[3]:
                raise ToolError(f"internal: the centre answered {tap.token} differently "
                                f"from the group on day {plan.day} ({answer['reason']})")
            if answer["approved"]:
                approval[(o[1], o[2])] = answer["approval_code"]
                ledger.approved_online(tap.token, tap.amount)
        side.record(tap, code)
    clearing.sort(key=lambda c: c[0])
    batches = []
    for _shop, tid, rows in clearing:
        if approval:  # online approvals carry the centre's code, not the group's stand-in
            rows = [r if (tid, r[_SEQ]) not in approval else
                    r[:_CODE] + (approval[(tid, r[_SEQ])],) + r[_CODE + 1:] for r in rows]
        batches.append((tid, rows))
        ledger.cleared(rows)
    return side.evening(plan.day, batches, rows=True)


# -- Dask ----------------------------------------------------------------------------


@contextlib.contextmanager
def dask_client(scheduler: str | None = None, workers: int = 2):
    """A distributed.Client: on `scheduler` (tcp://HOST:PORT), or on a LocalCluster of
    `workers` single-threaded worker processes (closed on exit)."""
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise ToolError("Dask is not installed: pip install distributed") from None
    if scheduler:
        _refused_at_once(scheduler)
        try:
            client = Client(scheduler, timeout=5)
        except (OSError, ValueError) as e:  # ValueError: not an address
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise ToolError(f"cannot reach the Dask scheduler {scheduler}: {reason}") from None
        with client:
            yield client
        return
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                           dashboard_address=":0", silence_logs=40)
    with cluster, Client(cluster) as client:
        yield client


def _refused_at_once(scheduler: str) -> None:
    """A tcp:// scheduler whose port refuses the connection is said at once: Dask
    would retry it for its whole timeout."""
    import socket

    host, sep, port = scheduler.removeprefix("tcp://").rpartition(":")
    if not scheduler.startswith("tcp://") or not sep or not port.isdigit():
        return  # Dask says what is wrong with the address
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
    except ConnectionRefusedError:
        raise ToolError(f"cannot reach the Dask scheduler {scheduler}: connection refused "
                        "(is `dask scheduler` running there?)") from None
    except OSError:
        return  # unreachable or slow: Dask's own timeout and message


# -- sweeps ----------------------------------------------------------------------------


@dataclass
class SweepRow:
    settings: dict[str, int]
    result: PolicyResult

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
            from terminal.params import TABLE

            names = [row[0] for row in TABLE] + list(POLICY_FIELDS)
            raise ToolError(f"--sweep {name}: not a terminal parameter nor one of "
                            f"{', '.join(POLICY_FIELDS)}{did_you_mean(name, names)}")
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


def combinations(grid: dict[str, list[int]]) -> list[dict[str, int]]:
    names = list(grid)
    return [dict(zip(names, values, strict=True))
            for values in itertools.product(*(grid[n] for n in names))]


def sweep(world: World, base: Policy, grid: dict[str, list[int]], ring, fee: int = 5,
          client=None) -> list[SweepRow]:
    settings = combinations(grid)
    policies = [variant(base, s) for s in settings]
    for p in policies:  # every combination checked before any runs
        err = Params().update(p.params)
        if err:
            raise ToolError(f"{p.name}: the terminal refuses these parameters: {err}")
    results = run_many([(world, p) for p in policies], ring, fee, client, label="sweep")
    return [SweepRow(s, r) for s, r in zip(settings, results, strict=True)]


def run_many(jobs: list[tuple[World, Policy]], ring, fee: int = 5, client=None,
             label: str = "runs") -> list[PolicyResult]:
    """Each (world, policy) run whole, on the cluster's workers when there is one."""
    out: list[PolicyResult | None] = [None] * len(jobs)
    with Progress(label, len(jobs), "runs") as bar:
        if client is None:
            for i, (w, p) in enumerate(jobs):
                out[i] = _checked(w, p, ring, fee)
                bar.update(1)
        else:
            from distributed import as_completed

            futs = {client.submit(_checked, w, p, ring, fee, pure=False): i
                    for i, (w, p) in enumerate(jobs)}
            for f in as_completed(futs):
                out[futs[f]] = f.result()
                bar.update(1)
    return out  # type: ignore[return-value]


def _checked(world, policy, ring, fee):
    try:
        return run(world, policy, ring, fee, keep_outcomes=False)
    except ToolError as e:  # e.g. a combination the terminal refuses
        raise ToolError(f"{policy.name}: {e}") from None


def table(rows: list[SweepRow], fee: int) -> str:
    names = list(rows[0].settings) if rows else []
    head = "".join(f"{n:>24}" for n in names) + f"{'fraud loss':>14}{'after report':>14}" \
        f"{'online rate':>13}{'fees':>10}{'declined':>10}"
    lines = [head]
    for r in rows:
        res = r.result
        lines.append("".join(f"{r.settings[n]:>24}" for n in names)
                     + f"{res.total_loss:>14,}{res.post_report_loss:>14,}"
                     + f"{res.online_rate():>13.1%}{res.fees(fee):>10,}"
                     + f"{res.shopper_declined:>10}")
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


def throughput(result: PolicyResult) -> float:
    return result.taps / max(result.seconds, 1e-9)


__all__ = ["run", "sweep", "run_many", "combinations", "dask_client", "table", "plot",
           "parse_grid", "throughput"]
