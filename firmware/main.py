"""Firmware entry point: board -> platform -> terminal service.

On a board MicroPython runs this file at boot (sys.argv is empty). On the
emulated board the launcher runs it in the unix port with arguments naming
the board file, the flash image and the key file.
"""

import sys


def boot():
    argv = getattr(sys, "argv", None) or []
    if len(argv) > 1:
        from drivers import unix_platform as platform_module
    else:
        from drivers import board_platform as platform_module
    plat = platform_module.start(argv[1:])
    # The largest buffer first, while the heap is one free block: once every
    # module is loaded the heap is fragmented and 18 KB in one piece may not be.
    import gc

    gc.collect()
    from terminal.velocity import VelocityTable

    table = VelocityTable(plat.board.COUNTER_CAPACITY)
    from terminal.service import TerminalService

    term = TerminalService(plat.board, plat.root, plat.port, plat.name,
                           card_source=getattr(plat, "card_source", None), table=table,
                           bdev=getattr(plat, "bdev", None))
    try:
        term.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        term.close()
        plat.shutdown()


try:
    boot()
except KeyboardInterrupt:
    pass
except Exception as e:
    # MicroPython prints an uncaught traceback on stdout, which is the host
    # link; stderr is the emulator's log (on a board the two are one).
    sys.print_exception(e, sys.stderr)  # type: ignore[arg-type]
    raise SystemExit(1) from None
