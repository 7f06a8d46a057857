#!/usr/bin/env bash
# Runs the Python SDK's and examples' unit tests natively (plain python3, stdlib unittest): the
# framing, the SDK's semantics and the translators' logic, without componentize-py.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export PYTHONPATH="$here/sdk:$here/examples/field-mapper:$here/examples/hostile:$here/tests"
# Keep the source tree free of __pycache__.
export PYTHONDONTWRITEBYTECODE=1
exec python3 -m unittest discover --start-directory "$here/tests" --top-level-directory "$here/tests" "$@"
