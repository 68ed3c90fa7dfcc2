"""The emulated board's platform: the MicroPython unix port on a PC.

Started by the launcher (`termctl emulate`) as

    micropython -X heapsize=256k firmware/main.py --board emulator \
        --boards DIR --flash flash.img --key flash.img.key [--rf-port N]

It mounts the file-backed LittleFS2 image at /flash (formatting a blank
image on first boot), provisions the terminal key from the key file on first
boot, and talks to the host over stdin/stdout (the launcher's pty).
"""

import sys

import vfs

from drivers.filebdev import FileBlockDevice

ROOT = "/flash"


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
        self.bdev = FileBlockDevice(opts["flash"], b.FLASH_BLOCK_SIZE,
                                    b.FLASH_SIZE // b.FLASH_BLOCK_SIZE)
        self.formatted = False
        try:
            vfs.mount(vfs.VfsLfs2(self.bdev), ROOT)
        except OSError:
            vfs.VfsLfs2.mkfs(self.bdev)
            vfs.mount(vfs.VfsLfs2(self.bdev), ROOT)
            self.formatted = True
        self.root = ROOT
        if "key" in opts:
            self._provision(opts["key"])
        from drivers.stdio_port import StdioPort

        self.port = StdioPort(nonblocking=True)
        # RF: nfcpy's UDP link to a card emulator on this port (termctl card present)
        self.card_source = None
        if "rf-port" in opts:
            from drivers.cardsource import FelicaCards
            from drivers.nfc_udp import NfcUdp

            self.card_source = FelicaCards(NfcUdp(b.NFC_UDP_HOST, int(opts["rf-port"])))

    def _provision(self, key_path):
        from terminal import store
        from terminal.service import KEY_FILE

        if store.read(ROOT, KEY_FILE) is None:
            with open(key_path, "rb") as f:
                store.write_atomic(ROOT, KEY_FILE, f.read())

    def shutdown(self):
        vfs.umount(ROOT)
        self.bdev.close()


def start(argv):
    return UnixPlatform(argv)
