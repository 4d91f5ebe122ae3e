"""How the plugin shows a per-pixel uncertainty map: the keyword arguments of its napari Image layers."""

from __future__ import annotations

__all__ = ["UNCERTAINTY_STYLE"]

#: ``viewer.add_image(values, **UNCERTAINTY_STYLE)``: uncertainty in [0, 1], magma, added over the image.
UNCERTAINTY_STYLE = {"colormap": "magma", "contrast_limits": (0.0, 1.0), "blending": "additive", "opacity": 0.7}
