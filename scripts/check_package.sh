#!/usr/bin/env bash
# Build the sdist and wheel as a release would, check them with twine, install the wheel (built from the
# sdist) into a fresh virtual environment and run what a user runs first: `sum-hq --version`, the models
# listing and napari's discovery of the plugin.
#   bash scripts/check_package.sh        # from a checkout, after scripts/test.sh's installs
# The venv sees the already installed dependencies (--system-site-packages: torch, napari...) but the
# wheel's own files come first, and the script proves they are the ones imported.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

"$PY" -m pip install -q "build==1.3.0" "twine==6.2.0"
"$PY" -m build --outdir "$work/dist" . >"$work/build.log" 2>&1 || { cat "$work/build.log"; exit 1; }
if grep -q "!!" "$work/build.log"; then  # setuptools deprecations end up as hard errors later
  grep -A8 "!!" "$work/build.log"; echo "check_package: the build printed a setuptools deprecation"; exit 1
fi
"$PY" -m twine check --strict "$work"/dist/*

"$PY" -m venv --system-site-packages "$work/venv"
"$work/venv/bin/python" -m pip install -q --no-deps "$work"/dist/*.whl
cd "$work"  # away from the checkout, so nothing is imported from src/
"$work/venv/bin/sum-hq" --version
"$work/venv/bin/sum-hq" models list >/dev/null
"$work/venv/bin/python" - <<'PY'
import importlib, sys
from pathlib import Path

venv = Path(sys.prefix)
for name in ("sum_core", "sum_core.export", "sum_core.batch", "sum_core.cli", "sum_core.modeling",
             "napari_sum_hq", "training"):
    module = importlib.import_module(name)
    assert venv in Path(module.__file__).resolve().parents, f"{name} imported from {module.__file__}, not the wheel"
import npe2
pm = npe2.PluginManager.instance()
pm.discover()
manifest = pm.get_manifest("napari-sum-hq")
widgets = [w.display_name for w in manifest.contributions.widgets]
assert "Interactive segmentation" in widgets, widgets
print("wheel OK:", len(widgets), "widgets,", sorted(p.name for p in (venv / "lib").glob("python*/site-packages/*")
                                                   if p.name.startswith(("sum_core", "napari_sum_hq", "training"))))
PY
