"""A sale over the host link: the POS asks, a card is read, the terminal decides.

    SALE (signed)  amount u32, card wait ms u32, flags u8 [, card image (104)] [, draw u8]
        flags: 1 = card image given (bench injection, no RF), 2 = centre reachable,
               4 = random-selection draw given (emulated board only: a seeded demo
                   and the fleet simulation then make the same decisions)
        -> outcome u8, reasons u32, approval code (6), journal seq u32,
           tap-to-result ms u16 (from the card sensed, or the request for an
           injected card, to the journalled result), card image after the sale (104)

A card image is terminal.card's: the card's IDm, then its blocks 0-5.
    ONLINE_RESULT (signed)  event seq u16, approved u8, approval code (6)

When the decision is GO_ONLINE and the centre is reachable, the terminal sends
an ONLINE_REQUEST event and waits params online_timeout_ms for the host's
signed ONLINE_RESULT; no answer gives the issuer's Default action (unable to go
online). The transaction is in the journal before the reply leaves.

    ONLINE_REQUEST event: token len u8, token (16), issuer u16, product u8,
        amount u32, reasons u32, atc u16, last online atc u16,
        offline today u32, offline since online u32, offline count u16
"""

import os
import struct

from terminal import decision, frame, protocol
from terminal.card import RECORD_LEN
from terminal.compat import const, ticks_diff, ticks_ms
from terminal.journal import JournalError
from terminal.tap import APPROVED_ONLINE, FINAL_MASK, FINAL_SHIFT

FLAG_CARD_GIVEN = const(1)
FLAG_CENTRE_UP = const(2)
FLAG_DRAW_GIVEN = const(4)
_P_ONLINE_TIMEOUT_MS = const(15)
_REQ_FMT = "<B16sHBIIHHIIH"
_RES_FMT = "<BI6sIH"


def draw99():
    """R for EMV random selection: uniform on 1..99 from the board's random source
    (os.urandom: the ROSC on the Pico, the hardware RNG on the ESP32, the OS on the
    emulator). A PRNG seeded at boot (random.randint) can be predicted by whoever
    sees a few draws, and with it which sales go online."""
    while True:
        b = os.urandom(1)[0]
        if b < 198:  # 2 * 99: the rest would favour small values
            return b % 99 + 1


class Sales:
    def __init__(self, service, tap, card_source=None, rand99=None):
        self.svc = service
        self.tap = tap
        self.card_source = card_source  # .read(raw, wait_ms) -> bool, .write(raw) -> bool
        self.rand99 = rand99 or draw99
        self._event = 0  # seq of the online request we wait for, 0 = none
        self._answer = None
        self.sales = 0
        self.online_requests = 0
        self.online_timeouts = 0
        h = service.handlers
        h[protocol.CMD_SALE] = self.do_sale
        h[protocol.CMD_ONLINE_RESULT] = self.do_online_result

    def do_sale(self, args):
        if len(args) < 9:
            return protocol.ERR_MALFORMED, "sale takes amount, wait, flags [, card image]"
        amount, wait_ms, flags = struct.unpack_from("<IIB", args, 0)
        r = 0
        if flags & FLAG_DRAW_GIVEN:
            if self.svc.platform != "unix":
                return protocol.ERR_STATE, "a given random draw is for the emulated board only"
            r = args[len(args) - 1]
            args = args[: len(args) - 1]
            if not 1 <= r <= 99:
                return protocol.ERR_INVALID, "random draw must be 1..99"
        if len(args) not in (9, 9 + RECORD_LEN):
            return protocol.ERR_MALFORMED, "sale takes amount, wait, flags [, card image]"
        now = self.svc.clock.now()
        if now < 0:
            return protocol.ERR_STATE, "clock not set: set it first (termctl time set --now)"
        if self.tap.keystore.hasher is None:
            return protocol.ERR_STATE, "no deployment keys: install them (termctl keys push)"
        if self.tap.journal.full:
            return protocol.ERR_FULL, ("journal full: sale refused; pull and acknowledge a "
                                       "batch (termctl batch pull)")
        tap = self.tap
        sensed = ticks_ms()
        if flags & FLAG_CARD_GIVEN:
            if len(args) != 9 + RECORD_LEN:
                return protocol.ERR_MALFORMED, ("card image flag set but no %d-byte image"
                                                  % RECORD_LEN)
            tap.raw[:] = args[9:]
        elif self.card_source is None:
            return protocol.ERR_STATE, "no NFC reader on this terminal: give the card image"
        elif not self.card_source.read(tap.raw, wait_ms):
            cs = self.card_source
            cs.release()
            return protocol.ERR_STATE, "no card presented within %d ms%s" % (
                wait_ms, cs.WHY[cs.last_error] if hasattr(cs, "WHY") else "")
        else:
            sensed = self.card_source.sensed_at
        res = tap.decide(amount, now, r or self.rand99(), bool(flags & FLAG_CENTRE_UP))
        online = approved = False
        code = b"000000"
        if res & decision.OUTCOME_MASK == decision.GO_ONLINE:
            answer = self._ask_centre(res, amount) if flags & FLAG_CENTRE_UP else None
            if answer is None:
                res = tap.unable(res)
            else:
                online = True
                approved, code = answer
        res = tap.conclude(res, amount, now, online, approved)
        cs = None if flags & FLAG_CARD_GIVEN else self.card_source
        if tap.write_back and cs is not None:
            res = tap.card_written(res, cs.write(tap.raw, tap.rec.slot))
        try:
            seq = tap.record(res, amount, now, code)
            tap_ms = min(ticks_diff(ticks_ms(), sensed), 0xFFFF)
        except JournalError as e:
            return protocol.ERR_FULL, "sale not recorded, no result: %s" % e
        finally:
            if cs is not None:
                cs.release()  # RF off once the result is journalled: one command less in it
        self.sales += 1
        return protocol.OK, struct.pack(_RES_FMT, res & FINAL_MASK, res >> FINAL_SHIFT,
                                        code if res & FINAL_MASK == APPROVED_ONLINE
                                        else b"000000",
                                        seq, tap_ms) + bytes(tap.raw)

    def _ask_centre(self, res, amount):
        rec = self.tap.rec
        body = struct.pack(_REQ_FMT, rec.token_len, bytes(rec.token), rec.issuer_id,
                           rec.product, amount, res >> decision.REASON_SHIFT, rec.atc,
                           rec.last_online_atc, rec.offline_today, rec.offline_since_online,
                           rec.offline_count)
        self.online_requests += 1
        self._answer = None
        self._event = self.svc.link.event(protocol.EVT_ONLINE_REQUEST, body)
        timeout = self.svc.params.values[_P_ONLINE_TIMEOUT_MS]
        start = ticks_ms()
        while self._answer is None and ticks_diff(ticks_ms(), start) < timeout:
            kind, payload = self.svc.link.poll(20)
            if kind == frame.FRAME:
                cmd = payload[0] if len(payload) else 0
                if cmd == protocol.CMD_ONLINE_RESULT or not protocol.is_authenticated(cmd):
                    self.svc.handle(payload)
                else:
                    self.svc.link.reply(cmd, protocol.u16(payload, 1) if len(payload) > 2
                                        else 0, protocol.ERR_STATE,
                                        "busy: a sale is waiting for the centre")
        self._event = 0
        if self._answer is None:
            self.online_timeouts += 1
        return self._answer

    def do_online_result(self, args):
        if len(args) != 9:
            return protocol.ERR_MALFORMED, "online result takes event, approved, code"
        event, approved, code = struct.unpack("<HB6s", args)
        if not self._event or event != self._event:
            return protocol.ERR_STATE, "no online request %d is waiting" % event
        self._answer = (bool(approved), code)
        return protocol.OK, "ok"

    def status_fields(self):
        return [("sales", self.sales), ("online_requests", self.online_requests),
                ("online_timeouts", self.online_timeouts)]
