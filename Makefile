# The two commands: `make run` and `make test`. Everything else is what they need.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
HOME_DIR ?= var
PORT   ?= 5006
CHROMIUM := /usr/bin/chromium

.PHONY: run test install install-test chromium serve bench clean

# The stamp files make a second `make run` skip the install when pyproject.toml is unchanged.
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PIP) install --quiet -e '.[test]'
	touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test chromium

# Debian's Chromium: Playwright's own browser download fails on a closed network.
chromium:
	@if [ ! -x $(CHROMIUM) ]; then \
	  echo "installing Debian chromium"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium; \
	fi

# An empty home first gets a demo: an hour of simulated data centred on 3C48's last
# transit (24 antennas, 4 channels per subband: about 1.5 min to simulate on 2 cores),
# which the server's scheduler then ingests and processes while the pages show it.
DEMO := --transit-of 3C48 --minutes 60 --antennas 24 --channels-per-subband 4 --seed 1

run: install
	$(VENV)/bin/contimg simulate --home $(HOME_DIR) --if-empty $(DEMO)
	$(VENV)/bin/contimg serve --home $(HOME_DIR) --port $(PORT)

test: install-test
	$(PY) -m pytest -q

bench: install-test
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) .pytest_cache
