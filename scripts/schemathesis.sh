#!/usr/bin/env bash
# The published contract, fuzzed: schemathesis (pinned, from PyPI) generates requests from the
# server's own /openapi.json and sends them to `ferry serve` holding real sample models
# (fraud-features, digits-onnx, diabetes-gbdt), the hostile echo guest and a scratch model for the
# management examples, for a bounded time. Fails on any 5xx but a 503 and on any answer the document does not
# describe (status code, content type, required headers, body schema); a 503 must carry Retry-After.
#
# Usage: scripts/schemathesis.sh   after `cargo build` and scripts/build-models.sh
#        MAX_EXAMPLES=50 scripts/schemathesis.sh   a longer run
#        scripts/schemathesis.sh install           only install the pinned schemathesis (scripts/test.sh
#                                                  does it while the host builds)
set -euo pipefail
cd "$(dirname "$0")/.."
started=$SECONDS

venv=target/schemathesis
if [[ ! -x $venv/bin/python ]]; then python3 -m venv "$venv"; fi
$venv/bin/pip install --quiet --disable-pip-version-check schemathesis==4.32.5
if [[ ${1:-} == install ]]; then exit 0; fi
ferry=$(realpath "${FERRY_BIN:-target/debug/ferry}")

work=$(mktemp -d "${TMPDIR:-/tmp}/ferry-schemathesis.XXXXXX")
server=
stop() {
    if [[ -n $server ]]; then
        kill "$server" 2>/dev/null || true
        # A bounded stop: SIGKILL if it has not exited 20 s after SIGTERM.
        for _ in $(seq 100); do kill -0 "$server" 2>/dev/null || break; sleep 0.2; done
        if kill -0 "$server" 2>/dev/null; then
            echo "schemathesis.sh: the server did not exit within 20 s of SIGTERM; killed" >&2
            kill -9 "$server" 2>/dev/null || true
        fi
        wait "$server" 2>/dev/null || true
    fi
    # The server's log stays for a look after a failure.
    cp "$work/serve.log" "$venv/serve.log" 2>/dev/null || true
    rm -rf "$work"
    echo "schemathesis.sh: stopped after $((SECONDS - started)) s" >&2
}
trap stop EXIT

add() { "$ferry" add "$@" --store "$work/store" --cache-dir "$work/cache" >/dev/null; }
add target/models/fraud-features.wasm --model fraud-features --version 1
add target/models/fraud-features.wasm --model scratch --version 1
for m in digits-onnx diabetes-gbdt; do
    add "target/models/$m.wasm" --model "$m" --version 1 \
        --weights "target/models/$m.weights" --tests "target/models/$m.tests.json"
done
echo '{}' >"$work/echo.config.json"
add target/test-guests/hostile-guest.wasm --model echo --version 1 --config "$work/echo.config.json"
# The echo guest ships no self-tests.
cat >"$work/ferry.toml" <<'TOML'
[host]
require_self_tests = false
TOML

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
base=http://127.0.0.1:$port
FERRY_LOG=${FERRY_LOG:-info} "$ferry" serve --listen "127.0.0.1:$port" --store "$work/store" \
    --cache-dir "$work/cache" --config "$work/ferry.toml" >"$work/serve.log" 2>&1 &
server=$!
# Until every model answers (each is compiled and self-tested first, from an empty compile cache,
# while test.sh builds the Python models beside it: digits-onnx alone took 143 s on a slow day, and
# 150 s was once too few).
deadline=$((SECONDS + 300))
for m in fraud-features scratch digits-onnx diabetes-gbdt echo; do
    until curl -fs -o /dev/null "$base/v2/models/$m/ready"; do
        if ((SECONDS > deadline)) || ! kill -0 "$server" 2>/dev/null; then
            echo "schemathesis.sh: model $m never became ready; the server's log:" >&2
            # Not this loop's own probes: each 503 is logged, and they buried why the model was not ready.
            grep -v 'uri=/v2/models/[^ ]*/ready status=503' "$work/serve.log" | tail -n 40 >&2
            exit 1
        fi
        sleep 0.5
    done
done
echo "schemathesis.sh: the server answers after $((SECONDS - started)) s" >&2

# A 503 is the documented "try again" (a version the fuzzer uploaded is still loading, a full queue):
# expected, and held to saying when (scripts/schemathesis_hooks.py). Every other 5xx fails the run.
cat >"$work/schemathesis.toml" <<'TOML'
[checks.not_a_server_error]
expected-statuses = ["2xx", "3xx", "4xx", "503"]
TOML

# Every operation but unloading; then unloading alone, last (an unloaded model rightly answers 503,
# which would hide a real one).
unload='/v2/repository/models/{model}/unload'
fuzz() {
    local seconds=$1
    shift
    # From the run's own folder: schemathesis keeps its cache (.schemathesis/) where it runs.
    (cd "$work" && SCHEMATHESIS_HOOKS="$OLDPWD/scripts/schemathesis_hooks.py" \
        timeout "$seconds" "$OLDPWD/$venv/bin/st" run "$base/openapi.json" \
        --checks not_a_server_error,unavailable_says_when_to_retry,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance \
        --phases examples,coverage,fuzzing \
        --max-examples "${MAX_EXAMPLES:-40}" --workers 1 --request-timeout 20 \
        --suppress-health-check all --no-color "$@")
}
status=0
fuzz 150 --exclude-path "$unload" || status=$?
if ((status == 0)); then fuzz 30 --include-path "$unload" || status=$?; fi
if ((status != 0)); then
    echo "schemathesis.sh: failed (exit $status); the server's log:" >&2
    tail -n 40 "$work/serve.log" >&2
fi
echo "schemathesis.sh: done in $((SECONDS - started)) s" >&2
exit $status
