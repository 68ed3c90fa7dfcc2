"""Fraud detector over the centre's clearing, and the next negative list.

    det = Detector(centre)                     # DetectorConfig() defaults, docs/centre.md
    for f in det.run(day):                     # clearing up to business day `day`
        print(f.kind, f.masked_token, f.summary)
    nl = det.next_negative_list(day)           # blocked + flagged tokens, per-issuer quotas
    nl.sections()                              # {issuer: [(hash8, expiry day)]} for encode_full
    nl.overflow                                # {issuer: [entries that did not fit]}: never hidden

Three patterns (each finding also becomes an alert, once):

- `daily_subfloor`: the incident. One token with an approved sale just under the
  floor limit on `run_days` consecutive business days, at `min_terminals` or more
  different terminals. A terminal sees one sale; only the centre sees the run.
- `blocked_clearing`: a blocked token whose approved sales still clear after its
  block time (the list did not reach those terminals, or ran full).
- `repeated_declines`: `decline_limit` declines of one token in one business day
  (offline declines from clearing plus the centre's online declines): brute force
  and card testing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from host_tools.centre import Centre, as_day, day_text, insert_alert

DAILY_SUBFLOOR = "daily_subfloor"
BLOCKED_CLEARING = "blocked_clearing"
REPEATED_DECLINES = "repeated_declines"
QUOTA_OVERFLOW = "list_quota_overflow"


@dataclass
class DetectorConfig:
    """Thresholds; the incident's own numbers are not public (docs/domain.md), so
    these are defaults to tune, e.g. with `termctl simulate`."""

    floor_limit: int = 10_000  # iD's default floor: sub-floor means amount < this
    near_floor_min: int = 5_000  # (a) a sale counts from here up to the floor
    run_days: int = 3  # (a) consecutive business days with such a sale
    min_terminals: int = 3  # (a) different terminals among them, each new to the token
    history_days: int = 90  # (a) a terminal used this recently is not new to the token
    max_gap_days: int = 0  # (a) days without such a sale a run may skip
    decline_limit: int = 3  # (c) declines of one token in one business day
    lookback_days: int = 30  # clearing read by one run, ending at its day
    list_ttl_days: int = 60  # a flag stays listed this long (Auckland HOP: 60 days)
    list_kinds: tuple[str, ...] = (BLOCKED_CLEARING, DAILY_SUBFLOOR, REPEATED_DECLINES)


@dataclass
class Finding:
    kind: str
    day: int  # business day the pattern was complete: the alert's day
    token_hash: bytes
    issuer: int
    masked_token: str
    summary: str
    evidence: list[dict]  # clearing rows (terminal_id, seq, date, amount, ...) or auths
    token: str | None = None  # the token number, if the centre issued it
    new: bool = False  # its alert was raised by this run (not an earlier one)

    def detail(self) -> dict:
        return {"summary": self.summary, "masked_token": self.masked_token,
                "evidence": [{k: v for k, v in e.items() if k != "token_hash"}
                             for e in self.evidence[:50]]}


# Priority on the list when an issuer's quota is short: active fraud first.
_PRIORITY = {BLOCKED_CLEARING: 0, DAILY_SUBFLOOR: 1, REPEATED_DECLINES: 2, "blocked": 3}
# Prepaid/debit: floor 0, every sale goes online and the terminal never approves
# one offline (product_online is a hard reason), so their entries come last.
_PRIORITY_ONLINE_PRODUCT = 4


@dataclass
class ListEntry:
    issuer: int
    token_hash: bytes
    token: str | None  # None: seen only in clearing (not a card of this centre)
    expiry: int  # last listed day (day number), 0 = no expiry
    why: list[str]  # "blocked" and/or finding kinds
    last_seen: int  # latest evidence day (blocks: the block day)
    priority: int = 9
    product: str | None = None  # None: not a card of this centre


@dataclass
class NextList:
    """The tokens the next negative list should carry, per issuer and quota."""

    day: int
    entries: list[ListEntry]  # what fits the quotas, highest priority first
    overflow: dict[int, list[ListEntry]]  # per issuer: what did not fit
    quotas: dict[int, int | None]  # issuer -> quota (None: no quota)
    notes: list[str] = field(default_factory=list)

    def sections(self) -> dict[int, list[tuple[bytes, int]]]:
        """{issuer: [(token hash, expiry day or 0)]}: listbuild.encode_full's input."""
        out: dict[int, list[tuple[bytes, int]]] = {i: [] for i in self.quotas}
        for e in self.entries:
            out.setdefault(e.issuer, []).append((e.token_hash, e.expiry))
        return out

    def csv(self) -> str:
        """listbuild's CSV (issuer,token,action,expiry) of the entries with a known
        token number; hash-only entries need sections()."""
        lines = ["issuer,token,action,expiry"]
        for e in self.entries:
            if e.token is not None:
                lines.append(f"{e.issuer},{e.token},add,{day_text(e.expiry) if e.expiry else ''}")
        return "\n".join(lines) + "\n"

    def per_issuer(self) -> dict[int, tuple[int, int, int | None]]:
        """issuer -> (listed, left out, quota)."""
        out = {}
        for issuer, quota in sorted(self.quotas.items()):
            n = sum(1 for e in self.entries if e.issuer == issuer)
            out[issuer] = (n, len(self.overflow.get(issuer, [])), quota)
        return out


class Detector:
    def __init__(self, centre: Centre, config: DetectorConfig | None = None):
        self.centre = centre
        self.config = config or DetectorConfig()

    # -- the three patterns ---------------------------------------------------------

    def run(self, day, now: int | None = None) -> list[Finding]:
        """Every pattern in the clearing of the lookback window ending at business day
        `day`; raises an alert per finding once (`Finding.new`: raised by this run).
        `now`: the alerts' creation time (default: this host's clock)."""
        d = as_day(day)
        found = self.daily_subfloor(d) + self.blocked_clearing(d) + self.repeated_declines(d)
        t = int(time.time()) if now is None else now
        with self.centre.tx() as db:
            for f in found:
                f.new = insert_alert(db, t, f.day, f.kind, f.token_hash.hex(),
                                     token_hash=f.token_hash, issuer=f.issuer, detail=f.detail())
        return found

    def _window(self, day: int) -> tuple[int, int]:
        return day - self.config.lookback_days + 1, day

    def daily_subfloor(self, day: int) -> list[Finding]:
        """(a): runs of consecutive days with a near-floor approved sale, many shops."""
        cfg = self.config
        # Which tokens have run_days such days close enough together: from (token, day)
        # pairs alone; only theirs are read whole (nearly every shopper is left out).
        near = "approved = 1 AND amount >= ?1 AND amount < ?2 AND day BETWEEN ?3 AND ?4"
        args = (cfg.near_floor_min, cfg.floor_limit, *self._window(day))
        days_of: dict[bytes, list[int]] = {}
        for h, d in self.centre.db.execute(
                f"SELECT DISTINCT token_hash, day FROM clearing WHERE {near} "
                "ORDER BY token_hash, day", args):
            days_of.setdefault(h, []).append(d)
        rows = []
        for h, days in days_of.items():
            if _has_run(days, cfg.run_days, 1 + cfg.max_gap_days):
                rows += self._rows(f"SELECT * FROM clearing WHERE token_hash = ?5 AND {near} "
                                   "ORDER BY day, time", (*args, h))
        found = []
        for token_rows in _by_token(rows):
            found += self._subfloor_runs(token_rows)
        return found

    def _subfloor_runs(self, rows: list[dict]) -> list[Finding]:
        cfg = self.config
        runs: list[list[dict]] = [[]]
        for r in rows:
            if runs[-1] and r["day"] - runs[-1][-1]["day"] > 1 + cfg.max_gap_days:
                runs.append([])
            runs[-1].append(r)
        runs = [run for run in runs if len({r["day"] for r in run}) >= cfg.run_days]
        if not runs:
            return []
        known = self._first_visits(rows[0]["token_hash"], rows[-1]["day"])
        return [f for run in runs for f in self._judge_run(run, known)]

    def _first_visits(self, token_hash: bytes, day: int) -> dict[int, int]:
        # terminal -> time of the token's first sale there (any amount or outcome)
        # in the history window: a shop it used before is one of its habits.
        rows = self.centre.db.execute(
            "SELECT terminal_id, min(time) FROM clearing WHERE token_hash = ? AND day "
            "BETWEEN ? AND ? GROUP BY terminal_id",
            (token_hash, day - self.config.history_days + 1, day))
        return {t: first for t, first in rows}

    def _judge_run(self, run: list[dict], first_visit: dict[int, int]) -> list[Finding]:
        # Flagged on the first day the run has run_days days and min_terminals
        # shops the token had not used before (the thieves change shops each day;
        # a shopper returns to the same few).
        cfg = self.config
        days: set[int] = set()
        shops: set[int] = set()
        for r in run:
            days.add(r["day"])
            if first_visit.get(r["terminal_id"], r["time"]) >= r["time"]:
                shops.add(r["terminal_id"])
            if len(days) >= cfg.run_days and len(shops) >= cfg.min_terminals:
                return [self._finding(DAILY_SUBFLOOR, r["day"], run, self._run_summary(run))]
        return []

    def _run_summary(self, run: list[dict]) -> str:
        cfg = self.config
        total = sum(e["amount"] for e in run)
        span = f"{day_text(run[0]['day'])}..{day_text(run[-1]['day'])}"
        return (f"{len(run)} sales of {cfg.near_floor_min:,}-{cfg.floor_limit - 1:,} yen on "
                f"{len({e['day'] for e in run})} consecutive days at "
                f"{len({e['terminal_id'] for e in run})} terminals, {span}, {total:,} yen")

    def blocked_clearing(self, day: int) -> list[Finding]:
        """(b): approved sales of a blocked token made after its block time."""
        # from the (few) blocked cards to their clearing by its token index; CROSS JOIN
        # keeps SQLite from scanning the window's clearing instead
        rows = self._rows(
            "SELECT c.*, k.blocked_at FROM cards k CROSS JOIN clearing c ON c.token_hash = "
            "k.token_hash WHERE k.status = 'blocked' AND c.time > k.blocked_at AND "
            "c.approved = 1 AND c.day BETWEEN ? AND ? ORDER BY c.token_hash, c.time",
            self._window(day))
        found = []
        for run in _by_token(rows):
            total = sum(r["amount"] for r in run)
            shops = sorted({r["terminal_id"] for r in run})
            summary = (f"blocked, yet {len(run)} approved sales ({total:,} yen) cleared after "
                       f"the block at terminals {', '.join('%08x' % t for t in shops)}")
            found.append(self._finding(BLOCKED_CLEARING, run[0]["day"], run, summary))
        return found

    def repeated_declines(self, day: int) -> list[Finding]:
        """(c): decline_limit or more declines of one token in one business day."""
        rows = self._rows(
            "SELECT token_hash, issuer, masked_token, day, time, amount, terminal_id, seq, "
            "outcome_name AS what FROM clearing WHERE approved = 0 AND online = 0 AND day "
            "BETWEEN ?1 AND ?2 UNION ALL SELECT token_hash, issuer, masked_token, day, time, "
            "amount, terminal_id, NULL, 'online: ' || reason FROM online_auth WHERE "
            "approved = 0 AND day BETWEEN ?1 AND ?2 ORDER BY token_hash, day, time",
            self._window(day))
        found = []
        for token_rows in _by_token(rows):
            for d, dayrows in _by_day(token_rows):
                if len(dayrows) >= self.config.decline_limit:
                    total = sum(r["amount"] for r in dayrows)
                    summary = (f"{len(dayrows)} declines on {day_text(d)} "
                               f"({total:,} yen attempted)")
                    found.append(self._finding(REPEATED_DECLINES, d, dayrows, summary))
        return found

    def _rows(self, sql: str, args: tuple) -> list[dict]:
        return [dict(r) for r in self.centre.db.execute(sql, args)]

    def _finding(self, kind: str, day: int, rows: list[dict], summary: str) -> Finding:
        first = rows[0]
        card = self.centre.card_by_hash(first["token_hash"])
        evidence = [_evidence(r) for r in rows]
        return Finding(kind, day, first["token_hash"], first["issuer"], first["masked_token"],
                       summary, evidence, card["token"] if card else None)

    # -- the next negative list --------------------------------------------------------

    def next_negative_list(self, day, now: int | None = None) -> NextList:
        """Blocked tokens plus tokens flagged (open alerts of list_kinds within
        list_ttl_days), per issuer in priority order up to its quota. What does not
        fit is in `overflow` and raises a `list_quota_overflow` alert: never dropped
        silently. Expired cards are left out (the terminal declines them anyway)."""
        d = as_day(day)
        t = int(time.time()) if now is None else now
        self.run(d, t)
        entries: dict[bytes, ListEntry] = {}
        self._add_blocked(entries, d)
        self._add_flagged(entries, d)
        for e in entries.values():
            if e.product in ("prepaid", "debit"):  # online anyway: a list slot adds little
                e.priority = _PRIORITY_ONLINE_PRODUCT
        quotas = {r["id"]: r["list_quota"] for r in self.centre.issuers()}
        notes = []
        for e in entries.values():
            if e.issuer not in quotas:
                quotas[e.issuer] = None
                notes.append(f"issuer {e.issuer} is not registered: no quota applied")
        listed, overflow = _apply_quotas(list(entries.values()), quotas)
        self._overflow_alerts(d, t, listed, overflow, quotas)
        return NextList(d, listed, overflow, quotas, sorted(set(notes)))

    def _add_blocked(self, entries: dict[bytes, ListEntry], day: int) -> None:
        # blocked before the end of the list's business day
        end = (day + 1) * 86400 + self.centre.cutover_min * 60
        for c in self.centre.db.execute(
                "SELECT * FROM cards WHERE status = 'blocked' AND blocked_at < ? AND "
                "(expiry IS NULL OR expiry >= ?)", (end, day)):
            entries[c["token_hash"]] = ListEntry(
                c["issuer"], c["token_hash"], c["token"], c["expiry"] or 0, ["blocked"],
                self.centre.day(c["blocked_at"]), _PRIORITY["blocked"], c["product"])

    def _add_flagged(self, entries: dict[bytes, ListEntry], day: int) -> None:
        cfg = self.config
        for a in self.centre.alerts(day - cfg.list_ttl_days + 1, day, status="open"):
            if a["kind"] not in cfg.list_kinds or a["token_hash"] is None:
                continue
            e = entries.get(a["token_hash"])
            if e is None:
                e = self._flag_entry(a, day)
                if e is None:
                    continue
                entries[a["token_hash"]] = e
            if a["kind"] not in e.why:
                e.why.append(a["kind"])
            e.priority = min(e.priority, _PRIORITY[a["kind"]])
            e.last_seen = max(e.last_seen, a["day"])

    def _flag_entry(self, alert: dict, day: int) -> ListEntry | None:
        card = self.centre.card_by_hash(alert["token_hash"])
        until = alert["day"] + self.config.list_ttl_days - 1
        if card is not None and card["expiry"] is not None:
            if card["expiry"] < day:
                return None
            until = min(until, card["expiry"])
        if card is None:
            return ListEntry(alert["issuer"], alert["token_hash"], None, until, [], alert["day"])
        return ListEntry(card["issuer"], alert["token_hash"], card["token"], until, [],
                         alert["day"], product=card["product"])

    def _overflow_alerts(self, day, now, listed, overflow, quotas) -> None:
        if not overflow:
            return
        with self.centre.tx() as db:
            for issuer, left in overflow.items():
                n = sum(1 for e in listed if e.issuer == issuer)
                insert_alert(db, now, day, QUOTA_OVERFLOW, f"issuer {issuer}",
                             issuer=issuer, detail={"quota": quotas[issuer], "listed": n,
                                                    "left_out": len(left)})


def _apply_quotas(entries: list[ListEntry], quotas: dict[int, int | None]):
    entries.sort(key=lambda e: (e.issuer, e.priority, -e.last_seen, e.token_hash))
    listed: list[ListEntry] = []
    overflow: dict[int, list[ListEntry]] = {}
    taken: dict[int, int] = {}
    for e in entries:
        quota = quotas.get(e.issuer)
        if quota is not None and taken.get(e.issuer, 0) >= quota:
            overflow.setdefault(e.issuer, []).append(e)
            continue
        taken[e.issuer] = taken.get(e.issuer, 0) + 1
        listed.append(e)
    return listed, overflow


def _has_run(days: list[int], run_days: int, step: int) -> bool:
    """Sorted distinct days hold run_days of them with no gap above step (a run of
    _subfloor_runs)."""
    n = 0
    prev = None
    for d in days:
        n = n + 1 if prev is not None and d - prev <= step else 1
        if n >= run_days:
            return True
        prev = d
    return False


def _by_token(rows: list[dict]) -> list[list[dict]]:
    out: list[list[dict]] = []
    for r in rows:
        if out and out[-1][0]["token_hash"] == r["token_hash"]:
            out[-1].append(r)
        else:
            out.append([r])
    return out


def _by_day(rows: list[dict]) -> list[tuple[int, list[dict]]]:
    out: list[tuple[int, list[dict]]] = []
    for r in rows:
        if out and out[-1][0] == r["day"]:
            out[-1][1].append(r)
        else:
            out.append((r["day"], [r]))
    return out


def _evidence(r: dict) -> dict:
    keys = ("terminal_id", "seq", "time", "amount", "outcome_name", "what", "offline_count",
            "offline_since_online", "token_hash")
    e = {k: r[k] for k in keys if k in r}
    e["date"] = day_text(r["day"])
    return e
