#!/usr/bin/env bash
# Train with the `deepspeed` launcher: one process per GPU (on CPU: NUM_PROCS processes),
# on this node or on every node of a hostfile. Extra arguments are config overrides:
#   NUM_PROCS=2 launcher/train_deepspeed.sh --config=debug --run_dir=runs/debug
#   HOSTFILE=cluster_configs/hostfile NUM_PROCS=8 launcher/train_deepspeed.sh --run_dir=/shared/run
# RUN_DIR must be on storage every node sees when HOSTFILE is set.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-.venv/bin/python}"
DEEPSPEED="${DEEPSPEED:-$(dirname "$PYTHON")/deepspeed}"
NUM_PROCS="${NUM_PROCS:-1}"
MASTER_PORT="${MASTER_PORT:-29500}"

args=(--num_gpus "$NUM_PROCS" --master_port "$MASTER_PORT")
if [[ -n "${HOSTFILE:-}" ]]; then
  args=(--hostfile "$HOSTFILE" "${args[@]}")
fi

exec "$DEEPSPEED" "${args[@]}" --module distributed_rec.train.worker "$@"
