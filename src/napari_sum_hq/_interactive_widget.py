"""Dock widget for interactive (prompt-based) segmentation with uncertainty.

Keys (bound on the viewer and on the two prompt layers, whose own bindings
would otherwise win when they are the active layer):

======================  ==============================================
``S``                   segment the current slice from its prompts
                        (several boxes: several objects)
``C``                   commit the current objects (new ids, or the id
                        being refined) and clear the prompts
``T``                   toggle the kind of the next point
                        (positive green / negative red)
``Shift+C``             clear prompts, current objects and uncertainty
                        on every slice (*Clear slice*: this slice only)
``Ctrl+Z``              undo the last commit (with the *committed
                        objects* layer active, napari's own undo of that
                        layer, which holds the commits too)
``Shift+S``             propagate the current object from the current
                        slice through the stack (3D / time)
``N``                   take the suggested next click (the star: green
                        positive, red negative) as a prompt and segment
                        again (:mod:`~napari_sum_hq._interactive_suggest`)
======================  ==============================================

**Scores.** Every committed object (each slice of it in a stack) gets a row in the committed
layer's ``features``: predicted IoU, stability, mean and boundary-band uncertainty, area and
bounding box (:mod:`napari_sum_hq._interactive_scores`); the review queue lists them as they are.

**Commits never destroy earlier work** by default: the *commit mode* is micro-sam's choice
(:mod:`napari_sum_hq._commit`): *protect objects* (default; committed objects keep every pixel,
and a new object covering most of a committed one is not committed again), *protect pixels*,
or *overwrite*. Committed objects get napari's random colour per id; the current, uncommitted
objects are all yellow. After a commit or a clear the next point is positive again.

**Prompts and results belong to their image.** Every image gets its own layers
(``<image> point prompts``, ``<image> box prompts``, ``<image> current object``, ``<image>
uncertainty``, ``<image> committed objects``; see :mod:`napari_sum_hq._layers`). Choosing
another image hides the previous image's layers and shows the chosen one's, moved above it when
they lay below; nothing of one image is reused for another, and coming back to an image finds
its prompts, uncommitted objects and commits as they were (:mod:`napari_sum_hq._annotations`).
Rectangles, ellipses and polygons in the box layer are box prompts (their bounding box); lines
and paths are refused with a message.

**Saved work.** Every commit (and undo) saves the committed objects and their prompts to the
*annotation file* (default ``<image file name>.sum-annotations.zarr`` beside the image's file; see
:mod:`napari_sum_hq._annotation_file`), and choosing an image whose file exists loads it (also
*Load*): nothing committed is lost when napari closes or crashes.

**Large images.** A cache folder typed after the image was chosen prepares it again with that
folder. Point markers and box outlines keep a constant size on the screen. S while a segmentation runs is ignored
with a message, so no tile is encoded twice. Planes segmented window by window follow an object
across at most *max tiles* tiles; a cut there is said in red and *Continue with all N tiles*
segments the object whole (:mod:`napari_sum_hq._large_image`).

**Lifetime.** Closing the dock widget (its x) releases it: its key bindings (viewer and prompt
layers) and event connections are removed, a running job is cancelled, timers stop and the
predictors (embeddings) are dropped, so slice changes no longer encode anything. The model
stays in :func:`sum_core.loading.resolve_model`'s small cache (two models), so opening the
widget again from the Plugins menu does not load it twice; the new widget starts from the last
model, device, task, uncertainty method, cache folder, commit mode, image and every image's
annotation state, kept in memory per viewer (:func:`napari_sum_hq._annotations.viewer_memory`).

Every plane (a 2D image or one slice of a stack) gets its own
:class:`sum_core.Predictor`, for every size (see :mod:`napari_sum_hq._session`):
choosing an image loads the model and prepares the displayed plane in a worker
thread (encoding it when it is one encoder window), and every segmentation (S)
runs in a worker thread too, encoding the tiles its object reaches on larger
planes, with progress and Cancel (a ``threading.Event`` handed to
``Predictor.predict``). Every job gets a generation number; the results of
cancelled or superseded jobs are dropped. The GUI thread only writes the
windows of the results: commits go through ``Labels.data_setitem`` (napari's
undo history holds them), clears and refreshes touch only the slice or window
that changed.

**Code.** The class is assembled from parts with one purpose each: the controls
(:mod:`~napari_sum_hq._interactive_form`), the image / model / slice choice and the preparation
(:mod:`~napari_sum_hq._interactive_images`), prompts and segmentation
(:mod:`~napari_sum_hq._interactive_prompts`; the worker's part: :mod:`~napari_sum_hq._interactive_segment`),
the suggested click (:mod:`~napari_sum_hq._interactive_suggest`), commits and their scores and the annotation file
(:mod:`~napari_sum_hq._interactive_commit`), propagation
(:mod:`~napari_sum_hq._interactive_propagation`), keys and lifetime
(:mod:`~napari_sum_hq._interactive_lifetime`) and the background jobs
(:mod:`~napari_sum_hq._interactive_jobs`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from napari.layers import Layer
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QWidget

from ._annotation_saver import AnnotationSaver
from ._annotations import ImageAnnotations, viewer_memory
from ._interactive_commit import CommitPart
from ._interactive_form import FormPart
from ._interactive_images import SLICE_DEBOUNCE_MS, ImagesPart
from ._interactive_jobs import PROGRESS_POLL_MS, JobsPart, RunningJob
from ._interactive_lifetime import LifetimePart
from ._interactive_prompts import PromptsPart
from ._interactive_propagation import PropagationPart
from ._interactive_segment import SegmentResult
from ._interactive_suggest import SuggestPart
from ._job_widget import ProgressTracker
from ._layers import AnnotationLayers
from ._session import PlanePredictors

if TYPE_CHECKING:
    import napari


class InteractiveSegmentationWidget(
    FormPart, ImagesPart, PromptsPart, SuggestPart, CommitPart, PropagationPart, LifetimePart, JobsPart, QWidget
):
    """Segment objects from point and box prompts, with a per-pixel uncertainty map.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
        The viewer to work in (injected by napari).
    """

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        self.viewer = viewer
        self.memory = viewer_memory(viewer)
        self.predictors = PlanePredictors()
        self.state: ImageAnnotations | None = None
        self._generation = 0
        self._job: RunningJob | None = None
        self._tracker: ProgressTracker | None = None
        self._workers: set = set()
        self._preparing: tuple | None = None
        self._segment_when_ready = False
        self._last_result: SegmentResult | None = None
        self._docked = False
        self._released = False
        self._viewer_keys: dict[str, Callable] = {}
        self._layer_keys: list[tuple[Layer, dict[str, Callable]]] = []
        self._slice_timer = QTimer(self)
        self._slice_timer.setSingleShot(True)
        self._slice_timer.setInterval(SLICE_DEBOUNCE_MS)
        self._slice_timer.timeout.connect(self._on_slice_settled)
        self._progress_timer = QTimer(self)
        self._progress_timer.setInterval(PROGRESS_POLL_MS)
        self._progress_timer.timeout.connect(self._show_job_status)
        self._saver = AnnotationSaver()
        self._saver.done.connect(self._on_saved)
        self._build_ui()
        self._restore_choices()
        self._refresh_images()
        viewer.layers.events.inserted.connect(self._refresh_images)
        viewer.layers.events.removed.connect(self._refresh_images)
        viewer.dims.events.current_step.connect(self._on_step_changed)
        self._bind_keys(viewer)
        for state in self.memory.images.values():  # prompt layers of a previous widget: keys, live mode
            for layer in state.layers.prompt_layers():
                self._on_prompt_layer(layer)
            state.layers.on_prompt_layer = self._on_prompt_layer
        chosen = self.memory.chosen_image()
        if chosen is not None and self.image_combo.findData(chosen) > 0:
            self.image_combo.setCurrentIndex(self.image_combo.findData(chosen))

    @property
    def layers(self) -> AnnotationLayers | None:
        """The layers of the chosen image (None when no image is chosen)."""
        return None if self.state is None else self.state.layers
