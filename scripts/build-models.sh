#!/usr/bin/env bash
# Builds every sample model into target/models/<name>.wasm, with its weights, config and tests files
# beside it (target/models/<name>.weights, .config.json, .tests.json, .profile.json) and its ONNX graphs
# (target/models/<name>.graph.<NAME>.onnx), and the hostile test guests into
# target/test-guests/. Installs the wasm32-wasip2 target if it is missing, componentize-py for the
# Python samples, and Node.js (Debian's, when missing) and jco for the JavaScript one.
set -euo pipefail
cd "$(dirname "$0")/.."

rustup target add wasm32-wasip2 >/dev/null

samples=(fraud-features diabetes-gbdt digits-onnx geo-embeddings gbdt-graph digits-graph)
guests=(hostile-guest wrong-contract-guest graph-guest)
packages=()
for p in "${samples[@]}" "${guests[@]}"; do packages+=(-p "$p"); done
cargo build --release --target wasm32-wasip2 "${packages[@]}"

# A sample's version files go beside its component. A sample declares them by name: weights.file holds
# the weights file's name; graphs holds NAME=FILE lines, one per ONNX graph; a tests.json beside weights
# or graphs is the version's tests file (or the file tests.file names; without either, the model
# compiles its tests in). Paths are relative to the sample's folder.
version_files() { # name
    local dir=sample-models/$1
    rm -f target/models/"$1".graph.*.onnx
    if [[ -f $dir/weights.file ]]; then cp "$dir/$(cat "$dir/weights.file")" "target/models/$1.weights"; fi
    if [[ -f $dir/config.json ]]; then cp "$dir/config.json" "target/models/$1.config.json"; fi
    rm -f target/models/"$1".profile.json
    if [[ -f $dir/profile.json ]]; then cp "$dir/profile.json" "target/models/$1.profile.json"; fi
    if [[ -f $dir/graphs ]]; then
        while IFS='=' read -r graph file; do
            [[ -n $graph ]] && cp "$dir/$file" "target/models/$1.graph.$graph.onnx"
        done < "$dir/graphs"
    fi
    if [[ -f $dir/tests.file ]]; then
        cp "$dir/$(cat "$dir/tests.file")" "target/models/$1.tests.json"
    elif [[ ( -f $dir/weights.file || -f $dir/graphs ) && -f $dir/tests.json ]]; then
        cp "$dir/tests.json" "target/models/$1.tests.json"
    fi
}

built=target/wasm32-wasip2/release
mkdir -p target/models target/test-guests
for name in "${samples[@]}"; do
    cp "$built/${name//-/_}.wasm" "target/models/$name.wasm"
    version_files "$name"
done
for name in "${guests[@]}"; do
    cp "$built/${name//-/_}.wasm" "target/test-guests/$name.wasm"
done

# `--rust-only`: the Rust samples and guests alone, which need no ferry binary (scripts/test.sh builds
# them beside the host, then runs this again for the Python ones).
if [[ ${1:-} == --rust-only ]]; then
    exit 0
fi

# Python samples are built by `ferry build` itself (componentize-py, pinned, installed on first use into
# $FERRY_TOOLS_DIR). FERRY_BIN names a ferry binary already built; otherwise a debug one is built.
python_samples=(python-eta python-sklearn-graph)
if [[ -z ${FERRY_BIN:-} ]]; then
    cargo build -p ferry
    FERRY_BIN=target/debug/ferry
fi
export FERRY_TOOLS_DIR=${FERRY_TOOLS_DIR:-$PWD/target/tools}
for name in "${python_samples[@]}"; do
    "$FERRY_BIN" build "sample-models/$name"
    cp "sample-models/$name/target/ferry/$name.wasm" "target/models/$name.wasm"
    version_files "$name"
done
# JavaScript samples: `ferry build` runs jco (pinned, installed with npm on first use).
js_samples=(surge-js)
scripts/node.sh
for name in "${js_samples[@]}"; do
    "$FERRY_BIN" build "sample-models/$name"
    cp "sample-models/$name/target/ferry/$name.wasm" "target/models/$name.wasm"
    version_files "$name"
done
"$FERRY_BIN" build tests/python-sdk-guest
cp tests/python-sdk-guest/target/ferry/python-sdk-guest.wasm target/test-guests/
"$FERRY_BIN" build tests/js-sdk-guest
cp tests/js-sdk-guest/target/ferry/js-sdk-guest.wasm target/test-guests/
ls -l target/models target/test-guests
