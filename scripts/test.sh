#!/usr/bin/env bash
# Install everything the test suite needs on a fresh Debian/Ubuntu machine, then run the whole suite.
#   bash scripts/test.sh            # from a checkout; extra arguments go to pytest
# CPU-only torch: the script installs torch==2.13.0 before the package, so pip never resolves a CUDA
# build. Set TORCH_INDEX_URL (e.g. https://download.pytorch.org/whl/cpu) to choose the index torch comes from.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; fi

if command -v apt-get >/dev/null 2>&1; then
  echo "== Debian packages: Xvfb, Mesa, Qt xcb libraries"
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    xvfb xauth libgl1-mesa-dri libegl1 libglib2.0-0 libfontconfig1 libdbus-1-3 \
    libxkbcommon-x11-0 libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0 \
    libxcb-render-util0 libxcb-xinerama0 libxcb-xfixes0 libxcb-shape0 libxcb-cursor0 >/dev/null
fi

echo "== Python packages"
if ! "$PY" -c "import torch" >/dev/null 2>&1; then
  "$PY" -m pip install -q "torch==2.13.0" ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}
fi
# The GUI tests run with PyQt5 ([napari-pyqt5]); the [napari] extra users install brings PyQt6, checked
# below on a subset of them, with PyQt6 kept in .qt6/ so that pytest-qt does not switch the whole suite.
"$PY" -m pip install -q -e ".[napari-pyqt5,testing]"
# Property-based tests (tests/test_reliability_fuzz.py); pure Python, it pulls no torch.
"$PY" -m pip install -q "hypothesis>=6.100"
# Reference implementations for the equivalence tests. They declare torchvision, which would replace
# the CPU torch with CUDA wheels, and they import it only at module level (stubbed in the tests).
"$PY" -m pip install -q --no-deps "segment-anything==1.0" "segment-anything-hq==0.3"
# torch-em: micro-sam's AIS decoder (UNETR) and watershed, the AIS reference. It too declares torchvision
# (stubbed in the tests, see tests/test_ais_decoder.py), so it goes in with --no-deps, with what
# `import torch_em` really imports: python-elf (which imports bioimage-cpp and scikit-learn) and kornia.
"$PY" -m pip install -q "scikit-learn==1.9.1" "bioimage-cpp==0.9.0"
"$PY" -m pip install -q --no-deps "torch-em==0.10.9" "python-elf==0.9.2" "kornia==0.9.0" "kornia-rs==0.2.0"
# Model export (the [export] extra, tests/test_export_*.py): ONNX, its CPU runtime and the BioImage.IO
# spec validator; none of them declares torch.
"$PY" -m pip install -q "onnx==1.23.0" "onnxruntime==1.31.0" "bioimageio.spec==0.5.14"
# bioimageio.core runs its test_model on our packages (tests/test_export_bioimageio.py); 0.11.0 pins
# bioimageio.spec 0.5.12 but runs with 0.5.14, hence --no-deps (its other imports are installed above).
"$PY" -m pip install -q --no-deps "bioimageio.core==0.11.0" "xarray==2026.9.0"
# Result exports and NGFF outputs read back by other projects' readers (tests/test_results_*.py,
# test_batch_ngff.py, test_axes_sources.py, test_napari_reader*.py): shapely, geojson, pycocotools; ome-zarr-py
# (writer of test inputs, Reader of our outputs) and ome-zarr-models (NGFF 0.5 validator) go in with --no-deps,
# so that pip keeps the pydantic bioimageio.spec uses and adds no S3 stack (their imports are installed above).
"$PY" -m pip install -q "roifile==2026.2.10" "shapely==2.2.0" "geojson==3.3.0" "pycocotools==2.0.11"
"$PY" -m pip install -q --no-deps "ome-zarr==0.18.0" "ome-zarr-models==1.7" "pydantic-zarr==0.9.2" \
  "Deprecated==1.3.1" "rangehttpserver==1.4.0"

echo "== Package: sdist + wheel build, twine check, the wheel installed in a fresh venv (scripts/check_package.sh)"
bash scripts/check_package.sh

echo "== GUI tests with PyQt6 (the [napari] extra's binding): a representative subset"
"$PY" -m pip install -q --no-deps --target .qt6 --upgrade "PyQt6==6.7.1" "PyQt6-Qt6==6.7.3" "PyQt6-sip==13.13.0"
PYTHONPATH="$PWD/.qt6" QT_API=pyqt6 PYTEST_QT_API=pyqt6 xvfb-run -a -s "-screen 0 1280x1024x24" \
  "$PY" -m pytest -q -p no:cacheprovider tests/test_napari_first_contact.py tests/test_napari_ux_lifetime.py \
  tests/test_napari_ux_prompts.py tests/test_napari_finish_interactive.py

echo "== Test suite"
exec xvfb-run -a -s "-screen 0 1280x1024x24" "$PY" -m pytest -q "$@"
