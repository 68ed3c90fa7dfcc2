"""The POS role (ask for a sale) and, when given a centre, the online
authorisation role for the online requests the sale raises.

    result = run_sale(link, 9800, card_image, centre=centre)
    print(result.outcome, result.reasons, result.approval_code)

Without a centre the terminal is told the centre is unreachable, so a sale
that must go online gets the issuer's Default action ("unable to go online").
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass

from host_tools.errors import LinkError, ToolError
from terminal import decision, protocol, sale, tap

OUTCOMES = {tap.APPROVED_OFFLINE: "APPROVED_OFFLINE", tap.APPROVED_ONLINE: "APPROVED_ONLINE",
            tap.DECLINED_OFFLINE: "DECLINED_OFFLINE", tap.DECLINED_ONLINE: "DECLINED_ONLINE"}
reason_names = decision.reason_names


def parse_amount(text: str) -> int:
    """Yen as a person types them: 5000, 5,000 or 5_000 (`termctl sale`, `centre serve`)."""
    digits = text.strip().replace(",", "").replace("_", "")
    if not digits.isdigit():
        raise ToolError(f"not an amount: {text!r} (whole yen, e.g. 5000 or 5,000)")
    return int(digits)


class SaleCancelled(ToolError):
    """The POS cancelled a sale while the terminal waited for a card (Ctrl-C)."""


@dataclass
class SaleResult:
    amount: int
    outcome: str
    reasons: list[str]
    approval_code: str
    seq: int
    tap_ms: int  # the terminal's own measure: card sensed -> journalled result
    card_image: bytes
    online_requests: int
    seconds: float

    @property
    def approved(self) -> bool:
        return self.outcome.startswith("APPROVED")

    @property
    def shown_code(self) -> str:
        """The approval code worth showing: the centre's for an online approval,
        000000 for an offline decision (docs/centre.md), none for an online decline."""
        return "" if self.outcome == "DECLINED_ONLINE" else self.approval_code

    def __str__(self) -> str:
        why = ", ".join(self.reasons) or "-"
        code = f"approval {self.shown_code}  " if self.shown_code else ""
        return (f"{self.outcome}  amount {self.amount}  {code}"
                f"reasons: {why}  (journal seq {self.seq})")


@dataclass
class OnlineRequest:
    seq: int
    token: str
    issuer: int
    product: int
    amount: int
    reasons: int
    atc: int
    last_online_atc: int
    offline_today: int
    offline_since_online: int
    offline_count: int

    @classmethod
    def parse(cls, seq: int, body: bytes) -> OnlineRequest:
        f = struct.unpack(sale._REQ_FMT, body[:struct.calcsize(sale._REQ_FMT)])
        return cls(seq, f[1][:f[0]].decode(errors="replace"), *f[2:])


def run_sale(link, amount: int, card_image: bytes | None, centre=None, wait_ms: int = 0,
             timeout: float = 30.0, draw: int | None = None, now: int | None = None
             ) -> SaleResult:
    """card_image None: the terminal reads the card over RF, waiting up to wait_ms;
    draw: the random-selection R (1..99) to use, emulated boards only; now: the
    Unix time the centre stamps its authorisations with (a demo's fast clock)."""
    if not 0 < amount < 2**30:
        raise ToolError(f"amount {amount} out of range 1..{2**30 - 1}")
    asked = []
    tid = int(link.identity()["terminal_id"], 16)

    def on_event(evt: int, seq: int, body: bytes) -> None:
        if evt != protocol.EVT_ONLINE_REQUEST or centre is None:
            return
        req = OnlineRequest.parse(seq, body)
        asked.append(req)
        answer = centre.authorize(req.token, req.issuer, req.amount, req.product, tid,
                                  int(time.time()) if now is None else now)
        code = str(answer.get("approval_code") or "000000").encode()[:6].ljust(6, b"0")
        # not waiting for the reply: the terminal is itself waiting for this answer
        link.send_signed(protocol.CMD_ONLINE_RESULT,
                         struct.pack("<HB6s", seq, 1 if answer["approved"] else 0, code))

    flags = sale.FLAG_CENTRE_UP if centre is not None else 0
    if card_image is not None:
        flags |= sale.FLAG_CARD_GIVEN
    if draw is not None:
        flags |= sale.FLAG_DRAW_GIVEN
    args = struct.pack("<IIB", amount, wait_ms, flags) + bytes(card_image or b"")
    if draw is not None:
        args += bytes([draw])
    t0 = time.monotonic()
    old = link.on_event
    link.on_event = on_event
    sent = link.bytes_sent
    try:
        reply = link.call_signed(protocol.CMD_SALE, args, timeout=timeout + wait_ms / 1000)
    except KeyboardInterrupt:
        if card_image is not None:
            raise
        if link.bytes_sent == sent:  # Ctrl-C before the request left: nothing to cancel
            raise SaleCancelled("sale cancelled before it reached the terminal") from None
        left = max(0.0, wait_ms / 1000 - (time.monotonic() - t0))
        reply = _cancelled(link, timeout + left)  # Ctrl-C while the terminal waits for a card
    finally:
        link.on_event = old
    final, reasons, code, seq, tap_ms = struct.unpack_from(sale._RES_FMT, reply, 0)
    image = reply[struct.calcsize(sale._RES_FMT):]
    return SaleResult(amount, OUTCOMES.get(final, str(final)), reason_names(reasons),
                      code.decode(errors="replace"), seq, tap_ms, image, len(asked),
                      time.monotonic() - t0)


def _cancelled(link, timeout: float) -> bytes:
    """Ctrl-C during a sale's card wait: the host stops waiting for a card, but not
    for the terminal's answer, so the link stays in step and the sale is accounted
    for. The terminal's card wait cannot be cut short yet (the firmware reads no
    request while it polls its reader); a card read meanwhile makes a real sale,
    whose result stands."""
    answer = link.cancel_sale(timeout)
    if answer is None:
        raise LinkError(f"{link.name}: sale cancelled, but the terminal did not answer "
                        f"within {timeout:g} s")
    status, body = answer
    if status != protocol.OK:
        raise SaleCancelled(f"sale cancelled: {body.decode(errors='replace')}")
    return body


def sale_over_rf(link, rf_device: str, token: str, card_image: bytes, amount: int,
                 centre=None, wait_ms: int = 10_000, **kw) -> tuple[SaleResult, bytes]:
    """Present the card with nfcpy on rf_device (the emulated board's UDP field, or a
    reader) while the POS asks for the sale; returns the result and the card's image
    as the card now holds it (what the terminal wrote back, or unchanged)."""
    import threading

    from host_tools.cardemu import CardEmulator
    from host_tools.wallet import card_image as image_of
    from host_tools.wallet import card_memory

    memory = card_memory(card_image)
    with CardEmulator(memory, rf_device) as card:
        served: list[int] = []
        t = threading.Thread(target=lambda: served.append(card.serve(taps=1, timeout=30)))
        t.start()
        try:
            result = run_sale(link, amount, None, centre=centre, wait_ms=wait_ms, **kw)
        finally:
            card.stop()
            t.join(30)
    return result, image_of(memory)
