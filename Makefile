# scintiflow: `make demo` and `make test` are the two commands (see README).
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CONSTRAINTS := requirements/constraints.txt
# checkov (tests/deploy) lives in its own venv: its pins conflict with the project's.
CHECKOV_VENV ?= .venv-checkov
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed
# Debian packages the tests need: a headless browser for the report, a DICOM validator.
APT_PACKAGES ?= chromium dicom3tools
DEMO_OUT ?= ./var

export PREFECT_SERVER_ANALYTICS_ENABLED := false
export GX_ANALYTICS_ENABLED := false
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS ?= 90

.PHONY: help setup apt checkov test lint typecheck pytest demo lock montage report-screenshot clean fuzz

help:
	@echo "make demo   - set up .venv and run the demo night (results under $(DEMO_OUT))"
	@echo "make test   - set up .venv, then ruff, mypy and pytest (gpu tests skipped)"
	@echo "make report-screenshot - docs/report.png from the demo night's report"
	@echo "make lock   - refresh $(CONSTRAINTS) from the current .venv"

$(STAMP): pyproject.toml $(CONSTRAINTS)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check \
	  -c $(CONSTRAINTS) -e '.[test]'
	@touch $@

apt:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	  else sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; fi; \
	fi

setup: apt $(STAMP)

$(CHECKOV_STAMP): requirements/checkov.txt
	@test -x $(CHECKOV_VENV)/bin/python || $(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --quiet --disable-pip-version-check \
	  -r requirements/checkov.txt
	@touch $@

checkov: $(CHECKOV_STAMP)

lint: setup
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

typecheck: setup
	$(BIN)/mypy

# pytest exits 5 when a selection holds no test; that is not a failure of the suite.
pytest: setup checkov
	@rc=0; $(BIN)/pytest $(PYTEST_ARGS) || rc=$$?; [ $$rc -eq 0 ] || [ $$rc -eq 5 ] || exit $$rc

test: lint typecheck pytest

demo: setup
	$(BIN)/scintiflow demo --out $(DEMO_OUT)

montage: setup
	$(BIN)/scintiflow montage --out docs/montage.png

# The README's report picture: the demo night's newest report, rendered again with a screenshot.
DEMO_NIGHT ?= 2026-11-27
report-screenshot: setup
	@test -f $(DEMO_OUT)/results/$(DEMO_NIGHT)/latest.json || $(MAKE) demo
	$(BIN)/python -c 'import json, sys; from pathlib import Path; \
	from scintiflow.outputs.report import screenshot; \
	m = json.load(open(sys.argv[1])); \
	screenshot(Path(sys.argv[2]) / Path(m["manifest"]).parent / "report.html", Path("docs/report.png"))' \
	  $(DEMO_OUT)/results/$(DEMO_NIGHT)/latest.json $(DEMO_OUT)
	@echo "docs/report.png"

# Coverage-guided fuzzing of the decoder + row checks (docs/bad-inputs.md); crashes land in
# $(FUZZ_DIR) as crash-<sha1>. `make test` runs a bounded 60 s of it (tests/fuzz/test_fuzz.py).
FUZZ_SECONDS ?= 300
FUZZ_DIR ?= ./var/fuzz
fuzz: setup
	PYTHONPATH=$(CURDIR)/src:$(CURDIR) $(BIN)/python tests/fuzz/fuzz_decode.py $(FUZZ_DIR) \
	  -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1

lock:
	$(BIN)/python -m pip freeze --exclude-editable | grep -v '^-e ' > $(CONSTRAINTS)

clean:
	rm -rf $(DEMO_OUT) .pytest_cache .mypy_cache .ruff_cache
