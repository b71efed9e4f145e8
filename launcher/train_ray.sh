#!/usr/bin/env bash
# Train with Ray Train (TorchTrainer, one training loop per Ray worker). Without RAY_ADDRESS a
# local Ray instance is started; with it, the job is submitted to that cluster:
#   NUM_PROCS=2 launcher/train_ray.sh --config=debug --run_dir=runs/debug
#   RAY_ADDRESS=http://head:8265 NUM_PROCS=8 launcher/train_ray.sh --run_dir=/shared/run
# RUN_DIR must be on storage every node sees when training on a cluster.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-.venv/bin/python}"
NUM_PROCS="${NUM_PROCS:-2}"

if [[ -n "${RAY_ADDRESS:-}" ]]; then
  exec "$(dirname "$PYTHON")/ray" job submit --address "$RAY_ADDRESS" --working-dir . \
    --runtime-env cluster_configs/ray_runtime_env.yaml -- \
    python -m distributed_rec train --train.launcher=ray --train.num_procs="$NUM_PROCS" \
    --ray.address=auto "$@"
fi
exec "$PYTHON" -m distributed_rec train --train.launcher=ray --train.num_procs="$NUM_PROCS" "$@"
