"""Status and settings over the host link: commands a tap never runs.

    STATUS                 -> KEY=VALUE lines: identity, heap, flash, clock, then
                              keys, list, journal, sales and counters
    PARAMS_GET             -> KEY=VALUE lines: version, every parameter, issuer overrides
    LIST_STATUS            -> the negative list's lines of STATUS
    IDENT                  -> terminal id u32, provisioned u8, max frame u16, counter u64
    TIME_SET   (signed)    Unix seconds u64 -> the time set, ISO 8601
    PARAMS_SET (signed)    UTF-8 "name=value ..." (global) or "issuer.ID.name=value ..."
                           (one issuer's overrides; value -1 = inherit again) -> summary

The terminal imports this module on demand (terminal.service) and drops it
once another module's command or a sale comes, so it keeps no state: all of
it is the service's.
"""

import gc
import struct

from terminal import protocol, store
from terminal.clock import EPOCH_OFFSET, iso
from terminal.compat import mem_alloc, mem_free
from terminal.service import FIRMWARE_VERSION, ISSUERS_FILE, PARAMS_FILE


def handle(svc, cmd, args):
    if cmd == protocol.CMD_STATUS:
        return protocol.OK, _fit(svc, _lines(status_fields(svc)))
    if cmd == protocol.CMD_LIST_STATUS:
        return protocol.OK, _lines(list_fields(svc))
    if cmd == protocol.CMD_IDENT:
        return protocol.OK, struct.pack("<IBHQ", svc.terminal_id, 1 if svc.auth else 0,
                                        svc.board.MAX_FRAME, svc.counter)
    if cmd == protocol.CMD_PARAMS_GET:
        return _params_get(svc)
    if cmd == protocol.CMD_TIME_SET:
        return _time_set(svc, args)
    return _params_set(svc, args)


def _lines(fields):
    return "\n".join("%s=%s" % kv for kv in fields)


def _fit(svc, text):
    # A status longer than a frame would stop the terminal (the link refuses to
    # send it): the lines that fit, and a last one that says so.
    room = svc.link.max_body
    if len(text) <= room:
        return text
    cut = text.rfind("\n", 0, room - 20)
    return text[:cut] + "\nstatus_truncated=1"


# -- status -------------------------------------------------------------------


def status_fields(svc):
    flash = flash_fields(svc)  # first: what status itself reads comes after the snapshot
    gc.collect()
    free, total = store.free_bytes(svc.root)
    now = svc.clock.now()
    fields = [
        ("proto", protocol.VERSION),
        ("firmware", FIRMWARE_VERSION),
        ("board", svc.board.NAME),
        ("platform", svc.platform),
        ("terminal_id", "%08x" % svc.terminal_id),
        ("provisioned", 1 if svc.auth else 0),
        ("max_frame", svc.board.MAX_FRAME),
        ("heap_used", mem_alloc()),
        ("heap_free", mem_free()),
        ("flash_free", free),
        ("flash_total", total),
        ("clock", iso(now)),
        ("uptime_s", svc.clock.uptime()),
        ("params_version", svc.params.version),
        ("auth_counter", svc.counter),
        ("link_dropped_bytes", svc.link.rx.dropped),
        ("link_corrupt_frames", svc.link.rx.corrupt),
    ]
    fields.extend(flash)
    if svc.formatted:
        fields.append(("flash_formatted", svc.formatted))
    if svc.ctr_log.tap_erases:
        fields.append(("auth_log_tap_erases", svc.ctr_log.tap_erases))
    if svc.flash_note:
        fields.append(("note", svc.flash_note))
    if svc.issuers is not None:  # provisioned: the parts are there
        ks = svc.keystore
        fields.append(("keys", "list key %d, %d issuer keys" % (ks.list_key_id, ks.count)
                       if ks.hasher else "none: push them with `termctl keys push`"))
        fields.extend(list_fields(svc))
        fields.extend(_journal_fields(svc))
        fields.extend(svc.sales.status_fields())
        fields.extend(_counter_fields(svc))
    if svc.card_source is not None:
        fields.extend(svc.card_source.status_fields())
    for note in svc.notes:
        fields.append(("note", note))
    return fields


def list_fields(svc):
    st = svc.negative_list.status()
    out = [("list_version", st["version"]), ("list_kind", st["kind"]),
           ("list_entries", st["entries"]), ("list_capacity", st["capacity"]),
           ("list_key_id", st["key_id"])]
    for issuer, count, overflow, withheld in st["issuers"]:
        out.append(("list_issuer_%d" % issuer, "%d overflow=%d withheld=%d" % (
            count, overflow, withheld)))
    if st["overflowing"]:
        out.append(("list_online_only_issuers",
                    ",".join("%d" % i for i in st["overflowing"])))
    staged = st["staged"]
    if staged:
        out.append(("list_staged", "%s v%d on v%d: %d/%d bytes" % (
            staged["kind"], staged["version"], staged["base_version"], staged["received"],
            staged["total"])))
    if st["error"]:
        out.append(("list_error", st["error"]))
    if st["entries"]:  # lookups read flash blocks directly, or through the file (why)
        out.append(("list_direct_reads", "yes" if st["direct_reads"] else
                    "no (%s)" % (st["direct_error"] or "no block device")))
    return out


def flash_fields(svc):
    """The emulated flash's counters since boot (drivers.filebdev): operations,
    bytes, modelled time from the board's datasheet figures, violations. A board's
    own flash counts nothing: no fields."""
    bd = svc._bdev
    if bd is None or not hasattr(bd, "typ_us"):
        return []
    out = [("flash_ops", "reads %d/%d B, programs %d/%d B, erases %d, violations %d" % (
                bd.reads, bd.read_bytes, bd.programs, bd.program_bytes, bd.erases,
                bd.violations)),
           ("flash_us", "%d typ, %d max" % (bd.typ_us, bd.max_us))]
    if bd.violations:
        out.append(("alert", "flash: %d programs over unerased bits or misaligned: a board "
                    "would store garbage there (see the emulator's log)" % bd.violations))
    return out


def _journal_fields(svc):
    st = svc.journal.status()
    out = [("journal_pending", st["pending"]), ("journal_capacity", st["capacity"]),
           ("journal_seq", st["seq_high_water"]), ("journal_open_batch", st["open_batch"]),
           ("journal_acked_batch", st["acked_batch"]), ("journal_epoch", "%08x" % st["epoch"]),
           ("journal_ring", "%d sectors, %d erased, %d erased by a tap" % (
               st["sectors"], st["sectors_erased"], st["tap_erases"]))]
    if st["full"]:
        out.append(("alert", "journal full: sales declined until a batch is acknowledged"))
    elif st["near_full"]:
        out.append(("alert", "journal near full: new sales go online-only"))
    if st["fault"]:
        out.append(("journal_fault", st["fault"]))
    return out


def _counter_fields(svc):
    t = svc.engine.table
    out = [("counters", "%d/%d cards" % (t.count, t.capacity)),
           ("counter_evictions", t.evictions),
           ("counters_replayed_at_boot", svc.counters_replayed)]
    if svc.counters_note:
        out.append(("note", svc.counters_note))
    return out


# -- settings -----------------------------------------------------------------


def _params(svc):
    """terminal.params' view of the values in force: changes reach the tap at once."""
    from terminal.params import Params

    return Params(svc.params.values, svc.params.version)


def _params_get(svc):
    p = _params(svc)
    lines = ["version=%d" % p.version]
    for name, value in p.items():
        lines.append("%s=%d" % (name, value))
    issuers = svc.issuers
    if issuers is not None:
        for i in range(issuers.capacity):
            for name, value in issuers.items(i):
                lines.append("issuer.%d.%s=%d" % (issuers.ids[i], name, value))
    return protocol.OK, "\n".join(lines)


def _time_set(svc, args):
    if len(args) != 8:
        return protocol.ERR_MALFORMED, "time set takes 8 bytes of Unix seconds"
    unix = protocol.u64(args, 0)
    seconds = unix - EPOCH_OFFSET
    if seconds < 0 or seconds >= (1 << 30):
        return protocol.ERR_INVALID, "time %d outside 2020..2054" % unix
    svc.clock.set(seconds)
    return protocol.OK, iso(seconds)


def _params_set(svc, args):
    from terminal.params import parse_assignments

    try:
        text = bytes(args).decode()
    except UnicodeError:
        return protocol.ERR_MALFORMED, "params set takes UTF-8 KEY=VALUE text"
    changes, err = parse_assignments(text)
    if err:
        return protocol.ERR_INVALID, err
    per_issuer = {}
    for name in list(changes):
        if name.startswith("issuer."):
            parts = name.split(".")
            if len(parts) != 3 or not parts[1].isdigit():
                return protocol.ERR_INVALID, "expected issuer.ID.NAME, got %r" % name
            per_issuer.setdefault(int(parts[1]), {})[parts[2]] = changes.pop(name)
    if per_issuer:
        return _set_issuer_params(svc, per_issuer, changes)
    p = _params(svc)
    saved = p.to_bytes()
    err = p.update(changes)
    if err:
        return protocol.ERR_INVALID, err
    try:
        store.write_atomic(svc.root, PARAMS_FILE, p.to_bytes())
    except OSError as e:
        p.from_bytes(saved)
        return protocol.ERR_INTERNAL, "params not saved to flash: %s" % e
    svc.params.version = p.version
    if svc.issuers is not None:
        svc.journal.set_near_full_pct(p.get("journal_near_full_pct"))
    return protocol.OK, "version=%d" % p.version


def _set_issuer_params(svc, per_issuer, changes):
    if changes:
        return protocol.ERR_INVALID, "set issuer overrides and global params separately"
    issuers = svc.issuers
    if issuers is None:
        return protocol.ERR_STATE, "terminal has no key: provision it first"
    saved = issuers.to_bytes()
    for issuer, fields in per_issuer.items():
        err = issuers.update(issuer, fields)
        if err:
            issuers.from_bytes(saved)
            return protocol.ERR_INVALID, "issuer %d: %s" % (issuer, err)
    store.write_atomic(svc.root, ISSUERS_FILE, issuers.to_bytes())
    return protocol.OK, "issuers updated: %s" % ",".join("%d" % i for i in per_issuer)
