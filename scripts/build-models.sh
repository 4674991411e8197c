#!/usr/bin/env bash
# Builds every sample model into target/models/<name>.wasm, with its weights, config and tests files
# beside it (target/models/<name>.weights, .config.json, .tests.json), and the hostile test guests into
# target/test-guests/. Installs the wasm32-wasip2 target if it is missing, and componentize-py for the
# Python sample.
set -euo pipefail
cd "$(dirname "$0")/.."

rustup target add wasm32-wasip2 >/dev/null

samples=(fraud-features diabetes-gbdt digits-onnx)
guests=(hostile-guest wrong-contract-guest)
packages=()
for p in "${samples[@]}" "${guests[@]}"; do packages+=(-p "$p"); done
cargo build --release --target wasm32-wasip2 "${packages[@]}"

built=target/wasm32-wasip2/release
mkdir -p target/models target/test-guests
for name in "${samples[@]}"; do
    dir=sample-models/$name
    cp "$built/${name//-/_}.wasm" "target/models/$name.wasm"
    # A sample declares its version files by name: weights.file holds the weights file's name.
    if [[ -f $dir/weights.file ]]; then cp "$dir/$(cat "$dir/weights.file")" "target/models/$name.weights"; fi
    if [[ -f $dir/config.json ]]; then cp "$dir/config.json" "target/models/$name.config.json"; fi
    if [[ -f $dir/weights.file && -f $dir/tests.json ]]; then cp "$dir/tests.json" "target/models/$name.tests.json"; fi
done
for name in "${guests[@]}"; do
    cp "$built/${name//-/_}.wasm" "target/test-guests/$name.wasm"
done

# Python samples are built by `ferry build` itself (componentize-py, pinned, installed on first use into
# $FERRY_TOOLS_DIR). FERRY_BIN names a ferry binary already built; otherwise a debug one is built.
python_samples=(python-eta)
if [[ -z ${FERRY_BIN:-} ]]; then
    cargo build -p ferry
    FERRY_BIN=target/debug/ferry
fi
export FERRY_TOOLS_DIR=${FERRY_TOOLS_DIR:-$PWD/target/tools}
for name in "${python_samples[@]}"; do
    dir=sample-models/$name
    "$FERRY_BIN" build "$dir"
    cp "$dir/target/ferry/$name.wasm" "target/models/$name.wasm"
    cp "$dir/$(cat "$dir/weights.file")" "target/models/$name.weights"
    cp "$dir/tests.json" "target/models/$name.tests.json"
done
"$FERRY_BIN" build tests/python-sdk-guest
cp tests/python-sdk-guest/target/ferry/python-sdk-guest.wasm target/test-guests/
ls -l target/models target/test-guests
