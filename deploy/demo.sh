#!/usr/bin/env bash
# One real job end to end on the embedded default (no Redis, no PostgreSQL needed):
# install, submit a GAN on the 8-Gaussian ring, run a worker, follow it, generate samples.
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
export GAND_HOME="${GAND_HOME:-$HOME/.gand}"
JOB=$(gand submit gan --data ring8 --steps 2000 --name demo)
gand worker --burst --loglevel WARNING 2>"$GAND_HOME/demo-worker.log" &
gand follow "$JOB"
wait
gand generate "$JOB" --n 2500 --out "$GAND_HOME/runs/$JOB/generated.npy"
echo "sample plots: $GAND_HOME/runs/$JOB/samples/   (gand show $JOB lists every file)"
