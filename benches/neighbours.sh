#!/usr/bin/env bash
# Hostile-neighbour benchmark: what one team's broken model costs another team's healthy one on the
# same host. fraud-features (healthy) runs under sustained full load (oha, closed loop) alone, then
# beside each hostile behaviour of a second model under sustained load of its own (open loop, its
# callers' steady rate: they do not call faster because it fails faster):
#   loop   every call loops until its 50 ms deadline
#   bomb   every call grows memory until its 64 MiB limit
#   flood  every call writes log until its per-call log limit
#   trap   every call traps
#   slow   every call does 50 ms of real work (fixed arithmetic, calibrated here) and answers
# Each behaviour's run is paired with an "alone" run just before it, and the table prints the healthy
# model's requests/s and p99 in both and their ratio. Goal on a 2-core machine: requests/s ≥ 0.8× and
# p99 ≤ 2× of alone for every behaviour. What holds the neighbours back: the circuit breaker (the
# four failing ones) and CPU shares (the slow one, and the failing ones before they trip).
#
# Usage: benches/neighbours.sh   (DURATION=10s CONNECTIONS=16 NEIGHBOUR_RATE=200 NEIGHBOUR_CONNECTIONS=8)
#        PROTECTION=off benches/neighbours.sh   the same without breaker and shares (after = 0, share 1)
#        HEALTHY_SHARE=0.3 benches/neighbours.sh   the healthy model with a share of its own (default: [host]'s 0.1)
set -euo pipefail
cd "$(dirname "$0")/.."
export FERRY_TOOLS_DIR=${FERRY_TOOLS_DIR:-$PWD/target/tools}
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-16}
NEIGHBOUR_RATE=${NEIGHBOUR_RATE:-200}
NEIGHBOUR_CONNECTIONS=${NEIGHBOUR_CONNECTIONS:-8}
BEHAVIOURS=${BEHAVIOURS:-loop bomb flood trap slow}

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
hostile=target/test-guests/hostile-guest.wasm
$ferry add target/models/fraud-features.wasm --model fraud-features --version 1 --store "$work/store" >/dev/null
neighbour() { # name attack limits-json
    echo "{\"attack\": \"$2\"}" > "$work/$1.config.json"
    echo "$3" > "$work/$1.limits.json"
    $ferry add "$hostile" --model "$1" --version 1 --config "$work/$1.config.json" --limits "$work/$1.limits.json" \
        --store "$work/store" >/dev/null
}
neighbour loop infinite-loop '{"deadline_ms": 50, "max_instances": 2, "min_instances": 2}'
neighbour bomb memory-bomb '{"memory_bytes": 67108864, "max_instances": 2, "min_instances": 2}'
neighbour flood log-flood '{"max_instances": 2, "min_instances": 2}'
neighbour trap trap '{"max_instances": 2, "min_instances": 2}'
neighbour slow work '{"max_instances": 2, "min_instances": 2}'
cat > "$work/ferry.toml" <<'TOML'
[host]
require_self_tests = false
[models.default]
min_instances = 2
max_instances = 4
TOML
if [[ -n ${HEALTHY_SHARE:-} ]]; then
    printf '[models.fraud-features]\ncpu_share = %s\nmin_instances = 2\nmax_instances = 4\n' "$HEALTHY_SHARE" >> "$work/ferry.toml"
fi
if [[ ${PROTECTION:-on} == off ]]; then
    sed -i 's/^\[host\]$/[host]\ncpu_share = 1.0/' "$work/ferry.toml"
    printf '[breaker]\nafter = 0\n' >> "$work/ferry.toml"
fi
base=http://127.0.0.1:18190
FERRY_LOG=warn $ferry serve --listen 127.0.0.1:18190 --store "$work/store" --config "$work/ferry.toml" 2>"$work/ferry.log" &
pids+=($!)
for _ in $(seq 600); do curl -sf $base/v2/health/ready >/dev/null && break; sleep 0.1; done
healthy=$base/v1/models/fraud-features/predict
cp sample-models/fraud-features/example-request.json "$work/fraud.json"
echo '{}' > "$work/empty.json"

# 50 ms of the slow model's arithmetic, measured alone: the best of five calls of 20M iterations.
best=$(for _ in 1 2 3 4 5; do
    curl -sf -o /dev/null -w '%{time_total}\n' -H 'content-type: application/json' \
        -d '{"iterations": 20000000}' $base/v1/models/slow/predict
done | sort -n | head -1)
iterations=$(python3 -c "print(int(20_000_000 * 0.050 / $best))")
echo "{\"iterations\": $iterations}" > "$work/slow.json"
took=$(curl -sf -o /dev/null -w '%{time_total}' -H 'content-type: application/json' -d @"$work/slow.json" $base/v1/models/slow/predict)
echo "slow model: $iterations iterations per call, one call alone took ${took}s" >&2

load() { # out url body → oha's JSON summary, healthy load: closed loop
    oha -z "$DURATION" -c "$CONNECTIONS" -m POST -T application/json -D "$3" --no-tui --output-format json "$2" > "$work/$1.json"
}
oha -n 2000 -c 4 -m POST -T application/json -D "$work/fraud.json" --no-tui "$healthy" >/dev/null   # warm up
for b in $BEHAVIOURS; do
    body=$work/empty.json
    [[ $b == slow ]] && body=$work/slow.json
    load "alone-$b" "$healthy" "$work/fraud.json"
    # The neighbour's steady load starts first and outlasts the healthy run.
    secs=${DURATION%s}
    oha -z "$((secs + 3))s" -c "$NEIGHBOUR_CONNECTIONS" -q "$NEIGHBOUR_RATE" -m POST -T application/json -D "$body" \
        --no-tui --output-format json "$base/v1/models/$b/predict" > "$work/neighbour-$b.json" &
    neighbour_pid=$!
    sleep 1
    load "beside-$b" "$healthy" "$work/fraud.json"
    wait "$neighbour_pid"
    curl -sf "$base/v1/models/$b" > "$work/describe-$b.json"
done
curl -sf $base/metrics > "$work/metrics.txt"
curl -sf "$base/v1/models/fraud-features" > "$work/describe-healthy.json"

python3 - "$work" "$BEHAVIOURS" <<'PY'
import json, sys
work, behaviours = sys.argv[1], sys.argv[2].split()
def load(name):
    return json.load(open(f"{work}/{name}.json"))
def statuses(r):
    return ", ".join(f"{k}: {v}" for k, v in sorted(r.get("statusCodeDistribution", {}).items()))
print(f"\n{'beside':<8}{'alone rps':>11}{'beside rps':>12}{'rps ratio':>11}{'alone p99':>11}{'beside p99':>12}{'p99 ratio':>11}  healthy non-200")
worst_rps, worst_p99 = 9.9, 0.0
for b in behaviours:
    alone, beside = load(f"alone-{b}"), load(f"beside-{b}")
    ra, rb = alone["summary"]["requestsPerSec"], beside["summary"]["requestsPerSec"]
    pa, pb = alone["latencyPercentiles"]["p99"] * 1e3, beside["latencyPercentiles"]["p99"] * 1e3
    bad = sum(v for k, v in beside.get("statusCodeDistribution", {}).items() if k != "200")
    worst_rps, worst_p99 = min(worst_rps, rb / ra), max(worst_p99, pb / pa)
    print(f"{b:<8}{ra:>11.0f}{rb:>12.0f}{rb / ra:>10.2f}x{pa:>9.2f}ms{pb:>10.2f}ms{pb / pa:>10.2f}x  {bad}")
share = load("describe-healthy").get("cpu_share") or {}
print(f"\nthe healthy model: cpu {share.get('cpu_seconds', 0):.2f}s, calls on idle capacity {share.get('calls_lowered')}")
print(f"\nworst: requests/s {worst_rps:.2f}x (goal >= 0.8x), p99 {worst_p99:.2f}x (goal <= 2x)")
print("\nthe neighbours (their own load, and what the host did with it):")
for b in behaviours:
    n = load(f"neighbour-{b}")
    d = load(f"describe-{b}")
    v = d["versions"][0]
    br, share = v.get("breaker", {}), d.get("cpu_share") or {}
    print(f"  {b:<6} {n['summary']['requestsPerSec']:.0f} req/s [{statuses(n)}]; breaker {br.get('state')}, "
          f"trips {br.get('trips')}, failed probes {br.get('probes_failed')}, rejected {br.get('rejected')}; "
          f"cpu {share.get('cpu_seconds', 0):.2f}s, calls lowered {share.get('calls_lowered')}, starved {share.get('calls_starved')}")
PY
