"""The terminal's command loop: host requests in, checked, applied, answered.

    term = TerminalService(board, root="/flash", port=port, platform="unix")
    term.serve_forever()      # until KeyboardInterrupt (the emulator's stop)

A state-changing request is applied only after its MAC verifies and its
counter is above the last one accepted; the counter is written to flash
before the change is applied, so a power cut cannot make a request
replayable. Every refusal is an error reply with a one-line reason.

Only the tap path stays in RAM. The sale commands have resident handlers
(terminal.sale); every other command is served by a module of ON_DEMAND,
imported when the command arrives (`handle(service, cmd, args)` -> (status,
body)) and dropped from sys.modules, to be collected, as soon as a command of
another module or a sale comes. Boot-only code (stored params, keys, counter
snapshot) goes the same way. Those modules keep no state of their own, and
use `link.body_buffer()` as their scratch buffer: the reply is written there
only after they return.
"""

import sys

from terminal import frame, protocol, store
from terminal.clock import Clock
from terminal.compat import collect, const

FIRMWARE_VERSION = "0.1.0"
KEY_FILE = "terminal.key"  # terminal id u32 LE + 32-byte key, written at provisioning
COUNTER_FILE = "auth.ctr"  # format 1's counter file: read once, then the log (terminal.authlog)
COUNTER_LOG = "auth"
FORMATTED_FILE = "formatted"  # why the flash was last formatted (the emulated board writes it)
PARAMS_FILE = "params.bin"
ISSUERS_FILE = "issuers.bin"

# Modules of terminal/ a tap never runs: the command handlers below and what
# only they import (params: the parameter table; counters: the snapshot; the
# negative list's format, update code and nl.dir code, which it imports to load
# or change the list; journal_ops: the journal's batches, reads and boot scan;
# sectors_make: making the flash sectors).
ON_DEMAND = ("admin", "listsync", "clearing", "keystore", "counters", "params", "nl_update",
             "nl_transfer", "nl_check", "nl_format", "nl_dir", "journal_ops", "sectors_make")
# Driver modules only those import (nl_dir: the LittleFS geometry), dropped with them.
ON_DEMAND_DRIVERS = ("lfsfile",)
_P_JOURNAL_NEAR_FULL_PCT = const(18)  # terminal.params.P_JOURNAL_NEAR_FULL_PCT


class LiveParams:
    """The parameters in force: `values`, the int array the tap reads (indexed by
    terminal.params' P_ constants), and their `version`. terminal.params, imported
    on demand, checks and changes them in place."""

    def __init__(self, values, version):
        self.values = values
        self.version = version


class TerminalService:
    def __init__(self, board, root, port, platform="board", card_source=None, table=None,
                 bdev=None):
        from terminal.link import HostLink

        self.board = board
        self.root = root
        self.platform = platform
        self.card_source = card_source
        self._table = table  # the counter table, if the caller allocated it first
        self._bdev = bdev  # the flash under root: negative-list lookups read it directly
        # the journal and the counter log program whole units of this many bytes
        self.flash_prog = getattr(board, "FLASH_PROG_SIZE", 1)
        self.flash_sector = getattr(board, "FLASH_BLOCK_SIZE", 4096)
        self.link = HostLink(port, board.MAX_FRAME)
        self.clock = Clock()
        self.notes = []  # boot-time problems shown in status (bounded: set once at boot)
        self.flash_note = None  # the last idle-time flash failure, shown in status
        why = store.read(root, FORMATTED_FILE)  # read here: a file open costs status 1 KB
        self.formatted = why.decode() if why else None  # why the flash was formatted
        self._loaded = None  # the ON_DEMAND module last imported, until unload()
        self.params = self._load_params()
        self.unload()  # boot-only code leaves before the parts are built (see there)
        self.terminal_id = 0
        self.auth = None
        key = store.read(root, KEY_FILE)
        if key is not None and len(key) == 36:
            self.terminal_id = key[0] | key[1] << 8 | key[2] << 16 | key[3] << 24
            self.auth = protocol.Authenticator(key[4:], self.terminal_id)
        elif key is not None:
            self.notes.append("terminal.key has %d bytes, expected 36" % len(key))
        from terminal.authlog import CounterLog

        # Appended to erased flash, not a file rewritten: a signed sale costs one
        # page program, never a LittleFS commit or erase (terminal.authlog).
        self.ctr_log = CounterLog(store.path(root, COUNTER_LOG), self.terminal_id, bdev,
                                  self.flash_prog, self.flash_sector)
        ctr = store.read(root, COUNTER_FILE)
        self.counter = max(self.ctr_log.value,
                           protocol.u64(ctr, 0) if ctr and len(ctr) == 8 else 0)
        self.handlers = {}  # resident: cmd -> handler(args), the tap's (terminal.sale)
        self.on_demand = {  # cmd -> the ON_DEMAND module that serves it
            protocol.CMD_STATUS: "admin",
            protocol.CMD_IDENT: "admin",
            protocol.CMD_PARAMS_GET: "admin",
            protocol.CMD_TIME_SET: "admin",
            protocol.CMD_PARAMS_SET: "admin",
        }
        self.issuers = None
        if self.auth is not None:
            self._build_parts(board, root)
        self.unload()

    def _load_params(self):
        from terminal.params import Params

        p = Params()
        data = store.read(self.root, PARAMS_FILE)
        if data is not None:
            err = p.from_bytes(data)
            if err:
                self.notes.append("stored params ignored: " + err)
        return LiveParams(p.values, p.version)

    def _build_parts(self, board, root):
        from terminal.decision import Engine
        from terminal.issuers import IssuerTable
        from terminal.journal import Journal
        from terminal.keys import Keys
        from terminal.negative_list import NegativeList
        from terminal.sale import Sales
        from terminal.tap import Tap

        self.issuers = IssuerTable(board.ISSUER_CAPACITY)
        data = store.read(root, ISSUERS_FILE)
        if data is not None:
            err = self.issuers.from_bytes(data)
            if err:
                self.notes.append("stored issuer overrides ignored: " + err)
        self.keystore = Keys(board.ISSUER_KEY_CAPACITY)
        self.load("keystore").load(self)
        # Dropped before the large resident objects are made, so that they fill the
        # holes it leaves: a module still in RAM here cost 13 KB more heap to boot.
        self.unload()
        self.journal = Journal(store.path(root, "journal"), board.JOURNAL_CAPACITY,
                               self.terminal_id, self.params.values[_P_JOURNAL_NEAR_FULL_PCT],
                               self._bdev, self.flash_prog, self.flash_sector)
        self.unload()  # its boot scan (journal_ops) goes before the list's tables come
        self.negative_list = NegativeList(root, board.LIST_CAPACITY, board.ISSUER_CAPACITY,
                                          key_id=self.keystore.list_key_id or None,
                                          bdev=self._bdev)
        self.load("listsync").sync_online_only(self)
        self.engine = Engine(self.params, self.issuers, self.keystore.issuer_keys,
                             board.COUNTER_CAPACITY, table=self._table)
        self.counters_note = None
        self.counters_replayed = self.load("counters").restore(self)
        self.tap = Tap(self.engine, self.keystore, self.negative_list, self.journal)
        self.sales = Sales(self, self.tap, self.card_source)
        d = self.on_demand
        d[protocol.CMD_LIST_STATUS] = "admin"
        d[protocol.CMD_LIST_BEGIN] = d[protocol.CMD_LIST_CHUNK] = "listsync"
        d[protocol.CMD_LIST_COMMIT] = "listsync"
        d[protocol.CMD_BATCH_CLOSE] = d[protocol.CMD_BATCH_READ] = "clearing"
        d[protocol.CMD_BATCH_ACK] = "clearing"
        d[protocol.CMD_KEYS_SET] = "keystore"

    def load(self, name):
        """The ON_DEMAND module terminal.<name>, imported if it is not in RAM (the
        others are dropped first)."""
        if self._loaded != name:
            if self._loaded is not None:
                self.unload()
            self._loaded = name
        return getattr(__import__("terminal." + name), name)

    def unload(self):
        """Drop every ON_DEMAND module: with no object of theirs left, the
        collection frees their code."""
        self._loaded = None
        for name in ON_DEMAND:
            self.drop(name, False)
        drivers = sys.modules.get("drivers")
        for name in ON_DEMAND_DRIVERS:
            sys.modules.pop("drivers." + name, None)
            if drivers is not None and hasattr(drivers, name):
                delattr(drivers, name)
        collect()

    def drop(self, name, collect_now=True):
        """Drop the ON_DEMAND module terminal.<name> alone (a handler whose next step
        needs the room its code takes)."""
        full = "terminal." + name
        if full in sys.modules:
            del sys.modules[full]
        pkg = sys.modules["terminal"]
        if hasattr(pkg, name):  # `import terminal.x` binds x in the package too
            delattr(pkg, name)
        if collect_now:
            collect()

    def close(self):
        """Clean shutdown: snapshot the counters (saves a replay at the next boot)."""
        if self.issuers is not None:
            self.load("counters").save(self)

    # -- loop ---------------------------------------------------------------

    def serve_forever(self):
        while True:
            self.step(50)

    def step(self, timeout_ms):
        kind, payload = self.link.poll(timeout_ms)
        if kind == frame.FRAME:
            self.handle(payload)
        elif kind == frame.NONE and self.card_source is not None:
            self.card_source.idle()  # a reader that did not answer is tried again now and then
        elif kind == frame.CORRUPT:
            self.link.reply(protocol.CMD_FRAME_ERROR, 0, protocol.ERR_CHECKSUM,
                            "frame failed its CRC32 check")
        elif not self.link.rx.pending():
            self.idle()
        self.clock.now()  # keeps the tick anchor fresh across tick wrap

    def idle(self):
        """The link is quiet: one step of flash housekeeping (erase a sector the
        counter log or the journal will need), so that a tap never erases."""
        try:  # what the work imports (sectors_make, journal_ops) goes before a tap
            if self.ctr_log.idle():
                self._loaded = self._loaded or "sectors_make"
            elif self.issuers is not None and self.journal.todo:
                self._loaded = self._loaded or "journal_ops"
                self.journal.idle()
        except OSError as e:
            self.flash_note = "idle erase failed: %r" % (e,)

    def handle(self, payload):
        if len(payload) < 3:
            self.link.reply(protocol.CMD_FRAME_ERROR, 0, protocol.ERR_MALFORMED,
                            "request shorter than its 3-byte header")
            return
        cmd = payload[0]
        req = protocol.u16(payload, 1)
        handler = self.handlers.get(cmd)
        name = None if handler is not None else self.on_demand.get(cmd)
        if handler is None and name is None:
            self.link.reply(cmd & 0x7F, req, protocol.ERR_UNKNOWN_COMMAND,
                            "unknown command 0x%02x" % cmd)
            return
        args = payload[3:]
        if protocol.is_authenticated(cmd):
            status, msg = self._authenticate(payload)
            if status:
                self.link.reply(cmd, req, status, msg)
                return
            args = payload[3 + protocol.COUNTER_LEN : len(payload) - protocol.MAC_LEN]
        try:
            if handler is not None:
                if self._loaded is not None:
                    self.unload()  # a tap runs with only the tap path in RAM
                status, body = handler(args)
            else:
                status, body = self.load(name).handle(self, cmd, args)
        except Exception as e:  # a handler bug must not stop the terminal
            status, body = protocol.ERR_INTERNAL, "%s: %s" % (type(e).__name__, e)
        self.link.reply(cmd, req, status, body)

    def _authenticate(self, payload):
        if self.auth is None:
            return protocol.ERR_STATE, "terminal has no key: provision it first"
        if len(payload) < 3 + protocol.COUNTER_LEN + protocol.MAC_LEN:
            return protocol.ERR_MALFORMED, "authenticated request too short"
        cut = len(payload) - protocol.MAC_LEN
        if not self.auth.verify(payload[:cut], payload[cut:]):
            return protocol.ERR_BAD_MAC, "MAC does not verify under this terminal's key"
        counter = protocol.u64(payload, 3)
        if counter >= protocol.COUNTER_END:
            return protocol.ERR_INVALID, "counter %d is at the end of its range: %s" % (
                counter, protocol.REKEY_HINT)
        if counter <= self.counter:
            return protocol.ERR_REPLAY, "counter %d not above last accepted %d" % (
                counter, self.counter)
        try:
            self.ctr_log.store(counter)
        except OSError as e:
            return protocol.ERR_INTERNAL, "counter not stored (%r): request not applied" % (e,)
        self.counter = counter
        return protocol.OK, None
