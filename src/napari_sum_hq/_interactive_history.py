"""The committed-objects Labels layer's edit history, as the interactive widget reads it: its largest id
(:class:`MaxLabel`, kept from its edit events) and its last undo step (:func:`last_edit`)."""

from __future__ import annotations

import numpy as np
from napari.layers import Labels


class MaxLabel:
    """The largest id in a Labels layer, without scanning the layer at every commit.

    Scanned once (at most), then kept up to date from the layer's ``paint`` events (brush,
    fill, ``data_setitem``: the commits themselves) and reset when its data is replaced.
    Undoing never raises it, so an id freed by an undo is not handed out again until the
    layer is rescanned; ids stay unique.

    Parameters
    ----------
    layer : napari.layers.Labels
    known_empty : bool
        The layer was just created with zeros (no scan needed).
    """

    def __init__(self, layer: Labels, known_empty: bool = False) -> None:
        self.layer = layer
        self._max: int | None = 0 if known_empty else None
        layer.events.paint.connect(self._on_paint)
        layer.events.data.connect(self._on_data)

    def value(self) -> int:
        """The largest id (0 for an empty layer)."""
        if self._max is None:
            self._max = int(np.max(self.layer.data)) if self.layer.data.size else 0
        return self._max

    def _on_paint(self, event) -> None:
        if self._max is not None:
            for atom in event.value:
                new = np.asarray(atom[-1])
                if new.size:
                    self._max = max(self._max, int(new.max()))

    def _on_data(self, _event=None) -> None:
        self._max = None


def last_edit(layer: Labels) -> object | None:
    """The last item of a Labels layer's undo history, or None.

    napari (0.5 - 0.9) has no public accessor for it; this is the one place that reads it.
    """
    history = getattr(layer, "_undo_history", None)
    return history[-1] if history else None
