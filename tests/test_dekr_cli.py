"""DEKR through the user-facing paths: the released file layout in `logocap predict`, a tiny DEKR
trained with `logocap train` on a CrowdPose-format fixture, then evaluated and run by Predictor."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from fixtures import FIXTURE_LAYOUT, make_coco_fixture
from logocap.cli import main
from logocap.commands.predict import output_paths
from logocap.meta import CROWDPOSE
from logocap.predict import Predictor
from logocap.utils import LogocapError

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _released_dekr_w32() -> dict:
    """Random tensors with exactly the names and shapes of pose_dekr_hrnetw32_coco.pth."""
    from test_dekr_model import released_keys

    g = torch.Generator().manual_seed(0)
    sd = {}
    for name, shape in released_keys("dekr_w32_keys.txt")[0].items():
        v = torch.randn(shape, generator=g) * 0.01 if shape else torch.tensor(0)
        sd[name] = v.abs() + 1.0 if name.endswith("running_var") else v
    return sd


def test_predict_accepts_the_released_dekr_layout(tmp_path, capsys):
    import cv2

    w = tmp_path / "pose_dekr_hrnetw32_coco.pth"
    sd = _released_dekr_w32()
    sd["head_heatmap.1.bias"][:] = 0.5  # maps above the thresholds: the whole decoder runs
    torch.save(sd, w)
    img = tmp_path / "people.png"
    cv2.imwrite(str(img), np.random.default_rng(0).integers(0, 255, (96, 128, 3), dtype=np.uint8))
    assert main(["predict", "--model", "dekr_hrnet_w32", "--weights", str(w), str(img),
                 "--size", "128", "--out", str(tmp_path / "out")]) == 0
    json_path, jpg_path = output_paths(img, Path(img.name), str(tmp_path / "out"))
    assert json_path.is_file() and jpg_path.is_file()
    res = json.loads(json_path.read_text())
    assert len(res["poses"]) >= 1 and len(res["keypoint_names"]) == 17
    # the released DEKR file given as LOGO-CAP: one clear line naming both models
    capsys.readouterr()
    assert main(["predict", "--model", "logocap_hrnet_w32", "--weights", str(w), str(img)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'logocap_hrnet_w32'" in err[0], err
    assert "looks like a 'dekr_hrnet_w32' state_dict" in err[0]


def test_train_tiny_dekr_then_eval_and_predict(tmp_path):
    data = tmp_path / "data"
    make_coco_fixture(data, num_images=4, size=(64, 96), meta=CROWDPOSE)
    run = tmp_path / "run"
    res = subprocess.run(
        [sys.executable, "-m", "logocap.cli", "train", "--data", str(data), "--out", str(run),
         "--epochs", "1", "--device", "cpu", "model.name=dekr_hrnet_tiny", "data.dataset=crowdpose",
         "data.input_size=64", "data.num_workers=0", "train.batch_size=2", "train.eval_every=1",
         "train.log_every=1", "train.precision=fp32", *FIXTURE_LAYOUT],
        cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    ckpt = torch.load(run / "last.pth", map_location="cpu", weights_only=True)
    assert ckpt["model_name"] == "dekr_hrnet_tiny" and ckpt["meta"]["name"] == "crowdpose"
    steps = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    step = next(r for r in steps if r["type"] == "step")
    assert set(step) >= {"loss", "heatmap", "offset"}
    epochs = [r for r in steps if r["type"] == "epoch"]
    assert "val_AP" in epochs[-1]
    cfg = ckpt["config"]
    assert cfg["data"]["heatmap_weights"] is None and cfg["loss"]["offset"] is None  # = DEKR's own

    # multi-scale prediction from the checkpoint, a batch of two
    pred = Predictor.from_checkpoint(run / "last.pth", center_threshold=-1.0, scales=[0.5, 1.0, 2.0])
    imgs = [np.random.default_rng(i).integers(0, 255, (64, 96, 3), dtype=np.uint8) for i in range(2)]
    out = pred.predict_batch(imgs)
    assert len(out) == 2 and all(p.keypoints.shape[1:] == (14, 3) for p in out)
    assert all(len(p) >= 1 for p in out)
    with pytest.raises(LogocapError, match="multiple of 32"):
        Predictor.from_checkpoint(run / "last.pth", scales=[0.75, 1.0]).predict(imgs[0])
