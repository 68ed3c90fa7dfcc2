"""termctl sale: play the POS, with the centre answering online requests."""

from __future__ import annotations

import sys

from host_tools.commands.common import json_output, print_json, yen


def argparse_sale(sub):
    p = sub.add_parser(
        "sale", help="play the POS: ask the terminal for a sale",
        description="Ask for a sale of AMOUNT yen. With --token the card is injected "
        "(bench, no RF): its image comes from --wallet (issued on first use) and its new "
        "counters go back there. With --centre DB the online requests the sale raises are "
        "answered by the centre; without, the terminal cannot go online and the issuer's "
        "default action decides.")
    p.add_argument("amount", type=yen, help="amount in yen: 5000, 5,000 or 5_000")
    p.add_argument("--token", default=None,
                   help="inject this card (bench, no RF); without it the terminal reads a "
                   "card over RF (termctl card present), waiting --wait seconds")
    p.add_argument("--wait", type=float, default=10.0, help="seconds to wait for a card on RF")
    p.add_argument("--issuer", type=int, default=1, help="issuer id")
    p.add_argument("--product", default="credit", choices=["credit", "prepaid", "debit"],
                   help="product of a new card")
    p.add_argument("--expiry", default=None, help="card expiry YYYY-MM for a new card")
    p.add_argument("--wallet", default=None,
                   help="JSON wallet keeping the cards' counters (default: $TERMCTL_WALLET, "
                   "else .termctl/wallet.json, started on first use)")
    p.add_argument("--centre", default=None, metavar="DB",
                   help="centre database answering the online requests (default: "
                   "$TERMCTL_CENTRE; without one the terminal cannot go online)")
    p.add_argument("--no-centre", action="store_true",
                   help="no centre even if $TERMCTL_CENTRE names one")
    p.add_argument("--create", action="store_true",
                   help="start a new --centre database or --wallet if the file does not exist")
    p.epilog = "exit status: 0 approved, 3 declined, 1 error"
    json_output(p)


def do_sale(state, args):
    from host_tools.centre import Centre
    from host_tools.pos import run_sale
    from host_tools.statefiles import DEFAULT_CENTRE, DEFAULT_WALLET, named, state_file
    from host_tools.wallet import Wallet

    wallet = Wallet.open(None)  # injected cards only: an RF card carries its own counters
    if args.token:
        wallet = Wallet.open(state_file(args.wallet, "TERMCTL_WALLET", DEFAULT_WALLET, "wallet",
                                        create=args.create, may_start=True))
    centre = None
    if not args.no_centre and named(args.centre, "TERMCTL_CENTRE"):
        path = state_file(args.centre, "TERMCTL_CENTRE", DEFAULT_CENTRE, "centre database",
                          create=args.create)
        centre = Centre.for_deployment(path, state.keyring())
    t = state.link()
    image = None
    if args.token:
        image = wallet.card(args.token, args.issuer, args.product, t.keyring, args.expiry)
    else:
        print(f"waiting up to {args.wait:g} s for a card on the terminal's reader ...",
              file=sys.stderr, flush=True)
    result = run_sale(t, args.amount, image, centre=centre, wait_ms=int(args.wait * 1000))
    state.close()
    if args.token:
        wallet.store(args.token, result.card_image)
        wallet.save()
    if args.json:
        print_json({"outcome": result.outcome, "approved": result.approved,
                    "amount": result.amount, "approval_code": result.shown_code or None,
                    "reasons": result.reasons, "seq": result.seq, "tap_ms": result.tap_ms,
                    "online_requests": result.online_requests,
                    "seconds": round(result.seconds, 3)})
    else:
        print(result)
    return 0 if result.approved else 3
