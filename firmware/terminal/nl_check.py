"""What a list update must pass to be staged and to be installed, and dropping a
staged transfer: the part of terminal.nl_transfer that a commit needs too, so
the commit (terminal.nl_update) runs with the transfer code out of RAM
(terminal.listsync drops it once the whole-list MAC has verified).

    err = check_versions(nl, KIND_FULL, 8, 0)    # None, or why not after the installed
    err = check_header(nl, parse_header(head))   # None, or why the header does not fit
    abort(nl)                                    # the staged transfer goes
"""

from terminal.nl_format import (
    G_BASE,
    G_KIND,
    G_LEN,
    G_VER,
    KIND_DELTA,
    KIND_FULL,
    META,
    STAGE,
    remove_file,
)


def check_versions(nl, kind, version, base_version):
    """None, or why this update may not follow the installed list."""
    cur = nl.version
    if kind == KIND_FULL:
        if version < 1:
            return "list version must be 1 or more"
        if version == cur:
            return "replay refused: list version %d is already installed" % version
        if version < cur:
            return "downgrade refused: version %d is older than the installed %d" % (
                version, cur)
        return None
    if kind == KIND_DELTA:
        if cur == 0:
            return "no list installed: a delta needs a full list first"
        if base_version > cur:
            return "gap refused: delta applies to version %d, installed is %d" % (
                base_version, cur)
        if base_version < cur:
            return "replay refused: delta applies to version %d, installed is %d" % (
                base_version, cur)
        if version != base_version + 1:
            return "delta must go from version %d to %d, not to %d" % (
                base_version, base_version + 1, version)
        return None
    return "unknown list kind %d" % kind


def check_header(nl, h):
    """None, or why the list header h (parse_header) does not fit this transfer."""
    if h is None:
        return "not a negative list (bad header)"
    g = nl.stage
    kind, version, base_version, base_day, key_id = h
    if kind != g[G_KIND] or version != g[G_VER] or (
            kind == KIND_DELTA and base_version != g[G_BASE]):
        return "list header (kind %d, version %d) does not match the transfer" % (
            kind, version)
    if nl.key_id_wanted is not None and key_id != nl.key_id_wanted:
        return "list is keyed with key id %d, the terminal uses %d" % (key_id, nl.key_id_wanted)
    if kind == KIND_DELTA and key_id != nl.key_id:
        return "delta keyed with key id %d, the installed list with %d" % (
            key_id, nl.key_id)
    if kind == KIND_DELTA and base_day < nl.base_day:
        return "delta day %d is before the installed list's day %d" % (
            base_day, nl.base_day)
    return None


def abort(nl):
    """Drop the staged transfer; the installed list stays as it is."""
    nl.close_stage()
    for i in range(G_LEN):
        nl.stage[i] = 0
    remove_file(nl.path(STAGE))
    remove_file(nl.path(META))
