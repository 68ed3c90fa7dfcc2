"""Build negative lists for the terminal from CSV: full lists and daily deltas.

    issuers = {0x0101: 50_000, 0x0102: None}          # issuer id -> quota (None: no quota)
    built = build_full(csv_text, version=7, issuers=issuers, list_key=key16, key_id=1,
                       capacity=board.LIST_CAPACITY, today=day_number(date.today()))
    built.data                                         # bytes to push (shared list format)
    delta = build_delta(day_csv, base=built.data, issuers=issuers, list_key=key16,
                        capacity=board.LIST_CAPACITY, today=...)

CSV, one action per line (a header line, blank lines and `#` comments are skipped;
UTF-8, a spreadsheet's byte-order mark and quoted fields are fine; a bad line is
one ToolError saying how many are bad and what is wrong with the first):

    issuer,token,action[,expiry]
    257,4980123412341234,add,2026-12-31
    257,4980123499990000,remove

issuer is a decimal or 0x.. id that must be in `issuers`; token is the token
number as the card carries it (1-16 letters or digits; its ASCII bytes are
hashed with the list key); action is add or remove; expiry (YYYY-MM-DD) is the
last day the entry stays listed. Later lines win over earlier ones for the same
token, and "newest" means latest in the file. The format itself lives in
firmware/terminal/nl_format.py, shared with the terminal.
"""

from __future__ import annotations

import csv
import datetime
import io
import struct
from binascii import crc32
from dataclasses import dataclass, field
from pathlib import Path

from host_tools.errors import ToolError
from terminal import nl_format as nl
from terminal.tokenhash import TokenHasher

_EPOCH = datetime.date(1970, 1, 1)
RESOLUTIONS = ("keep-newest",)


def day_number(d: datetime.date) -> int:
    """Days since 1970-01-01, the terminal's day number."""
    return (d - _EPOCH).days


def day_date(n: int) -> datetime.date:
    return _EPOCH + datetime.timedelta(days=n)


@dataclass
class Action:
    line: int
    issuer: int
    token: str
    add: bool
    expiry: int  # day number, 0 = no expiry


@dataclass
class Built:
    """A built list and what went into it (for the CLI's summary)."""

    data: bytes
    kind: int
    version: int
    base_version: int
    entries: int  # entries the terminal holds once this list is installed
    per_issuer: dict[int, int]
    adds: int = 0
    removes: int = 0
    duplicates: int = 0  # lines merged into a later line for the same token
    dropped_quota: dict[int, int] = field(default_factory=dict)  # by this build
    withheld: dict[int, int] = field(default_factory=dict)  # in the list: online-only issuers
    expired: int = 0  # lines whose expiry had already passed
    warnings: list[str] = field(default_factory=list)


# -- CSV ----------------------------------------------------------------------------


def _int(text: str) -> int:
    return int(text, 16) if text.lower().startswith("0x") else int(text, 10)


def read_csv(path: str | Path) -> str:
    """The text of a list CSV file: UTF-8, with or without the byte-order mark a
    spreadsheet writes; ToolError naming the file otherwise."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise ToolError(f"cannot read {path}: {e.strerror}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise ToolError(f"{path}: line {line} is not UTF-8 text (byte 0x{data[e.start]:02x}); "
                        "save the CSV as UTF-8") from None


def parse_csv(text: str, issuers: dict, name: str = "list CSV") -> list[Action]:
    """Every action of the CSV (read with the csv module: quoted fields work, and a
    leading byte-order mark is dropped). If any line is malformed: one ToolError
    line with how many are bad and what is wrong with the first."""
    actions = []
    errors = []
    seen_data = False
    reader = csv.reader(io.StringIO(text.lstrip("\ufeff"), newline=""), skipinitialspace=True)
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            errors.append("line %d: %s" % (reader.line_num, e))
            break
        no = reader.line_num
        cells = [c.strip() for c in row]
        while cells and not cells[-1]:
            cells.pop()
        if not cells or cells[0].startswith("#"):
            continue
        if not seen_data and cells[0].lower() == "issuer":
            seen_data = True
            continue
        seen_data = True
        if len(cells) not in (3, 4):
            errors.append("line %d: expected issuer,token,action[,expiry], got %d fields"
                          % (no, len(cells)))
            continue
        try:
            issuer = _int(cells[0])
        except ValueError:
            errors.append("line %d: issuer %r is not a number" % (no, cells[0]))
            continue
        if issuer not in issuers:
            errors.append("line %d: unknown issuer %d (0x%04x)" % (no, issuer, issuer))
            continue
        token = cells[1]
        if not (1 <= len(token) <= 16 and token.isascii() and token.isalnum()):
            errors.append("line %d: token %r must be 1-16 letters or digits" % (no, token))
            continue
        action = cells[2].lower()
        if action not in ("add", "remove"):
            errors.append("line %d: action %r must be add or remove" % (no, cells[2]))
            continue
        expiry = 0
        if len(cells) == 4 and cells[3]:
            try:
                expiry = day_number(datetime.date.fromisoformat(cells[3]))
            except ValueError:
                errors.append("line %d: expiry %r is not a YYYY-MM-DD date" % (no, cells[3]))
                continue
        actions.append(Action(no, issuer, token, action == "add", expiry))
    if errors:
        more = "%d bad lines; the first, " % len(errors) if len(errors) > 1 else ""
        raise ToolError("%s: %s%s" % (name, more, errors[0]))
    return actions


def _latest(actions: list[Action]) -> tuple[dict[str, Action], int]:
    """Last action per token (CSV order), and how many earlier lines it replaced."""
    latest: dict[str, Action] = {}
    dups = 0
    for act in actions:
        prev = latest.get(act.token)
        if prev is not None:
            if prev.issuer != act.issuer:
                raise ToolError("token %s is under issuer %d on line %d and issuer %d on line %d"
                                % (act.token, prev.issuer, prev.line, act.issuer, act.line))
            dups += 1
        latest[act.token] = act
    return latest, dups


# -- binary format (layout: terminal.nl_format) -------------------------------------


def _fast_split(key: bytes, q: int) -> tuple[int, int]:
    # (bucket, 36 remainder bits) with host ints; pinned to nl.split_key by the tests
    top = int.from_bytes(key, "big") >> (28 - q)
    return top >> nl.KEY_BITS, top & ((1 << nl.KEY_BITS) - 1)


def _code(expiry: int, base_day: int) -> int:
    e = nl.expiry_code(expiry, base_day)
    if e == -2:
        raise ToolError("expiry %s is more than %d days after the list day %s"
                        % (day_date(expiry), nl.EXPIRY_MAX - 1, day_date(base_day)))
    return max(e, 0)


def within_quota(sections: dict, quotas: dict) -> tuple[dict, dict[int, int]]:
    """Each issuer's entries cut to its quota, keeping the last ones (the newest, in
    list order), and how many each issuer had withheld: encode_full's `sections`
    and `withheld`. An issuer without a quota (missing or None) keeps them all.

        kept, withheld = within_quota({1: entries}, {1: 20})
        data = encode_full(kept, version=v, base_day=d, key_id=k, quotas={1: 20},
                           withheld=withheld)   # the terminal sends issuer 1 online
    """
    kept, withheld = {}, {}
    for issuer, rows in sections.items():
        quota = quotas.get(issuer)
        if quota is not None and len(rows) > quota:
            withheld[issuer] = len(rows) - quota
            rows = rows[len(rows) - quota:]
        kept[issuer] = list(rows)
    return kept, withheld


VERSION_MAX = 0xFFFFFFFF  # a list version is a u32


def _check_version(version: int, what: str = "list version") -> None:
    if not isinstance(version, int) or not 1 <= version <= VERSION_MAX:
        raise ToolError(f"{what} {version} out of range: give 1..{VERSION_MAX}")


def _withheld(withheld: dict | None) -> dict[int, int]:
    out = {}
    for issuer, n in (withheld or {}).items():
        if not 0 <= n <= nl.MAX_COUNT:
            raise ToolError("issuer %d: withheld count %d out of range" % (issuer, n))
        if n:
            out[issuer] = n
    return out


def encode_full(sections: dict, *, version: int, base_day: int, key_id: int,
                quotas: dict | None = None, capacity: int | None = None,
                withheld: dict | None = None) -> bytes:
    """Full list bytes from {issuer: [(key8, expiry day or 0), ...]}.

    Each section gets q = bucket_bits(max(entries, quota)) (quota capped at the
    board's capacity) so it stays at <= 32 entries per bucket up to its quota.
    Two keys equal in their stored bits merge (the later expiry wins).
    withheld: {issuer: entries left out to keep within its quota}; the terminal
    makes such an issuer online-only (a section is written for it even if it
    has no entries).
    """
    _check_version(version)
    quotas = quotas or {}
    held = _withheld(withheld)
    sections = {**{i: [] for i in held}, **sections}
    header = nl.pack_header(nl.KIND_FULL, version, 0, base_day, key_id)
    recs = bytearray()
    dirs = bytearray()
    table = bytearray()
    total = 0
    for issuer in sorted(sections):
        if not 0 <= issuer <= 0xFFFF:
            raise ToolError("issuer id %d out of range 0..65535" % issuer)
        quota = quotas.get(issuer) or 0
        room = quota if capacity is None else min(quota, capacity)
        q = nl.bucket_bits(max(len(sections[issuer]), room))
        best: dict[int, int] = {}
        for key, expiry in sections[issuer]:
            top = int.from_bytes(key, "big") >> (28 - q)
            e = _code(expiry, base_day)
            old = best.get(top)
            if old is None or (old != 0 and (e == 0 or e > old)):
                best[top] = e
        counts = [0] * ((1 << q) + 1)
        mask = (1 << nl.KEY_BITS) - 1
        for top in sorted(best):
            recs += (((top & mask) << 12) | best[top]).to_bytes(nl.REC_LEN, "big")
            counts[(top >> nl.KEY_BITS) + 1] += 1
        run = 0
        for b in range(len(counts)):
            run += counts[b]
            dirs += struct.pack("<I", run)
        table += nl.pack_section(issuer, q, len(best), quota, held.get(issuer, 0))
        total += len(best)
    body = header + bytes(recs) + bytes(dirs)
    return body + bytes(table) + nl.pack_footer(len(sections), total, crc32(body), table)


def encode_delta(sections: dict, *, version: int, base_version: int, base_day: int,
                 key_id: int, quotas: dict | None = None,
                 withheld: dict | None = None) -> bytes:
    """Delta bytes from {issuer: [(key8, expiry day or 0, remove), ...]}; quotas (the
    centre's, per issuer) travel in the section table like in a full list, and so
    do withheld counts: a delta's section sets its issuer's count (0 clears it),
    an issuer the delta leaves out keeps the installed one."""
    _check_version(version)
    _check_version(base_version, "base version")
    quotas = quotas or {}
    held = _withheld(withheld)
    sections = {**{i: [] for i in (withheld or {})}, **sections}
    header = nl.pack_header(nl.KIND_DELTA, version, base_version, base_day, key_id)
    recs = bytearray()
    table = bytearray()
    total = 0
    for issuer in sorted(sections):
        rows: dict[int, int] = {}
        for key, expiry, remove in sections[issuer]:
            rows[int.from_bytes(key, "big") >> 12] = nl.REMOVE if remove else _code(expiry,
                                                                                 base_day)
        for k52 in sorted(rows):
            recs += ((k52 << 12) | rows[k52]).to_bytes(nl.DREC_LEN, "big")
        table += nl.pack_section(issuer, 0, len(rows), quotas.get(issuer) or 0,
                                 held.get(issuer, 0))
        total += len(rows)
    body = header + bytes(recs)
    return body + bytes(table) + nl.pack_footer(len(sections), total, crc32(body), table)


@dataclass
class ListFile:
    """A decoded list: full sections map (bucket, a, b, c) -> expiry day (0 = none);
    delta sections map the 52-bit key -> expiry day, or None for a remove."""

    kind: int
    version: int
    base_version: int
    base_day: int
    key_id: int
    sections: dict[int, dict]
    q: dict[int, int]
    quota: dict[int, int]
    withheld: dict[int, int]  # entries the centre left out over quota (0: none)

    def entries(self) -> int:
        return sum(len(s) for s in self.sections.values())


def decode(data: bytes) -> ListFile:
    """Parse list bytes (the body, or a terminal's file with its extras)."""
    import io

    f = io.BytesIO(data)
    body = nl.Body()
    body_len = len(data)
    if data[-nl.TRAILER_LEN:-nl.TRAILER_LEN + 4] == nl.TRL_MAGIC:
        body_len = struct.unpack_from("<I", data, len(data) - nl.TRAILER_LEN + 4)[0]
    err = body.read(f, body_len, 0xFFFF)
    if err:
        raise ToolError("not a usable negative list: %s" % err)
    if crc32(data[:body.table_off]) != body.body_crc:
        raise ToolError("not a usable negative list: body CRC does not match")
    sections: dict[int, dict] = {}
    for s in range(body.n):
        rows: dict = {}
        off = body.rec_off[s]
        if body.kind == nl.KIND_FULL:
            q = body.q[s]
            dirs = struct.unpack_from("<%dI" % ((1 << q) + 1), data, body.dir_off[s])
            for bk in range(1 << q):
                for i in range(dirs[bk], dirs[bk + 1]):
                    a, b, c, e = nl.unpack_record(data, off + nl.REC_LEN * i)
                    rows[(bk, a, b, c)] = body.base_day + e - 1 if e else 0
        else:
            for i in range(body.count[s]):
                v = int.from_bytes(data[off + 8 * i:off + 8 * i + 8], "big")
                e = v & 0xFFF
                rows[v >> 12] = None if e == nl.REMOVE else (body.base_day + e - 1 if e else 0)
        sections[body.issuer[s]] = rows
    return ListFile(body.kind, body.version, body.base_version, body.base_day, body.key_id,
                    sections, dict(zip(body.issuer, body.q)), dict(zip(body.issuer, body.aux)),
                    dict(zip(body.issuer, body.withheld)))


# -- building from CSV ----------------------------------------------------------------


def _check_common(issuers: dict, list_key: bytes, resolve: str | None):
    if len(list_key) != 16:
        raise ToolError("the list key must be 16 bytes")
    if resolve is not None and resolve not in RESOLUTIONS:
        raise ToolError("unknown quota resolution %r (have: %s)" % (resolve,
                                                                     ", ".join(RESOLUTIONS)))
    for issuer, quota in issuers.items():
        if not 0 <= issuer <= 0xFFFF:
            raise ToolError("issuer id %d out of range 0..65535" % issuer)
        if quota is not None and quota < 0:
            raise ToolError("issuer %d: quota %d is negative" % (issuer, quota))


def _over_quota(issuer: int, n: int, quota: int) -> ToolError:
    return ToolError("issuer %d would list %d entries, %d over its quota of %d; refused "
                     "(choose a resolution, e.g. keep-newest, or raise the quota)"
                     % (issuer, n, n - quota, quota))


def build_full(text: str, *, version: int, issuers: dict, list_key: bytes, key_id: int,
               capacity: int, today: int, resolve: str | None = None,
               name: str = "list CSV") -> Built:
    """A full list of every token whose last action is add."""
    _check_common(issuers, list_key, resolve)
    _check_version(version)
    latest, dups = _latest(parse_csv(text, issuers, name))
    hasher = TokenHasher(list_key)
    per: dict[int, list[Action]] = {}
    built = Built(b"", nl.KIND_FULL, version, 0, 0, {}, duplicates=dups)
    for act in latest.values():
        if not act.add:
            continue
        if act.expiry and act.expiry < today:
            built.expired += 1
            continue
        per.setdefault(act.issuer, []).append(act)
    if built.expired:
        built.warnings.append("%d entries already expired, left out" % built.expired)
    for issuer, acts in per.items():
        quota = issuers[issuer]
        if quota is not None and len(acts) > quota:
            if resolve != "keep-newest":
                raise _over_quota(issuer, len(acts), quota)
            acts.sort(key=lambda a: a.line)
            built.dropped_quota[issuer] = len(acts) - quota
            built.warnings.append("issuer %d: kept the newest %d of %d entries (quota)"
                                  % (issuer, quota, len(acts)))
            per[issuer] = acts[len(acts) - quota:]
    total = sum(len(a) for a in per.values())
    if total > capacity:
        raise ToolError("list has %d entries, the board holds %d; refused before any transfer"
                        % (total, capacity))
    sections = {i: [(hasher.hash(a.token.encode()), a.expiry) for a in acts]
                for i, acts in per.items()}
    built.withheld = dict(built.dropped_quota)
    built.data = encode_full(sections, version=version, base_day=today, key_id=key_id,
                             quotas={i: q for i, q in issuers.items() if q}, capacity=capacity,
                             withheld=built.withheld)
    built.adds = total
    built.per_issuer = {i: len(a) for i, a in sorted(per.items())}
    built.entries = struct.unpack_from(nl.FTR, built.data, len(built.data) - nl.FOOTER_LEN)[2]
    return built


def build_delta(text: str, *, base: bytes, issuers: dict, list_key: bytes, capacity: int,
                today: int, version: int | None = None, resolve: str | None = None,
                name: str = "list CSV") -> Built:
    """The delta from the full list `base` (version V, as built or as last pushed)
    to V+1: the CSV's adds and removes. Removes of unlisted tokens are left out."""
    _check_common(issuers, list_key, resolve)
    old = decode(base)
    if old.kind != nl.KIND_FULL:
        raise ToolError("the base of a delta must be a full list")
    if version is None:
        version = old.version + 1
    _check_version(version)
    if version != old.version + 1:
        raise ToolError("a delta goes from version %d to %d, not %d"
                        % (old.version, old.version + 1, version))
    if today < old.base_day:
        raise ToolError("delta day %s is before the base list's day %s"
                        % (day_date(today), day_date(old.base_day)))
    latest, dups = _latest(parse_csv(text, issuers, name))
    hasher = TokenHasher(list_key)
    built = Built(b"", nl.KIND_DELTA, version, old.version, 0, {}, duplicates=dups)
    changes: dict[int, dict] = {}  # issuer -> {stored key: (key8, expiry, remove, line)}
    ignored = 0
    for act in sorted(latest.values(), key=lambda a: a.line):
        q = old.q.get(act.issuer)
        key = hasher.hash(act.token.encode())
        if q is None:
            q = nl.bucket_bits(max(issuers[act.issuer] or 0, 1))
        sk = nl.split_key(key, q)
        listed = sk in old.sections.get(act.issuer, {})
        if act.add and act.expiry and act.expiry < today:
            built.expired += 1
            if not listed:
                continue
            act = Action(act.line, act.issuer, act.token, False, 0)  # expired: take it off
        if not act.add and not listed:
            ignored += 1
            continue
        if act.add and listed and old.sections[act.issuer][sk] == act.expiry:
            continue  # already listed as it is
        changes.setdefault(act.issuer, {})[sk] = (key, act.expiry, not act.add, act.line)
    if ignored:
        built.warnings.append("%d removes of tokens not on the list, left out" % ignored)
    if built.expired:
        built.warnings.append("%d entries already expired, left out" % built.expired)
    # resulting counts, quotas, capacity
    per: dict[int, int] = {}
    for issuer in set(old.sections) | set(changes):
        rows = old.sections.get(issuer, {})
        ch = changes.get(issuer, {})
        n = len(rows) + sum(1 for sk, c in ch.items() if not c[2] and sk not in rows) - sum(
            1 for c in ch.values() if c[2])
        quota = issuers.get(issuer)
        if quota is not None and n > quota:
            if resolve != "keep-newest":
                raise _over_quota(issuer, n, quota)
            n = _keep_newest_delta(issuer, rows, ch, n - quota, old.q.get(issuer), built)
            changes[issuer] = ch  # its drops travel even if the CSV had nothing for it
        per[issuer] = n
    total = sum(per.values())
    if total > capacity:
        raise ToolError("list would have %d entries, the board holds %d; refused before any "
                        "transfer" % (total, capacity))
    sections = {i: [(k, e, r) for k, e, r, _ in ch.values()] for i, ch in changes.items()}
    # What stays withheld: the base's, and what this delta drops. A delta's section
    # sets its issuer's count, so every issuer it touches carries the base's on.
    held = {i: old.withheld.get(i, 0) + built.dropped_quota.get(i, 0) for i in changes}
    built.withheld = {i: n for i, n in old.withheld.items() if n}
    built.withheld.update({i: n for i, n in held.items() if n})
    built.data = encode_delta(sections, version=version, base_version=old.version,
                              base_day=today, key_id=old.key_id,
                              quotas={i: q for i, q in issuers.items() if q}, withheld=held)
    built.adds = sum(1 for ch in changes.values() for c in ch.values() if not c[2])
    built.removes = sum(1 for ch in changes.values() for c in ch.values() if c[2])
    built.per_issuer = {i: n for i, n in sorted(per.items()) if n}
    built.entries = total
    return built


def _keep_newest_delta(issuer, rows, ch, excess, q, built) -> int:
    """Drop `excess` of the issuer's oldest entries: installed ones first (earliest
    expiry first, no expiry last, like the terminal), then the delta's earliest adds."""
    kept_old = [sk for sk in rows if sk not in ch]
    kept_old.sort(key=lambda sk: (rows[sk] or 1 << 30, sk))
    adds = sorted((sk for sk, c in ch.items() if not c[2] and sk not in rows),
                  key=lambda sk: ch[sk][3])
    dropped = 0
    for sk in kept_old:
        if dropped == excess:
            break
        ch[sk] = (nl.join_key(*sk, q), 0, True, 0)
        dropped += 1
    for sk in adds:
        if dropped == excess:
            break
        del ch[sk]
        dropped += 1
    built.dropped_quota[issuer] = dropped
    built.warnings.append("issuer %d: dropped its %d oldest entries (quota)" % (issuer, dropped))
    n = len(rows) + sum(1 for sk, c in ch.items() if not c[2] and sk not in rows) - sum(
        1 for c in ch.values() if c[2])
    return n
