#!/usr/bin/env bash
# What a new author gets: `ferry new` for Rust and for Python, then for each project the lines of author
# code, `ferry build`'s time (first build, and a rebuild after touching the model), the component's size,
# and — through criterion — instantiate+init and one predict.
#
# Run from the repository: benches/author.sh   (builds the host in release mode)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

cargo build --release -p ferry
ferry=$root/target/release/ferry
work=$root/target/bench-authors
rm -rf "$work" && mkdir -p "$work"
export FERRY_TOOLS_DIR=${FERRY_TOOLS_DIR:-$root/target/tools}
export FERRY_CACHE_DIR=$work/cache   # a cold compile cache: the build's check compiles the component
# The Rust project's dependencies build from scratch, as on an author's first build.
project_target=$work/cargo-target

# Author code: lines that hold code — not blank, not comments, not docstrings.
loc() {
    python3 - "$@" <<'PY'
import io, sys, tokenize
total = 0
for path in sys.argv[1:]:
    text = open(path).read()
    if not path.endswith(".py"):
        total += sum(1 for l in text.splitlines() if l.strip() and not l.strip().startswith("//"))
        continue
    lines, prev = set(), tokenize.INDENT
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        # A string that stands alone as a statement is a docstring.
        docstring = tok.type == tokenize.STRING and prev in (tokenize.INDENT, tokenize.NEWLINE, tokenize.DEDENT)
        if tok.type not in (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
                            tokenize.ENDMARKER) and not docstring:
            lines.update(range(tok.start[0], tok.end[0] + 1))
        if tok.type not in (tokenize.COMMENT, tokenize.NL):
            prev = tok.type
    total += len(lines)
print(total)
PY
}
seconds() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { print b - a }'; }

report=()
for lang in rust python; do
    name=eta-$lang
    (cd "$work" && "$ferry" new "$name" --lang "$lang" >/dev/null)
    project=$work/$name
    if [[ $lang == rust ]]; then files=("$project/src/lib.rs"); model=src/lib.rs; else files=("$project/model.py" "$project/features.py"); model=model.py; fi
    t0=$(date +%s.%N); (cd "$project" && CARGO_TARGET_DIR=$project_target "$ferry" build >/dev/null); first=$(seconds "$t0")
    touch "$project/$model"
    t0=$(date +%s.%N); (cd "$project" && CARGO_TARGET_DIR=$project_target "$ferry" build >/dev/null); again=$(seconds "$t0")
    size=$(stat -c %s "$project/target/ferry/$name.wasm")
    report+=("$(printf '%-8s %5s lines  build %6.1f s first, %5.1f s again  %7.2f MB' "$lang" "$(loc "${files[@]}")" "$first" "$again" "$(awk -v s="$size" 'BEGIN { print s / 1e6 }')")")
done

FERRY_BENCH_PROJECTS=$work cargo bench -p ferry-benches --bench runtime -- new-project
echo
echo "new projects (author code: src/lib.rs for Rust, model.py + features.py for Python; the first Rust build compiles its dependencies):"
printf '  %s\n' "${report[@]}"
