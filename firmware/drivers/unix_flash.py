"""The emulated board's flash at start-up: the image as NOR flash, mounted, never
formatted silently. Start-up only: drivers.unix_platform drops it after.

    bdev, formatted = unix_flash.mount(board, "flash.img", fmt, strict, "/flash")

fmt None: an image that does not mount is refused (one line on stderr, exit
REFUSED, nothing written); "1" (--format): it is made whole (erased) and
formatted, and terminal.service.FORMATTED_FILE records why; "new": the launcher
made no image yet, a new board's flash, formatted once without a note. An
image that mounts is never formatted.
"""

import sys

import vfs

from drivers.filebdev import FileBlockDevice

REFUSED = 3  # exit code: the image does not mount and --format was not given


def _refuse(msg):
    print("flash: " + msg, file=sys.stderr)
    raise SystemExit(REFUSED)


def mount(b, path, fmt, strict, root):
    prog = getattr(b, "FLASH_PROG_SIZE", 1)
    # LittleFS programs in units of progsize: the board's own mount uses 256 on
    # the Pico (rp2 _boot.py) and MicroPython's default 32 on the ESP32.
    lfs_prog = max(32, prog)
    try:
        bdev = FileBlockDevice(
            path, b.FLASH_BLOCK_SIZE, b.FLASH_SIZE // b.FLASH_BLOCK_SIZE,
            page_size=b.FLASH_PAGE_SIZE, prog_size=prog,
            timing=b.FLASH_PAGE_PROGRAM_US + b.FLASH_SECTOR_ERASE_US, strict=strict,
            create=fmt is not None)
    except (OSError, ValueError) as e:
        _refuse("%s cannot be used (%s)%s; nothing was written" % (
            path, e, "" if fmt else ": start with --format to make it a blank %d-byte "
            "flash" % b.FLASH_SIZE))
    if fmt == "1" and bdev.found != bdev.size:  # cut short: whatever mounts is not it
        why = "image had %d of %d bytes; formatted at boot by --format" % (bdev.found,
                                                                          bdev.size)
    else:
        try:
            vfs.mount(vfs.VfsLfs2(bdev, progsize=lfs_prog), root)
            return bdev, False
        except OSError as e:
            if not fmt:
                bdev.close()
                _refuse("%s does not mount as LittleFS (%r): start with --format to format "
                        "it (everything on it is lost); nothing was written" % (path, e))
            why = "image did not mount (%r); formatted at boot by --format" % (e,)
    vfs.VfsLfs2.mkfs(bdev, progsize=lfs_prog)
    vfs.mount(vfs.VfsLfs2(bdev, progsize=lfs_prog), root)
    if fmt != "new":
        from terminal import store
        from terminal.service import FORMATTED_FILE

        store.write_atomic(root, FORMATTED_FILE, why.encode())
    return bdev, True


def provision(root, key_path):
    """The terminal key from the launcher's key file, on first boot."""
    from terminal import store
    from terminal.service import KEY_FILE

    if store.read(root, KEY_FILE) is None:
        with open(key_path, "rb") as f:
            store.write_atomic(root, KEY_FILE, f.read())
