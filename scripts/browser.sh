#!/usr/bin/env bash
# The browser the console's tests drive (tests/e2e/console.rs): Debian's chromium and its WebDriver,
# chromium-driver, installed on first use (about 10 s from the registry; nothing is downloaded at test
# time: selenium is given the driver's path).
#
#   scripts/browser.sh     # prints the two versions
set -euo pipefail

"$(dirname "$0")/debian-install.sh" "the console's tests" chromium chromedriver -- chromium chromium-driver
chromium --version
chromedriver --version
