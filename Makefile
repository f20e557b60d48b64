# ivrserver — the two commands a newcomer needs are `make run` and `make test`.
# Everything they need is installed here (Debian packages, a Python venv, the Asterisk chroot).

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
APT_PACKAGES := redis-server postgresql sip-tester mmdebstrap zstd chromium fonts-wqy-microhei espeak-ng sox
# make call CALL_LANG=zh: the language menu (9), then Mandarin (2), then DIGITS
CALL_ZH_KEYS := 9,2,

.PHONY: run call test unit integration lint bench deps asterisk clean help

help:
	@echo "make run    bring up Redis + PostgreSQL + Asterisk + ivrserver on 127.0.0.1 (Ctrl-C stops all)"
	@echo "make call   place one SIPp test call to the hotline 1860 (while make run is up);"
	@echo "            CALL_LANG=zh walks it in Mandarin (presses 9, 2 first), DIGITS=..., CALLER=..."
	@echo "make test   install what is missing, run unit + integration + browser tests"
	@echo "make lint   ruff (style, bugs, complexity); make test runs it first"
	@echo "make bench  run the benchmarks and print their tables"

deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $(STAMP)

asterisk: deps
	@scripts/asterisk-chroot ensure >/dev/null

run: deps $(STAMP) asterisk
	$(PY) -m ivrserver.devstack run

call: deps $(STAMP)
	$(PY) -m ivrserver.devstack call --digits "$(if $(filter zh,$(CALL_LANG)),$(CALL_ZH_KEYS))$(if $(filter undefined,$(origin DIGITS)),1,$(DIGITS))" --caller "$(or $(CALLER),5551234)"

unit: $(STAMP)
	$(PY) -m pytest -q -m "not integration" tests

integration: deps $(STAMP) asterisk
	$(PY) -m pytest -q -m integration tests

test: deps $(STAMP) lint asterisk
	$(PY) -m pytest -q tests

# ruff: style, imports, bugbear, async traps and function complexity (C90, limit in pyproject.toml)
lint: $(STAMP)
	$(VENV)/bin/ruff check ivrserver tests bench scripts/hash-password

bench: deps $(STAMP) asterisk
	@for b in bench/*_bench.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
