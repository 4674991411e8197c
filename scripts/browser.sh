#!/usr/bin/env bash
# The browser the console's tests drive (tests/e2e/console.rs): Debian's chromium and its WebDriver,
# chromium-driver, installed on first use (about 10 s from the registry; nothing is downloaded at test
# time: selenium is given the driver's path).
#
#   scripts/browser.sh     # prints the two versions
set -euo pipefail

if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
    log=$(mktemp)
    packages=(chromium chromium-driver)
    { apt-get install -y -qq --no-install-recommends "${packages[@]}" \
        || { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${packages[@]}"; }; } >"$log" 2>&1 \
      || { echo "FAIL installing chromium and chromium-driver (Debian):" >&2; cat "$log" >&2; rm -f "$log"; exit 1; }
    rm -f "$log"
  else
    echo "the console's tests need chromium and chromedriver (Debian: apt-get install chromium chromium-driver)" >&2
    exit 1
  fi
fi
chromium --version
chromedriver --version
