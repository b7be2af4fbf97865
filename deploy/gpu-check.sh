#!/usr/bin/env bash
# The fleet's GPU check: a CUDA job per GPU through `gand worker --gpus all`, and packing
# K = 1, 2, 4 MNIST DCGAN jobs on one GPU (aggregate img/s as JSON). See deploy/gpu_check.py.
#   bash deploy/gpu-check.sh [--dry]
# Uses gand as installed in the current Python (the project's .venv when it exists).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${GAND_PYTHON:-$([ -x "$ROOT/.venv/bin/python" ] && echo "$ROOT/.venv/bin/python" || echo python3)}"
exec "$PY" "$ROOT/deploy/gpu_check.py" "$@"
