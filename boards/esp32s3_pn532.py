"""ESP32-S3 module with 16 MB flash and 8 MB PSRAM (ESP32-S3-WROOM-1-N16R8, as on
the ESP32-S3-DevKitC-1-N16R8), a PN532 module on SPI (or I2C). Stock MicroPython
firmware ESP32_GENERIC_S3, variant SPIRAM_OCT.

Flashed as `board.py`; every buffer and table is sized from it. Wiring
(PN532 module switched to SPI: SEL0 = 0, SEL1 = 1 on most breakouts), on the
ESP32-S3's SPI2 (FSPI) IO_MUX pins:

    PN532 SCK  -> GPIO12    PN532 MOSI -> GPIO11    PN532 MISO -> GPIO13
    PN532 NSS  -> GPIO10    PN532 RSTPDN -> GPIO9 (optional: hard reset)
    PN532 VCC  -> 3V3       GND -> GND

SPI because it has no clock stretching at all; the PN532 sends LSB first,
which the ESP32's hardware SPI can do (firstbit=SPI.LSB), so no bit
reversal in software. For I2C instead (NFC_BUS = "i2c", GPIO8 SDA / GPIO9
SCL): the PN532 stretches SCL for hundreds of microseconds (esphome/issues#4340
measured 440 us, over ESP-IDF's 100 us default stretch timeout), so give
machine.I2C an explicit `timeout` (µs) that covers it; open_nfc() passes
NFC_I2C_TIMEOUT_US.
"""

NAME = "esp32s3_pn532"
MCU = "esp32s3"
MPY_MARCH = "xtensawin"  # mpy-cross -march for the LX7 (windowed ABI)
# Heap. The firmware runs as .mpy from the filesystem, so its bytecode lives
# in the heap: about 125 KB on the 64-bit unix port and 0.72 times that on a
# 32-bit port (measured under MicroPython's wasm32 build; docs/boards.md).
# Kept in internal RAM, MicroPython's GC heap on an ESP32-S3 reaches about
# 128 KB ("GC: total: 127936", micropython/micropython#15630): the code alone
# would fill it. With PSRAM the split heap grows into it ("max new split:
# 8257536", micropython/micropython#12237). Budget 512 KB of it; the emulated
# board and tests/test_board_memory.py run under exactly this cap.
HEAP_SIZE = 512 * 1024
WORD_BITS = 32  # the emulated board scales HEAP_SIZE for the 64-bit unix port
# LittleFS on the "vfs" partition of partitions-16MiB.csv: 0xE00000 = 14 MB.
# The stock ESP32_GENERIC_S3 images carry the 8 MiB table (vfs 6 MiB): write
# the 16 MiB table with the firmware (docs/boards.md, "Flashing").
FLASH_SIZE = 14 * 1024 * 1024
FLASH_BLOCK_SIZE = 4096  # LittleFS block = the chip's 4 KB sector, its smallest erase
# The chip (docs/boards.md, "Flash"): the module datasheet (ESP32-S3-WROOM-1/1U
# v1.3, 1.1 Features) gives "16 MB Quad SPI flash" without naming the part: a 3.3 V
# 128 Mbit quad SPI NOR, 256-byte pages, 4 KB sectors. Modelled as Winbond's
# W25Q128JV (datasheet rev. F, 9.6 AC Electrical Characteristics): tPP 0.4 ms typ,
# 3 ms max; tSE 45 / 400 ms; tBE2 150 / 2,000 ms, the same as the Pico's W25Q16JV.
FLASH_CHIP = "W25Q128JV class (quad SPI NOR, 128 Mbit)"
FLASH_PAGE_SIZE = 256
# esp_partition_write splits a write into page programs itself: any alignment.
FLASH_PROG_SIZE = 1
FLASH_PAGE_PROGRAM_US = (400, 3000)
FLASH_SECTOR_ERASE_US = (45000, 400000)
FLASH_BLOCK_ERASE_US = (150000, 2000000)
# Host link: largest frame payload either side sends or accepts.
MAX_FRAME = 1024
# Capacities. Flash budget of the 14 MB: a full list of 1,000,000 entries is
# ~6.2 MB, twice while a replacement is staged (~12.4 MB); 20,000 journal
# records of 64 bytes are 1.28 MB.
LIST_CAPACITY = 1_000_000
# Issuers the terminal holds overrides, list sections and card keys for.
ISSUER_CAPACITY = 32
ISSUER_KEY_CAPACITY = 16
COUNTER_CAPACITY = 512
JOURNAL_CAPACITY = 20_000
# NFC: PN532 on SPI2.
NFC = "pn532"
NFC_BUS = "spi"  # or "i2c"
NFC_SPI_ID = 2
NFC_SCK = 12
NFC_MOSI = 11
NFC_MISO = 13
NFC_CS = 10
NFC_SPI_BAUD = 1_000_000  # the PN532 allows 5 MHz; 1 MHz tolerates flying leads
NFC_SDA = 8  # I2C wiring, when NFC_BUS = "i2c"
NFC_SCL = 9
NFC_I2C_FREQ = 400_000
NFC_I2C_TIMEOUT_US = 100_000
NFC_RESET = 9 if NFC_BUS == "spi" else None  # RSTPDN; GPIO9 is SCL on I2C wiring
NFC_MAX_FRAME = 96  # longest FeliCa frame (LEN included): a 4-block read or write
# FeliCa bit rates polled, in order (drivers/cardsource.py, docs/nfc.md): 424 kbps
# first (a Lite-S answers there and its frames take half the air time), then
# 212 for a card that speaks 212 only (every FeliCa card does: JIS X 6319-4).
NFC_FELICA_KBPS = (424, 212)


def open_flash():
    """The "vfs" partition MicroPython's boot mounted at "/": the negative list
    reads its blocks directly."""
    import esp32

    return esp32.Partition.find(esp32.Partition.TYPE_DATA, label="vfs")[0]


def open_nfc():
    """The PN532 reader on this board's wiring (board only: imports machine).

        nfc = board.open_nfc(); nfc.start()
    """
    from machine import I2C, SPI, Pin  # type: ignore[import-not-found]

    from drivers.pn532 import Pn532

    if NFC_BUS == "spi":
        from drivers.pn532_spi import SPILink

        spi = SPI(NFC_SPI_ID, baudrate=NFC_SPI_BAUD, polarity=0, phase=0,
                  firstbit=SPI.LSB, sck=Pin(NFC_SCK), mosi=Pin(NFC_MOSI), miso=Pin(NFC_MISO))
        link = SPILink(spi, Pin(NFC_CS, Pin.OUT, value=1), lsb_first=True)
    else:
        from drivers.pn532_i2c import I2CLink

        i2c = I2C(0, scl=Pin(NFC_SCL), sda=Pin(NFC_SDA), freq=NFC_I2C_FREQ,
                  timeout=NFC_I2C_TIMEOUT_US)
        link = I2CLink(i2c)
    reset = Pin(NFC_RESET, Pin.OUT, value=1) if NFC_RESET is not None else None
    return Pn532(link, max_frame=NFC_MAX_FRAME, reset=reset)
