# kernelbox: the two set-up commands are `make demo` (the main job) and `make test` (the suite).
# Both create .venv/ and install everything they need, from a fresh Debian machine with Python 3.11.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint unit-test upstream-newest wheel-smoke peer-test test-isolation-unprivileged bench doctor sandbox-prereqs enterprise-gateway clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,examples]'
	touch $(STAMP)

sandbox-prereqs:
	bash scripts/install-sandbox-prereqs.sh

# Jupyter Enterprise Gateway for the remote-gateway tests, in its own venv (its pins clash).
enterprise-gateway:
	bash scripts/install-enterprise-gateway.sh

# The main job: the real-data example, cell by cell in one sandboxed kernel, charts in images/.
demo: $(STAMP) sandbox-prereqs
	bash scripts/demo.sh

# The whole test suite (asyncio and trio; real gateways, kernels and sandbox on loopback), the
# upstream guard against the newest allowed releases, the peer's own tests (ipybox 0.9.2,
# unmodified; see tests/peer/README.md), then the packaging smoke test.
test: lint unit-test upstream-newest peer-test wheel-smoke

# ruff (with the flake8-async and blind-except rules) and mypy, strict on kernelbox/.
lint: $(STAMP)
	$(BIN)/ruff check kernelbox tests benchmarks examples scripts
	$(BIN)/mypy

unit-test: $(STAMP) sandbox-prereqs enterprise-gateway
	$(BIN)/python -m pytest -q
	if [ "$$(id -u)" -eq 0 ]; then bash scripts/test-isolation-unprivileged.sh; fi

# The upstream guard (tests/test_upstream_internals.py) and the wire tests in a venv of their own
# (.cache/upstream-newest, kept while pyproject.toml is unchanged) with the packages whose
# internals kernelbox relies on upgraded to the newest releases their bounds allow.
upstream-newest:
	$(PYTHON) scripts/upstream_newest.py

# tests/test_isolation.py as an unprivileged user (created when run as root): the sandbox then
# runs as that user's own uid and the cgroup limits must be refused clearly.
test-isolation-unprivileged: $(STAMP) sandbox-prereqs
	bash scripts/test-isolation-unprivileged.sh

# Build the wheel and sdist, install the wheel alone into a fresh venv outside the checkout,
# and reach a sandboxed print(1) with the documented commands.
wheel-smoke: $(STAMP) sandbox-prereqs
	PYTHON=$(PYTHON) bash scripts/wheel-smoke.sh

# ipybox 0.9.2's own kernel-manager integration tests, unmodified, against kernelbox.
peer-test: $(STAMP)
	$(BIN)/python scripts/peer_tests.py

# The benchmark suite: kernelbox (plain and sandboxed) vs direct ZMQ and ipybox, interleaved.
bench: $(STAMP) sandbox-prereqs
	bash benchmarks/setup_peer.sh
	$(BIN)/python -m benchmarks

doctor: $(STAMP)
	$(BIN)/kernelbox doctor

clean:
	rm -rf $(VENV) .tools .cache images .pytest_cache demo-workspace
