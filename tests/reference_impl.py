"""Test-only access to the reference implementations (PyPI ``segment-anything``,
``segment-anything-hq`` and ``torch-em``).

The packages import torchvision (sam-hq also timm) at import time, and
torchvision does not load with the CPU torch used here. When the real module
cannot be imported, a minimal stand-in with exactly the functions the
reference calls is registered in ``sys.modules`` first.
"""

from __future__ import annotations

import importlib
import sys
import types

import numpy as np
import torch


def _module_loads(name: str) -> bool:
    try:
        importlib.import_module(name)
    except Exception:  # noqa: BLE001 - any failure means "use the stub"
        for key in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
            del sys.modules[key]
        return False
    return True


def _stub_torchvision() -> None:
    from PIL import Image

    def to_pil_image(image: np.ndarray) -> Image.Image:
        return Image.fromarray(image)

    def resize(image: Image.Image, size: list[int]) -> Image.Image:
        # torchvision's PIL path: size is (h, w); PIL takes (w, h).
        return image.resize(tuple(size[::-1]), Image.BILINEAR)

    def box_area(boxes: torch.Tensor) -> torch.Tensor:
        return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])

    def batched_nms(boxes, scores, idxs, iou_threshold):  # pragma: no cover - unused here
        raise NotImplementedError("stub: NMS is not needed by the predictor path")

    tv = types.ModuleType("torchvision")
    transforms = types.ModuleType("torchvision.transforms")
    functional = types.ModuleType("torchvision.transforms.functional")
    functional.resize = resize
    functional.to_pil_image = to_pil_image
    ops = types.ModuleType("torchvision.ops")
    boxes_mod = types.ModuleType("torchvision.ops.boxes")
    boxes_mod.box_area = box_area
    boxes_mod.batched_nms = batched_nms
    tv.transforms, transforms.functional = transforms, functional
    tv.ops, ops.boxes = ops, boxes_mod
    sys.modules.update(
        {
            "torchvision": tv,
            "torchvision.transforms": transforms,
            "torchvision.transforms.functional": functional,
            "torchvision.ops": ops,
            "torchvision.ops.boxes": boxes_mod,
        }
    )


def _stub_timm() -> None:
    def to_2tuple(x):
        return tuple(x) if isinstance(x, (tuple, list)) else (x, x)

    class DropPath(torch.nn.Module):
        def __init__(self, drop_prob: float = 0.0) -> None:
            super().__init__()
            self.drop_prob = drop_prob

        def forward(self, x):
            return x

    def register_model(fn):
        return fn

    timm = types.ModuleType("timm")
    models = types.ModuleType("timm.models")
    layers = types.ModuleType("timm.models.layers")
    registry = types.ModuleType("timm.models.registry")
    layers.DropPath = DropPath
    layers.to_2tuple = to_2tuple
    layers.trunc_normal_ = torch.nn.init.trunc_normal_
    registry.register_model = register_model
    timm.models, models.layers, models.registry = models, layers, registry
    sys.modules.update(
        {"timm": timm, "timm.models": models, "timm.models.layers": layers, "timm.models.registry": registry}
    )


def _prepare() -> None:
    if not _module_loads("torchvision"):
        _stub_torchvision()
    if not _module_loads("timm"):
        _stub_timm()


def sam_hq():
    """Return the ``segment_anything_hq`` package (a test dependency)."""
    _prepare()
    return importlib.import_module("segment_anything_hq")


def sam():
    """Return the ``segment_anything`` package (a test dependency)."""
    _prepare()
    return importlib.import_module("segment_anything")


def _stub_make_grid() -> None:
    """Add ``torchvision.utils.make_grid`` to the stand-in (torch-em's tensorboard logger imports it)."""
    torchvision = sys.modules["torchvision"]
    if hasattr(torchvision, "utils"):  # the real torchvision
        return

    def make_grid(*args, **kwargs):  # pragma: no cover - torch-em's image logging is never run here
        raise NotImplementedError("stub: torch-em's tensorboard image logging is not used by the tests")

    utils = types.ModuleType("torchvision.utils")
    utils.make_grid = make_grid
    torchvision.utils = utils
    sys.modules["torchvision.utils"] = utils


def torch_em():
    """Return the ``torch_em`` package (a test-only reference, installed by scripts/test.sh with --no-deps).

    Raises
    ------
    ModuleNotFoundError
        When torch-em is not installed (callers skip).
    """
    _prepare()
    _stub_make_grid()
    return importlib.import_module("torch_em")
