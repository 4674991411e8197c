#!/usr/bin/env bash
# Registry benchmarks (release build, one run, this machine):
#   1. upload → ready of a new ~20 MB tract component (digits-onnx: upload, validate, compile, self-test)
#   2. upload → ready of a ~100 MB weights-only update on a stored component (stream, hash, fsync,
#      instantiate, copy the weights into the guest; the echo test guest, which takes any weights)
#   3. restart time with 100 ready versions (each self-tested again), from the compiled cache
# Swap-under-load p99 is printed by the test `swap_under_load_drops_no_request` (tests/e2e/registry.rs).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build-models.sh >/dev/null
cargo build --release -p ferry
ferry=$PWD/target/release/ferry
work=$(mktemp -d)
pid=
cleanup() { [[ -n $pid ]] && kill "$pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
now() { date +%s.%N; }
wait_ready() { for _ in $(seq 3000); do curl -sf localhost:18181/v2/health/ready >/dev/null && return; sleep 0.01; done; echo "not ready"; exit 1; }

printf '[host]\nrequire_self_tests = false\n[models.echo]\nmemory_bytes = 536870912\nmin_instances = 1\n' > "$work/ferry.toml"
FERRY_LOG=warn $ferry serve --listen 127.0.0.1:18181 --store "$work/store" --config "$work/ferry.toml" 2>"$work/log1" &
pid=$!
wait_ready
export FERRY_SERVER=http://127.0.0.1:18181

t0=$(now)
$ferry push target/models/digits-onnx.wasm --model digits-onnx --weights target/models/digits-onnx.weights --tests target/models/digits-onnx.tests.json >/dev/null
t1=$(now)
echo "new 19.7 MB tract component, upload → ready: $(python3 -c "print(round($t1 - $t0, 2))") s"

$ferry push target/test-guests/hostile-guest.wasm --model echo >/dev/null
head -c $((100 << 20)) /dev/urandom > "$work/weights.bin"
t0=$(now)
$ferry push --model echo --weights "$work/weights.bin" >/dev/null
t1=$(now)
echo "weights-only update of 100 MiB on a stored component, upload → ready: $(python3 -c "print(round($t1 - $t0, 2))") s"
kill "$pid"; wait "$pid" 2>/dev/null || true; pid=

for i in $(seq -w 1 100); do
    $ferry add target/models/fraud-features.wasm --model "fraud-$i" --version 1 --store "$work/store100" >/dev/null
done
printf '[models.default]\nmin_instances = 1\n' > "$work/ferry100.toml"
# First start compiles the component once (the other 99 versions share it) and fills the cache.
FERRY_LOG=warn $ferry serve --listen 127.0.0.1:18181 --store "$work/store100" --config "$work/ferry100.toml" 2>"$work/log2" &
pid=$!
wait_ready
kill "$pid"; wait "$pid" 2>/dev/null || true
t0=$(now)
FERRY_LOG=warn $ferry serve --listen 127.0.0.1:18181 --store "$work/store100" --config "$work/ferry100.toml" 2>"$work/log3" &
pid=$!
wait_ready
t1=$(now)
ready=$(curl -s localhost:18181/v1/models | python3 -c "import json,sys; print(sum(v['state']=='ready' for m in json.load(sys.stdin)['models'] for v in m['versions']))")
echo "restart with 100 versions ($ready ready, each self-tested): $(python3 -c "print(round($t1 - $t0, 2))") s to ready"
