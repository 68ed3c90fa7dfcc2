# The two commands a user needs are `make demo` and `make test`; each sets up
# .venv from pyproject.toml on first use (and again whenever pyproject changes).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
BOARD  ?= pico_pn532
PORT   ?=
# -n auto: one pytest worker per core (pytest-xdist); --dist worksteal: an idle worker
# takes queued tests from a busy one, so the long ones do not end the run alone;
# PYTEST_ARGS=-n0 runs serially
PYTEST_ARGS ?= -n auto --dist worksteal

.PHONY: all demo test bench lint flash venv clean clean-stubs help

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

# Each MicroPython port's stubs in a directory of their own (rp2's and esp32's
# machine.pyi differ), used as mypy's typeshed for the firmware. Installed once:
# the venv is only needed to exist (order-only), so a venv rebuilt for a
# pyproject change does not fetch the stubs again; `make clean-stubs` does.
STUB_PORTS := rp2 esp32
build/stubs/%/.installed: | $(STAMP)
	$(BIN)/python -m pip install --quiet --target build/stubs/$* micropython-$*-stubs
	touch $@

lint: $(STAMP) $(STUB_PORTS:%=build/stubs/%/.installed)
	$(BIN)/ruff check firmware boards host_tools tests bench
	$(BIN)/mypy host_tools
	for port in $(STUB_PORTS); do \
	  echo "mypy firmware against micropython-$$port-stubs"; \
	  (cd firmware && MYPYPATH=../build/stubs/$$port ../$(BIN)/mypy --config-file mypy.ini \
	    --custom-typeshed-dir ../build/stubs/$$port terminal drivers main.py) || exit 1; \
	done

flash: $(STAMP)
	@test -n "$(PORT)" || { echo "make flash: give the board's serial port, e.g. make flash BOARD=$(BOARD) PORT=/dev/ttyACM0"; exit 2; }
	$(BIN)/termctl --port $(PORT) flash --board $(BOARD)

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .mypy_cache .ruff_cache bench/results

clean-stubs:
	rm -rf build/stubs
