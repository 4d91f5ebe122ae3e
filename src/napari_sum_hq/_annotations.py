"""What the interactive widget keeps per image, and what it remembers per viewer.

**Per image** (:class:`ImageAnnotations`): the image's own layers (:class:`AnnotationLayers`),
the windows written in its current-object and uncertainty layers, the low-resolution logits
of its last committed objects (for refinement), the predicted IoU and stability of its current objects, the
undo-history atoms of its commits (and the committed objects' features before each, for undo), the
prompts of its commits and its annotation file (:mod:`napari_sum_hq._annotation_file`).
Switching images switches the whole state: the other image's layers are hidden (and shown
again when it is chosen again), its uncommitted prompts and objects stay with it.

**Per viewer** (:func:`viewer_memory`): the last model, device, task, uncertainty method,
cache folder, commit mode, the chosen image and every image's state. Closing the widget (its
dock's x) keeps them here, in memory, for the lifetime of the viewer; the widget opened again
from the Plugins menu starts from them (nothing is written to disk or to QSettings).
"""

from __future__ import annotations

import weakref
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from napari.layers import Image, Labels

from ._annotation_file import CommitPrompts
from ._interactive_segment import RememberedLogits
from ._interactive_history import MaxLabel
from ._interactive_scores import ObjectScore
from ._layers import COMMITTED_NAME, CURRENT_NAME, AnnotationLayers, Windows, edited_windows
from ._session import SliceKey

#: Undo steps a napari Labels layer keeps (its commits are recognised among as many).
NAPARI_HISTORY = 100


class ImageAnnotations:
    """The state of one image's annotation.

    Parameters
    ----------
    viewer : napari.Viewer
    image : napari.layers.Image
    """

    def __init__(self, viewer, image: Image) -> None:
        self.layers = AnnotationLayers(viewer, image, on_result_layer=self._on_result_layer)
        self.current_windows = Windows()
        self.uncertainty_windows = Windows()
        self.remembered: OrderedDict[int, RememberedLogits] = OrderedDict()
        self.commit_atoms: deque = deque(maxlen=NAPARI_HISTORY)
        #: (undo-history step of a commit, its FeaturesUndo: the rows it changed as they were before), for undo
        self.feature_snapshots: deque = deque(maxlen=NAPARI_HISTORY)
        #: the current objects' scores by (slice key, index)
        self.current_scores: dict[tuple[SliceKey, int], ObjectScore] = {}
        self.max_label: MaxLabel | None = None
        self.commit_prompts = CommitPrompts(self.layers.ndim)
        self.annotation_path: str | None = None  # None: not chosen yet (the default beside the image)
        self._hidden: list = []

    @property
    def image(self) -> Image:
        """The image."""
        return self.layers.image

    def _on_result_layer(self, layer: Labels, created: bool) -> None:
        if self.layers.existing(CURRENT_NAME) is layer:
            # what the user paints on the current object is committed with it
            layer.events.paint.connect(partial(self._on_current_painted, layer))
        elif self.layers.existing(COMMITTED_NAME) is layer:
            self.max_label = MaxLabel(layer, known_empty=created)

    def _on_current_painted(self, layer: Labels, event) -> None:
        if self.layers.existing(CURRENT_NAME) is layer:
            for key, region in edited_windows(event.value, layer.ndim):
                self.current_windows.add(key, region)

    def hide(self) -> None:
        """Hide this image's visible layers (another image is being annotated)."""
        self._hidden = [layer for layer in self.layers.owned() if layer.visible]
        for layer in self._hidden:
            layer.visible = False

    def show(self) -> None:
        """Show again the layers :meth:`hide` hid, above the image."""
        for layer in self._hidden:
            layer.visible = True
        self._hidden = []
        self.layers.raise_above_image()


@dataclass
class ViewerMemory:
    """The widget's choices and the images' states, kept across closing and reopening the widget."""

    model_source: str | None = None
    device: str | None = None
    task: int | None = None
    uncertainty: str | None = None
    cache_folder: str = ""
    commit_mode: str | None = None
    image: Any = None  # weakref.ref of the chosen image layer, or None
    images: dict[int, ImageAnnotations] = field(default_factory=dict)

    def chosen_image(self) -> Image | None:
        """The image layer chosen last (None when none was or it is gone)."""
        return None if self.image is None else self.image()

    def annotations(self, viewer, image: Image) -> ImageAnnotations:
        """The state of ``image`` (created on first use)."""
        state = self.images.get(id(image))
        if state is None or state.image is not image:
            state = self.images[id(image)] = ImageAnnotations(viewer, image)
        return state

    def forget_removed(self, viewer) -> None:
        """Drop the states of images no longer in the viewer."""
        for key, state in list(self.images.items()):
            if state.image not in viewer.layers:
                del self.images[key]


_MEMORY: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def viewer_memory(viewer) -> ViewerMemory:
    """The :class:`ViewerMemory` of ``viewer`` (created on first use, dropped with the viewer)."""
    memory = _MEMORY.get(viewer)
    if memory is None:
        memory = _MEMORY[viewer] = ViewerMemory()
    return memory
