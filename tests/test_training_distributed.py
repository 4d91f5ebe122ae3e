"""training.finetune beyond one float32 process: 2-process DDP on CPU (gloo) and CPU autocast precisions."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sum_core.checkpoint import load_checkpoint
from sum_core.loading import load_model
from test_training_finetune import make_dataset, save_tiny_model
from training import finetune

REPO = Path(__file__).resolve().parents[1]

# Runs under torchrun: records what each rank does, then calls the real entry point.
DRIVER = '''
import json, os, sys
import torch
import torch.distributed as dist
from training import checkpointing, finetune, trainer

rank = int(os.environ["RANK"])
record = {"rank": rank, "losses": [], "paths": [], "saves": []}
trainers = []
optimise, atomic_save = trainer.Trainer._optimise, checkpointing.atomic_save

def probed_optimise(self, step_module, batch, pseudo):
    out = optimise(self, step_module, batch, pseudo)
    trainers[:] = [self]
    record.update(backend=dist.get_backend(), world=self.world, device=str(self.device))
    record["losses"].append(out["loss"])
    record["paths"].append([os.path.basename(p) for p in batch["path"]])
    return out

def probed_save(obj, path):
    record["saves"].append(os.path.basename(str(path)))
    return atomic_save(obj, path)

trainer.Trainer._optimise = probed_optimise
checkpointing.atomic_save = probed_save
record["code"] = finetune.main(sys.argv[1:])
probe = os.environ["PROBE_DIR"]
weights = {n: p.detach().clone() for n, p in trainers[0].model.named_parameters() if p.requires_grad}
torch.save(weights, os.path.join(probe, f"rank{rank}.pt"))
with open(os.path.join(probe, f"rank{rank}.json"), "w") as handle:
    json.dump(record, handle)
'''


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("distributed")
    return {
        "base": save_tiny_model(root / "base.pth"),
        "data": make_dataset(root / "data", count=4),
        "one": make_dataset(root / "one", count=1, seed=3),
        "root": root,
    }


def _args(base: Path, data: Path, output: Path, *extra: str) -> list[str]:
    """Deterministic decoder-scheme run: tight boxes (no jitter), SAM loss (no random point sampling)."""
    return [
        "--checkpoint", str(base), "--data", str(data), "--output", str(output),
        "--scheme", "decoder", "--lr", "0.01", "--epochs", "1", "--max-instances", "1",
        "--prompt-kinds", "box", "--no-box-jitter", "--no-augment", "--no-progress", *extra,
    ]


def _metrics(run: Path) -> list[dict]:
    with (run / "metrics.csv").open() as handle:
        return list(csv.DictReader(handle))


def _run_torchrun(args: list[str], probe: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    """2-process torchrun on CPU; the whole process group is killed if it runs past ``timeout``."""
    driver = probe / "driver.py"
    driver.write_text(DRIVER)
    env = {key: value for key, value in os.environ.items() if key not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(PROBE_DIR=str(probe), CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               str(driver), *args]
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        pytest.fail(f"torchrun did not finish within {timeout} s (hang?)\n{stdout}\n{stderr}")
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


# One process and two sum the same global batch in a different order (the batch mean vs gloo's all-reduce of two
# per-rank means; the ranks run torch with OMP_NUM_THREADS=1, the single process with every core), so their
# float32 gradients differ by rounding only, a few ulps of the largest gradient entry at most (|g| <= 8 on this
# model: ulp 2**-21). With lr = 0.01 and eps = 1e-3 (_args, --eps), Adam's bias-corrected update
# lr * m / (sqrt(v) + eps) changes by at most lr / eps = 10 per unit of gradient error, and the errors add over
# the 2 steps. The bound allows 16 ulps of the largest gradient per step: 2 * 10 * 16 * 2**-21 ~ 1.5e-4 absolute
# on every weight (measured: 4e-7 with 2 to 32 threads in the single process, 0 with one thread). Real bugs are
# ~100x beyond it: summing instead of averaging the two ranks' gradients, or halving them, moves weights by
# 1.5e-2 (measured); an unreduced gradient makes the two ranks' weights differ (compared exactly in the test).
DDP_WEIGHT_ATOL = 2 * (0.01 / 1e-3) * 16 * 2.0**-21


def test_ddp_two_cpu_processes_match_one_process_on_the_global_batch(workspace, tmp_path):
    ddp_run, probe = tmp_path / "ddp", tmp_path / "probe"
    probe.mkdir()
    # eps 1e-3: Adam's first steps are sign(g) * lr where |g| >> eps, so gradients that are
    # zero up to rounding (e.g. attention key biases) would make the comparison ill-conditioned
    result = _run_torchrun(_args(workspace["base"], workspace["data"], ddp_run, "--batch-size", "1",
                                 "--eps", "1e-3"), probe)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("finished: run folder") == 1  # only rank 0 reports

    ranks = [json.loads((probe / f"rank{r}.json").read_text()) for r in (0, 1)]
    for rank, record in enumerate(ranks):
        assert (record["rank"], record["code"], record["world"]) == (rank, 0, 2)
        assert (record["backend"], record["device"]) == ("gloo", "cpu")
        assert len(record["losses"]) == 2 and all(np.isfinite(record["losses"]))
    # DistributedSampler-style split: 4 images, each rank trains on 2 different ones
    seen = [sum(record["paths"], []) for record in ranks]
    assert sorted(seen[0] + seen[1]) == [f"im{i}.tif" for i in range(4)]

    # only rank 0 writes: checkpoints, training state, one metrics row per step (rank 0's own loss)
    assert ranks[1]["saves"] == []
    assert sorted(ranks[0]["saves"]) == ["epoch_0.pth", "final.pth", "sum_epoch_0.pth", "training_state.pth"]
    rows = _metrics(ddp_run)
    assert [int(r["step"]) for r in rows] == [1, 2]
    assert np.allclose([float(r["loss"]) for r in rows], ranks[0]["losses"], rtol=1e-4)

    # gradients are all-reduced: both ranks end with identical weights, equal to final.pth (exactly: every rank
    # steps its optimiser on the same all-reduced gradient buffer, summed once and shared bit for bit)
    weights = [torch.load(probe / f"rank{r}.pt") for r in (0, 1)]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    final = torch.load(ddp_run / "final.pth")
    assert all(torch.equal(final[k], weights[0][k]) for k in weights[0])

    # one process with the same global batch (2 images per step) takes the same two steps
    single = tmp_path / "single"
    args = _args(workspace["base"], workspace["data"], single, "--batch-size", "2", "--eps", "1e-3",
                 "--device", "cpu")
    assert finetune.main(args) == 0
    single_losses = [float(r["loss"]) for r in _metrics(single)]
    ddp_means = np.mean([ranks[0]["losses"], ranks[1]["losses"]], axis=0)
    # losses: metrics.csv keeps 6 significant digits (<= 5e-6 relative) and the float32 reduction order adds
    # ~1e-6; a wrong gradient average moves the step-2 loss by > 4e-3 relative (measured)
    np.testing.assert_allclose(single_losses, ddp_means, rtol=1e-4)
    reference = torch.load(single / "final.pth")
    base = torch.load(workspace["base"])
    assert any(not torch.equal(reference[k], base[k]) for k in weights[0] if k in base)
    for key in weights[0]:
        torch.testing.assert_close(final[key], reference[key], rtol=0.0, atol=DDP_WEIGHT_ATOL, msg=key)

    model = load_checkpoint(ddp_run / "final.pth")
    assert model.config.sum_tokens
    assert load_model(str(ddp_run / "final.pth")).state_dict().keys() == final.keys()


def test_bf16_autocast_trains_on_cpu_and_saves_float32(workspace, tmp_path):
    runs = {}
    for precision in ("fp32", "bf16"):
        runs[precision] = tmp_path / precision
        args = _args(workspace["base"], workspace["one"], runs[precision], "--batch-size", "1",
                     "--device", "cpu", "--precision", precision)
        assert finetune.main(args) == 0
    losses = {p: float(_metrics(run)[0]["loss"]) for p, run in runs.items()}
    assert np.isfinite(losses["bf16"])
    # autocast really ran in bfloat16: close to float32, but not the same number
    assert losses["bf16"] != losses["fp32"]
    assert losses["bf16"] == pytest.approx(losses["fp32"], rel=0.05)

    final = torch.load(runs["bf16"] / "final.pth")
    floats = [v for v in final.values() if v.is_floating_point()]
    assert floats and all(v.dtype == torch.float32 for v in floats)
    base = torch.load(workspace["base"])
    changed = [k for k in base if not torch.equal(final[k], base[k])]
    assert changed and all(k.startswith(("mask_decoder.", "prompt_encoder.")) for k in changed)
    assert load_checkpoint(runs["bf16"] / "final.pth").config.sum_tokens


def test_fp16_on_cpu_is_refused_before_training(workspace, tmp_path, capsys):
    run = tmp_path / "fp16"
    args = _args(workspace["base"], workspace["one"], run, "--device", "cpu", "--precision", "fp16")
    assert finetune.main(args) == 2
    err = capsys.readouterr().err
    assert "precision='fp16' needs a CUDA device" in err and "'cpu'" in err and "bf16" in err
    assert not (run / "metrics.csv").exists() and not (run / "final.pth").exists()
