#!/usr/bin/env bash
# Memory benchmarks: snapshots shared by instances, weights-only updates, a host memory budget over
# 1,000 versions, and reload hygiene (benches/memory.py says what each part measures and its goal).
#
# Usage: benches/memory.sh [pss] [update] [budget] [hygiene] [graphs]
#   GEO_MB=1024 BASELINE_INSTANCES=16 VERSIONS=1000 HOT=50 RELOADS=1000 by default.
set -euo pipefail
cd "$(dirname "$0")/.."
# The ONNX Runtime the graphs part loads, installed once per checkout.
export FERRY_TOOLS_DIR=${FERRY_TOOLS_DIR:-$PWD/target/tools}

cargo build --release -p ferry
FERRY_BIN=target/release/ferry scripts/build-models.sh >/dev/null
# numpy for the training script, pinned like the test clients.
if [[ ! -x target/py/bin/python ]]; then python3 -m venv target/py; fi
target/py/bin/pip install --quiet --disable-pip-version-check -r tests/python/requirements.txt
FERRY_BIN=target/release/ferry target/py/bin/python benches/memory.py "$@"
