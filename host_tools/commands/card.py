"""termctl card present: emulate a FeliCa card with nfcpy until a reader reads it."""

from __future__ import annotations

import sys

from host_tools.errors import ToolError


def argparse_card(sub):
    p = sub.add_parser(
        "card", help="present a card to a terminal's reader (nfcpy card emulation)",
        description="Emulate the FeliCa card of TOKEN with nfcpy until a reader has read it "
        "(--taps times). On the emulated board the RF field is nfcpy's UDP link: give the "
        "--rf-port the board was started with. The card's image comes from --wallet (issued "
        "on first use) and the counters the terminal writes back are saved there, so the "
        "same card carries its counters from terminal to terminal.")
    csub = p.add_subparsers(dest="card_cmd", required=True)
    c = csub.add_parser("present", help="emulate the card until it is read")
    c.add_argument("--token", required=True, help="the card's token number")
    c.add_argument("--issuer", type=int, default=1, help="issuer id of a new card")
    c.add_argument("--product", default="credit", choices=["credit", "prepaid", "debit"],
                   help="product of a new card")
    c.add_argument("--expiry", default=None, help="card expiry YYYY-MM for a new card")
    c.add_argument("--wallet", default=None,
                   help="JSON wallet keeping the cards' counters (default: $TERMCTL_WALLET, "
                   "else .termctl/wallet.json, started on first use)")
    c.add_argument("--create", action="store_true",
                   help="start a new --wallet if the file does not exist")
    c.add_argument("--rf-port", type=int, default=None,
                   help="the emulated board's RF UDP port (emulated board)")
    c.add_argument("--card", default="lite-s", choices=["lite-s", "standard"],
                   help="lite-s (default): a FeliCa Lite-S, the profile's card (system 88B4, "
                   "one block per write, at most 4 per read); standard: a standard FeliCa "
                   "card of its own system (0003), which a terminal does not take")
    c.add_argument("--device", default=None,
                   help="an nfcpy device path instead, e.g. usb:054c:06c3 (bench reader)")
    c.add_argument("--taps", type=int, default=1, help="taps to serve")
    c.add_argument("--timeout", type=float, default=60.0, help="give up after seconds")


def do_card(state, args):
    from host_tools.cardemu import CardEmulator
    from host_tools.statefiles import DEFAULT_WALLET, state_file
    from host_tools.wallet import Wallet, card_image, card_memory, describe

    if not (args.rf_port or args.device):
        raise ToolError("give --rf-port (emulated board) or --device (nfcpy reader)")
    wallet = Wallet.open(state_file(args.wallet, "TERMCTL_WALLET", DEFAULT_WALLET, "wallet",
                                    create=args.create, may_start=True))
    image = wallet.card(args.token, args.issuer, args.product, state.keyring(), args.expiry)
    memory = card_memory(image, args.card)
    device = args.device or f"udp:127.0.0.1:{args.rf_port}"
    with CardEmulator(memory, device) as card:
        print(f"card {args.token} on {device}: waiting for a reader ...", file=sys.stderr,
              flush=True)
        served = card.serve(taps=args.taps, timeout=args.timeout)
    after = card_image(memory)
    wallet.store(args.token, after)
    wallet.save()
    if not served:
        raise ToolError(f"no reader read the card within {args.timeout:g} s")
    d = describe(after)
    print(f"card {args.token}: read {served} time(s); counters now atc {d['atc']}, "
          f"offline today {d['offline_today']}, since online {d['offline_since_online']}")
    return 0
