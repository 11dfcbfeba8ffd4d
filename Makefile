# One-command entry points; each installs what it needs into .venv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: install system-packages test test-fast lint typecheck demo run dev bench bench-churn bench-audio bench-archive bench-wrk \
	bench-crossing bench-scale bench-repair bench-faults

$(VENV)/.installed: requirements.txt requirements-dev.txt constraints.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -r requirements.txt -r requirements-dev.txt
	touch $@

install: $(VENV)/.installed

system-packages:
	scripts/install-system-packages.sh

test: install system-packages
	$(PY) -m pytest -q

# ruff ([tool.ruff] in pyproject.toml): the checks, and that the tree is formatted as `ruff format` leaves it.
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# mypy over the product modules and packages ([tool.mypy] in pyproject.toml).
typecheck: install
	$(VENV)/bin/mypy

# The edit loop: pure code, the routes through Flask's test client, the memory store; no processes or Redis.
test-fast: install
	$(PY) -m pytest -q -m "not slow" -p no:cacheprovider

# make demo DEMO_LINGER=600 (seconds, or forever) keeps Quorum, its dashboard and the emulator up after the scenario.
DEMO_LINGER ?= 0
demo: install
	$(PY) -m emulator.demo --linger $(DEMO_LINGER)

# The production server (gunicorn, serving.py's settings); `make dev` is the development server (and ngrok).
run: install
	$(PY) -c 'import app; app.cli()' run

dev: install
	$(PY) app.py

bench: install system-packages
	$(PY) bench/webhook_bench.py --repeat 3

bench-churn: install
	$(PY) bench/churn_bench.py --json bench/results/churn.json

# Throughput driven by wrk (Debian's package), against the bare route served the same way.
bench-wrk: install system-packages
	command -v wrk >/dev/null || apt-get install -y -qq wrk
	$(PY) bench/wrk_bench.py

# From a threshold-crossing callback to its REST command, 400 live conferences (target p99 <= 15 ms).
bench-crossing: install system-packages
	$(PY) bench/crossing_bench.py

# A thousand live conferences on the emulator, two gunicorn workers on Redis.
bench-scale: install system-packages
	$(PY) bench/scale_bench.py

# Lost leaves, joins and holds among a thousand live conferences: time to repair (memory, then Redis).
bench-repair: install system-packages
	$(PY) bench/repair_bench.py

# The issue's fault table against the memory store (with and without its state file) and two workers on Redis.
bench-faults: install system-packages
	$(PY) bench/fault_drill.py --json bench/results/fault_drill.json

bench-audio: install
	bench/audio_quality_setup.sh
	$(PY) bench/audio_quality_bench.py --quick

# Before/after in one run: make bench-archive ARCHIVE_BENCH_ARGS="--quorum-dir /tmp/index-before"
bench-archive: install
	$(PY) bench/archive_bench.py $(ARCHIVE_BENCH_ARGS) --json bench/results/archive.json
