"""``sum-hq segment`` never loses the user's data and checks every argument before heavy work (issue 11).

Data loss: an output equal to the input (however it is spelled: ``..``, a symlink, a hard link,
inside a zarr input folder), two equal outputs, or an existing output without ``--overwrite`` is
refused with one clear line, nothing written and the input untouched; a failed write leaves
neither output half-written. Validation: every bad argument (output folder, extension, the
dtype an output format can hold, prompts, ``--slice`` / ``--axis``, device, precision,
intensity window) is refused before the model is loaded or downloaded, anything is encoded or
any file is created: the ``no_heavy_work`` fixture fails the test at the first of those.

The image is a 1040x1392 uint16 camera frame with its object in the far corner; the runs that
do segment use the small random-weight HQ model with SAM's 1024 input and the exact fake
decoders (``tests/tiled_fakes.py``), so the written labels are compared exactly.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr
from PIL import Image

import sum_core.api
from sum_core import imageio, loading, predictor, tiled_embedding, zoo
from sum_core.cli import main
from tiled_fakes import FAKE_UNCERTAINTY, use_fake_decoders

SHAPE = (1040, 1392)
#: The object: rows 980-1019, cols 1320-1379 (far corner); a click on it and a box around it.
OBJECT = (slice(980, 1020), slice(1320, 1380))
CLICK = "1000,1350"


def camera_frame() -> tuple[np.ndarray, np.ndarray]:
    """A 1040x1392 uint16 frame with one bright object in the far corner, and that object."""
    truth = np.zeros(SHAPE, bool)
    truth[OBJECT] = True
    image = (np.random.default_rng(3).normal(300, 20, SHAPE) + 3000 * truth).astype(np.uint16)
    return image, truth


def snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every file and folder under ``folder`` with its bytes (None for folders and links)."""
    return {
        str(p.relative_to(folder)): None if p.is_dir() or p.is_symlink() else p.read_bytes()
        for p in sorted(folder.rglob("*"))
    }


def forbid_heavy_work(monkeypatch) -> None:
    """Fail the test as soon as a model is resolved, loaded or downloaded, or an image encoded."""

    def forbidden(what):
        return lambda *a, **k: pytest.fail(f"{what} before the bad argument was refused")

    monkeypatch.setattr(sum_core.api, "resolve_model", forbidden("the model was resolved"))
    monkeypatch.setattr(loading, "resolve_model", forbidden("the model was resolved"))
    monkeypatch.setattr(loading, "load_checkpoint", forbidden("a checkpoint was loaded"))
    monkeypatch.setattr(zoo, "fetch", forbidden("a model was downloaded"))
    monkeypatch.setattr(predictor, "encode_image", forbidden("an image was encoded"))
    monkeypatch.setattr(tiled_embedding, "encode", forbidden("tiles were encoded"))


@pytest.fixture
def no_heavy_work(monkeypatch) -> None:
    """:func:`forbid_heavy_work` for the whole test."""
    forbid_heavy_work(monkeypatch)


@pytest.fixture
def frame(tmp_path) -> Path:
    """The camera frame as ``tmp_path / "in.tif"``."""
    path = tmp_path / "in.tif"
    tifffile.imwrite(path, camera_frame()[0])
    return path


def refused(argv: list[str], capsys, folder: Path, *messages: str) -> str:
    """Run ``sum-hq`` expecting exit code 2, one error line holding ``messages`` and ``folder`` unchanged."""
    before = snapshot(folder)
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("sum-hq segment: error: ") and err.count("\n") == 1, err
    for message in messages:
        assert message in err, err
    assert snapshot(folder) == before
    return err


# --- data loss: outputs that would replace the input, each other or an existing file ----------------


@pytest.mark.parametrize("fmt", ["tif", "png"])
@pytest.mark.parametrize("spelling", ["same", "dotdot", "relative", "symlink", "hardlink"])
def test_out_equal_to_the_input_is_refused(fmt, spelling, small_hq_checkpoint, tmp_path, monkeypatch, capsys,
                                           no_heavy_work):  # fmt: skip
    image, _ = camera_frame()
    source = tmp_path / f"in.{fmt}"
    if fmt == "tif":
        tifffile.imwrite(source, image)
    else:
        Image.fromarray((image // 16).astype(np.uint8)).save(source)
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")
    out = {
        "same": str(source),
        "dotdot": str(tmp_path / "sub" / ".." / source.name),
        "relative": f"../{source.name}",
        "symlink": str(tmp_path / f"link.{fmt}"),
        "hardlink": str(tmp_path / f"hard.{fmt}"),
    }[spelling]
    if spelling == "symlink":
        os.symlink(source, out)
    elif spelling == "hardlink":
        os.link(source, out)
    for flag in ("--out", "--uncertainty-out"):
        outputs = ["--out", out] if flag == "--out" else ["--out", str(tmp_path / "m.tif"), "--uncertainty-out", out]
        argv = ["segment", str(source), "--point", CLICK, "--model", small_hq_checkpoint, "--device", "cpu",
                *outputs, "--overwrite"]  # fmt: skip
        refused(argv, capsys, tmp_path, f"{flag}: ", "is the input image")


@pytest.mark.parametrize("where", ["store", "inside", "inside-dotdot", "uncertainty-inside"])
def test_out_in_a_zarr_input_folder_is_refused(where, small_hq_checkpoint, tmp_path, capsys, no_heavy_work):
    source = tmp_path / "in.zarr"
    zarr.create_array(source, data=camera_frame()[0], chunks=(256, 256))
    outputs = {
        "store": ["--out", str(source)],
        "inside": ["--out", str(source / "mask.tif")],
        "inside-dotdot": ["--out", str(tmp_path / "x" / ".." / "in.zarr" / "mask.tif")],
        "uncertainty-inside": ["--out", str(tmp_path / "m.tif"), "--uncertainty-out", str(source / "u.tif")],
    }[where]
    flag = outputs[-2]
    argv = ["segment", str(source), "--point", CLICK, "--model", small_hq_checkpoint, "--device", "cpu", *outputs,
            "--overwrite"]  # fmt: skip
    refused(argv, capsys, tmp_path, f"{flag}: ", "in.zarr")


@pytest.mark.parametrize("spelling", ["same", "dotdot", "symlink"])
def test_the_two_outputs_must_differ(spelling, small_hq_checkpoint, frame, tmp_path, capsys, no_heavy_work):
    out = tmp_path / "x.tif"
    other = {"same": out, "dotdot": tmp_path / "sub" / ".." / "x.tif", "symlink": tmp_path / "link.tif"}[spelling]
    (tmp_path / "sub").mkdir()
    if spelling == "symlink":
        os.symlink(out, other)  # a link to the (not yet existing) mask
    argv = ["segment", str(frame), "--point", CLICK, "--model", small_hq_checkpoint, "--device", "cpu",
            "--out", str(out), "--uncertainty-out", str(other)]  # fmt: skip
    refused(argv, capsys, tmp_path, "--uncertainty-out", "--out", "same file")


def test_an_output_in_a_symlink_loop_is_refused(small_hq_checkpoint, frame, tmp_path, capsys, no_heavy_work):
    os.symlink(tmp_path / "b.tif", tmp_path / "a.tif")
    os.symlink(tmp_path / "a.tif", tmp_path / "b.tif")
    argv = ["segment", str(frame), "--point", CLICK, "--model", small_hq_checkpoint, "--device", "cpu",
            "--out", str(tmp_path / "a.tif"), "--overwrite"]  # fmt: skip
    refused(argv, capsys, tmp_path, "--out: cannot resolve", "a.tif")


def test_existing_outputs_need_overwrite(small_hq_checkpoint, frame, tmp_path, monkeypatch, capsys):
    _, truth = camera_frame()
    out, unc = tmp_path / "mask.tif", tmp_path / "unc.tif"
    tifffile.imwrite(out, np.full((4, 4), 7, np.uint8))
    common = ["segment", str(frame), "--point", CLICK, "--model", small_hq_checkpoint, "--device", "cpu"]
    with monkeypatch.context() as patch:
        forbid_heavy_work(patch)
        refused([*common, "--out", str(out)], capsys, tmp_path, f"--out: {out} exists", "--overwrite")
        unc.write_bytes(b"my notes")
        refused([*common, "--out", str(tmp_path / "new.tif"), "--uncertainty-out", str(unc)], capsys, tmp_path,
                f"--uncertainty-out: {unc} exists", "--overwrite")  # fmt: skip
    use_fake_decoders(monkeypatch, truth)
    assert main([*common, "--out", str(out), "--uncertainty-out", str(unc), "--overwrite"]) == 0
    np.testing.assert_array_equal(tifffile.imread(out), truth.astype(np.uint8))
    np.testing.assert_array_equal(tifffile.imread(unc), truth * np.float32(FAKE_UNCERTAINTY))
    assert sorted(os.listdir(tmp_path)) == ["in.tif", "mask.tif", "unc.tif"]  # no temporary file left


@pytest.mark.parametrize("existing", [False, True])
def test_a_failed_write_leaves_neither_output(existing, small_hq_checkpoint, frame, tmp_path, monkeypatch):
    """The uncertainty map fails to write (disk full): the mask is not written either, old files stay."""
    _, truth = camera_frame()
    use_fake_decoders(monkeypatch, truth)
    out, unc = tmp_path / "mask.tif", tmp_path / "unc.tif"
    if existing:
        tifffile.imwrite(out, np.full((4, 4), 7, np.uint8))
        tifffile.imwrite(unc, np.full((4, 4), 0.5, np.float32))
    before = snapshot(tmp_path)
    real, writes = imageio.tifffile.imwrite, []

    def second_write_fails(target, data, *args, **kwargs):
        writes.append(Path(target).parent)
        if len(writes) == 2:
            Path(target).write_bytes(b"II*\x00partial")
            raise OSError(28, "No space left on device")
        return real(target, data, *args, **kwargs)

    monkeypatch.setattr(imageio.tifffile, "imwrite", second_write_fails)
    with contextlib.suppress(OSError):  # raised as is, or reported with a non-zero exit code
        assert main(["segment", str(frame), "--point", CLICK, "--model", small_hq_checkpoint, "--device", "cpu",
                     "--out", str(out), "--uncertainty-out", str(unc), "--overwrite"]) != 0  # fmt: skip
    assert writes == [tmp_path, tmp_path]  # both went to temporary files in the target folder
    assert snapshot(tmp_path) == before


# --- every argument checked before any model load, download, encode or file creation -----------------


def _stack(tmp_path: Path) -> Path:
    stack = np.stack([camera_frame()[0]] * 3)
    tifffile.imwrite(tmp_path / "stack.tif", stack, photometric="minisblack")
    return tmp_path / "stack.tif"


BAD_ARGUMENTS = {
    # outputs
    "missing-folder": (["--out", "{tmp}/nowhere/m.tif"], ["--out", "folder", "nowhere does not exist"]),
    "jpeg-out": (["--out", "{tmp}/m.jpg"], ["--out", "cannot write '.jpg' files"]),
    "zarr-out": (["--out", "{tmp}/m.zarr"], ["--out", "cannot write '.zarr' files"]),
    "no-extension": (["--out", "{tmp}/mask"], ["--out", "'(no extension)'"]),
    "folder-out": (["--out", "{tmp}/folder.tif"], ["--out", "folder.tif is a folder"]),
    "float-uncertainty-as-png": (
        ["--out", "{tmp}/m.tif", "--uncertainty-out", "{tmp}/u.png"],
        ["--uncertainty-out", "PNG holds", "dtype float32"],
    ),
    "uncertainty-missing-folder": (
        ["--out", "{tmp}/m.png", "--uncertainty-out", "{tmp}/nowhere/u.tif"],
        ["--uncertainty-out", "nowhere does not exist"],
    ),
    # prompts against the image's shape (1040, 1392): (row, col) in [0, 1040] x [0, 1392]
    "point-outside": (["--out", "{tmp}/m.tif", "--point", "1041,5"], ["points"]),
    "box-outside": (["--out", "{tmp}/m.tif", "--box", "10,10,50,1500"], ["box"]),
    "no-prompt": (["--out", "{tmp}/m.tif", "--no-click"], ["at least one prompt"]),
    # planes
    "slice-of-a-plane": (["--out", "{tmp}/m.tif", "--slice", "0"], ["one plane, not a stack"]),
    "slice-out-of-range": (["--out", "{tmp}/m.tif", "--stack", "--slice", "3"], ["--slice 3: the stack has 3 slices"]),
    "axis-out-of-range": (["--out", "{tmp}/m.tif", "--stack", "--slice", "0", "--axis", "5"], ["axis: index 5 is out of range"]),
    "axis-without-slice": (["--out", "{tmp}/m.tif", "--stack", "--axis", "1"], ["give --slice N with it"]),
    "stack-without-slice": (["--out", "{tmp}/m.tif", "--stack"], ["choose one plane with --slice N"]),
    # options
    "percentiles": (["--out", "{tmp}/m.tif", "--percentiles", "60,10"], ["percentiles"]),
    "halo-without-tiles": (["--out", "{tmp}/m.tif", "--no-tiling", "--halo", "8"], ["--halo"]),
    "fp16-on-cpu": (["--out", "{tmp}/m.tif", "--precision", "fp16"], ["fp16"]),
}


@pytest.mark.parametrize("case", BAD_ARGUMENTS)
def test_bad_arguments_are_refused_before_heavy_work(case, small_hq_checkpoint, frame, tmp_path, capsys,
                                                     no_heavy_work):  # fmt: skip
    arguments, messages = BAD_ARGUMENTS[case]
    (tmp_path / "folder.tif").mkdir()
    source = _stack(tmp_path) if "--stack" in arguments else frame
    prompts = [] if "--no-click" in arguments else ["--point", CLICK]
    arguments = [a.format(tmp=tmp_path) for a in arguments if a not in ("--stack", "--no-click")]
    if "--point" in arguments:
        prompts = []
    argv = ["segment", str(source), *prompts, "--model", small_hq_checkpoint, "--device", "cpu", *arguments]
    refused(argv, capsys, tmp_path, *messages)


def test_bad_prompt_is_refused_before_a_registry_model_is_downloaded(tmp_path, frame, monkeypatch, capsys,
                                                                     no_heavy_work):  # fmt: skip
    monkeypatch.setenv(zoo.CACHE_ENV, str(tmp_path / "cache"))
    argv = ["segment", str(frame), "--point", "5,1393", "--model", zoo.DEFAULT_MODEL, "--device", "cpu",
            "--out", str(tmp_path / "m.tif")]  # fmt: skip
    refused(argv, capsys, tmp_path, "points")


def test_more_labels_than_png_holds_are_refused_before_heavy_work(small_hq_checkpoint, frame, tmp_path, capsys,
                                                                 no_heavy_work):  # fmt: skip
    """65536 boxes need uint32 labels (uint16 would wrap the last one to 0): a PNG cannot hold them."""
    boxes = [f"--box={r},{c},{r + 2},{c + 2}" for r in range(0, 1024, 4) for c in range(0, 1024, 4)]
    assert len(boxes) == 65536
    argv = ["segment", str(frame), *boxes, "--model", small_hq_checkpoint, "--device", "cpu",
            "--out", str(tmp_path / "m.png")]  # fmt: skip
    refused(argv, capsys, tmp_path, "--out", "PNG holds", "dtype uint32")


@contextlib.contextmanager
def read_only_folder(folder: Path):
    """``folder`` made non-writable: mode 0o500, or for root (who writes anyway) a read-only tmpfs
    mounted on it when this machine allows; skips the test otherwise."""
    folder.mkdir()
    folder.chmod(0o500)
    try:
        if not os.access(folder, os.W_OK):
            yield folder
        elif subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(folder)],
                            capture_output=True).returncode == 0:  # fmt: skip
            try:
                yield folder
            finally:
                subprocess.run(["umount", str(folder)], check=True)
        else:
            pytest.skip("root writes into any folder and may not mount a read-only tmpfs here: nothing to refuse")
    finally:
        folder.chmod(0o700)


def test_a_folder_without_write_permission_is_refused_before_heavy_work(small_hq_checkpoint, frame, tmp_path,
                                                                       capsys, no_heavy_work):  # fmt: skip
    with read_only_folder(tmp_path / "locked") as locked:
        argv = ["segment", str(frame), "--point", CLICK, "--model", small_hq_checkpoint, "--device", "cpu",
                "--out", str(locked / "m.tif")]  # fmt: skip
        refused(argv, capsys, tmp_path, "--out: folder", "locked is not writable")


# --- negative coordinates and Ctrl+C --------------------------------------------------------------------


@pytest.mark.parametrize(
    "prompt, message",
    [
        (["--point", "-1,-1"], "points: point 0 (row, col) = [-1.0, -1.0] is outside the image of shape (1040, 1392)"),
        (["--point", "5,5", "--negative", "-.5,3"], "points: point 1 (row, col) = [-0.5, 3.0] is outside the image"),
        (["--box", "-5,-5,10,10"], "box: "),
    ],
    ids=["point", "negative", "box"],
)
def test_negative_coordinates_reach_the_prompt_check(prompt, message, small_hq_checkpoint, frame, tmp_path, capsys,
                                                      no_heavy_work):  # fmt: skip
    """argparse took ``-1,-1`` for an option ("expected one argument"); now it is the value of its
    option and refused as a point outside the image, like any other."""
    argv = ["segment", str(frame), *prompt, "--model", small_hq_checkpoint, "--device", "cpu",
            "--out", str(tmp_path / "m.tif")]  # fmt: skip
    err = refused(argv, capsys, tmp_path, message)
    assert "outside the image" in err


#: Runs ``sum-hq`` (``run()``, the console script) with an image encoder that creates the
#: file argv[1] and then works until the process is interrupted.
_BLOCKING_ENCODER = """
import pathlib, signal, sys, threading
from sum_core.cli import run
from sum_core.modeling.vit import ViTEncoder

started = pathlib.Path(sys.argv[1])

def forward(self, x):
    started.touch()
    threading.Event().wait()  # an encoder that takes forever

ViTEncoder.forward = forward
signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal, whatever started the tests
sys.argv = ["sum-hq", *sys.argv[2:]]
run()
"""


def interrupt_once_at_work(script: str, argv: list[str], started: Path) -> tuple[int, str, str]:
    """Run ``script`` (``argv[0]`` = the file its encoder creates when at work), send SIGINT once the
    file exists, and return the exit code, stdout and stderr."""
    import signal
    import sys
    import time

    process = subprocess.Popen([sys.executable, "-c", script, str(started), *argv], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 300  # a guard against a hang, not a timing check
    try:
        while not started.exists():  # wait until the model is at work
            assert process.poll() is None and time.monotonic() < deadline, "the encoder never started"
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=120)  # a guard against a hang, as above
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    return process.returncode, out, err


def test_ctrl_c_prints_one_line_and_exits_130(small_hq_checkpoint, tmp_path):
    """SIGINT while the model works: exit code 130 and one line, no traceback, no warning."""
    image = np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "in.tif", image)
    args = ["segment", str(tmp_path / "in.tif"), "--point", "30,30", "--out", str(tmp_path / "m.tif"),
            "--model", small_hq_checkpoint, "--device", "cpu"]  # fmt: skip
    assert interrupt_once_at_work(_BLOCKING_ENCODER, args, tmp_path / "started") == (
        130, "", "sum-hq segment: interrupted\n"
    )
    assert not (tmp_path / "m.tif").exists()


#: Runs ``sum-hq`` (``run()``) with an image encoder that creates the file argv[1] and then works
#: until the process gets SIGINT, and then ends its tile (as a real encoder ends its forward pass).
_ENCODER_UNTIL_CTRL_C = """
import pathlib, signal, sys, threading
from sum_core.cli import run
from sum_core.modeling.vit import ViTEncoder

started, interrupted = pathlib.Path(sys.argv[1]), threading.Event()
real_forward = ViTEncoder.forward

def forward(self, x):
    started.touch()
    interrupted.wait()
    return real_forward(self, x)

def on_sigint(signum, frame):
    interrupted.set()
    raise KeyboardInterrupt  # as the default handler, in a terminal

ViTEncoder.forward = forward
signal.signal(signal.SIGINT, on_sigint)
sys.argv = ["sum-hq", *sys.argv[2:]]
run()
"""


def test_batch_ctrl_c_exits_130_without_its_lock_and_the_rerun_resumes(small_hq_checkpoint, tmp_path):
    """SIGINT while the batch's tiles are at work: exit code 130 and one line, once the running tiles
    have ended (they used to keep writing, the lock already released); the target's lock is gone and
    the same command resumes to the bytes of an uninterrupted run."""
    image = np.random.default_rng(0).integers(0, 255, (2, 64, 64), dtype=np.uint8)
    zarr.create_array(tmp_path / "in.zarr", data=image, chunks=(1, 64, 64))

    def argv(target: str) -> list[str]:
        return ["batch", str(tmp_path / "in.zarr"), str(tmp_path / target), "--axis", "0", "--no-progress",
                "--points-per-side", "4", "--model", small_hq_checkpoint, "--device", "cpu"]  # fmt: skip

    assert interrupt_once_at_work(_ENCODER_UNTIL_CTRL_C, argv("out.zarr"), tmp_path / "started") == (
        130, "", "sum-hq batch: interrupted; rerun the same command to resume\n"
    )
    assert (tmp_path / "out.zarr").is_dir() and not (tmp_path / "out.zarr" / ".sum-hq-batch.lock").exists()
    assert not zarr.open_group(str(tmp_path / "out.zarr"), mode="r").attrs["sum_hq_batch"]["complete"]
    assert main(argv("out.zarr")) == 0 and main(argv("ref.zarr")) == 0
    out, ref = zarr.open_group(str(tmp_path / "out.zarr"), mode="r"), zarr.open_group(str(tmp_path / "ref.zarr"))
    for name in ("labels", "uncertainty"):
        assert out[name][...].tobytes() == ref[name][...].tobytes(), name
