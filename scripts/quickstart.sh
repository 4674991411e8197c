#!/usr/bin/env bash
# Builds everything (the host in release mode, the sample models), self-tests each sample with
# `ferry test`, puts them into the embedded store ./ferry-store, and serves them on 127.0.0.1:8080.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release -p ferry
ferry=target/release/ferry
# Pinned tools Ferry installs on first use (componentize-py, the ONNX Runtime wheel) live in the checkout.
export FERRY_TOOLS_DIR=${FERRY_TOOLS_DIR:-$PWD/target/tools}
FERRY_BIN=$ferry scripts/build-models.sh

for wasm in target/models/*.wasm; do
    base=${wasm%.wasm}
    name=$(basename "$base")
    files=()
    [[ -f $base.weights ]] && files+=(--weights "$base.weights")
    [[ -f $base.config.json ]] && files+=(--config "$base.config.json")
    [[ -f $base.tests.json ]] && files+=(--tests "$base.tests.json")
    [[ -f $base.profile.json ]] && files+=(--profile "$base.profile.json")
    for graph in "$base".graph.*.onnx; do
        [[ -f $graph ]] || continue
        graph_name=${graph#"$base.graph."}
        files+=(--graph "${graph_name%.onnx}=$graph")
    done
    $ferry test "$wasm" "${files[@]}"
    if [[ ! -f ferry-store/models/$name/1.json ]]; then
        $ferry add "$wasm" --model "$name" --version 1 "${files[@]}" --store ferry-store
    fi
    echo
done

cat <<'TXT'
Serving the sample models on http://127.0.0.1:8080 — try, from another terminal:
  curl -s localhost:8080/v2/models/digits-onnx
  curl -s -X POST localhost:8080/v2/models/digits-onnx/infer -d @sample-models/digits-onnx/example-request.json
  curl -s -X POST localhost:8080/v2/models/diabetes-gbdt/infer -d @sample-models/diabetes-gbdt/example-request.json
  curl -si -X POST localhost:8080/v1/models/fraud-features/predict -d @sample-models/fraud-features/example-request.json
  curl -s -X POST localhost:8080/v1/models/python-eta/predict -d @sample-models/python-eta/example-request.json
  curl -s -X POST localhost:8080/v1/models/geo-embeddings/predict -d @sample-models/geo-embeddings/example-request.json
  curl -s -X POST localhost:8080/v1/models/python-sklearn-graph/predict -d @sample-models/python-sklearn-graph/example-request.json
  curl -s -X POST localhost:8080/v2/models/gbdt-graph/infer -d @sample-models/gbdt-graph/example-request.json
  curl -s -X POST localhost:8080/v2/models/digits-graph/infer -d @sample-models/digits-graph/example-request.json
  curl -s localhost:8080/metrics
TXT
exec $ferry serve --listen 127.0.0.1:8080 --store ferry-store
