"""The bench demonstration: the incident's fraud on emulated boards, two policies.

    world = make_world(days=14, shops=4, seed=1)
    with EmulatedFleet(world.shops, workdir, ring) as links:
        result = run_policy(world, POLICIES["hardened"], links, workdir, ring)

Every tap goes through the real paths: the host sets the terminal's clock
(a fast clock: simulated days), asks for the sale over the pty, nfcpy presents
the card on the board's RF field (or, with rf off, the card image is injected),
the firmware reads it, decides (online requests answered by the centre),
writes the counters back to the card, journals, and each evening
the host pulls every terminal's clearing batch into the centre, runs the
detector (hardened policy) and pushes the next negative list to every terminal.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from host_tools.centreside import OUTCOME_CODES, CentreSide, PolicyResult
from host_tools.emulator import Emulator
from host_tools.link import TerminalLink
from host_tools.pos import run_sale, sale_over_rf
from host_tools.provision import push_keys
from host_tools.simfleet import EV_BLOCK, EV_PUSH, Push
from host_tools.transfer import ack_batch, pull_batch
from host_tools.world import Policy, World


def free_udp_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def EmulatedFleet(shops: int, workdir: Path, ring, tag: str = "", rf: bool = False):
    """One emulated board per shop, keys pushed; yields their TerminalLinks. With rf,
    each board has an RF field (nfcpy's UDP link) and cards are tapped there."""
    emus, links = [], []
    try:
        for i in range(shops):
            rf_port = free_udp_port() if rf else None
            emu = Emulator(flash=workdir / f"shop{i}{tag}.img", keyring=ring, rf_port=rf_port)
            emu.start()
            emus.append(emu)
            link = TerminalLink.open(emu.port, timeout=10, keyring=ring)
            if rf_port:
                link.rf_device = f"udp:127.0.0.1:{rf_port}"
                link.pn532 = emu.pn532  # its taps are counted: the share through the PN532
            links.append(link)
            push_keys(link, ring)
        yield links
    finally:
        for link in links:
            link.close()
        for emu in emus:
            emu.stop()


@contextlib.contextmanager
def InProcessFleet(shops: int, workdir: Path, ring, tag: str = ""):
    """The same firmware under CPython in this process, one terminal per shop
    (the fleet simulation); yields TerminalLinks like EmulatedFleet."""
    from host_tools.inproc import InProcessBoard

    boards = [InProcessBoard(workdir / f"shop{i}{tag}", ring) for i in range(shops)]
    links = [b.link() for b in boards]
    try:
        for link in links:
            push_keys(link, ring)
        yield links
    finally:
        for b in boards:
            b.close()


def push_everywhere(links, push: Push) -> None:
    from host_tools.transfer import push_list

    for link in links:
        push_list(link, push.data, push.kind, push.version, push.base_version,
                  label=f"list v{push.version}")


def run_policy(world: World, policy: Policy, links, workdir: Path, ring, fee: int = 5,
               say=print) -> PolicyResult:
    """The world's days on these terminals (one link per shop), every tap a SALE over
    the link, the centre answering online requests; host_tools.centreside does the
    rest, as for the fast fleet."""
    side = CentreSide(world, policy, workdir / f"centre-{policy.key}.db", ring, fee)
    try:
        for link in links:
            link.set_params(policy.params)
        push_everywhere(links, side.opening_list())
        wallet = side.wallet
        pn532_before = [link.pn532.counts["taps"] if link.pn532 is not None else 0
                        for link in links]
        for day in range(world.days):
            plan = side.morning(day, side.counters)
            declined: set[str] = set()
            for ev in plan.events:
                if ev[1] == EV_BLOCK:
                    side.block(ev[2], ev[0])
                    continue
                if ev[1] == EV_PUSH:
                    push_everywhere(links, ev[2])
                    continue
                tap = plan.taps[ev[2]]
                if tap.stop_after_decline and tap.token in declined:
                    side.skipped()
                    continue
                link = links[tap.shop]
                side.image(tap.token)  # issued at its first tap
                now = world.unix(day, tap.second)
                link.set_time(now)
                if link.rf_device:
                    r, wallet[tap.token] = sale_over_rf(link, link.rf_device, tap.token,
                                                        wallet[tap.token], tap.amount,
                                                        centre=side.centre, draw=tap.draw,
                                                        now=now)
                else:
                    r = run_sale(link, tap.amount, wallet[tap.token], centre=side.centre,
                                 draw=tap.draw, now=now)
                    wallet[tap.token] = r.card_image
                if not r.approved:
                    declined.add(tap.token)
                side.record(tap, OUTCOME_CODES[r.outcome])
            batches = [pull_batch(link, label=f"day {day + 1} clearing") for link in links]
            push = side.evening(day, [(b.terminal_id, b.records) for b in batches])
            for link, batch in zip(links, batches):
                ack_batch(link, batch.batch_id)
            push_everywhere(links, push)
            daily = side.result.daily_losses
            say(f"  {policy.key:<9} day {day + 1:>2}/{world.days}: {len(plan.taps):>3} taps, "
                f"fraud approved {daily[day]:>7,} yen, total {sum(daily[:day + 1]):>8,} yen")
        side.result.pn532_taps = sum(link.pn532.counts["taps"] - before for link, before
                                     in zip(links, pn532_before) if link.pn532 is not None)
        return side.finish()
    finally:
        side.close()


def report(world: World, results: list[PolicyResult], fee: int) -> str:
    lines = [f"World: {world.name}, seed {world.seed}, {world.days} days, {world.shops} "
             f"shops, {world.tap_count()} scripted taps, {len(world.fraud_tokens())} stolen "
             "cards", ""]
    width = max([30] + [len(r.policy) + 2 for r in results])
    lines.append(f"{'':<40}" + "".join(f"{r.policy:>{width}}" for r in results))

    def row(label, values):
        lines.append(f"{label:<40}" + "".join(f"{v:>{width}}" for v in values))

    def attack(label, pick):
        if any(pick(r).attempts for r in results):
            row(f"{label}: attempts", [str(pick(r).attempts) for r in results])
            row("  reached the issuer", [str(pick(r).reached_issuer) for r in results])
            row("  declined offline", [str(pick(r).declined_offline) for r in results])
            row("  approved", [str(pick(r).approved) for r in results])

    row("fraud losses, total (yen)", [f"{r.total_loss:,}" for r in results])
    row("  of which after the holder's report", [f"{r.post_report_loss:,}" for r in results])
    stolen = world.fraud_tokens()
    if len(stolen) <= 8:
        for token in stolen:
            row(f"  stolen {token[:4]}..{token[-4:]} (yen / days)",
                [f"{r.losses[token]:,} / {r.usable_days[token]} d" for r in results])
    else:
        row(f"  {len(stolen)} stolen cards (yen)",
            [f"{sum(r.losses[t] for t in stolen):,}" for r in results])
    other = [t for t in results[0].losses if t not in set(stolen)] if results else []
    if any(r.losses[t] for r in results for t in other):
        row("  card testing, enumeration (yen)",
            [f"{sum(r.losses[t] for t in other):,}" for r in results])
    row("losses read back from clearing", [f"{r.clearing_losses:,}" for r in results])
    row("ordinary shoppers: online rate", [f"{r.online_rate():.1%}" for r in results])
    row("  shoppers' sales declined", [str(r.shopper_declined) for r in results])
    row(f"online authorisations, all taps ({fee} yen)",
        [f"{r.online_requests:,} ({r.fees(fee):,} yen)" for r in results])
    attack("prepaid brute force", lambda r: r.prepaid)
    attack("card testing", lambda r: r.testing)
    attack("enumeration burst", lambda r: r.enumeration)
    row("alerts raised by the centre", [str(r.alerts) for r in results])
    if any(r.pn532_taps for r in results):
        row("taps through the emulated PN532", [f"{r.pn532_taps}/{r.taps}" for r in results])
    row("wall time", [f"{r.seconds:.1f} s" for r in results])
    return "\n".join(lines)


def chart(world: World, results: list[PolicyResult], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    days = list(range(1, world.days + 1))
    for r in results:
        cum, total = [], 0
        for v in r.daily_losses:
            total += v
            cum.append(total)
        ax.plot(days, cum, marker="o", label=r.policy)
    for first in sorted(set(world.stolen_on.values())):
        ax.axvline(first + 1, color="grey", alpha=0.25, linestyle=":")
    for day, reports in enumerate(world.reports):
        if reports:
            ax.axvline(day + 1, color="red", alpha=0.25, linestyle="--")
    ax.plot([], [], color="grey", linestyle=":", label="card stolen")
    ax.plot([], [], color="red", linestyle="--", label="card reported (blocked)")
    ax.set_xlabel("day")
    ax.set_ylabel("cumulative fraud losses (yen)")
    ax.set_title(f"Offline fraud with stolen cards: {len(world.fraud_tokens())} cards, "
                 f"{world.shops} shops (seed {world.seed})")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
