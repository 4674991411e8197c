#!/usr/bin/env bash
# Fleet benchmarks (release build, one run, this machine): SeaweedFS on loopback and three hosts on it.
#   1. convergence: a weights-only push on a cached component → ready on all three hosts, and a
#      promote through host 2 → every host answers with the new version (goal ≤ 2 s at the default
#      1 s sync interval); median and worst of ROUNDS rounds
#   2. store requests per host per minute at idle, with 1 model and with 100 models (goal: the same)
#   3. requests/s of one host alone and of three hosts behind one load generator (oha), and per core
#   4. how often the store lets two racing conditional writes both win (benches/src/bin/store-races.rs)
# On 2 shared cores three hosts cannot scale: every host and the load generator share the same cores.
#
# Usage: benches/fleet.sh     (ROUNDS=5 IDLE_SECONDS=30 DURATION=10s by default)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-5}
IDLE_SECONDS=${IDLE_SECONDS:-30}
DURATION=${DURATION:-10s}

cargo build --release -p ferry -p ferry-benches --bins
FERRY_BIN=target/release/ferry scripts/build-models.sh >/dev/null
if ! command -v oha >/dev/null; then
    [[ -x target/tools/bin/oha ]] || cargo install oha --version 1.16.0 --locked --root target/tools
    export PATH=$PWD/target/tools/bin:$PATH
fi
ferry=$PWD/target/release/ferry
work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    scripts/seaweedfs.sh stop "$work/s3" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
scripts/seaweedfs.sh start "$work/s3" >/dev/null
set -a; . "$work/s3/env"; set +a
printf '[models.default]\nmin_instances = 2\nmax_instances = 4\n' > "$work/ferry.toml"

start_host() { # id port store
    FERRY_LOG=warn $ferry serve --listen "127.0.0.1:$2" --store "$3" --cache-dir "$work/cache-$1" \
        --host-id "$1" --config "$work/ferry.toml" 2>>"$work/$1.log" &
    pids+=($!)
    for _ in $(seq 3000); do curl -sf "localhost:$2/v2/health/ready" >/dev/null && return; sleep 0.01; done
    echo "host $1 not ready"; cat "$work/$1.log"; exit 1
}
for i in 1 2 3; do start_host "bench-$i" $((18200 + i)) s3://ferry/bench; done

m=target/models/diabetes-gbdt
$ferry push $m.wasm --model diabetes-gbdt --version 1 --weights $m.weights --tests $m.tests.json \
    --alias production --server http://127.0.0.1:18201 >/dev/null

python3 - "$ferry" "$ROUNDS" <<'PY'
import json, statistics, subprocess, sys, time, urllib.request
ferry, rounds = sys.argv[1], int(sys.argv[2])
hosts = [f"http://127.0.0.1:{18200 + i}" for i in (1, 2, 3)]
body = open("sample-models/diabetes-gbdt/example-request.json", "rb").read()
m = "target/models/diabetes-gbdt"

def get(url):
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.load(r)

def state(host, version):
    for v in get(f"{host}/v1/models/diabetes-gbdt")["versions"]:
        if v["version"] == version:
            return v["state"]

def served(host):
    req = urllib.request.Request(f"{host}/v2/models/diabetes-gbdt/infer", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.load(r)["model_version"]

def until(check):
    while not check():
        time.sleep(0.005)

ready, switched = [], []
for n in range(2, 2 + rounds):
    v = str(n)
    t0 = time.monotonic()
    # A weights-only version (the current component, new weights blob): no compile anywhere.
    subprocess.run([ferry, "push", "--model", "diabetes-gbdt", "--version", v, "--weights", f"{m}.weights",
                    "--tests", f"{m}.tests.json", "--server", hosts[0]], check=True, capture_output=True)
    until(lambda: all(state(h, v) == "ready" for h in hosts))
    ready.append(time.monotonic() - t0)
    t0 = time.monotonic()
    subprocess.run([ferry, "promote", "diabetes-gbdt", v, "--server", hosts[1]], check=True, capture_output=True)
    until(lambda: all(served(h) == v for h in hosts))
    switched.append(time.monotonic() - t0)
fmt = lambda xs: f"median {statistics.median(xs):.2f} s, worst {max(xs):.2f} s"
print(f"convergence ({rounds} rounds, sync interval 1 s):")
print(f"  weights-only push → ready on all 3 hosts: {fmt(ready)}")
print(f"  promote through host 2 → all 3 switched:  {fmt(switched)}")
PY

# 2. Store requests at idle: one host on a store with 1 model, one with 100.
fraud=target/models/fraud-features
for i in $(seq -w 1 100); do
    $ferry add $fraud.wasm --model "fraud-$i" --version 1 --store s3://ferry/idle100 --cache-dir "$work/cache-add" >/dev/null
done
$ferry add $fraud.wasm --model fraud-001 --version 1 --store s3://ferry/idle1 --cache-dir "$work/cache-add" >/dev/null
start_host idle-1 18211 s3://ferry/idle1
start_host idle-100 18212 s3://ferry/idle100
requests() { curl -s "localhost:$1/metrics" | awk '/^ferry_store_requests_total/ {s += $2} END {print s + 0}'; }
sleep 3
a1=$(requests 18211); a100=$(requests 18212)
sleep "$IDLE_SECONDS"
b1=$(requests 18211); b100=$(requests 18212)
python3 -c "
d1, d100, s = $b1 - $a1, $b100 - $a100, $IDLE_SECONDS
print(f'store requests per host per minute at idle: 1 model {d1 * 60 / s:.1f}, 100 models {d100 * 60 / s:.1f} (over {s} s)')"
kill "${pids[-1]}" "${pids[-2]}"

# 3. Requests/s: one host alone, then the three behind one load generator (one oha per host, sharing
# the connections), on the same fraud-features request.
for i in 1 2 3; do
    $ferry push $fraud.wasm --model fraud-features --version 1 --server "http://127.0.0.1:1820$i" >/dev/null 2>&1 || true
done
for i in 1 2 3; do until curl -sf -o /dev/null "localhost:1820$i/v1/models/fraud-features/predict" \
    -H 'content-type: application/json' -d @sample-models/fraud-features/example-request.json; do sleep 0.05; done; done
rps() { # url connections
    oha -z "$DURATION" -c "$2" -m POST -T application/json -D sample-models/fraud-features/example-request.json \
        --no-tui --output-format json "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["summary"]["requestsPerSec"])'
}
one=$(rps http://127.0.0.1:18201/v1/models/fraud-features/predict 16)
tmp=$work/rps; mkdir -p "$tmp"
loaders=()
for i in 1 2 3; do rps "http://127.0.0.1:1820$i/v1/models/fraud-features/predict" 6 > "$tmp/$i" & loaders+=($!); done
wait "${loaders[@]}"
three=$(cat "$tmp"/1 "$tmp"/2 "$tmp"/3 | python3 -c 'import sys; print(sum(float(l) for l in sys.stdin))')
python3 -c "
one, three, cores = $one, $three, $(nproc)
print(f'fraud-features predict: one host {one:.0f} req/s, three hosts {three:.0f} req/s ({three / one:.2f}x) on {cores} shared cores')
print(f'per core (one host, load generator on the same cores): {one / cores:.0f} req/s')"

# 4. The store's conditional writes under racing writers (SeaweedFS; AWS S3 promises one winner).
target/release/store-races s3://ferry/races "${RACE_ROUNDS:-30}"
