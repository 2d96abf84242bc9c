#!/usr/bin/env bash
# Creates the peer's environment for the benchmarks: Hugging Face transformers on
# PyTorch CPU, in benchmarks/.peer-venv. It is never a dependency of the product:
# nothing outside benchmarks/ imports torch or transformers.
set -euo pipefail

# Pinned so that every run of the benchmark compares against the same peer.
TORCH_VERSION="2.13.0"
TRANSFORMERS_VERSION="5.23.0"
SAFETENSORS_VERSION="0.8.0"
TOKENIZERS_VERSION="0.23.3"
# The scripts log with absl, as the project does.
ABSL_VERSION="2.5.1"

usage() {
  cat <<USAGE
Usage: benchmarks/peer_env.sh [--python PYTHON] [--venv DIR] [--torch-index URL] [--force]

Creates (or checks) the peer environment used by benchmarks/run_all.py:
  torch==${TORCH_VERSION} (CPU), transformers==${TRANSFORMERS_VERSION},
  safetensors==${SAFETENSORS_VERSION}, tokenizers==${TOKENIZERS_VERSION}, absl-py==${ABSL_VERSION}
in benchmarks/.peer-venv (gitignored). Idempotent: when the environment is
already there with these pins and imports cleanly, it says so and exits.

  --python PYTHON     interpreter for the venv (default: python3.11, else python3)
  --venv DIR          where to create it (default: benchmarks/.peer-venv)
  --torch-index URL   extra index for the CPU build of torch, e.g.
                      https://download.pytorch.org/whl/cpu (on machines where plain
                      'torch' from PyPI would pull the CUDA build)
  --force             delete and recreate the environment
  -h, --help          this text
USAGE
}

script_dir="$(cd "$(dirname "$0")" && pwd)"
venv="${script_dir}/.peer-venv"
python_bin=""
torch_index=""
force=0

while [[ $# -gt 0 ]]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --python) python_bin="${2:?--python needs a value}"; shift 2 ;;
    --python=*) python_bin="${1#*=}"; shift ;;
    --venv) venv="${2:?--venv needs a value}"; shift 2 ;;
    --venv=*) venv="${1#*=}"; shift ;;
    --torch-index) torch_index="${2:?--torch-index needs a value}"; shift 2 ;;
    --torch-index=*) torch_index="${1#*=}"; shift ;;
    --force) force=1; shift ;;
    *) echo "peer_env.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

if [[ -z "$python_bin" ]]; then
  if command -v python3.11 >/dev/null 2>&1; then python_bin=python3.11; else python_bin=python3; fi
fi

pins="torch==${TORCH_VERSION} transformers==${TRANSFORMERS_VERSION} safetensors==${SAFETENSORS_VERSION} tokenizers==${TOKENIZERS_VERSION} absl-py==${ABSL_VERSION}"
stamp="${venv}/.benchmark-pins"
peer_python="${venv}/bin/python"

# Imports the peer's packages and prints their versions; fails if any is missing.
check_imports() {
  "$peer_python" - <<'PY'
import absl, safetensors, tokenizers, torch, transformers  # noqa: F401
from transformers import BertForSequenceClassification  # noqa: F401
print(f"torch {torch.__version__} (CUDA build: {torch.version.cuda is not None}), "
      f"transformers {transformers.__version__}, safetensors {safetensors.__version__}, "
      f"tokenizers {tokenizers.__version__}")
PY
}

if [[ "$force" -eq 0 && -x "$peer_python" && -f "$stamp" && "$(cat "$stamp")" == "$pins" ]]; then
  if versions="$(check_imports 2>/dev/null)"; then
    echo "Peer environment ready in ${venv}: ${versions}"
    exit 0
  fi
  echo "Peer environment in ${venv} does not import cleanly: recreating it." >&2
fi

rm -rf "$venv"
echo "Creating the peer environment in ${venv} with ${python_bin} (a few minutes) ..."
"$python_bin" -m venv "$venv"
"$peer_python" -m pip install -q --upgrade pip
torch_args=()
if [[ -n "$torch_index" ]]; then
  torch_args=(--extra-index-url "$torch_index")
fi
# torch first and alone: transformers does not depend on it, so nothing else can
# swap in another build.
"$peer_python" -m pip install -q "${torch_args[@]}" "torch==${TORCH_VERSION}"
"$peer_python" -m pip install -q "transformers==${TRANSFORMERS_VERSION}" \
  "safetensors==${SAFETENSORS_VERSION}" "tokenizers==${TOKENIZERS_VERSION}" "absl-py==${ABSL_VERSION}"
versions="$(check_imports)"
echo "$pins" >"$stamp"
echo "Peer environment ready in ${venv}: ${versions}"
