#!/usr/bin/env bash
# Load benchmark: one run, same machine, same load generator (oha) for everything.
#   baseline   a bare axum server echoing the fraud request's JSON (benches/src/bin/axum-baseline.rs)
#   fraud      POST /v1/models/fraud-features/predict   (JSON features → transforms → logistic regression)
#   diabetes   POST /v2/models/diabetes-gbdt/infer       (OIP JSON, 1 row, 200 trees)
#   digits     POST /v2/models/digits-onnx/infer         (OIP JSON, 1 image, tract MLP)
#   python-eta POST /v1/models/python-eta/predict        (JSON features, CPython in Wasm)
#   python-sklearn-graph POST /v1/models/python-sklearn-graph/predict (JSON features, CPython in Wasm,
#              150 trees run by the host's ONNX Runtime through wasi:nn)
#   gbdt-graph POST /v2/models/gbdt-graph/infer          (OIP JSON, 1 row, LightGBM through wasi:nn)
# For each: requests/s, p50 and p99 at full load (closed loop, $CONNECTIONS connections), the ratio of
# requests/s to the baseline, and p99 at half of that target's own full-load rate (open loop).
#
# Usage: benches/load.sh            (DURATION=10s CONNECTIONS=16 by default)
set -euo pipefail
cd "$(dirname "$0")/.."
export FERRY_TOOLS_DIR=${FERRY_TOOLS_DIR:-$PWD/target/tools}
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-16}

cargo build --release -p ferry -p ferry-benches --bins
FERRY_BIN=target/release/ferry scripts/build-models.sh >/dev/null
if ! command -v oha >/dev/null; then
    [[ -x target/tools/bin/oha ]] || cargo install oha --version 1.16.0 --locked --root target/tools
    export PATH=$PWD/target/tools/bin:$PATH
fi

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

ferry=target/release/ferry
for name in fraud-features diabetes-gbdt digits-onnx python-eta python-sklearn-graph gbdt-graph; do
    files=()
    [[ -f target/models/$name.weights ]] && files+=(--weights "target/models/$name.weights")
    [[ -f target/models/$name.tests.json ]] && files+=(--tests "target/models/$name.tests.json")
    [[ -f target/models/$name.graph.model.onnx ]] && files+=(--graph "model=target/models/$name.graph.model.onnx")
    $ferry add "target/models/$name.wasm" --model "$name" --version 1 "${files[@]}" --store "$work/store" >/dev/null
done
cat > "$work/ferry.toml" <<'TOML'
[models.default]
min_instances = 2
max_instances = 4
TOML
FERRY_LOG=warn $ferry serve --listen 127.0.0.1:18080 --store "$work/store" --config "$work/ferry.toml" 2>"$work/ferry.log" &
pids+=($!)
target/release/axum-baseline 127.0.0.1:18090 &
pids+=($!)
for _ in $(seq 600); do
    curl -sf localhost:18080/v2/health/ready >/dev/null && curl -s -o /dev/null localhost:18090/echo -d '{}' -H 'content-type: application/json' && break
    sleep 0.1
done

python3 - "$work" <<'PY'
import json, sys
work = sys.argv[1]
fraud = json.load(open("sample-models/fraud-features/example-request.json"))
diabetes = json.load(open("sample-models/diabetes-gbdt/example-request.json"))
diabetes["inputs"][0]["shape"] = [1, 10]
diabetes["inputs"][0]["data"] = diabetes["inputs"][0]["data"][:1]
digits = json.load(open("sample-models/digits-onnx/example-request.json"))
eta = json.load(open("sample-models/python-eta/example-request.json"))
cancel = json.load(open("sample-models/python-sklearn-graph/example-request.json"))
gbdt = json.load(open("sample-models/gbdt-graph/example-request.json"))
gbdt["inputs"][0]["shape"] = [1, 30]
gbdt["inputs"][0]["data"] = gbdt["inputs"][0]["data"][:1]
for name, body in [("fraud", fraud), ("diabetes", diabetes), ("digits", digits), ("eta", eta),
                   ("cancel", cancel), ("gbdt", gbdt)]:
    json.dump(body, open(f"{work}/{name}.json", "w"))
PY

run() { # name url body [rate] → oha's JSON summary
    local rate=()
    [[ -n ${4:-} ]] && rate=(-q "$4")
    oha -z "$DURATION" -c "$CONNECTIONS" "${rate[@]}" -m POST -T application/json -D "$3" --no-tui --output-format json "$2" > "$work/$1.json"
}
targets=(
    "baseline http://127.0.0.1:18090/echo $work/fraud.json"
    "fraud-features http://127.0.0.1:18080/v1/models/fraud-features/predict $work/fraud.json"
    "diabetes-gbdt http://127.0.0.1:18080/v2/models/diabetes-gbdt/infer $work/diabetes.json"
    "digits-onnx http://127.0.0.1:18080/v2/models/digits-onnx/infer $work/digits.json"
    "python-eta http://127.0.0.1:18080/v1/models/python-eta/predict $work/eta.json"
    "python-sklearn-graph http://127.0.0.1:18080/v1/models/python-sklearn-graph/predict $work/cancel.json"
    "gbdt-graph http://127.0.0.1:18080/v2/models/gbdt-graph/infer $work/gbdt.json"
)
for t in "${targets[@]}"; do
    set -- $t
    oha -n 200 -c 4 -m POST -T application/json -D "$3" --no-tui "$2" >/dev/null   # warm up
    run "$1" "$2" "$3"
    half=$(python3 -c "import json; print(max(1, int(json.load(open('$work/$1.json'))['summary']['requestsPerSec'] / 2)))")
    run "$1-half" "$2" "$3" "$half"
done

python3 - "$work" <<'PY'
import json, sys
work = sys.argv[1]
def load(name):
    return json.load(open(f"{work}/{name}.json"))
def ok(r):
    codes = r.get("statusCodeDistribution", {})
    return sum(v for k, v in codes.items() if k != "200")
base = load("baseline")["summary"]["requestsPerSec"]
print(f"\n{'target':<22}{'rps':>10}{'p50 ms':>10}{'p99 ms':>10}{'vs baseline':>13}{'p99 ms @ half load':>20}{'non-200':>9}")
for name in ["baseline", "fraud-features", "diabetes-gbdt", "digits-onnx", "python-eta", "python-sklearn-graph",
             "gbdt-graph"]:
    full, half = load(name), load(name + "-half")
    rps = full["summary"]["requestsPerSec"]
    p = full["latencyPercentiles"]
    print(f"{name:<22}{rps:>10.0f}{p['p50']*1e3:>10.3f}{p['p99']*1e3:>10.3f}{rps/base:>12.2f}x"
          f"{half['latencyPercentiles']['p99']*1e3:>20.3f}{ok(full)+ok(half):>9}")
PY
