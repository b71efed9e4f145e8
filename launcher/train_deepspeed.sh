#!/usr/bin/env bash
# Train with the `deepspeed` launcher: one process per GPU (on CPU: NUM_PROCS processes).
# Extra arguments go to distributed_rec.train.worker (config overrides or --job_config=PATH).
#   one node:            NUM_PROCS=2 launcher/train_deepspeed.sh --config=debug --run_dir=runs/debug
#   ssh from node 1:     HOSTFILE=cluster_configs/hostfile NUM_PROCS=8 launcher/train_deepspeed.sh ...
#   no ssh (a scheduler runs this once per node, same HOSTFILE, MASTER_ADDR = node 0's address):
#     HOSTFILE=hosts NODE_RANK=$i MASTER_ADDR=10.0.0.1 launcher/train_deepspeed.sh --run_dir=/shared/run
# RUN_DIR must be on storage every node sees when HOSTFILE is set.
set -euo pipefail
# DRY_RUN=1 prints the command instead of running it.
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-.venv/bin/python}"
DEEPSPEED="${DEEPSPEED:-$(dirname "$PYTHON")/deepspeed}"
MASTER_PORT="${MASTER_PORT:-29500}"

args=(--master_port "$MASTER_PORT")
if [[ -n "${HOSTFILE:-}" ]]; then
  args+=(--hostfile "$HOSTFILE")  # slots per node come from the hostfile
  if [[ -n "${NODE_RANK:-}" ]]; then
    args+=(--no_ssh --node_rank "$NODE_RANK" --master_addr "${MASTER_ADDR:?set MASTER_ADDR}")
  fi
  if [[ -n "${NUM_PROCS:-}" ]]; then
    args+=(--num_gpus "$NUM_PROCS")
  fi
else
  args+=(--num_gpus "${NUM_PROCS:-1}")
fi

command=("$DEEPSPEED" "${args[@]}" --module distributed_rec.train.worker "$@")
if [[ -n "${DRY_RUN:-}" ]]; then
  echo "${command[@]}"
  exit 0
fi
exec "${command[@]}"
