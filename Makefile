# polymodal: `make demo` and `make test` each set everything up first.
# The venv is (re)installed only when requirements/lock.txt or pyproject.toml change.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DEMO_DIR ?= runs/demo

.PHONY: setup browser demo lint test test-all bench clean help

help:
	@echo "make demo      set up, then run the main job on the built-in ShapesWorld data"
	@echo "make test      set up, then run the test suite (slow tests excluded)"
	@echo "make test-all  the full test suite, slow tests included"
	@echo "make lint      ruff: formatting and lint (part of make test)"
	@echo "make bench     run the benchmark scripts under benchmarks/"

# resemblyzer ships the speaker encoder's weights; what it declares (webrtcvad built from source, the old `typing`
# backport) is not wanted: polymodal reads only its weights file, and the lock has what its own code imports.
NO_DEPS := resemblyzer==0.1.4

setup: $(STAMP)

$(STAMP): requirements/lock.txt pyproject.toml Makefile
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements/lock.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps $(NO_DEPS)
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/polymodal demo --out $(DEMO_DIR)
	@echo "Sounds, speech and voices: $(VENV)/bin/polymodal demo audio (about 10 minutes; docs/audio.md)"
	@echo "Clips of events: $(VENV)/bin/polymodal demo video (docs/video.md)"
	@echo "Text to image: $(VENV)/bin/polymodal demo generation (docs/generation.md)"

# The server's browser test drives Debian's Chromium (Playwright's own browser download would
# reach outside the package registries). Installed from apt when missing and we may; otherwise
# that one test skips and says why.
browser:
	@test -x /usr/bin/chromium || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian chromium for the browser test"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null \
	      || echo "warning: could not install chromium: the browser test will be skipped"; \
	  else echo "note: /usr/bin/chromium missing and apt-get unavailable: the browser test will be skipped"; fi; }

lint: $(STAMP)
	$(VENV)/bin/ruff format --check src tests benchmarks examples
	$(VENV)/bin/ruff check src tests benchmarks examples

test: $(STAMP) browser lint
	$(PY) -m pytest -m "not slow" -n 2 -q

test-all: $(STAMP) browser
	$(PY) -m pytest -n 2 -q

bench: $(STAMP)
	$(PY) benchmarks/shapes_generation.py
	$(PY) benchmarks/data_loading.py
	$(PY) benchmarks/model_throughput.py
	$(PY) benchmarks/retrieval_eval.py
	$(PY) benchmarks/video_decode.py
	$(PY) benchmarks/video_training.py
	$(PY) benchmarks/generation.py

clean:
	rm -rf $(VENV) runs .pytest_cache .hypothesis
