#!/usr/bin/env bash
# What a request costs in instructions (callgrind): the axum echo, fraud-features' predict at the
# default log level and at warn, and each optional capability off and on. See
# benches/request_cost.py; benches/throughput.sh measures the same rows in CPU time and requests/s.
#
# Usage: benches/request-cost.sh   (N=2000 WARM=300 CAPABILITIES=log,shadow)
set -euo pipefail
cd "$(dirname "$0")/.."

source benches/need.sh
need valgrind valgrind
need h2load nghttp2-client
need curl curl
cargo build --release -p ferry -p ferry-benches --bins
FERRY_BIN=target/release/ferry scripts/build-models.sh --rust-only >/dev/null
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 benches/request_cost.py "$work"
