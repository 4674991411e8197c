#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs the wasm32-wasip2 target, builds the sample models
# and the hostile test guests, then runs every unit, integration and end-to-end test, and runs each
# benchmark once in test mode so they cannot rot.
set -euo pipefail
cd "$(dirname "$0")/.."

# Incremental state is for editing sessions; in a test run it only costs disk.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
# Pinned tools Ferry installs on first use (componentize-py, the ONNX Runtime wheel), once per checkout.
export FERRY_TOOLS_DIR=${FERRY_TOOLS_DIR:-$PWD/target/tools}
# Where the run's time goes, so the suite can be kept within CI's budget.
phase() { echo "== test.sh: $1 at $((SECONDS / 60))m$((SECONDS % 60))s" >&2; }
# The host side first, with the features `cargo test --all-targets` resolves, so the test run below
# reuses the build (a `cargo build -p ferry` alone resolves other features of serde, hashbrown, … and
# compiles wasmtime twice); its `ferry` builds the Python samples.
# One direction between the host's modules (front end → serving → registry → runtime → engine,
# storage): an import cycle fails the run before anything is built.
phase "checking the modules' directions"
python3 scripts/modcycles.py host/src
# The Rust guests build for wasm32 beside the host (cargo locks each profile's directory, so the two
# builds do not wait for each other), filling the cores the host build leaves idle; their output is
# shown once they are done.
phase "building the host, and the Rust guests beside it"
guests_log=$(mktemp "${TMPDIR:-/tmp}/ferry-guests.XXXXXX")
scripts/build-models.sh --rust-only >"$guests_log" 2>&1 &
guests=$!
# What the run needs besides its own builds, fetched while they compile (downloads and unpacking,
# little CPU): the clients the tests drive the server with, the browser, the deploy checks' tools
# (the deploy checks themselves run here too), the S3 server, the contract fuzzer.
tools_log=$(mktemp "${TMPDIR:-/tmp}/ferry-tools.XXXXXX")
(
    set -e
    if [[ ! -x target/py/bin/python ]]; then python3 -m venv target/py; fi
    target/py/bin/pip install --quiet --disable-pip-version-check -r tests/python/requirements.txt
    # One apt at a time: Node.js (for the JavaScript models), the browser, then the deploy checks'
    # Prometheus.
    scripts/node.sh
    scripts/browser.sh
    scripts/validate-deploy.sh
    scripts/seaweedfs.sh install
    scripts/schemathesis.sh install
) >"$tools_log" 2>&1 &
tools=$!
if ! cargo build --all-targets; then
    kill "$guests" "$tools" 2>/dev/null || true
    wait "$guests" "$tools" 2>/dev/null || true
    rm -f "$guests_log" "$tools_log"
    exit 1
fi
if ! wait "$guests"; then
    cat "$guests_log" >&2
    echo "building the Rust guests failed" >&2
    exit 1
fi
tail -n 3 "$guests_log"
rm -f "$guests_log"
if ! wait "$tools"; then
    cat "$tools_log" >&2
    echo "installing the run's tools, or the deploy checks, failed" >&2
    exit 1
fi
# The deploy checks' report (they ran while the host built).
grep -E '^(ok|FAIL) ' "$tools_log" || true
rm -f "$tools_log"
# The Python models (componentize-py, one core) build while the clients install and the HTTP contract
# is fuzzed; only `cargo test` needs them.
phase "building the Python models, beside the clients and the contract fuzzing"
python_log=$(mktemp "${TMPDIR:-/tmp}/ferry-python-models.XXXXXX")
FERRY_BIN=target/debug/ferry scripts/build-models.sh >"$python_log" 2>&1 &
python_models=$!
s3_dir=
# However the run ends: the background build stopped, the store server stopped.
cleanup() {
    kill "$python_models" 2>/dev/null || true
    if [[ -n $s3_dir ]]; then
        scripts/seaweedfs.sh stop "$s3_dir" >/dev/null 2>&1 || true
        rm -rf "$s3_dir"
    fi
    rm -f "$python_log"
}
trap cleanup EXIT

# One real S3-compatible store (SeaweedFS, from PyPI) for the whole run, on loopback ports; each test
# works under its own prefix. Stopped however the run ends (`cleanup`).
s3_dir=$(mktemp -d "${TMPDIR:-/tmp}/ferry-test-s3.XXXXXX")
scripts/seaweedfs.sh start "$s3_dir" >/dev/null
export FERRY_TEST_S3_DIR=$s3_dir

phase "fuzzing the HTTP contract"
scripts/schemathesis.sh

if ! wait "$python_models"; then
    cat "$python_log" >&2
    echo "building the Python models failed" >&2
    exit 1
fi
tail -n 3 "$python_log"

# The workspace's default members are the host-side crates; guests were built for wasm32 above.
phase "testing"
status=0
cargo test --all-targets --no-fail-fast || status=$?
# The guest SDK is not a default member: its unit tests run natively in the release profile, whose
# proc macros are built unoptimised (quick to compile, and they run briefly).
cargo test --release -p ferry-sdk || status=$?
phase "done"
exit "$status"
