"""Form pieces shared by the widgets: model choice (all three), automatic mode and options, tiling, image choice."""

from __future__ import annotations

import dataclasses
from functools import partial
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from napari.utils.notifications import show_error
from qtpy.QtCore import Qt, Signal
from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)
from sum_core.errors import SumError

from ._batch_jobs import decoder_mode, registry_decoder
from ._download import DownloadPanel
from ._jobs import start_worker
from ._session import DEVICES, ModelChoice

if TYPE_CHECKING:
    import napari
    from napari.layers import Image

LOCAL_FILE_ITEM = "local file..."


class ModelPicker(QWidget):
    """Registry model or checkpoint file, and the device to run on.

    A registry model whose files are not in the cache is never downloaded behind the user's
    back: :attr:`download` (a :class:`~napari_sum_hq._download.DownloadPanel`) says so, with
    its size, a Download button, progress in bytes and Cancel; :meth:`not_downloaded` is the
    check a widget makes before a job that would load the model.

    Signals
    -------
    changed
        Emitted when the chosen model or device changes.
    """

    changed = Signal()

    def __init__(self) -> None:
        super().__init__()
        from sum_core.zoo import DEFAULT_MODEL, list_models

        try:
            names = list_models()
        except SumError as exc:
            show_error(str(exc))
            names = []
        self.model_combo = QComboBox()
        self.model_combo.addItems([DEFAULT_MODEL, *(n for n in names if n != DEFAULT_MODEL)])
        self.model_combo.addItem(LOCAL_FILE_ITEM)
        self._index = 0
        self.model_combo.activated.connect(self._on_activated)
        self.device_combo = QComboBox()
        self.device_combo.addItems(DEVICES)
        self.device_combo.currentIndexChanged.connect(self.changed)
        self.model_combo.setToolTip(
            "Registry model (downloaded once into the model cache, on request) or a checkpoint file "
            f"('{LOCAL_FILE_ITEM}'); `sum-hq models list` describes the registry models."
        )
        self.device_combo.setToolTip("Where the model runs: auto picks a GPU (CUDA / Apple MPS) when there is one.")
        self.download = DownloadPanel()
        form = QFormLayout(self)
        form.setContentsMargins(0, 0, 0, 0)
        form.addRow("model", self.model_combo)
        form.addRow(self.download)
        form.addRow("device", self.device_combo)
        self.changed.connect(self._check_download)
        self._check_download()

    def choice(self) -> ModelChoice:
        """The chosen model source and device."""
        return ModelChoice(self.model_combo.currentText(), self.device_combo.currentText())

    def not_downloaded(self) -> str:
        """Why the chosen model cannot run yet (its files are not downloaded), or ``""``.

        Call it before starting a job that loads the model: a non-empty answer is the status line
        to show (the download panel is showing too).
        """
        self._check_download()
        return self.download.status()

    def _check_download(self) -> None:
        self.download.show_for(self.model_combo.currentText())

    def set_source(self, source: str) -> None:
        """Choose a registry name or a checkpoint path."""
        index = self.model_combo.findText(source)
        if index < 0:
            index = self.model_combo.count() - 1
            self.model_combo.insertItem(index, source)
        self.model_combo.setCurrentIndex(index)
        self._index = index
        self.changed.emit()

    def _on_activated(self, index: int) -> None:
        if self.model_combo.itemText(index) != LOCAL_FILE_ITEM:
            if index != self._index:
                self._index = index
                self.changed.emit()
            return
        path, _ = QFileDialog.getOpenFileName(
            self, "Model checkpoint", "", "Checkpoints (*.pth *.pt *.ckpt *.bin);;All files (*)"
        )
        if path:
            self.set_source(path)
        else:
            self.model_combo.setCurrentIndex(self._index)


#: The AMG options the widgets show: field of ``AutoOptions`` -> (label, lowest, highest value).
AMG_FIELDS: dict[str, tuple[str, float, float]] = {
    "points_per_side": ("points per side", 1, 256),
    "pred_iou_thresh": ("pred IoU thresh", 0.0, 1.0),
    "stability_thresh": ("stability thresh", 0.0, 1.0),
    "box_nms_thresh": ("box NMS thresh", 0.0, 1.0),
    "min_area": ("min area", 0, 10**6),
}
#: The AIS options the widgets show (all of ``AisOptions``), as :data:`AMG_FIELDS`.
AIS_FIELDS: dict[str, tuple[str, float, float]] = {
    "center_distance_threshold": ("centre distance thresh", 0.0, 1.0),
    "boundary_distance_threshold": ("boundary distance thresh", 0.0, 0.999),
    "foreground_threshold": ("foreground thresh", 0.0, 1.0),
    "foreground_smoothing": ("foreground smoothing", 0.0, 100.0),
    "distance_smoothing": ("distance smoothing", 0.0, 100.0),
    "min_size": ("min size", 0, 10**6),
}
#: The automatic modes the widgets offer: ``auto_segment`` / ``segment_zarr`` mode -> label.
MODE_LABELS = {"ais": "AIS (decoder)", "amg": "AMG (point grid)"}


class OptionsGroup(QGroupBox):
    """Spin boxes for fields of an options dataclass (``AutoOptions``, ``AisOptions``).

    Each spin box starts at the field's default and has its ``metadata["help"]`` as tooltip;
    :meth:`options` builds the dataclass, which validates the values.

    Parameters
    ----------
    title : str
        Group title.
    options_type : type
        A frozen dataclass whose fields all have defaults.
    fields : dict
        Field name -> (label, lowest, highest value) of the fields shown (the others keep their
        defaults); an int default gives an integer spin box.
    """

    def __init__(self, title: str, options_type: type, fields: dict[str, tuple[str, float, float]]) -> None:
        super().__init__(title)
        self.options_type = options_type
        defaults = options_type()
        helps = {f.name: f.metadata["help"] for f in dataclasses.fields(options_type)}
        self.spins: dict[str, QSpinBox | QDoubleSpinBox] = {}
        form = QFormLayout(self)
        for name, (label, low, high) in fields.items():
            value, tip = getattr(defaults, name), helps[name][:1].upper() + helps[name][1:] + "."
            if isinstance(value, int):
                spin = _int_spin(int(low), int(high), value, tip)
            else:
                spin = _float_spin(value, tip, low, high)
            self.spins[name] = spin
            form.addRow(label, spin)

    def options(self) -> Any:
        """The options of the current values.

        Raises
        ------
        InvalidInputError
            A value the dataclass refuses.
        """
        return self.options_type(**{name: spin.value() for name, spin in self.spins.items()})


class TilingOptions(QGroupBox):
    """Tile side and halo of :func:`sum_core.tiling.tile_grid` (0: the default tiling)."""

    def __init__(self, title: str = "Tiling") -> None:
        super().__init__(title)
        self.tile_spin = _int_spin(0, 10**5, 0, "Inner tile side in pixels (0: default tiling).")
        self.tile_spin.setSpecialValueText("default")
        self.halo_spin = _int_spin(0, 10**4, 0, "Context around each tile (0: model input / 16); with a tile only.")
        self.halo_spin.setSpecialValueText("default")
        form = QFormLayout(self)
        form.addRow("tile", self.tile_spin)
        form.addRow("halo", self.halo_spin)

    def tiling(self) -> dict[str, int | None]:
        """``tile_shape`` and ``halo`` keyword arguments (``None``: the default)."""
        tile = self.tile_spin.value() or None
        return {"tile_shape": tile, "halo": (self.halo_spin.value() or None) if tile else None}


class ModeOptions(QWidget):
    """The automatic mode (AIS or AMG) and the options group of the chosen mode.

    AIS can be chosen only when the model carries an AIS decoder: :meth:`set_decoder` enables
    and preselects it, or disables it with a tooltip saying why.
    """

    def __init__(self) -> None:
        super().__init__()
        from sum_core.ais import AisOptions
        from sum_core.auto_options import AutoOptions

        self.mode_combo = QComboBox()
        for mode, label in MODE_LABELS.items():
            self.mode_combo.addItem(label, mode)
        self.groups = {
            "ais": OptionsGroup("AIS options (decoder + watershed)", AisOptions, AIS_FIELDS),
            "amg": OptionsGroup("AMG options (per tile)", AutoOptions, AMG_FIELDS),
        }
        self.mode_combo.currentIndexChanged.connect(self._show_group)
        form = QFormLayout()
        form.setContentsMargins(0, 0, 0, 0)
        form.addRow("mode", self.mode_combo)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(form)
        for group in self.groups.values():
            layout.addWidget(group)
        self._picker: ModelPicker | None = None
        self._checking: ModelChoice | None = None
        self._checked_source: str | None = None  # the source decided last (a device change keeps the choice)
        self._workers: set = set()
        self._when_checked: Callable[[], None] | None = None
        self.set_decoder(False, "")
        self._show_group()

    def follow(self, picker: ModelPicker) -> None:
        """Check each model chosen in ``picker`` for an AIS decoder (now, and on every change)."""
        self._picker = picker
        picker.changed.connect(self.check_model)
        self.check_model()

    def check_model(self) -> None:
        """Enable and preselect AIS iff the chosen model carries an AIS decoder.

        A registry model is decided from its entry (nothing is downloaded); a checkpoint file is
        loaded in a worker thread (:func:`~napari_sum_hq._batch_jobs.decoder_mode`; the job then
        reuses the loaded model), AIS staying disabled until it answers. Choosing another device
        for a model already decided keeps the mode chosen.
        """
        from napari.qt.threading import create_worker

        choice = self._picker.choice()
        if choice.source == self._checked_source:
            return
        self._checking, self._checked_source = choice, None
        try:
            has_decoder = registry_decoder(choice.source)
        except SumError as exc:
            self.set_decoder(False, f"AIS unavailable: {exc}")
            return
        if has_decoder is not None:
            self._decided(choice, has_decoder)
            return
        self.set_decoder(False, f"Checking whether {choice.source} carries an AIS decoder...")
        worker = create_worker(decoder_mode, choice, _start_thread=False, _ignore_errors=True)
        worker.returned.connect(partial(self._on_checked, choice))
        worker.errored.connect(partial(self._on_check_failed, choice))
        worker.finished.connect(partial(self._check_ended, worker))
        self._workers.add(worker)
        start_worker(worker)

    @property
    def checking(self) -> bool:
        """Whether a checkpoint file is being checked for a decoder."""
        return bool(self._workers)

    def when_checked(self, callback: Callable[[], None] | None) -> None:
        """Call ``callback`` (on the GUI thread) once the running check has ended; a later call replaces it,
        None drops it."""
        self._when_checked = callback

    @property
    def check_workers(self) -> int:
        """Check worker threads still running."""
        return len(self._workers)

    def _check_ended(self, worker: Any) -> None:
        self._workers.discard(worker)
        if not self._workers and self._when_checked is not None:
            callback, self._when_checked = self._when_checked, None
            callback()

    def _on_checked(self, choice: ModelChoice, mode: str) -> None:
        if choice == self._checking:
            self._decided(choice, mode == "ais")

    def _decided(self, choice: ModelChoice, has_decoder: bool) -> None:
        self._checked_source = choice.source
        self.set_decoder(has_decoder, _decoder_tip(choice.source, has_decoder))

    def _on_check_failed(self, choice: ModelChoice, exc: BaseException) -> None:
        if choice == self._checking:
            message = str(exc) if isinstance(exc, SumError) else f"{type(exc).__name__}: {exc}"
            self.set_decoder(False, f"AIS unavailable: the model cannot be loaded: {message}")
            show_error(message)

    def mode(self) -> str:
        """The chosen mode, ``"ais"`` or ``"amg"``."""
        return self.mode_combo.currentData()

    def options(self) -> Any:
        """The chosen mode's options (``AisOptions`` or ``AutoOptions``).

        Raises
        ------
        InvalidInputError
            A value the options refuse.
        """
        return self.groups[self.mode()].options()

    def ais_enabled(self) -> bool:
        """Whether AIS can be chosen."""
        return self.mode_combo.model().item(self.mode_combo.findData("ais")).isEnabled()

    def set_decoder(self, has_decoder: bool, why: str) -> None:
        """Enable and choose AIS (``has_decoder``), or disable it and choose AMG.

        ``why`` becomes the AIS item's tooltip (why it is disabled, or where the decoder is from).
        """
        index = self.mode_combo.findData("ais")
        self.mode_combo.model().item(index).setEnabled(has_decoder)
        self.mode_combo.setItemData(index, why, Qt.ToolTipRole)
        self.mode_combo.setToolTip(why)
        self.mode_combo.setCurrentIndex(index if has_decoder else self.mode_combo.findData("amg"))

    def _show_group(self, *_args) -> None:
        for mode, group in self.groups.items():
            group.setVisible(mode == self.mode())


def sole_image(viewer: napari.viewer.Viewer, skip: tuple[str, ...] = ()) -> Image | None:
    """The viewer's image layer when it has exactly one (names ending in one of ``skip`` not counted).

    The widgets pre-select it, so a user with one image never has to pick it.
    """
    from napari.layers import Image

    images = [layer for layer in viewer.layers if isinstance(layer, Image) and not layer.name.endswith(skip)]
    return images[0] if len(images) == 1 else None


#: Status of a Run clicked while the chosen checkpoint is being checked for an AIS decoder (it then waits).
CHECKING_MODEL = "Checking the model for an AIS decoder; the job starts when the mode is known..."


def _decoder_tip(source: str, has_decoder: bool) -> str:
    if has_decoder:
        return f"{source} carries an AIS decoder: AIS segments every object in one decoder pass per tile."
    return (
        f"AIS needs an AIS decoder, and {source} has none: choose a model with one (the AIS column of "
        "`sum-hq models list`, e.g. vit_b_lm) or a checkpoint that holds one; AMG works with every model."
    )


def _int_spin(low: int, high: int, value: int, tip: str) -> QSpinBox:
    spin = QSpinBox()
    spin.setRange(low, high)
    spin.setValue(value)
    spin.setToolTip(tip)
    return spin


def _float_spin(value: float, tip: str, low: float = 0.0, high: float = 1.0) -> QDoubleSpinBox:
    spin = QDoubleSpinBox()
    spin.setRange(low, high)
    spin.setSingleStep(0.01)
    spin.setDecimals(3)
    spin.setValue(value)
    spin.setToolTip(tip)
    return spin


class WaitsForModelCheck:
    """Mixin of a :class:`~napari_sum_hq._job_widget.JobWidget` with a :class:`ModeOptions` ``auto_mode``: a run
    asked for during the model's decoder check starts when the check ends (:meth:`run_after_check`), Cancel
    drops it, and the check's worker counts among the widget's running workers."""

    auto_mode: ModeOptions

    def run_after_check(self) -> bool:
        """True (and the run queued, the status saying so) while the model is being checked."""
        if not self.auto_mode.checking:
            return False
        self.set_status(CHECKING_MODEL)
        self.auto_mode.when_checked(self.run)
        return True

    @property
    def running_workers(self) -> int:
        """Worker threads still running: jobs (cancelled ones included) and the model check."""
        return super().running_workers + self.auto_mode.check_workers

    def cancel(self, quiet: bool = False) -> None:
        """Drop a run waiting for the model check, and stop the running job."""
        if self.auto_mode.checking:
            self.auto_mode.when_checked(None)
            if not quiet:
                self.set_status("Cancelled.")
        super().cancel(quiet)

