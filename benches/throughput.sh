#!/usr/bin/env bash
# Throughput benchmark: the HTTP floor (a bare axum echo) against fraud-features, what each optional
# capability costs when it is on, and graph models over HTTP and gRPC with and without dynamic
# batching; one run, one load generator per protocol (wrk, h2load), every ratio against a baseline
# measured in the same run. See benches/throughput.py for the rows.
#
# Usage: benches/throughput.sh          (DURATION=8 CONNECTIONS=16 SECTIONS=1,2,3 by default; the
#        batched rows: MAX_BATCH_SIZE=CONNECTIONS/cores BATCH_DELAY_US=2000)
set -euo pipefail
cd "$(dirname "$0")/.."

# wrk (HTTP/1.1) and h2load (HTTP/2, for gRPC) from Debian's packages (no build needed).
source benches/need.sh
need wrk wrk
need h2load nghttp2-client
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
