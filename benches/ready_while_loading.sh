#!/usr/bin/env bash
# "Ready means answering" (issue 19, item 8): NVIDIA's tritonclient check (tests/python/oip_client_check.py)
# on digits-onnx the moment it reports ready, while two other models' versions (python-eta and
# geo-embeddings, the largest components) compile and self-test on the same host. Prints one line per
# try; any line without "10/10" is a failure. ROUNDS rounds of 3 tries, each on a fresh store and cache.
#
# Usage: benches/ready_while_loading.sh   after `cargo build`, scripts/build-models.sh and scripts/test.sh
#        (which installs tritonclient into target/py)
set -euo pipefail
cd "$(dirname "$0")/.."
ferry=$(realpath "${FERRY_BIN:-target/debug/ferry}")
python=target/py/bin/python
add() { "$ferry" add "target/models/$1.wasm" --model "$1" --version 1 --weights "target/models/$1.weights" \
    --tests "target/models/$1.tests.json" --store "$2/store" --cache-dir "$2/$3" >/dev/null; }
failed=0
for round in $(seq "${ROUNDS:-4}"); do
    work=$(mktemp -d)
    add digits-onnx "$work" cache
    port=$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    FERRY_LOG=warn "$ferry" serve --listen "127.0.0.1:$port" --store "$work/store" --cache-dir "$work/cache" \
        >"$work/log" 2>&1 &
    server=$!
    until curl -fs -o /dev/null "http://127.0.0.1:$port/v2/models/digits-onnx/ready"; do sleep 0.05; done
    # Two versions of other models arrive (their own compile cache, so the host compiles them).
    add python-eta "$work" cache.add
    add geo-embeddings "$work" cache.add
    sleep 1.5  # the host's next sync picks them up: compiles and self-tests run from here
    for try in 1 2 3; do
        out=$("$python" tests/python/oip_client_check.py "127.0.0.1:$port" \
            sample-models/digits-onnx/held-out.json 2>&1 || true)
        line=$(echo "$out" | grep -E "JSON:|Error|error|504" | head -2 | tr '\n' ' ')
        echo "round $round try $try: $line"
        [[ $line == *"10/10"* ]] || failed=$((failed + 1))
    done
    # Whether the other versions were still loading while the checks ran.
    for m in python-eta geo-embeddings; do
        echo "  $m: $(curl -fs "http://127.0.0.1:$port/v1/models/$m" | "$python" -c \
            'import json, sys; v = json.load(sys.stdin)["versions"][0]; print(v["state"], v.get("load_seconds", ""))' \
            2>/dev/null || echo 'not listed yet')"
    done
    kill "$server"
    wait "$server" 2>/dev/null || true
    rm -rf "$work"
done
echo "ready_while_loading: $failed failed of $((3 * ${ROUNDS:-4}))"
exit $((failed > 0))
