# The two README commands are `make demo` and `make test`; everything else
# here is what they are built from. Run as root on Debian 12 (apt-get).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip

# Runtime: pango for WeasyPrint, IPAex/IPAmj fonts for certificates,
# poppler + zbar to read QR codes back from PDFs, CUPS to print.
SYSTEM_PACKAGES := python3 python3-venv python3-pip libpango-1.0-0 libpangoft2-1.0-0 \
	fonts-ipaexfont fonts-ipamj-mincho poppler-utils zbar-tools cups-client cups-ipp-utils
# Tests add a real browser, a real print queue and a PDF printer, and
# systemd-analyze to verify the units in deploy/systemd/.
TEST_SYSTEM_PACKAGES := chromium chromium-driver cups printer-driver-cups-pdf systemd
# The pair's tests (tests/pair/) add xfsprogs for the takeover test's instant
# block-level copies, and Pacemaker's, corosync's and DRBD's own tools to
# check deploy/pair/ offline — without their recommendations (a mail server,
# every fence agent). Where systemd runs, installing pacemaker-cli-utils
# starts a one-node cluster on loopback: systemctl disable --now pacemaker corosync.
PAIR_TEST_SYSTEM_PACKAGES := xfsprogs pacemaker-cli-utils drbd-utils

.PHONY: demo test system-packages test-system-packages install install-test promtool lock browser-test-packages mutation

# The outage day first (headless Chromium at the desks, about a minute once
# its register is generated), then the demo to explore; a day that fails
# says why and the demo still starts.
demo: system-packages test-system-packages install-test
	-$(VENV)/bin/sonae demo outage
	$(VENV)/bin/sonae demo run

# One pytest worker per core, each running whole test files (--dist loadfile):
# a file's module-scoped fixtures, such as the outage day the e2e tests read,
# are built once. About 17 min on two cores against 25–26 min in one process.
test: system-packages test-system-packages install-test promtool browser-test-packages
	$(VENV)/bin/pytest -q -p no:cacheprovider -n $$(( $$(nproc) + 1 )) --dist loadfile

# axe-core from the npm registry, pinned with its integrity hash in
# tests/browser/package-lock.json (never from a CDN), for the browser tests only.
browser-test-packages:
	npm ci --prefix tests/browser --no-audit --no-fund --loglevel=error

system-packages:
	@if command -v apt-get >/dev/null; then \
	  missing=$$(for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	  if [ -n "$$missing" ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; fi; \
	fi

# npm fetches axe-core, the accessibility engine the browser tests load into
# each page: Debian's package only where no npm is installed already.
test-system-packages:
	@if command -v apt-get >/dev/null; then \
	  missing=$$(for p in $(TEST_SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	  if [ -n "$$missing" ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; fi; \
	  missing=$$(for p in $(PAIR_TEST_SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	  if [ -n "$$missing" ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; fi; \
	  command -v npm >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm; }; \
	fi

$(PY):
	python3 -m venv $(VENV)

# Installs take every third-party package from a lock with hashes (pip
# refuses anything unpinned or altered), then Sonae itself without
# resolving anything. `install` is a production install (what the image
# has); `install-test` adds the demo and test extras and cloudsim, the
# stand-in upstream, which is its own distribution in cloudsim/.
install: $(PY)
	$(PIP) install -q --require-hashes -r requirements.lock
	$(PIP) install -q --no-deps --no-build-isolation -e .

install-test: $(PY)
	$(PIP) install -q --require-hashes -r requirements-dev.lock
	$(PIP) install -q --no-deps --no-build-isolation -e . -e ./cloudsim

# Regenerate both locks from pyproject.toml (needs PyPI) after changing a
# dependency; pins already in a lock are kept while they still fit, so
# delete the lock files first to take newer releases. pip-tools runs in
# a venv of its own, outside the appliance's. Extras stay in the lock
# (fonttools[woff]==…): the pip that `python3 -m venv` brings refuses a
# hash-checked install where a package asks for an extra the lock does not pin.
LOCK_VENV := .venv-lock
LOCK := CUSTOM_COMPILE_COMMAND="make lock" $(LOCK_VENV)/bin/pip-compile -q --generate-hashes --allow-unsafe --all-build-deps \
	--no-strip-extras --no-emit-index-url --no-emit-find-links
lock:
	test -x $(LOCK_VENV)/bin/pip-compile || (python3 -m venv $(LOCK_VENV) && $(LOCK_VENV)/bin/pip install -q pip-tools)
	$(LOCK) -o requirements.lock pyproject.toml
	$(LOCK) --extra demo --extra test -o requirements-dev.lock pyproject.toml

# promtool ships only inside Debian's prometheus package; extract the binary
# alone instead of installing the whole server.
promtool: $(VENV)/bin/promtool
$(VENV)/bin/promtool: | $(PY)
	@set -e; tmp=$$(mktemp -d); cd $$tmp; apt-get download prometheus >/dev/null 2>&1 || (apt-get update -qq && apt-get download prometheus >/dev/null); \
	dpkg-deb -x prometheus_*.deb root; cp root/usr/bin/promtool $(CURDIR)/$(VENV)/bin/promtool; rm -rf $$tmp

# Mutation testing of the rule modules (README "Mutation testing"): a tool,
# not a gate. [tool.mutmut] in pyproject.toml picks the files and the fast
# in-process tests; these are the rule functions run (mutmut's names, one
# glob per group). `make mutation MUTATION_TARGETS='fallback.audit.*'` runs
# one group. mutmut's progress goes to mutants/run.log, the score to the
# terminal; `.venv/bin/mutmut show NAME` shows a survivor. Takes ≈ 20 min on
# 2 busy cores (README).
MUTATION_TARGETS ?= \
	'fallback.counter.issuance.x_validate_form*' 'fallback.counter.issuance.x_requester_*' \
	'fallback.counter.issuance.x_plan_request*' 'fallback.counter.issuance.x_check_*' \
	'fallback.counter.issuance.x_fee_yen*' 'fallback.counter.issuance.x_printed_items*' \
	'fallback.counter.issuance.x__missing_item*' 'fallback.counter.issuance.x__active_seal*' \
	'fallback.counter.issuance.x__members*' 'fallback.counter.issuance.x__take_serials*' \
	'fallback.counter.lookup.*' \
	'sync.contract.x_validate_*' 'sync.contract.x__validate_*' 'sync.contract.x__missing*' \
	'sync.contract.x_parse_date*' 'sync.contract.x_parse_timestamp*' \
	'fallback.modes.*' \
	'fallback.monitoring.alerts.x_snapshot_conditions*' 'fallback.monitoring.alerts.x_disk_conditions*' \
	'fallback.monitoring.alerts.x_audit_conditions*' \
	'fallback.audit.*'
mutation: install-test
	rm -rf mutants && mkdir mutants  # fresh: a cached run would not know tests added since
	nice -n 10 $(VENV)/bin/mutmut run --max-children 2 $(MUTATION_TARGETS) > mutants/run.log 2>&1 || (tail -20 mutants/run.log; false)
	$(PY) -m tests.mutation_score $(MUTATION_TARGETS)
