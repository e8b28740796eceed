"""Training engine: LR schedule, resume = uninterrupted run, 2-process DDP = 1 process.

How the DDP equality is made exact (see logocap/engine/train.py):
- BatchNorm: statistics are synchronised across processes (our CpuSyncBatchNorm on gloo, since
  nn.SyncBatchNorm refuses CPU tensors), so batch 1 + 1 normalises like batch 2;
- offset loss: normalised by the count of weighted entries in the batch; each process's weights
  are rescaled (balance_offset_weights) so that DDP's gradient average equals the global count;
- the heatmap loss is a mean over equally sized local batches: already consistent;
- data order comes from DistributedSampler(seed, epoch) in both runs, augmentation from
  (seed, epoch, index).
"""
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fixtures import FIXTURE_LAYOUT, make_coco_fixture
from logocap.config import load_config
from logocap.engine import train as T
from logocap.engine.checkpoint import load_checkpoint
from logocap.losses import offset_loss

REPO = Path(__file__).resolve().parents[1]


def _cfg(root, out, *extra):
    return load_config(None, [
        "train.precision=fp32", "data.input_size=64", "train.batch_size=2", "train.epochs=3", "train.eval_every=0",
        "train.log_every=1", f"train.out={out}", f"data.root={root}",
        *FIXTURE_LAYOUT, *extra])


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("coco")
    make_coco_fixture(root, num_images=4, size=(64, 80))
    return root


def _run_group(cmd, env, timeout):
    """Run torchrun in its own process group, so a hang never leaves worker processes behind."""
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        _, err = proc.communicate()
        pytest.fail(f"torchrun did not finish in {timeout} s: {err[-2000:]}")
    return proc.returncode, err


def _weights(path):
    return load_checkpoint(path)["state_dict"]


def test_lr_milestones_scale_with_epochs():
    tcfg = load_config()["train"]
    assert T.lr_milestones(tcfg) == [90, 120]
    assert T.lr_milestones({**tcfg, "epochs": 14}) == [9, 12]
    assert T.lr_milestones({**tcfg, "epochs": 280}) == [180, 240]


def test_balanced_offset_weights_give_the_global_loss(monkeypatch):
    """mean over processes of the rescaled local losses == the loss of the whole batch."""
    g = torch.Generator().manual_seed(0)
    pred, gt = torch.randn(4, 6, 5, 5, generator=g), torch.randn(4, 6, 5, 5, generator=g)
    w = torch.rand(4, 6, 5, 5, generator=g) * (torch.rand(4, 6, 5, 5, generator=g) > 0.7)
    w[:2] *= torch.rand(2, 6, 5, 5, generator=g) > 0.5  # unequal counts on the two "processes"
    parts = [slice(0, 2), slice(2, 4)]
    total = sum((w[p] > 0).sum() for p in parts).to(torch.float64)
    monkeypatch.setattr(T.D, "all_reduce_sum", lambda t: total.clone())
    local = []
    for p in parts:
        batch = {"offset_weights": w[p]}
        T.balance_offset_weights(batch, world_size=2)
        local.append(offset_loss(pred[p], gt[p], batch["offset_weights"]))
    ddp_loss = (local[0] + local[1]) / 2
    naive = (offset_loss(pred[:2], gt[:2], w[:2]) + offset_loss(pred[2:], gt[2:], w[2:])) / 2
    full = offset_loss(pred, gt, w)
    assert torch.allclose(ddp_loss, full, rtol=1e-6)
    assert not torch.allclose(naive, full, rtol=1e-3)  # why the rescaling is needed


def test_rng_state_roundtrip():
    import random

    import numpy as np
    state = T.get_rng_state()
    a = (torch.rand(3), np.random.rand(3), random.random())
    T.set_rng_state(state)
    b = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(a[0], b[0]) and (a[1] == b[1]).all() and a[2] == b[2]


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_resume_matches_uninterrupted_run(data, tmp_path, monkeypatch, precision):
    """Bit-identical weights after a kill + resume, in fp32 and in bf16 autocast."""
    p = f"train.precision={precision}"
    full = T.train(_cfg(data, tmp_path / "full", p))
    assert full["global_step"] == 6 and (tmp_path / "full" / "loss.png").is_file()

    # "kill" the second run right after its epoch-1 checkpoint is written
    real_save = T.save_checkpoint

    def save_then_die(path, *a, epoch=None, **k):
        real_save(path, *a, epoch=epoch, **k)
        if epoch == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(T, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        T.train(_cfg(data, tmp_path / "cut", p))
    monkeypatch.setattr(T, "save_checkpoint", real_save)
    torch.manual_seed(123)  # a different RNG state in the new "process": must be restored
    resumed = T.train(_cfg(data, tmp_path / "cut", p, "train.resume=true"))
    assert resumed["global_step"] == 6

    a, b = _weights(tmp_path / "full" / "last.pth"), _weights(tmp_path / "cut" / "last.pth")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed run drifted from the uninterrupted one"
    ea = [r for r in full["history"]]
    assert [r["loss"] for r in ea][1:] == [r["loss"] for r in resumed["history"]]
    # the metrics of the resumed run hold each epoch once
    lines = (tmp_path / "cut" / "metrics.csv").read_text().splitlines()
    assert [ln.split(",")[0] for ln in lines] == ["epoch", "1", "2", "3"]


def test_resume_without_checkpoint_is_a_clear_error(data, tmp_path):
    from logocap.utils import LogocapError
    with pytest.raises(LogocapError, match="nothing to resume"):
        T.train(_cfg(data, tmp_path / "none", "train.resume=true"))


def _train_one_and_two(data, tmp_path, *overrides):
    """The same 2-epoch run twice: one process with batch 2, torchrun 2 processes x batch 1."""
    T.train(_cfg(data, tmp_path / "one", "train.epochs=2", *overrides))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "logocap.cli", "train", "--device", "cpu",
           "--data", str(data), "--out", str(tmp_path / "two"), "--epochs", "2",
           "data.input_size=64", "train.batch_size=1", "train.eval_every=0",
           *FIXTURE_LAYOUT, *overrides]
    rc, err = _run_group(cmd, env, timeout=180)
    assert rc == 0, err[-3000:]
    assert load_checkpoint(tmp_path / "two" / "last.pth")["global_step"] == 4
    one, two = _weights(tmp_path / "one" / "last.pth"), _weights(tmp_path / "two" / "last.pth")
    assert one.keys() == two.keys()
    params = [k for k in one if one[k].is_floating_point() and "running_" not in k]
    diff = torch.cat([(one[k].double() - two[k].double()).abs().flatten() for k in params])
    losses = [[float(r["loss"]) for r in _epochs(tmp_path / run)] for run in ("one", "two")]
    return diff, losses


def _epochs(out):
    import csv
    with open(out / "metrics.csv") as f:
        return list(csv.DictReader(f))


def test_two_processes_match_one(data, tmp_path):
    """torchrun --nproc_per_node 2 with batch 1 each == one process with batch 2, in float64.

    What is guaranteed: the same arithmetic up to the order of the reductions (BatchNorm sums,
    the DDP gradient all-reduce). In float32 that order changes the gradients by ~1e-8
    relative, and Adam turns it into steps of up to lr * g / (|g| + eps) for weights whose true
    gradient is ~0 (a bias feeding a BatchNorm): up to a whole lr-sized step, 4e-4 in 4 steps,
    and how much depends on the CPU's kernels. In float64 the same noise is ~1e-16 relative,
    i.e. gradients of ~1e-17 against eps = 1e-8: weight differences of at most ~lr * 1e-9 per
    step. So the test runs the tiny model in float64 and asks for 1e-9 everywhere, on any CPU
    and thread count. Without the BN sync / loss rescaling 98% of the weights differ by more
    than 1e-5 (mean 1.6e-3).
    """
    diff, losses = _train_one_and_two(data, tmp_path, "train.precision=fp64")
    assert diff.max() < 1e-9, diff.max()
    assert losses[0] == pytest.approx(losses[1], rel=1e-12, abs=1e-12)


def test_two_processes_follow_one_in_bf16(data, tmp_path):
    """The same run in bf16 autocast (the default on CPUs with AMX / AVX512-BF16).

    bf16 keeps 8 significant bits: the per-sample convolutions of a batch of 2 and of two
    batches of 1 may round differently, so what is guaranteed is agreement to bf16's resolution,
    not equal weights (Adam turns any rounding difference in a near-zero gradient into a whole
    step). The check that can tell a correct DDP step from a wrong one is the first epoch's
    loss, a mean over many elements (its bf16 noise averages out, ~1e-5 relative), which
    follows the one-process run to 1e-3; without the BatchNorm sync it is off by ~2.4e-3 and
    the second epoch by ~7e-3. Weights: within what 4 Adam steps can move them apart.
    """
    diff, losses = _train_one_and_two(data, tmp_path, "train.precision=bf16")
    assert losses[0][0] == pytest.approx(losses[1][0], rel=1e-3)
    assert losses[0][1] == pytest.approx(losses[1][1], rel=5e-3)
    # Adam's step is at most lr * (1 - beta1) / sqrt(1 - beta2) = 3.16 lr (Kingma & Ba, §2.1)
    assert diff.max() <= 2 * 4 * 3.17e-3, diff.max()
