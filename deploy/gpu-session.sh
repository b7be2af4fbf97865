#!/usr/bin/env bash
# Everything issue 14 (Speed) still needs from a GPU, in one call on a lent GPU machine.
#
# Here, once (the GPU machine reaches no network, and its image has torch but not celery,
# SQLAlchemy or the other services gand uses):
#     bash deploy/gpu-session.sh --prepare
# fills .whl/ with wheels of gand's dependencies for the GPU image's Python (3.12, x86_64; torch
# and torchvision excluded: the image's own are used) and copies the reference loops to .gpu/.
# Both folders are ignored through .git/info/exclude. Then, through the device tool:
#     run(command="bash deploy/gpu-session.sh", carry=[".whl", ".gpu"], timeout_s=600)
# which installs gand beside the image's torch and writes to $OUT, in order of what is worth most
# if time runs out (each step has its own deadline, the three under 9 minutes together):
#   1. cuda-tests.txt   tests/test_cuda_graphs.py: a graphed job follows the eager trajectory and
#                       resumes; a step that cannot be captured trains eagerly with a note;
#   2. bench-cuda.json  bench.py --device cuda on the launch-bound configs, with the cuda_graph
#                       rows (mnist-dcgan against the PIL loader: the issue's 5x goal), then
#      pause-cuda.json  CycleGAN 256's checkpoint pause against the device-to-host copy;
#   3. gpu-check.json   the fleet check: a CUDA job per GPU through `gand worker --gpus all`,
#                       a resume, and packing K = 1, 2, 4.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

if [ "${1:-}" = "--prepare" ]; then
    set -e
    PY=".venv/bin/python"; [ -x "$PY" ] || PY=python3
    for d in .whl/ .gpu/; do
        grep -qxF "$d" .git/info/exclude 2>/dev/null || echo "$d" >>.git/info/exclude
    done
    mkdir -p .whl .gpu
    cp ../shared/bench/reference_loops.py .gpu/
    # gand's own dependencies (pyproject.toml) less torch/torchvision, as binary wheels for the
    # GPU image's CPython 3.12; what they need comes along.
    "$PY" -m pip download --quiet --dest .whl --only-binary=:all: --implementation cp \
        --python-version 3.12 --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 --platform any \
        'celery>=5.4,<6' 'kombu>=5.4' 'redis>=5' 'sqlalchemy>=2.0,<2.1' 'alembic>=1.13' \
        'typer>=0.12' 'rich>=13' 'pluggy>=1.5' 'starlette>=0.40' 'uvicorn>=0.30' \
        'tensorboardX>=2.6' 'hypothesis>=6'
    du -sh .whl .gpu
    exit 0
fi

OUT="${OUT:-/tmp/gand-gpu-out}"
mkdir -p "$OUT"
log() { echo "[$(date +%T)] $*" | tee -a "$OUT/session.log"; }
log "$(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>&1 | head -1)"
# The image's numpy, pillow, matplotlib, scipy and pytest stay; the rest from the carried wheels.
python3 -m pip install --quiet --no-index --find-links .whl celery kombu redis sqlalchemy \
    alembic typer rich pluggy starlette uvicorn tensorboardX hypothesis >>"$OUT/session.log" 2>&1
# gand itself without its pins (torch==2.14.1 would ask for a build the image does not have).
python3 -m pip install --quiet --no-deps --no-build-isolation -e . >>"$OUT/session.log" 2>&1
python3 -c "import gand, torch; print('gand', gand.__version__, 'torch', torch.__version__, torch.cuda.get_device_name())" \
    2>&1 | tee -a "$OUT/session.log"

log "1. CUDA tests"
timeout 150 python3 -m pytest -q -p no:cacheprovider tests/test_cuda_graphs.py \
    "tests/test_background_checkpoints.py::test_on_cuda_a_snapshot_copies_on_a_side_stream_that_the_optimizer_step_waits_for" \
    >"$OUT/cuda-tests.txt" 2>&1
log "   rc=$? $(tail -1 "$OUT/cuda-tests.txt")"

log "2. bench.py --device cuda"
# Most wanted first: bench.py saves its report after each config, so a deadline loses the last.
GAND_REFERENCE_LOOPS="$ROOT/.gpu/reference_loops.py" timeout 180 python3 tests/benchmarks/bench.py \
    --device cuda --configs mnist-dcgan,cyclegan256,dcgan64-b1024,dcgan64,ring8-gan --pairs 5 \
    --window 0.5 --no-latency --no-pause --out "$OUT/bench-cuda.json" >"$OUT/bench-cuda.log" 2>&1
log "   rc=$?"
log "2b. the checkpoint pause (CycleGAN 256 with its image pools) against the device-to-host copy"
timeout 60 python3 tests/benchmarks/checkpoint_pause.py --device cuda --configs cyclegan256 \
    >"$OUT/pause-cuda.json" 2>"$OUT/pause-cuda.log"
log "   rc=$?"

log "3. the fleet check"
GAND_GPU_CHECK_STEPS=1000 timeout 120 bash deploy/gpu-check.sh >"$OUT/gpu-check.json" \
    2>"$OUT/gpu-check.log"
log "   rc=$?"
