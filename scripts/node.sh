#!/usr/bin/env bash
# Node.js and npm, which `ferry build` of a JavaScript model needs (it installs a pinned jco with npm on
# first use): Debian's nodejs and npm, installed when missing.
#
#   scripts/node.sh     # prints the two versions
set -euo pipefail
"$(dirname "$0")/debian-install.sh" "JavaScript models" node npm -- nodejs npm
echo "node $(node --version), npm $(npm --version)"
