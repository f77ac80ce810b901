#!/usr/bin/env bash
# The GPU check on a CUDA machine without network: models at real sizes with random weights, batched against
# one at a time, a real out-of-memory halving, the Dask runner with one worker per GPU. Writes gpu_check.json and
# gpu_check.md to $OUT (or outputs/gpu-check). Extra arguments go to `python -m bench.gpu` (e.g. --device cpu --quick).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python3
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false DO_NOT_TRACK=1 \
       PREFECT_SERVER_ANALYTICS_ENABLED=false
exec timeout --signal=TERM --kill-after=20 480 "$PY" -m bench.gpu "$@"
