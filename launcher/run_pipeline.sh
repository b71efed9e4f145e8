#!/usr/bin/env bash
# Runs one stage (or `run` for all) of the pipeline in this environment.
#   launcher/run_pipeline.sh run --config=default
#   STAGE=train launcher/run_pipeline.sh --config=debug --train.lr=1e-3
set -euo pipefail
PYTHON="${PYTHON:-python}"
if [[ $# -gt 0 && "$1" != --* ]]; then
  STAGE="$1"
  shift
fi
STAGE="${STAGE:-run}"
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"
exec "$PYTHON" -m distributed_rec "$STAGE" "$@"
