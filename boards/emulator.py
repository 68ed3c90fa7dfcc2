"""Emulated board: the firmware in the MicroPython unix port on a PC.

Every buffer and table in the firmware is sized from a board file like this
one; on a real board it is flashed as `board.py`.
"""

NAME = "emulator"
MCU = "unix"
# -X heapsize for the unix port. The firmware's .mpy code is loaded into this
# heap, as on a board that runs .mpy from its filesystem, and the unix port is
# 64-bit: every pointer, object header and constant table takes twice the bytes
# it takes on a 32-bit Pico or ESP32. The firmware's code alone measures about
# 120 KB here (bench/bench_link.py reports heap after boot), so the emulated
# board gets 256 KB; each real board's own cap is in its board file and tested.
HEAP_SIZE = 256 * 1024
WORD_BITS = 64  # the unix port's: its heap is not scaled
# File-backed LittleFS2 image: 16 MB like an ESP32-S3 module, so the default
# image holds a 1,000,000-entry negative list.
FLASH_SIZE = 16 * 1024 * 1024
FLASH_BLOCK_SIZE = 4096
# NOR semantics and timings as the ESP32-S3 module's chip (boards/esp32s3_pn532.py).
FLASH_CHIP = "W25Q128JV class (quad SPI NOR, 128 Mbit)"
FLASH_PAGE_SIZE = 256
FLASH_PROG_SIZE = 1
FLASH_PAGE_PROGRAM_US = (400, 3000)
FLASH_SECTOR_ERASE_US = (45000, 400000)
FLASH_BLOCK_ERASE_US = (150000, 2000000)
# Host link: largest frame payload either side sends or accepts.
MAX_FRAME = 1024
# Capacities of the fixed-size tables.
LIST_CAPACITY = 1_000_000
# Issuers the terminal holds overrides, list sections and card keys for.
ISSUER_CAPACITY = 32
ISSUER_KEY_CAPACITY = 16
COUNTER_CAPACITY = 512
JOURNAL_CAPACITY = 20_000
# NFC: a PN532 on the UART (HSU, 115200 8N1), the emulated PN532 of the launcher
# (host_tools/pn532emu.py) on a pty; its RF side is nfcpy's UDP link.
NFC = "pn532"
NFC_BUS = "uart"
NFC_UART_BAUD = 115_200  # the PN532's HSU rate after power-up (UM0701-02 6.2)
NFC_MAX_FRAME = 96  # longest FeliCa frame (LEN included): a 4-block read or write
# FeliCa bit rates polled, in order (drivers/cardsource.py, docs/nfc.md): 424 kbps
# first (a Lite-S answers there and its frames take half the air time), then
# 212 for a card that speaks 212 only (every FeliCa card does: JIS X 6319-4).
NFC_FELICA_KBPS = (424, 212)
