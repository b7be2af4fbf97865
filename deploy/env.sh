# Sourced by the other deploy scripts: a virtualenv with gand installed, in .venv at the root.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${GAND_VENV:-$ROOT/.venv}"
if [ ! -x "$VENV/bin/gand" ] || [ "$ROOT/pyproject.toml" -nt "$VENV/.installed" ]; then
  python3 -m venv "$VENV"
  # torch/torchvision are pinned in pyproject.toml (2.14.1 / 0.29.1).
  "$VENV/bin/pip" install --quiet --upgrade pip
  "$VENV/bin/pip" install --quiet -e "$ROOT[test]"
  touch "$VENV/.installed"
fi
export PATH="$VENV/bin:$PATH"
