#!/usr/bin/env bash
# A new author's first minutes, per language: the seconds from `ferry new` to the first prediction a
# local host serves, typing three commands (`ferry new NAME --lang L`, `cd NAME`, `ferry dev`; the
# clock stops when `ferry dev` prints the answer to the project's example request). Measured twice:
#
#   cold  as on a fresh machine: empty tool, compile, npm, pip and cargo caches, so componentize-py
#         (Python) and jco (JavaScript) are installed from the registries and a Rust project's
#         dependencies are downloaded and compiled (the wasm32-wasip2 target and Rust itself stay:
#         `ferry build` only adds the target when it is missing);
#   warm  a second project on the same machine afterwards.
#
# Also prints the lines of author code in each template (not blank, not comments).
#
# Run from the repository: benches/first-prediction.sh   (builds the host in release mode; FERRY_BIN
# names a ferry binary to use instead)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

if [[ -n ${FERRY_BIN:-} ]]; then
    ferry=$(realpath "$FERRY_BIN")
else
    cargo build --release -p ferry
    ferry=$root/target/release/ferry
fi
work=$root/target/bench-first-prediction
rm -rf "$work" && mkdir -p "$work"

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
seconds() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }
# Author code: lines that are not blank and not comments (#, //, /* … */ and docstring-only lines
# counted as comments only when they start a line).
loc() { grep -cvE '^\s*($|#|//|/?\*|"""|\*/)' "$@" | awk -F: '{ n += $NF } END { print n }'; }

# new → first served answer, in `dir`, with the caches under `caches`; prints the seconds.
first_prediction() { # lang name dir caches
    local lang=$1 name=$2 dir=$3 caches=$4 port log t0 dev
    port=$(free_port)
    log=$dir/$name.dev.log
    t0=$(date +%s.%N)
    (
        cd "$dir"
        export FERRY_TOOLS_DIR=$caches/tools FERRY_CACHE_DIR=$caches/ferry \
            CARGO_TARGET_DIR=$caches/cargo-target CARGO_HOME=$caches/cargo-home \
            npm_config_cache=$caches/npm PIP_CACHE_DIR=$caches/pip
        "$ferry" new "$name" --lang "$lang" >/dev/null
        cd "$name"
        exec "$ferry" dev --listen "127.0.0.1:$port" >"$log" 2>&1
    ) &
    dev=$!
    until grep -q '^  → ' "$log" 2>/dev/null; do
        if ! kill -0 "$dev" 2>/dev/null; then
            echo "ferry dev ($lang) stopped before answering:" >&2
            cat "$log" >&2
            exit 1
        fi
        sleep 0.1
    done
    seconds "$t0"
    kill -INT "$dev"
    wait "$dev" || true
}

# CARGO_HOME moves the registry, not the toolchain: rustup's `cargo` proxy still finds Rust.
rows=()
for lang in rust python js; do
    cold=$(first_prediction "$lang" "first-$lang" "$work" "$work/cold-$lang")
    warm=$(first_prediction "$lang" "again-$lang" "$work" "$work/cold-$lang")
    case $lang in
        rust) files=("$work/again-rust/src/lib.rs") ;;
        python) files=("$work/again-python/model.py" "$work/again-python/features.py") ;;
        js) files=("$work/again-js/model.js" "$work/again-js/features.js") ;;
    esac
    template=$(cd "$work/again-$lang" && find . -type f -not -path './target/*' -not -path './node_modules/*' \
        -not -path '*/__pycache__/*' -not -name '.gitignore' -not -name '*.lock' | sort)
    lines=$(cd "$work/again-$lang" && xargs cat <<<"$template" | wc -l)
    rows+=("$(printf '%-7s %3s commands  cold %6s s  warm %5s s  model code %3s lines  template %4s lines in %2s files' \
        "$lang" 3 "$cold" "$warm" "$(loc "${files[@]}")" "$lines" "$(wc -l <<<"$template")")")
done

echo
echo "ferry new → first served prediction (ferry new, cd, ferry dev):"
printf '  %s\n' "${rows[@]}"
