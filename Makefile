# The two commands: `make run` and `make test`. Everything else is what they need.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
HOME_DIR ?= var
PORT   ?= 5006
CHROMIUM := /usr/bin/chromium

.PHONY: run test install install-test debian-tools serve bench clean

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

install-test: $(VENV)/.installed-test debian-tools

# Debian's Chromium (Playwright's own browser download fails on a closed network) and
# Debian's aoflagger (the calibration's other RFI flagger, which its tests run).
debian-tools:
	@missing=""; \
	[ -x $(CHROMIUM) ] || missing="$$missing chromium"; \
	command -v aoflagger >/dev/null || missing="$$missing aoflagger"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq $$missing; \
	fi

# An empty home first gets a demo: an hour of simulated data from just before 3C48's last
# transit (24 antennas, 4 channels per subband). It is only planned here (--live): the
# server starts at once and two background processes write the files into incoming/ in
# time order, as a correlator would, while the scheduler ingests and processes them. The
# transit falls mid-way through the first chunk, so the calibrator comes first and every
# later chunk finds its tables. A second `make run` neither re-plans nor rewrites: the
# server finishes an interrupted run (what is already there is kept).
DEMO := --transit-of 3C48 --transit-after 2.6 --minutes 60 --antennas 24 \
        --channels-per-subband 4 --seed 1 --live
# The demo images the production 3.5° field at 3 cells per beam instead of 5 (2304² cells,
# not 3840²). Measured on the 12 demo chunks, 2 busy cores: 6.2 s an image instead of
# 11.7 s, `process --once` 117 s instead of 188 s, 1.2 GB of images instead of 3.3 GB,
# with the same rms and QA (11 of 12 pass). A 2° field was tried and is worse: the
# sidelobes of sources outside it raise the rms 1.5–2× and 5 of 12 images fail QA.
# Written only with the demo, into a home with no data and no settings file: an
# operator's own settings are never replaced.
DEMO_SETTINGS := [imaging]\n\# demo: 3 cells per beam (default 5) images the 3.5° field twice as fast\ncells_per_beam = 3.0\n

run: install
	@if [ ! -e $(HOME_DIR)/contimg.toml ] && [ ! -e $(HOME_DIR)/simulation-plan.json ] && \
	  ! ls $(HOME_DIR)/incoming/*.hdf5 >/dev/null 2>&1; \
	then mkdir -p $(HOME_DIR) && printf '$(DEMO_SETTINGS)' > $(HOME_DIR)/contimg.toml && \
	  echo "wrote demo settings to $(HOME_DIR)/contimg.toml (contimg settings shows them)"; fi
	$(VENV)/bin/contimg simulate --home $(HOME_DIR) --if-empty $(DEMO)
	$(VENV)/bin/contimg serve --home $(HOME_DIR) --port $(PORT)

# A run that dies in C code prints the test it was in and the crashing thread's stack
# (tests/conftest.py writes them to $(CRASH_LOG)); a CI log shows only its tail.
CRASH_LOG := .pytest-crash.log
# The suite runs one pytest worker per core (at most 4), each taking whole test files
# (their module fixtures are built once); TEST_WORKERS=0 runs it in this one process.
# Files go out in collection order (not xdist's most-tests-first), which puts the few
# that take minutes first (tests/conftest.py SLOW_FILES_FIRST) instead of last.
TEST_WORKERS ?= $(shell n=$$(nproc); [ $$n -gt 4 ] && n=4; echo $$n)

test: install-test
	@rm -f $(CRASH_LOG) $(CRASH_LOG).*
	@CONTIMG_CRASH_LOG=$(CRASH_LOG) $(PY) -m pytest -q --durations=15 \
	  -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder || { status=$$?; \
	  for log in $$(grep -l "^Fatal Python error" $(CRASH_LOG) $(CRASH_LOG).* 2>/dev/null); do \
	    echo "--- pytest died in C code; from $$log:"; \
	    sed -n '1,3p;/^Current thread/,/^$$/p' $$log | head -c 5000; \
	    echo "--- every thread's innermost frames:"; \
	    awk '/^(Thread|Current thread) /{print; n=2; next} n>0{print; n--}' $$log \
	      | head -c 3000; done; \
	  exit $$status; }

bench: install-test
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) .pytest_cache
