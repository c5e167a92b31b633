#!/usr/bin/env bash
# Creates ./.venv (Python >= 3.11) and installs Vox with its pinned dependencies.
# Re-runs the install only when pyproject.toml or constraints.txt changed.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
py="${PYTHON:-}"
if [ -z "$py" ]; then
  for c in python3.13 python3.12 python3.11 python3; do
    if command -v "$c" >/dev/null 2>&1 && "$c" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      py="$c"; break
    fi
  done
fi
[ -n "$py" ] || { echo "Vox needs Python 3.11 or newer (set PYTHON=...)" >&2; exit 1; }
# A venv left half-made by an interrupted first run (no pip in it yet) is made again.
if ! { [ -x .venv/bin/python ] && .venv/bin/python -c 'import pip' 2>/dev/null; }; then
  rm -rf .venv
  "$py" -m venv .venv
fi
stamp=.venv/.vox-installed
want="$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip >/dev/null
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
  echo "$want" > "$stamp"
fi
