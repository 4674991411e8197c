#!/usr/bin/env bash
# Installs Debian packages a script needs when one of its commands is missing: as root with apt-get
# (refreshing the package lists only when the first attempt fails), otherwise says what to install.
#
#   scripts/debian-install.sh "WHAT NEEDS THEM" COMMAND... -- PACKAGE...
#   e.g. scripts/debian-install.sh "JavaScript models" node npm -- nodejs npm
set -euo pipefail

why=$1
shift
commands=()
while [[ $1 != -- ]]; do commands+=("$1"); shift; done
shift
packages=("$@")

missing=0
for c in "${commands[@]}"; do command -v "$c" >/dev/null || missing=1; done
[[ $missing -eq 0 ]] && exit 0

if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
  log=$(mktemp)
  { apt-get install -y -qq --no-install-recommends "${packages[@]}" \
      || { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${packages[@]}"; }; } >"$log" 2>&1 \
    || { echo "FAIL installing ${packages[*]} (Debian) for $why:" >&2; cat "$log" >&2; rm -f "$log"; exit 1; }
  rm -f "$log"
else
  echo "FAIL  $why need ${commands[*]} (Debian: apt-get install ${packages[*]})" >&2
  exit 1
fi
