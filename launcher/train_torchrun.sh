#!/usr/bin/env bash
# Train with torchrun: run once per node (a scheduler does this), NUM_PROCS processes each.
#   one node:   NUM_PROCS=2 launcher/train_torchrun.sh --config=debug --run_dir=runs/debug
#   node i of N: NNODES=N NODE_RANK=i MASTER_ADDR=10.0.0.1 NUM_PROCS=8 \
#                  launcher/train_torchrun.sh --config=scientific_small --run_dir=/shared/run
# Extra arguments go to distributed_rec.train.worker; RUN_DIR must be on storage every node sees.
set -euo pipefail
# DRY_RUN=1 prints the command instead of running it.
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-.venv/bin/python}"
TORCHRUN="${TORCHRUN:-$(dirname "$PYTHON")/torchrun}"

command=("$TORCHRUN" --nnodes "${NNODES:-1}" --node_rank "${NODE_RANK:-0}"
  --nproc_per_node "${NUM_PROCS:-1}" --master_addr "${MASTER_ADDR:-127.0.0.1}"
  --master_port "${MASTER_PORT:-29500}" --max_restarts 0
  -m distributed_rec.train.worker "$@")
if [[ -n "${DRY_RUN:-}" ]]; then
  echo "${command[@]}"
  exit 0
fi
exec "${command[@]}"
