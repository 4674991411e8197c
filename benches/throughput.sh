#!/usr/bin/env bash
# Throughput benchmark: the HTTP floor (a bare axum echo) against fraud-features, what each optional
# capability costs when it is on, and graph models over HTTP; one run, one load generator (wrk), every
# ratio against a baseline measured in the same run. See benches/throughput.py for the rows.
#
# Usage: benches/throughput.sh          (DURATION=8 CONNECTIONS=16 by default)
set -euo pipefail
cd "$(dirname "$0")/.."

# wrk from Debian's packages (no build needed).
if ! command -v wrk >/dev/null; then
    if [[ $(id -u) -eq 0 ]]; then
        apt-get install -y -qq wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
    else
        echo "benches/throughput.sh needs wrk (Debian: apt-get install wrk)" >&2
        exit 1
    fi
fi
cargo build --release -p ferry -p ferry-benches --bins
FERRY_BIN=target/release/ferry scripts/build-models.sh --rust-only >/dev/null
# The 4.5 MB MLP graph, generated (onnx + numpy from the test environment).
if [[ ! -f target/graphs/mlp.onnx ]]; then
    [[ -x target/py/bin/python ]] || { python3 -m venv target/py && target/py/bin/pip install --quiet -r tests/python/requirements.txt; }
    target/py/bin/python benches/graphs/make_mlp.py --out target/graphs/mlp.onnx >/dev/null
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 benches/throughput.py "$work"
