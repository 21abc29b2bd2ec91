#!/usr/bin/env bash
# Create ./.venv (if missing) and install napari-ovsam with everything it needs. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
# torch/torchvision are pinned to the builds this project is tested with.
.venv/bin/python -m pip install -q "torch==2.14.1" "torchvision==0.29.1" -e ".[napari,qt,train,batch,serve,ray,dev]"
