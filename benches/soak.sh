#!/usr/bin/env bash
# Soak: weeks of a host's life, compressed. Mixed steady traffic (fraud-features predict, diabetes-gbdt
# infer, closed loop), a weights-only update + promote of diabetes-gbdt every second (the same trees
# with trailing spaces, so a new sha256 each time), two hostile neighbours (a looping and a trapping
# model at 5 requests/s each) and a restart every 10 minutes, for a set time. Prints RSS, open fds,
# threads, /metrics series, versions listed, p99 and errors after the first 30 reloads and at the end.
# Goal (issue 19): RSS within 10 % and p99 within 1.5× of the 30-reload figure, no failed request
# outside restarts.
#
# Usage: benches/soak.sh                      30 minutes
#        SECONDS_TO_RUN=600 benches/soak.sh   10 minutes
#        RELOADS=1000 RESTART_EVERY=0 benches/soak.sh   the 1,000-reload drift, no restarts
set -euo pipefail
cd "$(dirname "$0")/.."
export FERRY_TOOLS_DIR=${FERRY_TOOLS_DIR:-$PWD/target/tools}
# FERRY_BIN=target/debug/ferry benches/soak.sh soaks a build at hand instead of a fresh release one.
if [[ -z ${FERRY_BIN:-} ]]; then
    cargo build --release -p ferry
    FERRY_BIN=target/release/ferry
fi
FERRY_BIN=$FERRY_BIN scripts/build-models.sh >/dev/null

work=$(mktemp -d)
trap 'pkill -f "ferry serve --listen 127.0.0.1:18191" 2>/dev/null || true; rm -rf "$work"' EXIT
ferry=$(realpath "$FERRY_BIN")
$ferry add target/models/fraud-features.wasm --model fraud-features --version 1 --store "$work/store" >/dev/null
$ferry add target/models/diabetes-gbdt.wasm --model diabetes-gbdt --version 1 \
    --weights target/models/diabetes-gbdt.weights --tests target/models/diabetes-gbdt.tests.json \
    --store "$work/store" >/dev/null
for attack in loop:infinite-loop trap:trap; do
    name=${attack%%:*}
    echo "{\"attack\": \"${attack#*:}\"}" > "$work/$name.config.json"
    $ferry add target/test-guests/hostile-guest.wasm --model "$name" --version 1 \
        --config "$work/$name.config.json" --store "$work/store" >/dev/null
done
# The hostile test models ship no self-tests; diabetes-gbdt's run at every reload all the same.
# METRICS_IDLE_TIMEOUT_S: how soon per-model series of models gone are dropped (the host's default:
# 900); a version's own series go with it.
cat > "$work/ferry.toml" <<TOML
[host]
require_self_tests = false
metrics_idle_timeout_s = ${METRICS_IDLE_TIMEOUT_S:-900}
[models.loop]
deadline_ms = 50
[models.trap]
deadline_ms = 50
TOML
FERRY_LOG=${FERRY_LOG:-warn} python3 benches/soak.py --ferry "$ferry" --work "$work" \
    --models target/models --samples sample-models \
    --seconds "${SECONDS_TO_RUN:-1800}" --reloads "${RELOADS:-0}" \
    --restart-every "${RESTART_EVERY:-600}" --reload-every "${RELOAD_EVERY:-1}"
