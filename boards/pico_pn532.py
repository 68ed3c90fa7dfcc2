"""Raspberry Pi Pico (RP2040, 264 KB RAM, 2 MB flash) with a PN532 module on I2C.

Flashed as `board.py`; every buffer and table is sized from it. Wiring
(PN532 module switched to I2C: SEL0 = 1, SEL1 = 0 on most breakouts):

    PN532 SDA   -> GP4 (pin 6)     PN532 SCL -> GP5 (pin 7)
    PN532 RSTO/RSTPDN -> GP6 (pin 9, optional: hard reset when the chip hangs)
    PN532 VCC   -> 3V3 (pin 36)    GND -> any GND; 4.7 kOhm pull-ups to 3V3 if
                                   the module has none

Bus quirk: the RP2's hardware I2C fails with EIO when a device stretches the
clock (micropython/micropython#8167, "RP2: Hard I2C is intolerant of clock
stretching"), and the PN532 stretches SCL for hundreds of microseconds while it
prepares an answer (esphome/issues#4340 measured 440 us). So the PN532 runs on
SoftI2C with a 100 ms stretch timeout, the work-around given in #8167.
"""

NAME = "pico_pn532"
MCU = "rp2040"
MPY_MARCH = "armv6m"  # mpy-cross -march for the Cortex-M0+
# Usable heap, what MicroPython leaves after boot: gc.mem_free() reads 209,936
# on a Pico at the REPL (v1.20, micropython/micropython#12557; PR #10968 gave the
# GC heap all RAM not used by .bss). Budget 192 KB, the rest for USB CDC and
# allocations during boot. The firmware's .mpy bytecode loads into this heap.
HEAP_SIZE = 192 * 1024
WORD_BITS = 32  # the emulated board scales HEAP_SIZE for the 64-bit unix port
# LittleFS at the top of flash: MICROPY_HW_FLASH_STORAGE_BYTES = 1408 KB for
# RPI_PICO (ports/rp2/mpconfigport.h); the firmware image takes the rest.
FLASH_SIZE = 1408 * 1024
FLASH_BLOCK_SIZE = 4096  # LittleFS block = the chip's 4 KB sector, its smallest erase
# The chip (docs/boards.md, "Flash"): Winbond W25Q16JV, datasheet rev. H, 9.6 AC
# Electrical Characteristics: tPP page program 0.4 ms typical, 3 ms max; tSE 4 KB
# sector erase 45 / 400 ms; tBE2 64 KB block erase 150 / 2,000 ms. A program may
# only clear bits, within one 256-byte page (8.2.13 Page Program).
FLASH_CHIP = "W25Q16JV"
FLASH_PAGE_SIZE = 256
# The RP2040's ROM flash_range_program takes whole, aligned 256-byte pages (hence
# progsize=256 in MicroPython's rp2 _boot.py): the journal programs whole pages too.
FLASH_PROG_SIZE = 256
FLASH_PAGE_PROGRAM_US = (400, 3000)
FLASH_SECTOR_ERASE_US = (45000, 400000)
FLASH_BLOCK_ERASE_US = (150000, 2000000)
# Host link: largest frame payload either side sends or accepts.
MAX_FRAME = 1024
# Capacities. Flash budget of the 1408 KB: a full negative list of 100,000
# entries is ~620 KB (6-byte records + bucket directories) and a replacement is
# staged beside the active one (~1.24 MB both); the journal gets 1,000 records
# of 64 bytes (64 KB, several days of one till between two host pulls); the
# counter table (32 bytes per card, in RAM and saved to flash) 16 KB: 512 cards
# a business day before a card must be forgotten. A card forgotten while its
# day's counts are live goes online (terminal/velocity.py, R_COUNTERS_EVICTED),
# so a busier till costs authorisations, never an offline cap.
LIST_CAPACITY = 100_000
# Issuers the terminal holds overrides, list sections and card keys for.
ISSUER_CAPACITY = 32
ISSUER_KEY_CAPACITY = 16
COUNTER_CAPACITY = 512
JOURNAL_CAPACITY = 1_000
# NFC: PN532 on I2C0's pins, bit-banged (see the quirk above).
NFC = "pn532"
NFC_BUS = "i2c"
NFC_SDA = 4
NFC_SCL = 5
NFC_RESET = 6  # RSTPDN; None if not wired
NFC_I2C_FREQ = 400_000  # the PN532's maximum; 100_000 on long or unshielded wires
NFC_I2C_TIMEOUT_US = 100_000  # SoftI2C clock-stretch timeout
NFC_MAX_FRAME = 96  # longest FeliCa frame (LEN included): a 4-block read or write
# FeliCa bit rates polled, in order (drivers/cardsource.py, docs/nfc.md): 424 kbps
# first (a Lite-S answers there and its frames take half the air time), then
# 212 for a card that speaks 212 only (every FeliCa card does: JIS X 6319-4).
NFC_FELICA_KBPS = (424, 212)


def open_flash():
    """The block device MicroPython's boot mounted at "/" (the whole filesystem
    region): the negative list reads its blocks directly."""
    import rp2

    return rp2.Flash()


def open_nfc():
    """The PN532 reader on this board's wiring (board only: imports machine).

        nfc = board.open_nfc(); nfc.start()
    """
    from machine import Pin, SoftI2C  # type: ignore[import-not-found]

    from drivers.pn532 import Pn532
    from drivers.pn532_i2c import I2CLink

    i2c = SoftI2C(scl=Pin(NFC_SCL), sda=Pin(NFC_SDA), freq=NFC_I2C_FREQ,
                  timeout=NFC_I2C_TIMEOUT_US)
    reset = Pin(NFC_RESET, Pin.OUT, value=1) if NFC_RESET is not None else None
    return Pn532(I2CLink(i2c), max_frame=NFC_MAX_FRAME, reset=reset)
