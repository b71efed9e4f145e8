#!/usr/bin/env bash
# Submits a pipeline stage to a running Ray cluster as a batch job (no Ray Serve).
#   RAY_ADDRESS=http://head:8265 launcher/submit_ray_job.sh evaluate --run_dir=/shared/runs/sci
# RAY_ADDRESS is the cluster's dashboard (job server) address. The run directory must be on storage
# every node can read (NFS, a mounted bucket).
set -euo pipefail
: "${RAY_ADDRESS:?set RAY_ADDRESS to the job server of the cluster, e.g. http://127.0.0.1:8265}"
STAGE="${1:?usage: submit_ray_job.sh <stage> [--section.key=value ...]}"
shift
RUNTIME_ENV="${RUNTIME_ENV:-cluster_configs/runtime_env.yaml}"
extra=()
if [[ -f "$RUNTIME_ENV" ]]; then
  extra+=(--runtime-env "$RUNTIME_ENV")
fi
exec ray job submit --address "$RAY_ADDRESS" --working-dir . "${extra[@]}" -- \
  python -m distributed_rec "$STAGE" --ray.address=auto "$@"
