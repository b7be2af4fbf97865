#!/usr/bin/env bash
# One real job end to end on the embedded default (no Redis, no PostgreSQL needed):
# install, submit a GAN on the 8-Gaussian ring with gand's defaults, run a worker, follow it,
# measure its mode coverage, generate samples.
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
export GAND_HOME="${GAND_HOME:-$HOME/.gand}"
# gan's defaults for ring8 (docs/quality.md): a mixture of 32 generators, EMA of G, PacGAN
# packing, lr decay at the end.
# `--preset lecture` instead shows the lecture's recipe collapsing.
JOB=$(gand submit gan --data ring8 --name demo "$@")
gand worker --burst --loglevel WARNING 2>"$GAND_HOME/demo-worker.log" &
gand follow "$JOB"
wait
gand generate "$JOB" --n 2500 --out "$GAND_HOME/runs/$JOB/generated.npy"
# The VEEGAN/PacGAN protocol: modes captured of 8, % of samples within 3 std of a mode, KL.
gand eval "$JOB" --metric coverage
echo "sample plots (circles: 3 std around each mode): $GAND_HOME/runs/$JOB/samples/   (gand show $JOB lists every file)"
