#!/usr/bin/env bash
# Installs sparsetier into ./.venv with everything the tests need, and fetches the models.
#   ./install.sh          package + test tools + the four catalog models
#   ./install.sh --bench  also llama-cpp-python, the benchmark's speed peer (builds llama.cpp: minutes)
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=".venv/bin/python -m pip"
$PIP install -q "setuptools>=68" wheel
# The CPU build of PyTorch. A machine with an NVIDIA GPU installs PyTorch's CUDA build into
# .venv first (see README); an installed torch is kept.
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  $PIP install -q "torch==2.13.0"
fi
extras="test"
if [ "${1:-}" = "--bench" ]; then extras="test,bench"; fi
# --no-build-isolation: the C++ kernels compile against the torch installed above.
$PIP install -q --no-build-isolation -e ".[$extras]"
.venv/bin/sparsetier pull --all
