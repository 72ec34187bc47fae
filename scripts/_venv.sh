# Sourced by the scripts: creates .venv on first use and installs the project (editable) with the
# extras named in $AM_EXTRAS. Re-installs only when pyproject.toml changed since the last install.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
py="${PYTHON:-python3.11}"
command -v "$py" >/dev/null 2>&1 || py=python3
if [ ! -x .venv/bin/python ]; then
  "$py" -m venv .venv
fi
stamp=".venv/.installed-${AM_EXTRAS:-none}"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  spec="."
  [ -n "${AM_EXTRAS:-}" ] && spec=".[${AM_EXTRAS}]"
  echo "setting up .venv (pip install -e '$spec'), log in .venv/install.log" >&2
  if ! .venv/bin/python -m pip install --disable-pip-version-check -e "$spec" >.venv/install.log 2>&1; then
    tail -30 .venv/install.log >&2
    echo "pip install failed; see .venv/install.log" >&2
    exit 1
  fi
  touch "$stamp"
fi
