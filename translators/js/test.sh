#!/usr/bin/env bash
# Runs the JavaScript translators' tests with Node's built-in runner (no npm packages needed):
# the SDK's framing and the field mapper's logic and entry points.
#   translators/js/test.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
exec node --test sdk/test/*.test.js field-mapper/test/*.test.js
