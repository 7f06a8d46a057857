#!/usr/bin/env bash
# The demo's Python environment: demo/.venv with the tributary client (clients/python, editable)
# and the requirement files given as arguments. Prints the venv's python. Idempotent: installs
# again only when clients/python/pyproject.toml or a requirement file changed.
#
#   py=$(demo/venv.sh)                          # X's needs
#   py=$(demo/venv.sh demo/requirements-check.txt)   # and the check's
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv="$root/demo/.venv"
python=${PYTHON:-python3}

command -v "$python" >/dev/null || { echo "demo/venv.sh: $python not found" >&2; exit 1; }
[ -f "$root/clients/python/pyproject.toml" ] ||
  { echo "demo/venv.sh: clients/python/pyproject.toml is missing (the Python client)" >&2; exit 1; }
if [ ! -x "$venv/bin/python" ]; then
  echo "==> creating $venv" >&2
  "$python" -m venv "$venv" >&2 ||
    { echo "demo/venv.sh: '$python -m venv' failed (on Debian: apt-get install python3-venv)" >&2; exit 1; }
fi
stamp=$(cat "$root/clients/python/pyproject.toml" "$@" | sha256sum | cut -d' ' -f1)
if ! grep -qx "$stamp" "$venv/.installed" 2>/dev/null || ! "$venv/bin/python" -c 'import tributary' 2>/dev/null; then
  echo "==> pip install -e clients/python $* (into demo/.venv)" >&2
  requirements=()
  for file in "$@"; do requirements+=(-r "$file"); done
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    -e "$root/clients/python" "${requirements[@]}" >&2
  echo "$stamp" >>"$venv/.installed"
fi
echo "$venv/bin/python"
