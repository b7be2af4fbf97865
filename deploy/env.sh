# Sourced by the other deploy scripts: a virtualenv with gand installed, in .venv at the root.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${GAND_VENV:-$ROOT/.venv}"
if [ ! -x "$VENV/bin/gand" ] || [ "$ROOT/pyproject.toml" -nt "$VENV/.installed" ]; then
  echo "installing gand and its dependencies into $VENV (torch 2.14.1, torchvision 0.29.1; a few minutes the first time)"
  python3 -m venv "$VENV"
  # pip's chatter goes to a log; on failure the log is shown.
  if ! { "$VENV/bin/pip" install --upgrade pip && "$VENV/bin/pip" install -e "$ROOT[test]"; } \
      > "$VENV/install.log" 2>&1; then
    tail -40 "$VENV/install.log"
    echo "installation failed; full log: $VENV/install.log" >&2
    exit 1
  fi
  touch "$VENV/.installed"
fi
export PATH="$VENV/bin:$PATH"
