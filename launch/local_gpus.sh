#!/usr/bin/env bash
# Fine-tunes on every GPU of this machine with MirroredStrategy (the CPU when there is none).
# Extra arguments are passed through to `python -m trainer.main`.
set -euo pipefail

usage() {
  cat <<USAGE
Usage: launch/local_gpus.sh [trainer.main flags...]

Runs: ${PYTHON:-python} -m trainer.main --strategy=mirrored [flags...]
Visible GPUs can be limited with CUDA_VISIBLE_DEVICES. Example:
  launch/local_gpus.sh --config=configs/minilm_imdb.py --config.data.path=aclImdb_v1.tar.gz --model_dir=runs/imdb
USAGE
}

for arg in "$@"; do
  case "$arg" in
    -h|--help) usage; exit 0 ;;
    --strategy|--strategy=*) echo "launch/local_gpus.sh sets --strategy=mirrored itself; drop $arg" >&2; exit 2 ;;
  esac
done

cd "$(dirname "$0")/.."
exec "${PYTHON:-python}" -m trainer.main --strategy=mirrored "$@"
