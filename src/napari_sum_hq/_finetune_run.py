"""The fine-tuning widget's run folder and child processes (Qt-free).

The plugin and ``training`` never import each other (an import contract), so the widget
runs training as the command line does, in a child process of the same Python:
``python -m training.from_annotations`` writes the annotations as a dataset folder, then
``python -m training.finetune`` trains on it. A child process also makes Cancel clean:
SIGINT is what ``training.finetune`` turns into "save a resumable state and exit 130",
and nothing of the training (threads, memory, CUDA context) stays in napari afterwards.

Run folder (the widget's output folder, ``--output`` of the training)::

    annotations/          the dataset folder (training.from_annotations)
    .annotations.npz      the bundle handed to it (removed once the folder is written)
    config.yaml, metrics.csv, training_state.pth, epoch_N.pth, sum_epoch_N.pth, final.pth
                          written by training.finetune (see training.checkpointing)
"""

from __future__ import annotations

import csv
import json
import math
import os
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
    """

    checkpoint: str
    output: Path
    scheme: str
    epochs: int
    device: str | None = None
    extra: tuple[str, ...] = ()


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
    if names <= {ANNOTATIONS, CONFIG_FILE, BUNDLE}:
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


def finetune_command(settings: RunSettings, resume: bool) -> list[str]:
    """The ``training.finetune`` command of ``settings`` (a resumed run keeps its saved settings)."""
    args = ["--output", str(settings.output), "--no-progress"]
    if resume:
        return python_command("training.finetune", *args, "--resume")
    batch = max(1, min(MAX_BATCH, sample_count(settings.output)))
    args += [
        "--checkpoint", settings.checkpoint, "--data", str(settings.output / ANNOTATIONS),
        "--scheme", settings.scheme, "--epochs", str(settings.epochs), "--batch-size", str(batch),
    ]
    if settings.device:
        args += ["--device", settings.device]
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
