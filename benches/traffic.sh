#!/usr/bin/env bash
# Traffic benchmark: what shadowing and the prediction log cost the primary's callers, in one run on
# one server, with one load generator (oha):
#   shadow  the primary's p99 at a fixed request rate (open loop, half of its own full-load rate
#           measured first) with no shadow, then with 100 % of requests copied to a twin version
#           (goal: p99 ≤ 1.1× of none); also the copies compared and dropped.
#   log     requests/s at full load (closed loop) with no prediction log, then with 100 % logged
#           (goal: ≥ 0.9× of none); also records written and dropped.
# For fraud-features (JSON, microseconds per call) and diabetes-gbdt (OIP tensors, 200 trees).
#
# Usage: benches/traffic.sh        (DURATION=10s CONNECTIONS=16 by default)
set -euo pipefail
cd "$(dirname "$0")/.."
export FERRY_TOOLS_DIR=${FERRY_TOOLS_DIR:-$PWD/target/tools}
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-16}

cargo build --release -p ferry
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
for name in fraud-features diabetes-gbdt; do
    files=()
    [[ -f target/models/$name.weights ]] && files+=(--weights "target/models/$name.weights")
    [[ -f target/models/$name.tests.json ]] && files+=(--tests "target/models/$name.tests.json")
    for v in 1 2; do
        $ferry add "target/models/$name.wasm" --model "$name" --version $v "${files[@]}" --store "$work/store" >/dev/null
    done
done
cat > "$work/ferry.toml" <<'TOML'
[host]
require_self_tests = false
[models.default]
min_instances = 2
max_instances = 4
TOML
base=http://127.0.0.1:18180
FERRY_LOG=warn $ferry serve --listen 127.0.0.1:18180 --store "$work/store" --config "$work/ferry.toml" 2>"$work/ferry.log" &
pids+=($!)
for _ in $(seq 600); do curl -sf $base/v2/health/ready >/dev/null && break; sleep 0.1; done
put() { curl -sf -X PUT "$base$1" -H 'content-type: application/json' -d "$2" >/dev/null; }
for name in fraud-features diabetes-gbdt; do
    put "/v1/models/$name/aliases/production" '{"version": "1"}'
done

python3 - "$work" <<'PY'
import json, sys
work = sys.argv[1]
fraud = json.load(open("sample-models/fraud-features/example-request.json"))
diabetes = json.load(open("sample-models/diabetes-gbdt/example-request.json"))
diabetes["inputs"][0]["shape"] = [1, 10]
diabetes["inputs"][0]["data"] = diabetes["inputs"][0]["data"][:1]
json.dump(fraud, open(f"{work}/fraud-features.json", "w"))
json.dump(diabetes, open(f"{work}/diabetes-gbdt.json", "w"))
PY

run() { # out url body [rate] → oha's JSON summary
    local rate=()
    [[ -n ${4:-} ]] && rate=(-q "$4")
    oha -z "$DURATION" -c "$CONNECTIONS" "${rate[@]}" -m POST -T application/json -D "$3" --no-tui --output-format json "$2" > "$work/$1.json"
}
rps() { python3 -c "import json; print(json.load(open('$work/$1.json'))['summary']['requestsPerSec'])"; }

for name in fraud-features diabetes-gbdt; do
    if [[ $name == fraud-features ]]; then url=$base/v1/models/$name/predict; else url=$base/v2/models/$name/infer; fi
    body=$work/$name.json
    oha -n 500 -c 4 -m POST -T application/json -D "$body" --no-tui "$url" >/dev/null   # warm up
    # Prediction log: full load without, then with every request logged.
    put "/v1/models/$name/traffic" '{}'
    run "$name-log-none" "$url" "$body"
    put "/v1/models/$name/traffic" '{"log": {"percent": 100}}'
    run "$name-log-all" "$url" "$body"
    # Shadow: a fixed rate (half of the unlogged full load), without and with a copy of every request.
    half=$(python3 -c "print(max(1, int($(rps "$name-log-none") / 2)))")
    put "/v1/models/$name/traffic" '{}'
    run "$name-shadow-none" "$url" "$body" "$half"
    put "/v1/models/$name/traffic" '{"shadow": {"version": "2", "percent": 100}}'
    run "$name-shadow-all" "$url" "$body" "$half"
    sleep 1
    curl -sf "$base/v1/models/$name" > "$work/$name-describe.json"
    put "/v1/models/$name/traffic" '{}'
done
curl -sf $base/metrics > "$work/metrics.txt"

python3 - "$work" <<'PY'
import json, re, sys
work = sys.argv[1]
def load(name):
    return json.load(open(f"{work}/{name}.json"))
def bad(r):
    return sum(v for k, v in r.get("statusCodeDistribution", {}).items() if k != "200")
metrics = open(f"{work}/metrics.txt").read()
def metric(name, model):
    m = re.search(rf'^{name}{{model="{model}"}} (\S+)$', metrics, re.M)
    return int(float(m.group(1))) if m else 0
print(f"\n{'model':<16}{'shadow':>8}{'rate/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'p99 ratio':>11}{'non-200':>9}")
for name in ["fraud-features", "diabetes-gbdt"]:
    none, full = load(f"{name}-shadow-none"), load(f"{name}-shadow-all")
    for label, r in [("none", none), ("100%", full)]:
        p = r["latencyPercentiles"]
        ratio = full["latencyPercentiles"]["p99"] / none["latencyPercentiles"]["p99"]
        print(f"{name:<16}{label:>8}{r['summary']['requestsPerSec']:>9.0f}{p['p50']*1e3:>9.3f}{p['p99']*1e3:>9.3f}"
              f"{(f'{ratio:.2f}x' if label == '100%' else ''):>11}{bad(r):>9}")
    pairs = load(f"{name}-describe")["shadow_agreement"]
    for p in pairs:
        print(f"{'':<16}copies: {p['compared']} compared ({p['identical']} identical), "
              f"{p['dropped_queue_full'] + p['dropped_busy']} dropped, {p['shadow_failed']} failed")
print(f"\n{'model':<16}{'log':>8}{'rps':>9}{'p99 ms':>9}{'rps ratio':>11}{'non-200':>9}")
for name in ["fraud-features", "diabetes-gbdt"]:
    none, full = load(f"{name}-log-none"), load(f"{name}-log-all")
    for label, r in [("none", none), ("100%", full)]:
        ratio = full["summary"]["requestsPerSec"] / none["summary"]["requestsPerSec"]
        print(f"{name:<16}{label:>8}{r['summary']['requestsPerSec']:>9.0f}{r['latencyPercentiles']['p99']*1e3:>9.3f}"
              f"{(f'{ratio:.2f}x' if label == '100%' else ''):>11}{bad(r):>9}")
    print(f"{'':<16}records written {metric('ferry_prediction_log_records_total', name)}, "
          f"dropped (queue full) {metric('ferry_prediction_log_dropped_total', name)}")
PY
