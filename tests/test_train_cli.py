"""`logocap train` and `logocap eval --weights` as a user runs them (subprocesses)."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fixtures import FIXTURE_LAYOUT, make_coco_fixture

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _cli(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "logocap.cli", *map(str, args)], cwd=REPO, env=ENV,
                          capture_output=True, text=True, timeout=timeout)


def test_help_shows_every_option_with_defaults():
    res = _cli("train", "--help")
    assert res.returncode == 0
    for opt in ("--config", "--data", "--out", "--epochs", "--resume", "--device", "key=value"):
        assert opt in res.stdout
    assert "(default: auto)" in " ".join(res.stdout.split())  # argparse wraps lines


@pytest.mark.parametrize("args, message", [
    (["--data", "no/such/folder"], "data folder not found: no/such/folder"),
    (["--config", "no/such.yaml"], "config file not found"),
    (["train.no_such_key=1"], "unknown config key 'train.no_such_key'"),
    (["--epochs", "0"], "--epochs must be >= 1"),
])
def test_user_errors_are_one_line_exit_2(args, message, tmp_path):
    res = _cli("train", "--out", tmp_path / "run", *args)
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], res.stderr
    assert not (tmp_path / "run" / "last.pth").exists()


def test_train_then_eval_the_checkpoint(tmp_path):
    data = tmp_path / "data"
    make_coco_fixture(data, num_images=4, size=(64, 80))
    run = tmp_path / "run"
    res = _cli("train", "--config", REPO / "configs" / "center_offset_hrnet_tiny_256_synthetic.yaml",
               "--data", data, "--out", run, "--epochs", "2", "--device", "cpu",
               "data.input_size=64", "data.num_workers=0", "train.batch_size=2",
               "train.eval_every=2", "train.log_every=1", *FIXTURE_LAYOUT)
    assert res.returncode == 0, res.stderr[-3000:]
    for name in ("last.pth", "best.pth", "metrics.jsonl", "metrics.csv", "loss.png", "config.yaml"):
        assert (run / name).is_file(), name
    ckpt = torch.load(run / "last.pth", map_location="cpu", weights_only=True)
    assert ckpt["format"] == "logocap" and ckpt["epoch"] == 2 and ckpt["global_step"] == 4
    assert ckpt["model_name"] == "center_offset_hrnet_tiny" and ckpt["input_size"] == 64
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["type"] for r in records].count("step") == 4
    epochs = [r for r in records if r["type"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [1, 2] and "val_AP" in epochs[1] and "val_AP" not in epochs[0]
    assert (run / "eval" / "epoch_002" / "results.json").is_file()

    # the same checkpoint through `logocap eval` (dataset folder layout: <split> names)
    val = tmp_path / "val"
    (val / "annotations").mkdir(parents=True)
    shutil.copy(data / "annotations" / "person_keypoints.json",
                val / "annotations" / "person_keypoints_val.json")
    shutil.copytree(data / "images", val / "images" / "val")
    res = _cli("eval", "--weights", run / "last.pth", "--data", val, "--no-flip", "--out", tmp_path / "ev")
    assert res.returncode == 0, res.stderr[-3000:]
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert list(metrics)[:3] == ["AP", "AP50", "AP75"] and len(metrics) == 10
    assert json.loads((tmp_path / "ev" / "eval_settings.json").read_text())["test"]["flip"] is False
    assert isinstance(json.loads((tmp_path / "ev" / "results.json").read_text()), list)
    assert "AP50" in res.stdout  # the ten numbers are printed
    # with flip on, as the training loop evaluated, the CLI reproduces its numbers
    res = _cli("eval", "--weights", run / "last.pth", "--data", val, "--out", tmp_path / "ev2")
    assert res.returncode == 0, res.stderr[-2000:]
    assert json.loads((tmp_path / "ev2" / "metrics.json").read_text()) == \
        json.loads((run / "eval" / "epoch_002" / "metrics.json").read_text())
    # wrong model name for this checkpoint, missing data folder: one line, exit 2
    res = _cli("eval", "--weights", run / "last.pth", "--data", val, "--model", "logocap_hrnet_tiny")
    assert res.returncode == 2 and "not 'logocap_hrnet_tiny'" in res.stderr
    res = _cli("eval", "--weights", run / "last.pth", "--data", tmp_path / "nope")
    assert res.returncode == 2 and "data folder not found" in res.stderr
