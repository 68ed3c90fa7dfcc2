"""The emulated board's platform: the MicroPython unix port on a PC.

Started by the launcher (`termctl emulate`) as

    micropython -X heapsize=256k firmware/main.py --board emulator \
        --boards DIR --flash flash.img --key flash.img.key \
        [--nfc-uart /dev/pts/N | --nfc-udp HOST:PORT] [--format 1] [--flash-strict 1]

It mounts the image, a NOR flash with the board file's page, erase and
timing figures, as LittleFS2 at /flash (drivers.unix_flash: an image that does
not mount is refused without --format, never formatted silently), provisions
the terminal key from the key file on first boot, and talks to the host over
stdin/stdout (the launcher's pty).
"""

import sys

import vfs

from terminal.compat import const

ROOT = "/flash"
# The emulated PN532 is a thread of a PC process: it ACKs at once but may be
# scheduled late, and its RF side waits on another process (the card). The
# firmware's own waits get this much more (docs/boards.md); time that counts is
# the chip's modelled time, not these.
_EMULATED_ACK_MS = const(250)
_EMULATED_SLACK_MS = const(2500)


def _args(argv):
    opts = {}
    i = 0
    while i + 1 < len(argv):
        if argv[i].startswith("--"):
            opts[argv[i][2:]] = argv[i + 1]
        i += 2
    return opts


class UnixPlatform:
    name = "unix"

    def __init__(self, argv):
        opts = _args(argv)
        if "boards" in opts:
            sys.path.append(opts["boards"])
        self.board = __import__(opts.get("board", "emulator"))
        b = self.board
        from drivers import unix_flash  # start-up only: dropped below

        self.bdev, self.formatted = unix_flash.mount(b, opts["flash"], opts.get("format"),
                                                     opts.get("flash-strict") == "1", ROOT)
        self.root = ROOT
        if "key" in opts:
            unix_flash.provision(ROOT, opts["key"])
        del sys.modules["drivers.unix_flash"]
        delattr(sys.modules["drivers"], "unix_flash")
        from drivers.stdio_port import StdioPort

        self.port = StdioPort(nonblocking=True)
        self.card_source = self._reader(b, opts)

    @staticmethod
    def _reader(b, opts):
        """The NFC reader: the board's own PN532 driver on the emulated PN532's pty
        (--nfc-uart PATH, what `termctl emulate --rf-port N` starts), or, only when
        asked for, nfcpy's UDP link straight from the firmware (--nfc-udp HOST:PORT)."""
        if "nfc-uart" in opts:
            from drivers.cardsource import RATES, FelicaCards
            from drivers.pn532 import Pn532
            from drivers.pn532_uart import UARTLink
            from drivers.ptyuart import PtyUart

            nfc = Pn532(UARTLink(PtyUart(opts["nfc-uart"])), max_frame=b.NFC_MAX_FRAME,
                        ack_ms=_EMULATED_ACK_MS, slack_ms=_EMULATED_SLACK_MS)
            cards = FelicaCards(nfc, rates=getattr(b, "NFC_FELICA_KBPS", RATES))
            cards.start()  # a chip that does not answer: the terminal runs on, says so
            return cards
        if "nfc-udp" in opts:
            from drivers.cardsource import RATES, FelicaCards
            from drivers.nfc_udp import NfcUdp

            host, port = opts["nfc-udp"].rsplit(":", 1)
            return FelicaCards(NfcUdp(host, int(port)),
                               rates=getattr(b, "NFC_FELICA_KBPS", RATES))
        return None

    def shutdown(self):
        vfs.umount(ROOT)
        self.bdev.close()


def start(argv):
    return UnixPlatform(argv)
