#!/usr/bin/env bash
# Runs a reproduction study (distributed_rec/studies/) on one dataset and writes
# docs/results/<dataset>.md with its tables and PNG plots.
#   launcher/reproduce.sh --study=paper --config=scientific_small --dataset=scientific --budget_minutes=180
#   launcher/reproduce.sh --study=paper --config=office_small --dataset=office --tables=main
# Re-running skips every finished stage; --report_only rewrites the report from the study root.
set -euo pipefail
PYTHON="${PYTHON:-python}"
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"
exec "$PYTHON" -m distributed_rec.reproduce "$@"
