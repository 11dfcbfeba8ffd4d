#!/usr/bin/env bash
# Set-up for bench/audio_quality_bench.py: espeak-ng for the synthetic speech corpus and
# blind-rt60 (PyPI) for the side-by-side RT60 comparison.  Safe to run more than once.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"

if ! command -v espeak-ng >/dev/null 2>&1; then
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
    $SUDO apt-get update
    $SUDO apt-get install -y espeak-ng
fi

# blind-rt60 is only used by the benchmark; it is not a run-time dependency of audio_quality.
if ! "$PY" -c "import blind_rt60" >/dev/null 2>&1; then
    "$PY" -m pip install "blind-rt60==0.1.1" || echo "warning: blind-rt60 could not be installed; the bench will skip the comparison" >&2
fi

espeak-ng --version
"$PY" -c "import blind_rt60, numpy, scipy; print('blind-rt60', blind_rt60.__version__)" || true
