"""Layering of the checkout, checked with import-linter against the contracts in pyproject.toml.

The contracts (``[tool.importlinter]``): sum_core never imports napari / Qt / magicgui / vispy, the plugin or
training; sum_core.modeling imports nothing of sum_core but its errors; the plugin and training are independent;
no import cycles between the modules of any package; predictor above tiled_predictor and sources above imageio;
private modules (``_name.py``) imported only inside their package.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path


REPO = Path(__file__).resolve().parents[1]
PACKAGES = {"sum_core": "src/sum_core", "napari_sum_hq": "src/napari_sum_hq", "training": "training"}

# One contract id per layering rule of pyproject.toml (a renamed or dropped contract fails here).
CONTRACT_IDS = (
    "headless-core",
    "modeling-bottom",
    "plugin-training-independent",
    "no-cycles",
    "predictor-over-tiled-predictor",
    "sources-over-imageio",
    "private-modules",
)


def lint_imports(root: Path, config: Path) -> subprocess.CompletedProcess:
    """Run import-linter on the packages under ``root`` (src layout + training/), uncached.

    import-linter is in the testing extra; without it the run fails with ModuleNotFoundError in its report.
    """
    code = (
        "import sys\n"
        "from importlinter.cli import lint_imports\n"
        f"sys.exit(lint_imports(config_filename={str(config)!r}, no_cache=True, no_logo=True))\n"
    )
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    # The packages of ``root`` first, whatever is installed (an editable install points at the checkout,
    # a normal one at site-packages).
    env.update(PYTHONPATH=os.pathsep.join([str(root / "src"), str(root)]), COLUMNS="200", NO_COLOR="1")
    return subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True,
                          timeout=120)


def test_checkout_keeps_every_import_contract():
    result = lint_imports(REPO, REPO / "pyproject.toml")
    report = result.stdout + result.stderr
    assert result.returncode == 0, f"import-linter found broken layering contracts:\n{report}"
    assert f"Contracts: {len(CONTRACT_IDS)} kept, 0 broken." in report, report


def copy_packages(tmp_path: Path) -> Path:
    for name, relative in PACKAGES.items():
        shutil.copytree(REPO / relative, tmp_path / relative, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def append(path: Path, line: str) -> None:
    with path.open("a") as handle:
        handle.write(f"\n{line}\n")


def test_each_contract_catches_a_violation(tmp_path):
    """The contracts are not vacuous: one injected import per contract breaks exactly that contract."""
    root = copy_packages(tmp_path)
    core, plugin = root / "src/sum_core", root / "src/napari_sum_hq"
    append(core / "mask_ops.py", "import napari")                                  # headless-core
    append(core / "modeling/vit.py", "from ..image import prepare_image")          # modeling-bottom
    append(root / "training/metrics.py", "import napari_sum_hq")                   # plugin-training-independent
    append(core / "tiling.py", "from . import mask_ops")                           # no-cycles: mask_ops <-> tiling
    append(core / "mask_ops.py", "from . import tiling")
    append(core / "tiled_predictor.py", "from .predictor import Predictor")         # predictor-over-tiled-predictor
    append(core / "imageio.py", "from .sources import open_image")                 # sources-over-imageio
    private = sorted(p.stem for p in plugin.glob("_*.py") if p.stem != "__init__")[0]
    append(root / "training/metrics.py", f"from napari_sum_hq import {private}")   # private-modules
    result = lint_imports(root, root / "pyproject.toml")
    report = result.stdout + result.stderr
    assert result.returncode == 1, report
    assert f"Contracts: 0 kept, {len(CONTRACT_IDS)} broken." in report, report
    for expected in (
        "sum_core is not allowed to import napari",
        "sum_core.modeling.vit -> sum_core.image",
        "training is not allowed to import napari_sum_hq",
        "No cycles are allowed in sum_core.",
        "sum_core.tiled_predictor is not allowed to import sum_core.predictor",
        "sum_core.imageio is not allowed to import sum_core.sources",
        f"napari_sum_hq.{private}",
    ):
        assert expected in report, f"{expected!r} not in the report:\n{report}"
