"""The fast fleet: terminals of the simulation on the firmware's own tap path, in
process, with no link, keyring or file work per tap.

    keys = DeploymentKeys.from_ring(ring)
    group = TerminalGroup(keys)
    group.add(0, 0x51000000, policy.params)   # shop, terminal id, its parameters
    out = group.run_day(day_input)            # DayInput -> DayOutput

A tap runs what a board runs for a SALE with the card image given: terminal.sale's
`Sales.do_sale` (the same bytes in and out), so terminal.tap, card (read and
issuer-MAC check, new counters sealed), tokenhash, the negative list's lookup
(terminal.negative_list over its own file format, installed by its own commit
code), decision's Engine with its velocity table and enumeration guard, and the
journal record packed by terminal.journal.pack_record_into into memory. Only
what is around it differs from a board: the clock is set per tap, the online
request goes to a function instead of over the link, and the journal is a
bytearray cleared by the evening's clearing (whose records the group turns into the
centre's clearing rows, work the centre would do, done where it runs in parallel).

Groups are the unit the driver (host_tools.simulate) runs in parallel: every tap
of a card on one day runs in one group, so a card's image and its issuer's
answers never depend on another group (see simulate.py). A group is picklable:
keys and the installed list are rebuilt from bytes where it lands.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import struct
import tempfile
import time
import weakref
import zlib
from dataclasses import dataclass, field

from host_tools.centre import classify_outcome, day_of
from host_tools.centre.authorise import auth_rule
from host_tools.simcard import card_image
from terminal import decision, listsync, protocol, sale
from terminal.card import RECORD_LEN
from terminal.clock import EPOCH_OFFSET
from terminal.guard import EnumerationGuard
from terminal.issuers import IssuerTable
from terminal.journal import RECORD_SIZE, JournalFull, decode, pack_record_into
from terminal.keys import Keys
from terminal.negative_list import NegativeList
from terminal.params import Params
from terminal.service import LiveParams
from terminal.tap import APPROVED_ONLINE, Tap
from terminal.velocity import VelocityTable

_RAM_DIR = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
_SALE_FLAGS = sale.FLAG_CARD_GIVEN | sale.FLAG_CENTRE_UP | sale.FLAG_DRAW_GIVEN
_PROVISIONAL_CODE = b"999999"  # online approvals until the centre's replay gives the code
# Timeline events of a group's day, in order: (second, kind, ...)
EV_BLOCK = 0  # (second, EV_BLOCK, token)
EV_PUSH = 1  # (second, EV_PUSH, Push)
EV_TAP = 2  # (second, EV_TAP, index, shop, token, amount, draw, stop_after_decline)
# A card's row as the issuer's rule reads it (centre.authorise.auth_rule), sent to
# the groups as a tuple of these (small on the wire; a dict only when asked).
LEDGER_FIELDS = ("issuer", "product", "status", "expiry", "balance", "credit_used",
                 "credit_limit")


class SimError(Exception):
    """The firmware refused something the simulation gave it (a bug, not a user error)."""


@dataclass(frozen=True)
class Push:
    """A negative list as the host pushes it."""

    kind: int
    version: int
    base_version: int
    data: bytes


@dataclass(frozen=True)
class DeploymentKeys:
    """What `termctl keys push` installs, as plain bytes (picklable)."""

    list_key_id: int
    list_key: bytes
    issuers: tuple[tuple[int, int, bytes], ...]

    @classmethod
    def from_ring(cls, ring) -> DeploymentKeys:
        key_id, list_key = ring.list_key()
        issuers = tuple(sorted((int(i), int(e["version"]), bytes.fromhex(e["key"]))
                               for i, e in ring.deployment()["issuers"].items()))
        return cls(key_id, list_key, issuers)

    def issuer_key(self, issuer: int) -> tuple[int, bytes]:
        """(key version, card MAC key) of an issuer, as a Keyring gives them."""
        for i, version, key in self.issuers:
            if i == issuer:
                return version, key
        raise SimError(f"no card key for issuer {issuer}")

    def install(self, capacity: int) -> Keys:
        keys = Keys(capacity)
        keys.install(self.list_key_id, self.list_key, list(self.issuers))
        return keys


class Board:
    """The board file of a simulated terminal (the emulator's capacities)."""

    ISSUER_CAPACITY: int
    ISSUER_KEY_CAPACITY: int
    COUNTER_CAPACITY: int
    JOURNAL_CAPACITY: int
    LIST_CAPACITY: int

    def __init__(self, name: str = "emulator"):
        from host_tools.build import board_values

        self.name = name
        for k, v in board_values(name).items():
            if k.isupper():
                setattr(self, k, v)


def sale_args(amount: int, image: bytes, draw: int) -> bytes:
    """The SALE command's arguments for an injected card image (terminal.sale)."""
    return struct.pack("<IIB", amount, 0, _SALE_FLAGS) + image + bytes((draw,))


def sale_reply(body: bytes) -> tuple[int, int, int, bytes]:
    """(final outcome, reasons, journal seq, card image after) of a SALE reply."""
    final, reasons, _code, seq, _ms = struct.unpack_from(sale._RES_FMT, body, 0)
    return final, reasons, seq, bytes(body[len(body) - RECORD_LEN:])


class MemJournal:
    """terminal.journal.Journal's append() into memory: the same records, packed by
    pack_record_into; `take()` is the evening's pull and acknowledgement."""

    def __init__(self, capacity: int, terminal_id: int, near_full_pct: int):
        self.capacity = capacity
        self.terminal_id = terminal_id
        # a board draws its journal's epoch at random when the journal is made; a
        # simulated one takes it from its terminal id (the same in every run)
        self.epoch = zlib.crc32(b"journal epoch %d" % terminal_id)
        self.near_full_pct = near_full_pct
        self._rec = bytearray(RECORD_SIZE)
        self.records = bytearray()
        self.next_seq = 1
        self.pending = 0
        self.full = self.near_full = False

    def set_near_full_pct(self, pct: int) -> None:
        self.near_full_pct = pct
        self._flags()

    def _flags(self) -> None:
        self.full = self.pending >= self.capacity
        self.near_full = self.full or self.pending * 100 >= self.capacity * self.near_full_pct

    def append(self, time, token_hash, masked_token, issuer, amount, outcome, reasons,
               approval_code, atc, last_online_atc, offline_today, offline_since_online,
               offline_count):
        if self.full:
            raise JournalFull("journal full: %d records not cleared" % self.pending)
        seq = self.next_seq
        pack_record_into(self._rec, self.terminal_id, seq, time, token_hash, masked_token,
                         issuer, amount, outcome, reasons, approval_code, atc, last_online_atc,
                         offline_today, offline_since_online, offline_count, self.epoch)
        self.records += self._rec
        self.next_seq = seq + 1
        self.pending += 1
        self._flags()
        return seq

    def take(self) -> bytes:
        out = bytes(self.records)
        self.records = bytearray()
        self.pending = 0
        self._flags()
        return out


class _Clock:
    def __init__(self):
        self.t = -1

    def now(self):
        return self.t


class _SimSales(sale.Sales):
    """terminal.sale.Sales whose online request is a call (the driver's issuer)."""

    def __init__(self, svc, tap, ask):
        super().__init__(svc, tap, rand99=lambda: 0)
        self._ask = ask

    def _ask_centre(self, res, amount):
        self.online_requests += 1
        answer = self._ask(self.tap.rec, amount)
        if answer is None:
            self.online_timeouts += 1
        return answer


class SimTerminal:
    """One terminal: its own params, issuer overrides, counter table, enumeration
    guard and journal, the group's keys and installed list."""

    platform = "unix"  # what terminal.sale checks before it takes a given draw

    def __init__(self, shop: int, terminal_id: int, board: Board, params: dict[str, int]):
        self.shop = shop
        self.terminal_id = terminal_id
        p = Params()
        err = p.update(params)
        if err:
            raise SimError(f"terminal params: {err}")
        self.params = LiveParams(p.values, p.version)
        self.issuers = IssuerTable(board.ISSUER_CAPACITY)
        self.table = VelocityTable(board.COUNTER_CAPACITY)
        self.guard = EnumerationGuard()
        self.journal = MemJournal(board.JOURNAL_CAPACITY, terminal_id,
                                  p.get("journal_near_full_pct"))
        self.list_epoch = -1
        self.counts = [0, 0, 0]  # sales, online requests, online timeouts
        self.sales: _SimSales | None = None

    def bind(self, group: TerminalGroup) -> None:
        """Wire the firmware parts to the group's keys, list and issuer."""
        self.group = group
        self.negative_list = group.list.nl
        self.engine = decision.Engine(self.params, self.issuers, group.keys.issuer_keys,
                                      group.board.COUNTER_CAPACITY, table=self.table,
                                      guard=self.guard)
        self.tap = Tap(self.engine, group.keys, self.negative_list, self.journal)
        self.clock = _Clock()
        self.handlers: dict = {}
        self.sales = _SimSales(self, self.tap, group.ask)
        self.sales.sales, self.sales.online_requests, self.sales.online_timeouts = self.counts

    def __getstate__(self):
        s = self.sales
        counts = [s.sales, s.online_requests, s.online_timeouts] if s else self.counts
        return {"shop": self.shop, "terminal_id": self.terminal_id,
                "values": self.params.values, "version": self.params.version,
                "issuers": self.issuers, "table": self.table, "guard": self.guard,
                "journal": self.journal, "list_epoch": -1, "counts": counts}

    def __setstate__(self, st):
        self.shop = st["shop"]
        self.terminal_id = st["terminal_id"]
        self.params = LiveParams(st["values"], st["version"])
        self.issuers = st["issuers"]
        self.table = st["table"]
        self.guard = st["guard"]
        self.journal = st["journal"]
        self.list_epoch = st["list_epoch"]
        self.counts = st["counts"]
        self.sales = None

    def sale(self, unix: int, amount: int, image: bytes, draw: int):
        """One SALE with the card image given; (final, reasons, seq, image after)."""
        if self.list_epoch != self.group.list.epoch:  # a list was installed since
            listsync.sync_online_only(self)
            self.list_epoch = self.group.list.epoch
        self.clock.t = unix - EPOCH_OFFSET
        assert self.sales is not None, "bind() the terminal to its group first"
        status, body = self.sales.do_sale(sale_args(amount, image, draw))
        if status != protocol.OK:
            raise SimError(f"terminal {self.terminal_id:08x} refused a sale: {body}")
        return sale_reply(body)


class ListHolder:
    """The negative list the group's terminals have installed: one NegativeList
    (they all get the same pushes), in a RAM directory where there is one."""

    def __init__(self, board: Board, key_id: int):
        self.board = board
        self.key_id = key_id
        self.dir = tempfile.mkdtemp(prefix="simlist-", dir=_RAM_DIR)
        self._cleanup = weakref.finalize(self, shutil.rmtree, self.dir, True)
        self.nl = NegativeList(self.dir, board.LIST_CAPACITY, board.ISSUER_CAPACITY,
                               key_id=key_id)
        self.epoch = 0
        self.since_full: list[Push] = []  # to rebuild it where a pickled group lands

    def install(self, push: Push) -> None:
        nl = self.nl
        err = (nl.begin(push.kind, push.version, push.base_version, len(push.data))
               or nl.write_chunk(0, push.data) or nl.commit())
        if err:
            raise SimError(f"list v{push.version}: {err}")
        self.epoch += 1
        if push.kind == 1:
            self.since_full = [push]
        else:
            self.since_full.append(push)

    def __getstate__(self):
        return {"board": self.board, "key_id": self.key_id, "pushes": self.since_full,
                "epoch": self.epoch}

    def __setstate__(self, st):
        self.__init__(st["board"], st["key_id"])
        for push in st["pushes"]:
            self.install(push)
        self.epoch = st["epoch"] + 1


@dataclass
class DayInput:
    day: int
    day_unix: int  # Unix time of the day's 00:00
    cutover_min: int
    events: list[tuple]  # the group's timeline (EV_*), in order
    images: dict[str, bytes | None]  # card images of the tokens tapped, as the day starts
    ledger: dict[str, tuple | None]  # those tokens' card rows (LEDGER_FIELDS; None: unknown)
    new_cards: dict = field(default_factory=dict)  # token -> world.Card: issue (image None)
    start: dt.date = dt.date(2026, 1, 1)  # the world's first day (card expiry)


@dataclass
class DayOutput:
    outcomes: list[tuple[int, int]] = field(default_factory=list)  # (tap index, final)
    images: dict[str, bytes] = field(default_factory=dict)  # card images after the day
    online: list[tuple] = field(default_factory=list)  # (index, tid, seq, approved)
    # (shop, terminal id, rows): the journal records as centre.clearing_row makes them,
    # with the records' terminal time made Unix time as a batch pull does
    clearing: list[tuple[int, int, list[tuple]]] = field(default_factory=list)
    cpu_seconds: float = 0.0  # the group's process time for the day (all of it)
    tap_cpu: float = 0.0  # ... of which the timeline (taps, list installs)


class TerminalGroup:
    """Terminals that run one day's taps together, in time order."""

    def __init__(self, keys: DeploymentKeys, board: str = "emulator"):
        self.board = Board(board)
        self.deployment = keys
        self.keys = keys.install(self.board.ISSUER_KEY_CAPACITY)
        self.list = ListHolder(self.board, keys.list_key_id)
        self.terminals: dict[int, SimTerminal] = {}
        self._ledger: dict[str, tuple | None] = {}
        self._rows: dict[str, dict] = {}  # rows asked for today, as dicts
        self._token = ""
        self._now = 0
        self._cutover = 0

    def __getstate__(self):
        return {"board": self.board.name, "deployment": self.deployment, "list": self.list,
                "terminals": self.terminals}

    def __setstate__(self, st):
        self.__init__(st["deployment"], st["board"])
        self.list = st["list"]
        self.put(list(st["terminals"].values()))

    def add(self, shop: int, terminal_id: int, params: dict[str, int]) -> None:
        t = SimTerminal(shop, terminal_id, self.board, params)
        self.put([t])

    def put(self, terminals: list[SimTerminal]) -> None:
        for t in terminals:
            t.bind(self)
            self.terminals[t.shop] = t

    def take(self, shops) -> list[SimTerminal]:
        return [self.terminals.pop(s) for s in shops]

    def install(self, push: Push) -> None:
        self.list.install(push)

    def ask(self, rec, amount: int):
        """The issuer's answer to an online request, from the centre's card rows as
        the day started and this day's own approvals (host_tools.centre's rule)."""
        row = self._row(self._token)
        reason = auth_rule(row, rec.issuer_id, amount, rec.product,
                            day_of(self._now, self._cutover))
        if reason != "approved" or row is None:
            return False, b"000000"
        if row["product"] == "credit":
            row["credit_used"] += amount
        else:
            row["balance"] -= amount
        return True, _PROVISIONAL_CODE

    def _row(self, token: str) -> dict | None:
        row = self._rows.get(token)
        if row is None:
            values = self._ledger.get(token)
            if values is None:
                return None
            row = self._rows[token] = dict(zip(LEDGER_FIELDS, values))
        return row

    def run_day(self, inp: DayInput) -> DayOutput:
        cpu0 = time.process_time()
        out = DayOutput()
        self._ledger = inp.ledger
        self._rows = {}
        self._cutover = inp.cutover_min
        images: dict[str, bytes] = {t: i for t, i in inp.images.items() if i is not None}
        for token, card in inp.new_cards.items():
            images[token] = card_image(card, self.deployment, inp.start)
        declined: set[str] = set()
        terminals = self.terminals
        outcomes = out.outcomes
        cpu1 = time.process_time()
        for ev in inp.events:
            kind = ev[1]
            if kind == EV_TAP:
                _, _, index, shop, token, amount, draw, stop = ev
                if stop and token in declined:
                    continue
                self._token = token
                self._now = now = inp.day_unix + ev[0]
                term = terminals[shop]
                final, _reasons, seq, image = term.sale(now, amount, images[token], draw)
                images[token] = image
                outcomes.append((index, final))
                if final > 2:
                    declined.add(token)
                if final == APPROVED_ONLINE or final == 4:
                    out.online.append((index, term.terminal_id, seq, final == APPROVED_ONLINE))
            elif kind == EV_PUSH:
                self.install(ev[2])
            else:
                row = self._row(ev[2])
                if row is not None:
                    row["status"] = "blocked"
        out.tap_cpu = time.process_time() - cpu1
        out.images = {t: images[t] for t in inp.images if images[t] != inp.images[t]}
        for shop in sorted(terminals):
            t = terminals[shop]
            if t.journal.pending:
                out.clearing.append((shop, t.terminal_id,
                                     clearing_rows(t.terminal_id, t.journal.take(),
                                                   inp.cutover_min)))
        out.cpu_seconds = time.process_time() - cpu0
        return out


def clearing_rows(terminal_id: int, raw: bytes, cutover_min: int) -> list[tuple]:
    """A batch's records as the centre stores them: decoded by the firmware's own
    journal.decode (CRC checked), terminal time made Unix time (as
    transfer.pull_batch does), then the row centre.clearing_row makes of such a dict
    (tests/test_simfleet.py pins the two), without its checks for records from
    elsewhere: 8 % of a run's time went to them."""
    rows = []
    for i in range(0, len(raw), RECORD_SIZE):
        rec = decode(raw[i:i + RECORD_SIZE])
        if rec["terminal_id"] != terminal_id:
            raise SimError(f"record of terminal {rec['terminal_id']:08x} in {terminal_id:08x}'s")
        t = rec["time"] + EPOCH_OFFSET
        outcome, reasons = rec["outcome"], rec["reasons"]
        approval = rec["approval_code"].decode("ascii", "replace")
        name, approved, online = classify_outcome(outcome, reasons, approval)
        rows.append((terminal_id, rec["epoch"], rec["seq"], t, day_of(t, cutover_min),
                     rec["token_hash"], rec["masked_token"].decode("ascii", "replace"),
                     rec["issuer"], rec["amount"], outcome, name, int(approved), int(online),
                     reasons, approval, rec["atc"], rec["last_online_atc"],
                     rec["offline_count_since_online"], rec["offline_amount_today"],
                     rec["offline_amount_since_online"], None, _extra(rec["version"]), 0))
    return rows


def _extra(version: int, _cache: dict[int, str] = {}) -> str:  # noqa: B006 (a cache)
    # the one field of a decoded record the clearing table has no column for
    text = _cache.get(version)
    if text is None:
        text = _cache[version] = json.dumps({"version": version}, sort_keys=True, default=str)
    return text


def run_group_day(group: TerminalGroup, inp: DayInput) -> tuple[TerminalGroup, DayOutput]:
    """A group's day as a pure-looking task (the Dask task): the group goes on."""
    return group, group.run_day(inp)
