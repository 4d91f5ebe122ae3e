"""The fine-tuning widget's run folder and child processes (Qt-free).

The plugin and ``training`` never import each other (an import contract), so the widget
runs training as the command line does, in child processes of the same Python:
``python -m training.from_annotations`` writes the annotations as a dataset folder; when images
are to be pseudo-labelled (SUM), ``python -m training.pseudolabel`` labels them and
``python -m training.refine`` trains the mask-refinement module on the annotations and writes
the pseudo-labels' uncertainty maps; then ``python -m training.finetune`` trains on the
annotations (and the pseudo-labels, with SUM's uncertainty-aware loss). A child process also
makes Cancel clean: SIGINT is what ``training.finetune`` turns into "save a resumable state and exit 130",
and nothing of the training (threads, memory, CUDA context) stays in napari afterwards.

Run folder (the widget's output folder, ``--output`` of the training)::

    annotations/          the dataset folder (training.from_annotations; unlabeled/: images to pseudo-label)
    .annotations.npz      the bundle handed to it (removed once the folder is written)
    pseudo/               the pseudo-labels and uncertainty maps (training.pseudolabel, training.refine)
    refiner/              the mask-refinement module (refiner.pt, refiner.json)
    config.yaml, metrics.csv, training_state.pth, epoch_N.pth, sum_epoch_N.pth, final.pth
                          written by training.finetune (see training.checkpointing)
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml
from sum_core.errors import InvalidInputError

#: The schemes of ``python -m training.finetune --scheme`` (``training.config.SCHEMES``; a test keeps them equal).
SCHEMES = ("hq", "decoder", "full", "ais")
#: Names of the run-folder entries (``training.checkpointing`` / ``training.finetune`` / ``training.from_annotations``).
ANNOTATIONS = "annotations"
BUNDLE = ".annotations.npz"
CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.csv"
STATE_FILE = "training_state.pth"
FINAL_FILE = "final.pth"
MARKER_FILE = "annotations.json"
PSEUDO = "pseudo"
REFINER = "refiner"
#: What marks ``pseudo/`` and ``refiner/`` as written by ``training.pseudolabel`` / ``training.refine``.
PSEUDO_MANIFEST = "manifest.json"
REFINER_FILES = frozenset({"refiner.pt", "refiner.json"})
#: ``training.pseudolabel``'s file of a finished image folder.
PSEUDO_DONE_FILE = "masks.csv"
#: ``training.from_annotations``' folder of the images to pseudo-label.
UNLABELED = "unlabeled"
#: Exit status of an interrupted ``training.finetune`` (state saved).
EXIT_INTERRUPTED = 130
#: Largest number of images per optimiser step the widget asks for.
MAX_BATCH = 4

NEW, RESUMABLE, FINISHED = "new", "resumable", "finished"


@dataclass(frozen=True)
class RunSettings:
    """What the widget's form says.

    Attributes
    ----------
    checkpoint : str
        Base model: registry name or checkpoint path.
    output : Path
        The run folder.
    scheme : str
        One of :data:`SCHEMES`.
    epochs : int
    device : str or None
        ``cpu``, ``cuda``, ``mps``...; None lets the training pick.
    extra : tuple of str
        More ``training.finetune`` flags, as typed (e.g. ``--lr 1e-4``).
    pseudo_unannotated : bool
        Pseudo-label the images without committed objects (SUM) and train on them too.
    pseudo_annotated : bool
        Pseudo-label the annotated images too: the objects not committed are unknown, not
        background (``training.pseudolabel --exclude-masks``: masks on committed objects dropped).
    pseudo_extra, refine_extra : tuple of str
        More ``training.pseudolabel`` / ``training.refine`` flags (e.g. ``--points-per-side 16``).
    """

    checkpoint: str
    output: Path
    scheme: str
    epochs: int
    device: str | None = None
    extra: tuple[str, ...] = ()
    pseudo_unannotated: bool = False
    pseudo_annotated: bool = False
    pseudo_extra: tuple[str, ...] = ()
    refine_extra: tuple[str, ...] = ()

    @property
    def pseudo(self) -> bool:
        """Whether the run pseudo-labels images."""
        return self.pseudo_unannotated or self.pseudo_annotated


def run_state(output: Path) -> str:
    """What Run does with ``output``: start a :data:`NEW` run, resume (:data:`RESUMABLE`), or
    nothing (:data:`FINISHED`: ``final.pth`` is there).

    Raises
    ------
    InvalidInputError
        ``output`` is a file, or a folder with entries other than an earlier start's
        (``annotations/``, ``config.yaml``) that is not a resumable run: the widget never
        writes into a folder of the user's.
    """
    if output.exists() and not output.is_dir():
        raise InvalidInputError(f"output folder: {output} is a file")
    if not output.exists():
        return NEW
    names = {entry.name for entry in output.iterdir()}
    if FINAL_FILE in names:
        return FINISHED
    if STATE_FILE in names:
        return RESUMABLE
    if names <= {ANNOTATIONS, CONFIG_FILE, BUNDLE, PSEUDO, REFINER}:
        return NEW
    raise InvalidInputError(
        f"output folder: {output} holds other files ({', '.join(sorted(names)[:5])}) and no resumable "
        "run; choose a new or empty folder"
    )


def python_command(module: str, *args: str) -> list[str]:
    """``python -m module args`` with this interpreter."""
    return [sys.executable, "-m", module, *args]


def export_command(output: Path) -> list[str]:
    """The command writing ``output/annotations`` from ``output/.annotations.npz``."""
    return python_command("training.from_annotations", str(output / BUNDLE), str(output / ANNOTATIONS))


def sample_count(output: Path) -> int:
    """Number of annotated planes of the run's dataset folder (0 before it is written)."""
    try:
        return len(json.loads((output / ANNOTATIONS / MARKER_FILE).read_text(encoding="utf-8"))["samples"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def clear_pseudo(output: Path) -> None:
    """Remove the ``pseudo/`` and ``refiner/`` of an earlier start (a new run labels afresh: the
    images or the committed objects may have changed).

    Raises
    ------
    InvalidInputError
        One of them holds something ``training.pseudolabel`` / ``training.refine`` did not write.
    """
    pseudo, refiner = output / PSEUDO, output / REFINER
    if pseudo.exists() and not (pseudo / PSEUDO_MANIFEST).is_file():
        raise InvalidInputError(
            f"output folder: {pseudo} is not a pseudo-label folder; move it or choose another folder"
        )
    if pseudo.exists() and _labelled_folder(pseudo) != str((output / ANNOTATIONS / UNLABELED).resolve()):
        raise InvalidInputError(
            f"output folder: {pseudo} holds pseudo-labels of other images ({_labelled_folder(pseudo)}), not of an "
            "earlier start of this widget; move it or choose another folder"
        )
    if refiner.exists() and not {p.name for p in refiner.iterdir()} <= REFINER_FILES:
        raise InvalidInputError(
            f"output folder: {refiner} holds files of another program; move it or choose another folder"
        )
    for folder in (pseudo, refiner):
        if folder.exists():
            shutil.rmtree(folder)


def _labelled_folder(pseudo: Path) -> str | None:
    """The image folder ``training.pseudolabel`` recorded in ``pseudo``'s manifest (None when unreadable)."""
    try:
        folder = json.loads((pseudo / PSEUDO_MANIFEST).read_text(encoding="utf-8")).get("image_dir")
    except (OSError, ValueError, AttributeError):
        return None
    return folder if isinstance(folder, str) else None


def images_to_pseudo_label(output: Path) -> list[str]:
    """Stems of the dataset folder's images to pseudo-label (its marker's ``unlabeled`` list)."""
    try:
        stems = json.loads((output / ANNOTATIONS / MARKER_FILE).read_text(encoding="utf-8")).get(UNLABELED, [])
    except (OSError, ValueError, AttributeError):
        return []
    return [str(stem) for stem in stems] if isinstance(stems, list) else []


def pseudo_progress(output: Path) -> tuple[int, int]:
    """(images pseudo-labelled, images to pseudo-label) of the run so far."""
    stems = images_to_pseudo_label(output)
    return sum((output / PSEUDO / stem / PSEUDO_DONE_FILE).is_file() for stem in stems), len(stems)


def pseudo_mask_count(output: Path) -> int:
    """Pseudo-masks written so far (rows of the image folders' ``masks.csv``)."""
    count = 0
    for path in (output / PSEUDO).glob(f"*/{PSEUDO_DONE_FILE}"):
        try:
            count += max(0, len(path.read_text(encoding="utf-8").splitlines()) - 1)
        except OSError:
            continue
    return count


def _device_args(settings: RunSettings) -> list[str]:
    return ["--device", settings.device] if settings.device else []


def pseudolabel_command(settings: RunSettings) -> list[str]:
    """``training.pseudolabel`` on the run's ``annotations/unlabeled`` into ``pseudo/`` (SUM's filters
    unless ``pseudo_extra`` says otherwise); with ``pseudo_annotated`` the committed objects'
    masks are the ``--exclude-masks``."""
    annotations = settings.output / ANNOTATIONS
    args = [
        "--model", settings.checkpoint, "--images", str(annotations / UNLABELED),
        "--out", str(settings.output / PSEUDO), "--no-progress", *_device_args(settings),
    ]
    if settings.pseudo_annotated:
        args += ["--exclude-masks", str(annotations / "masks")]
    return python_command("training.pseudolabel", *args, *settings.pseudo_extra)


def refine_command(settings: RunSettings) -> list[str]:
    """``training.refine``: the refiner trained on the run's annotations, then the uncertainty maps."""
    args = [
        "--model", settings.checkpoint, "--data", str(settings.output / ANNOTATIONS),
        "--pseudo", str(settings.output / PSEUDO), "--out", str(settings.output / REFINER),
        "--no-progress", *_device_args(settings),
    ]
    return python_command("training.refine", *args, *settings.refine_extra)


def finetune_command(settings: RunSettings, resume: bool) -> list[str]:
    """The ``training.finetune`` command of ``settings`` (a resumed run keeps its saved settings);
    ``--pseudo`` when the run wrote pseudo-labels."""
    args = ["--output", str(settings.output), "--no-progress"]
    if resume:
        return python_command("training.finetune", *args, "--resume")
    batch = max(1, min(MAX_BATCH, sample_count(settings.output)))
    args += [
        "--checkpoint", settings.checkpoint, "--data", str(settings.output / ANNOTATIONS),
        "--scheme", settings.scheme, "--epochs", str(settings.epochs), "--batch-size", str(batch),
    ]
    args += _device_args(settings)
    if (settings.output / PSEUDO / PSEUDO_MANIFEST).is_file():
        args += ["--pseudo", str(settings.output / PSEUDO)]
    return python_command("training.finetune", *args, *settings.extra)


def total_steps(output: Path) -> int:
    """Optimiser steps of the whole run (epochs x steps per epoch), 0 until the run's config is written."""
    try:
        config = yaml.safe_load((output / CONFIG_FILE).read_text(encoding="utf-8"))
        epochs, batch = int(config["epochs"]), int(config["batch_size"])
        max_steps = int(config.get("max_steps") or 0)
    except (OSError, ValueError, KeyError, TypeError, yaml.YAMLError):
        return 0
    total = epochs * math.ceil(sample_count(output) / batch)
    return min(total, max_steps) if max_steps else total


def read_losses(output: Path) -> list[tuple[int, float]]:
    """(step, loss) of every training row of ``metrics.csv`` so far (a row being written is skipped)."""
    rows: list[tuple[int, float]] = []
    try:
        with (output / METRICS_FILE).open(newline="", encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                try:
                    if row["kind"] == "human":
                        rows.append((int(row["step"]), float(row["loss"])))
                except (KeyError, TypeError, ValueError):
                    continue
    except OSError:
        return []
    return rows


class ChildProcess:
    """One command in a child process, its output kept in a temporary file.

    On POSIX the child gets its own session, so a Ctrl+C in napari's terminal does not
    reach it, and :meth:`interrupt` sends it SIGINT. Elsewhere :meth:`interrupt` terminates
    it (``training.finetune`` then keeps the state of its last finished epoch).
    """

    def __init__(self, command: list[str]) -> None:
        self.command = command
        self._log = tempfile.TemporaryFile(mode="w+", encoding="utf-8", errors="replace")
        posix = os.name == "posix"
        self._process = subprocess.Popen(
            command, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=posix,
        )

    def poll(self) -> int | None:
        """The exit status, or None while it runs."""
        return self._process.poll()

    def interrupt(self) -> None:
        """Ask the child to stop (SIGINT on POSIX: ``training.finetune`` saves its state)."""
        if self._process.poll() is not None:
            return
        if os.name == "posix":
            self._process.send_signal(signal.SIGINT)
        else:
            self._process.terminate()

    def kill(self) -> None:
        """End the child now and wait for it."""
        if self._process.poll() is None:
            self._process.kill()
        self._process.wait()

    def output(self) -> str:
        """Everything the child printed so far."""
        self._log.flush()
        self._log.seek(0)
        text = self._log.read()
        self._log.seek(0, os.SEEK_END)
        return text

    def close(self) -> None:
        """Release the output file (the child must have ended)."""
        self._log.close()


def last_error(text: str) -> str:
    """The line of a child's output that says what went wrong (its ``error:`` line, else its last line)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in reversed(lines):
        if line.startswith("error:") or "Error" in line.split(":", 1)[0]:
            return line
    return lines[-1] if lines else "no output"
