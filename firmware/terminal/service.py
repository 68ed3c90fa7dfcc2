"""The terminal's command loop: host requests in, checked, applied, answered.

    term = TerminalService(board, root="/flash", port=port, platform="unix")
    term.serve_forever()      # until KeyboardInterrupt (the emulator's stop)

A state-changing request is applied only after its MAC verifies and its
counter is above the last one accepted; the counter is written to flash
before the change is applied, so a power cut cannot make a request
replayable. Every refusal is an error reply with a one-line reason.
"""

import gc

from terminal import frame, protocol, store
from terminal.clock import EPOCH_OFFSET, Clock, iso
from terminal.compat import mem_alloc, mem_free, mem_peak
from terminal.params import Params, parse_assignments

FIRMWARE_VERSION = "0.1.0"
KEY_FILE = "terminal.key"  # terminal id u32 LE + 32-byte key, written at provisioning
COUNTER_FILE = "auth.ctr"
PARAMS_FILE = "params.bin"
ISSUERS_FILE = "issuers.bin"


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
        self.link = HostLink(port, board.MAX_FRAME)
        self.clock = Clock()
        self.params = Params()
        self.notes = []  # boot-time problems shown in status (bounded: set once at boot)
        data = store.read(root, PARAMS_FILE)
        if data is not None:
            err = self.params.from_bytes(data)
            if err:
                self.notes.append("stored params ignored: " + err)
        self.terminal_id = 0
        self.auth = None
        key = store.read(root, KEY_FILE)
        if key is not None and len(key) == 36:
            self.terminal_id = key[0] | key[1] << 8 | key[2] << 16 | key[3] << 24
            self.auth = protocol.Authenticator(key[4:], self.terminal_id)
        elif key is not None:
            self.notes.append("terminal.key has %d bytes, expected 36" % len(key))
        ctr = store.read(root, COUNTER_FILE)
        self.counter = protocol.u64(ctr, 0) if ctr and len(ctr) == 8 else 0
        self._ctr_buf = bytearray(8)
        self.handlers = {
            protocol.CMD_STATUS: self.do_status,
            protocol.CMD_PARAMS_GET: self.do_params_get,
            protocol.CMD_TIME_SET: self.do_time_set,
            protocol.CMD_PARAMS_SET: self.do_params_set,
        }
        # Parts that add commands and status fields: each registers its handlers.
        self.parts = []
        self.issuers = None
        if self.auth is not None:
            self._build_parts(board, root)

    def _build_parts(self, board, root):
        from terminal.clearing import Clearing
        from terminal.counters import CounterStore
        from terminal.decision import Engine
        from terminal.issuers import IssuerTable
        from terminal.journal import Journal
        from terminal.keystore import KeyStore
        from terminal.listsync import ListSync
        from terminal.negative_list import NegativeList
        from terminal.sale import Sales
        from terminal.tap import Tap

        self.issuers = IssuerTable(board.ISSUER_CAPACITY)
        data = store.read(root, ISSUERS_FILE)
        if data is not None:
            err = self.issuers.from_bytes(data)
            if err:
                self.notes.append("stored issuer overrides ignored: " + err)
        self.keystore = KeyStore(self, board.ISSUER_KEY_CAPACITY,
                                 after_set=lambda key_id: self.negative_list.set_key_id(key_id))
        self.journal = Journal(store.path(root, "journal"), board.JOURNAL_CAPACITY,
                               self.terminal_id, self.params.get("journal_near_full_pct"))
        self.negative_list = NegativeList(root, board.LIST_CAPACITY, board.ISSUER_CAPACITY,
                                          key_id=self.keystore.list_key_id or None,
                                          bdev=self._bdev)
        self.sync_online_only()
        self.engine = Engine(self.params, self.issuers, self.keystore.issuer_keys,
                             board.COUNTER_CAPACITY, table=self._table)
        self.counters = CounterStore(root, self.engine, self.journal)
        self.counters.restore()
        self.tap = Tap(self.engine, self.keystore, self.negative_list, self.journal)
        self.sales = Sales(self, self.tap, self.card_source)
        self.parts = [
            self.keystore,
            ListSync(self, self.negative_list, after_commit=self.sync_online_only),
            Clearing(self, self.journal, before_ack=self.counters.save),
            self.sales,
            self.counters,
        ]

    def sync_online_only(self):
        """An issuer whose list entries overflow its quota goes online-only (a full
        quota costs authorisation fees, not fraud); the flag clears with the overflow."""
        over = self.negative_list.overflowing()
        for i in range(self.issuers.capacity):
            issuer = self.issuers.ids[i]
            if issuer >= 0 and issuer not in over:
                self.issuers.set_online_only(issuer, False)
        self.issuers.all_online_only = False
        for issuer in over:
            self.issuers.set_online_only(issuer, True)

    def close(self):
        """Clean shutdown: snapshot the counters (saves a replay at the next boot)."""
        if self.issuers is not None:
            self.counters.save()

    # -- loop ---------------------------------------------------------------

    def serve_forever(self):
        while True:
            self.step(50)

    def step(self, timeout_ms):
        kind, payload = self.link.poll(timeout_ms)
        if kind == frame.FRAME:
            self.handle(payload)
        elif kind == frame.CORRUPT:
            self.link.reply(protocol.CMD_FRAME_ERROR, 0, protocol.ERR_CHECKSUM,
                            "frame failed its CRC32 check")
        self.clock.now()  # keeps the tick anchor fresh across tick wrap

    def handle(self, payload):
        if len(payload) < 3:
            self.link.reply(protocol.CMD_FRAME_ERROR, 0, protocol.ERR_MALFORMED,
                            "request shorter than its 3-byte header")
            return
        cmd = payload[0]
        req = protocol.u16(payload, 1)
        handler = self.handlers.get(cmd)
        if handler is None:
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
            status, body = handler(args)
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
        if counter <= self.counter:
            return protocol.ERR_REPLAY, "counter %d not above last accepted %d" % (
                counter, self.counter)
        protocol.put_u64(self._ctr_buf, 0, counter)
        store.write_atomic(self.root, COUNTER_FILE, self._ctr_buf)
        self.counter = counter
        return protocol.OK, None

    # -- handlers: (args memoryview) -> (status, body) ----------------------

    def status_fields(self):
        gc.collect()
        free, total = store.free_bytes(self.root)
        now = self.clock.now()
        fields = [
            ("proto", protocol.VERSION),
            ("firmware", FIRMWARE_VERSION),
            ("board", self.board.NAME),
            ("platform", self.platform),
            ("terminal_id", "%08x" % self.terminal_id),
            ("provisioned", 1 if self.auth else 0),
            ("max_frame", self.board.MAX_FRAME),
            ("heap_used", mem_alloc()),
            ("heap_free", mem_free()),
            ("heap_peak", mem_peak()),
            ("flash_free", free),
            ("flash_total", total),
            ("clock", iso(now)),
            ("uptime_s", self.clock.uptime()),
            ("params_version", self.params.version),
            ("auth_counter", self.counter),
            ("link_dropped_bytes", self.link.rx.dropped),
            ("link_corrupt_frames", self.link.rx.corrupt),
        ]
        for part in self.parts:
            fields.extend(part.status_fields())
        for note in self.notes:
            fields.append(("note", note))
        return fields

    def do_status(self, args):
        return protocol.OK, "\n".join("%s=%s" % kv for kv in self.status_fields())

    def do_params_get(self, args):
        lines = ["version=%d" % self.params.version]
        for name, value in self.params.items():
            lines.append("%s=%d" % (name, value))
        if self.issuers is not None:
            for i in range(self.issuers.capacity):
                for name, value in self.issuers.items(i):
                    lines.append("issuer.%d.%s=%d" % (self.issuers.ids[i], name, value))
        return protocol.OK, "\n".join(lines)

    def do_time_set(self, args):
        if len(args) != 8:
            return protocol.ERR_MALFORMED, "time set takes 8 bytes of Unix seconds"
        unix = protocol.u64(args, 0)
        seconds = unix - EPOCH_OFFSET
        if seconds < 0 or seconds >= (1 << 30):
            return protocol.ERR_INVALID, "time %d outside 2020..2054" % unix
        self.clock.set(seconds)
        return protocol.OK, iso(seconds)

    def do_params_set(self, args):
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
            return self._set_issuer_params(per_issuer, changes)
        saved = self.params.to_bytes()
        err = self.params.update(changes)
        if err:
            return protocol.ERR_INVALID, err
        try:
            store.write_atomic(self.root, PARAMS_FILE, self.params.to_bytes())
        except OSError as e:
            self.params.from_bytes(saved)
            return protocol.ERR_INTERNAL, "params not saved to flash: %s" % e
        if self.issuers is not None:
            self.journal.set_near_full_pct(self.params.get("journal_near_full_pct"))
        return protocol.OK, "version=%d" % self.params.version

    def _set_issuer_params(self, per_issuer, changes):
        if changes:
            return protocol.ERR_INVALID, "set issuer overrides and global params separately"
        if self.issuers is None:
            return protocol.ERR_STATE, "terminal has no key: provision it first"
        saved = self.issuers.to_bytes()
        for issuer, fields in per_issuer.items():
            err = self.issuers.update(issuer, fields)
            if err:
                self.issuers.from_bytes(saved)
                return protocol.ERR_INVALID, "issuer %d: %s" % (issuer, err)
        store.write_atomic(self.root, ISSUERS_FILE, self.issuers.to_bytes())
        return protocol.OK, "issuers updated: %s" % ",".join("%d" % i for i in per_issuer)
