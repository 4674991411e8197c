#!/usr/bin/env bash
# Builds everything (host in release mode, the sample models) and runs the main job: `ferry test` on
# each sample model — compile, initialise, run the parity self-tests shipped with it.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/build-models.sh
cargo build --release -p ferry
status=0
for wasm in target/models/*.wasm; do
    name=${wasm%.wasm}
    args=("$wasm")
    [[ -f $name.weights ]] && args+=(--weights "$name.weights")
    [[ -f $name.config.json ]] && args+=(--config "$name.config.json")
    [[ -f $name.tests.json ]] && args+=(--tests "$name.tests.json")
    target/release/ferry test "${args[@]}" || status=1
    echo
done
exit $status
