# The two commands a user needs are `make demo` and `make test`; each sets up
# .venv from pyproject.toml on first use (and again whenever pyproject changes).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
BOARD  ?= pico_pn532
PORT   ?=
PYTEST_ARGS ?=

.PHONY: all demo test bench lint flash venv clean help

all: help

help:
	@echo "make demo    run the bench demonstration on emulated boards (no hardware needed)"
	@echo "make test    run the test suite (firmware under CPython and the MicroPython unix port)"
	@echo "make bench   run the benchmarks; table printed and written to bench/results/"
	@echo "make lint    ruff on everything, mypy on host tools and firmware"
	@echo "make flash BOARD=pico_pn532 PORT=/dev/ttyACM0   compile and copy firmware to a board"

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/termctl demo --out demo-out

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python -m bench

lint: $(STAMP)
	$(BIN)/ruff check firmware boards host_tools tests bench
	$(BIN)/mypy host_tools

flash: $(STAMP)
	@test -n "$(PORT)" || { echo "make flash: give the board's serial port, e.g. make flash BOARD=$(BOARD) PORT=/dev/ttyACM0"; exit 2; }
	$(BIN)/termctl flash --board $(BOARD) --port $(PORT)

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .mypy_cache .ruff_cache bench/results
