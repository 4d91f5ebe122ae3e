"""The interactive widget's key bindings and lifetime: release on closing, choices kept per viewer.

Keys are bound on the viewer and on every prompt layer (whose own bindings would otherwise win
when it is the active layer), each calling the widget through a weak reference. Closing the
dock (its x) releases the widget (:meth:`LifetimePart.release`); its choices stay in the
viewer's memory (:func:`napari_sum_hq._annotations.viewer_memory`) for the next widget.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable

from napari.layers import Layer
from napari.utils.key_bindings import coerce_keybinding
from qtpy.QtCore import QEvent


def _unbind_own(owner, bindings: dict[str, Callable]) -> None:
    """Remove the key bindings of ``owner`` (viewer or layer) that are still the given functions."""
    for key, function in bindings.items():
        if owner.keymap.get(coerce_keybinding(key)) is function:
            owner.bind_key(key, None)


class LifetimePart:
    """Part of :class:`~napari_sum_hq._interactive_widget.InteractiveSegmentationWidget`: keys,
    release and remembered choices."""

    def _bind_keys(self, viewer) -> None:
        self._viewer_keys = self._key_bindings()
        for key, function in self._viewer_keys.items():
            viewer.bind_key(key, function, overwrite=True)

    def _key_bindings(self) -> dict[str, Callable]:
        """Key -> napari key-binding function calling this widget's action through a weak reference
        (a binding left on a layer never keeps a closed widget, or its viewer, alive)."""
        return {
            key: lambda _owner, method=weakref.WeakMethod(action): (m := method()) is not None and m()
            for key, action in self._key_actions().items()
        }

    def _key_actions(self) -> dict:
        return {
            "S": self.segment,
            "C": self.commit,
            "T": self.toggle_point_kind,
            "Shift-C": self.clear,
            "Control-Z": self.undo_commit,
            "Shift-S": self.propagate,
            "N": self.accept_suggestion,
        }

    def _on_prompt_layer(self, layer: Layer) -> None:
        bindings = self._key_bindings()
        for key, function in bindings.items():
            layer.bind_key(key, function, overwrite=True)
        self._layer_keys.append((layer, bindings))
        layer.events.data.connect(self._on_prompts_changed)
        if "label" in getattr(layer, "features", {}):
            layer.feature_defaults = {"label": self._point_kind}

    def event(self, event: QEvent) -> bool:
        """Release the widget when napari takes it out of its dock (the dock's x, ``remove_dock_widget``)."""
        if event.type() == QEvent.ParentChange:
            if self.parent() is not None:
                self._docked = True
            elif self._docked:
                self.release()
        return super().event(event)

    @property
    def is_released(self) -> bool:
        """Whether :meth:`release` ran (the widget does nothing any more)."""
        return self._released

    def release(self) -> None:
        """Stop everything this widget does in the viewer (see the module docstring, *Lifetime*).

        Called when its dock is closed; idempotent. The choices and every image's annotation state
        stay in the viewer's memory for the next widget.
        """
        if self._released:
            return
        self._released = True
        self._remember_choices()
        self.cancel(quiet=True)
        for worker in list(self._workers):
            worker.quit()
        self._slice_timer.stop()
        self._progress_timer.stop()
        viewer = self.viewer
        viewer.layers.events.inserted.disconnect(self._refresh_images)
        viewer.layers.events.removed.disconnect(self._refresh_images)
        viewer.dims.events.current_step.disconnect(self._on_step_changed)
        _unbind_own(viewer, self._viewer_keys)
        for layer, bindings in self._layer_keys:
            _unbind_own(layer, bindings)
            layer.events.data.disconnect(self._on_prompts_changed)
        self._layer_keys.clear()
        for state in self.memory.images.values():
            if state.layers.on_prompt_layer == self._on_prompt_layer:
                state.layers.on_prompt_layer = None
        self.predictors.clear()
        self._saver.shutdown()  # the last commit's save is written
        self._last_result = None
        self.state = None

    def _remember_choices(self) -> None:
        memory, choice = self.memory, self.model_choice()
        memory.model_source, memory.device = choice.source, choice.device
        memory.task = self.task_combo.currentData()
        memory.uncertainty = self.uncertainty_combo.currentText()
        memory.cache_folder = self.cache_edit.text()
        memory.commit_mode = self.commit_mode_combo.currentText()
        image = self.image_layer
        memory.image = None if image is None else weakref.ref(image)

    def _restore_choices(self) -> None:
        memory = self.memory
        if memory.model_source is not None:
            self.model_picker.set_source(memory.model_source)
            self.device_combo.setCurrentText(memory.device)
            self.task_combo.setCurrentIndex(self.task_combo.findData(memory.task))
            self.uncertainty_combo.setCurrentText(memory.uncertainty)
            self.cache_edit.setText(memory.cache_folder)
            self.commit_mode_combo.setCurrentText(memory.commit_mode)
