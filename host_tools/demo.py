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
import time
from dataclasses import dataclass, field
from pathlib import Path

from host_tools import listbuild
from host_tools.centre import Centre, day_of
from host_tools.detector import Detector
from host_tools.emulator import Emulator
from host_tools.keyring import BENCH_ISSUERS
from host_tools.link import TerminalLink
from host_tools.pos import run_sale, sale_over_rf
from host_tools.provision import push_keys
from host_tools.transfer import ack_batch, pull_batch
from host_tools.wallet import issue_card
from host_tools.world import Policy, World


@dataclass
class PolicyResult:
    policy: str
    losses: dict[str, int]  # stolen token -> approved fraudulent yen
    usable_days: dict[str, int]  # stolen token -> days with an approved fraudulent sale
    daily_losses: list[int]  # per day, all stolen cards
    shopper_taps: int = 0
    shopper_online: int = 0
    shopper_declined: int = 0
    prepaid_attempts: int = 0
    prepaid_approved: int = 0
    alerts: int = 0
    clearing_losses: int = 0  # the same losses, read back from the centre's clearing
    taps: int = 0
    pn532_taps: int = 0  # taps read by the board's PN532 driver on the emulated PN532
    seconds: float = 0.0
    outcomes: list[tuple[int, int, str, str]] = field(default_factory=list)  # day, shop, token

    @property
    def total_loss(self) -> int:
        return sum(self.losses.values())

    def online_rate(self) -> float:
        return self.shopper_online / max(self.shopper_taps, 1)


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


def open_centre(world: World, policy: Policy, path: Path, ring) -> Centre:
    key_id, list_key = ring.list_key()
    centre = Centre(path, list_key=list_key, key_id=key_id)
    names = dict(BENCH_ISSUERS)
    for issuer in sorted({c.issuer for c in world.cards.values()}):
        centre.add_issuer(issuer, names.get(issuer, f"issuer {issuer}"), policy.list_quota)
    before = world.unix(0) - 86400
    for card in world.cards.values():
        centre.add_card(card.token, card.issuer, card.product, balance=card.balance,
                        credit_limit=card.credit_limit, now=before)
    for k, token in enumerate(world.background_blocked):
        centre.block(token, before - 3600 * (len(world.background_blocked) - k), "reported")
    return centre


def next_list(centre: Centre, policy: Policy, day: int, version: int, key_id: int) -> bytes:
    """The evening's full list. iD as reported: the reported cards, oldest first, as
    many as the quota holds (a full quota refuses new entries). Hardened: reported
    plus detector-flagged tokens, every one sent; a quota overflow makes the
    terminal send that issuer online."""
    if policy.overflow_online_only:
        nxt = Detector(centre).next_negative_list(day)
        sections = nxt.sections()
        for issuer, extra in nxt.overflow.items():
            sections.setdefault(issuer, []).extend((e.token_hash, e.expiry) for e in extra)
        quotas = {i: q for i, q in nxt.quotas.items() if q}
        return listbuild.encode_full(sections, version=version, base_day=day, key_id=key_id,
                                     quotas=quotas)
    blocked = sorted(centre.cards(status="blocked"), key=lambda c: c["blocked_at"])
    listed: dict[int, list] = {}
    for card in blocked:
        entries = listed.setdefault(card["issuer"], [])
        if len(entries) < policy.list_quota:
            entries.append((card["token_hash"], 0))
    return listbuild.encode_full(listed, version=version, base_day=day, key_id=key_id)


def push_everywhere(links, data: bytes) -> None:
    from host_tools.transfer import push_list
    from terminal import nl_format as nl

    kind, version, base, _day, _key = nl.parse_header(data[:nl.HEADER_LEN])
    for link in links:
        push_list(link, data, kind, version, base, label=f"list v{version}")


def run_policy(world: World, policy: Policy, links, workdir: Path, ring, fee: int = 5,
               say=print) -> PolicyResult:
    t0 = time.monotonic()
    centre = open_centre(world, policy, workdir / f"centre-{policy.key}.db", ring)
    key_id = ring.list_key()[0]
    for link in links:
        link.set_params(policy.params)
    stolen = world.fraud_tokens()
    result = PolicyResult(policy.name, {t: 0 for t in stolen}, {t: 0 for t in stolen},
                          [0] * world.days)
    wallet = {c.token: issue_card(c.token, c.issuer, c.product, ring)
              for c in world.cards.values() if c.kind != "background"}
    push_everywhere(links, next_list(centre, policy, day_of(world.unix(0)) - 1, 1, key_id))
    pn532_before = [link.pn532.counts["taps"] if link.pn532 is not None else 0
                    for link in links]
    for day in range(world.days):
        for token in world.reports[day]:
            centre.block(token, world.unix(day, 7 * 3600), "reported by the holder")
        used_today = set()
        for tap in world.taps[day]:
            link = links[tap.shop]
            now = world.unix(day, tap.second)
            link.set_time(now)
            if link.rf_device:
                r, wallet[tap.token] = sale_over_rf(link, link.rf_device, tap.token,
                                                    wallet[tap.token], tap.amount,
                                                    centre=centre, draw=tap.draw, now=now)
            else:
                r = run_sale(link, tap.amount, wallet[tap.token], centre=centre,
                             draw=tap.draw, now=now)
                wallet[tap.token] = r.card_image
            result.taps += 1
            result.outcomes.append((day, tap.shop, tap.token, r.outcome))
            kind = world.cards[tap.token].kind
            if kind == "stolen" and r.approved:
                result.losses[tap.token] += tap.amount
                result.daily_losses[day] += tap.amount
                used_today.add(tap.token)
            elif kind == "shopper":
                result.shopper_taps += 1
                result.shopper_online += "ONLINE" in r.outcome
                result.shopper_declined += not r.approved
            elif kind == "prepaid-attacked":
                result.prepaid_attempts += 1
                result.prepaid_approved += r.approved
        for token in used_today:
            result.usable_days[token] += 1
        for link in links:  # the evening: clearing from every shop
            batch = pull_batch(link, label=f"day {day + 1} clearing")
            centre.ingest_clearing(batch.terminal_id, batch.records)
            ack_batch(link, batch.batch_id)
        business_day = day_of(world.unix(day))
        if policy.detector:
            Detector(centre).run(business_day)
        push_everywhere(links, next_list(centre, policy, business_day, day + 2, key_id))
        say(f"  {policy.key:<9} day {day + 1:>2}/{world.days}: {len(world.taps[day]):>3} taps, "
            f"fraud approved {result.daily_losses[day]:>7,} yen, total "
            f"{sum(result.daily_losses[:day + 1]):>8,} yen")
    result.pn532_taps = sum(link.pn532.counts["taps"] - before for link, before
                            in zip(links, pn532_before) if link.pn532 is not None)
    result.alerts = len(centre.alerts())
    for token in stolen:
        result.clearing_losses += sum(r["amount"] for r in centre.clearing(token=token)
                                      if r["approved"])
    result.seconds = time.monotonic() - t0
    return result


def report(world: World, results: list[PolicyResult], fee: int) -> str:
    lines = [f"World: seed {world.seed}, {world.days} days, {world.shops} shops, "
             f"{sum(len(t) for t in world.taps)} taps per policy, "
             f"{len(world.fraud_tokens())} stolen cards", ""]
    head = f"{'':<34}" + "".join(f"{r.policy:>30}" for r in results)
    lines.append(head)

    def row(label, values):
        lines.append(f"{label:<34}" + "".join(f"{v:>30}" for v in values))

    row("fraud losses, total (yen)", [f"{r.total_loss:,}" for r in results])
    for token in world.fraud_tokens():
        row(f"  stolen {token[:4]}..{token[-4:]} (yen / days)",
            [f"{r.losses[token]:,} / {r.usable_days[token]} d" for r in results])
    row("losses read back from clearing", [f"{r.clearing_losses:,}" for r in results])
    row("ordinary shoppers: online rate", [f"{r.online_rate():.1%}" for r in results])
    row(f"  authorisation fees ({fee} yen each)",
        [f"{r.shopper_online * fee:,} yen" for r in results])
    row("  shoppers' sales declined", [str(r.shopper_declined) for r in results])
    row("prepaid brute force: approved", [f"{r.prepaid_approved}/{r.prepaid_attempts}"
                                          for r in results])
    row("alerts raised by the centre", [str(r.alerts) for r in results])
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
    for day, tokens in enumerate(world.reports):
        if tokens:
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
