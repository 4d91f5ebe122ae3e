#!/usr/bin/env bash
# Install napari-sum-hq from this checkout, then segment the bundled sample image from one click with the
# default model (HQ-SAM ViT-B, downloaded once and verified by hash), writing mask.tif and uncertainty.tif.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! "$PY" -c "import torch" >/dev/null 2>&1; then
  "$PY" -m pip install -q "torch==2.13.0" ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}
fi
"$PY" -m pip install -q .
"$PY" -m sum_core.cli segment sample --point 88,203 --out mask.tif --uncertainty-out uncertainty.tif
