"""HGR through the library paths: a tiny HGR trained by the normal train function on a fixture,
evaluated during training, run by Predictor (final poses and regressed poses alone); a checkpoint
of another family given as HGR (and the reverse) is one line naming both."""
import json

import numpy as np
import pytest
import torch

from fixtures import FIXTURE_LAYOUT, make_coco_fixture
from logocap.cli import main
from logocap.config import load_config
from logocap.engine import train as T
from logocap.models import create_model
from logocap.predict import Predictor
from logocap.utils import LogocapError


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("hgr")
    make_coco_fixture(root / "data", num_images=4, size=(64, 80))
    cfg = load_config(None, [
        "model.name=hgr_hrnet_tiny", "train.precision=fp32", "data.input_size=64",
        "train.batch_size=2", "train.epochs=1", "train.eval_every=1", "train.log_every=1",
        f"train.out={root / 'run'}", f"data.root={root / 'data'}",
        *FIXTURE_LAYOUT])
    T.train(cfg)
    return root


def test_training_uses_the_hgr_loss_and_targets(trained):
    run = trained / "run"
    ckpt = torch.load(run / "last.pth", map_location="cpu", weights_only=True)
    assert ckpt["model_name"] == "hgr_hrnet_tiny"
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if r["type"] == "step"]
    assert len(steps) == 2 and set(steps[0]) >= {"loss", "heatmap", "center", "offset"}
    assert all(np.isfinite(r["loss"]) for r in steps)
    assert "val_AP" in [r for r in records if r["type"] == "epoch"][-1]


def test_predict_final_and_regressed_poses(trained):
    last = trained / "run" / "last.pth"
    imgs = [np.random.default_rng(i).integers(0, 255, (64, 80, 3), dtype=np.uint8) for i in range(2)]
    final = Predictor.from_checkpoint(last, center_threshold=-1.0).predict_batch(imgs)
    regressed = Predictor.from_checkpoint(last, center_threshold=-1.0, group_radius=0).predict_batch(imgs)
    for f, r in zip(final, regressed):
        assert len(f) >= 1 and f.keypoints.shape[1:] == (17, 3) and np.isfinite(f.keypoints).all()
        assert len(r) >= 1 and np.isfinite(r.keypoints).all()
    with pytest.raises(LogocapError, match="group_radius"):
        Predictor.from_checkpoint(last, group_radius=-5).predict(imgs[0])


def test_checkpoint_of_another_family_names_both(trained, tmp_path, capsys):
    dekr = tmp_path / "dekr_tiny.pth"
    torch.save(create_model("dekr_hrnet_tiny").state_dict(), dekr)
    with pytest.raises(LogocapError) as e:
        Predictor.from_checkpoint(dekr, model_name="hgr_hrnet_tiny")
    msg = str(e.value)
    assert "\n" not in msg and "'hgr_hrnet_tiny'" in msg and "'dekr_hrnet model'" in msg, msg
    hgr = tmp_path / "hgr_tiny.pth"
    torch.save(create_model("hgr_hrnet_tiny").state_dict(), hgr)
    with pytest.raises(LogocapError, match=r"'dekr_hrnet_tiny'.*looks like a 'hgr_hrnet model'"):
        Predictor.from_checkpoint(hgr, model_name="dekr_hrnet_tiny")
    # a logocap checkpoint of the HGR family asked for as DEKR
    with pytest.raises(LogocapError, match="is a 'hgr_hrnet_tiny' model, not 'dekr_hrnet_tiny'"):
        Predictor.from_checkpoint(trained / "run" / "last.pth", model_name="dekr_hrnet_tiny")
    # the command line: exit 2, one line, nothing written
    import cv2
    img = tmp_path / "img.png"
    cv2.imwrite(str(img), np.zeros((64, 80, 3), np.uint8))
    out = tmp_path / "out"
    capsys.readouterr()
    assert main(["predict", "--model", "hgr_hrnet_tiny", "--weights", str(dekr), str(img),
                 "--size", "64", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'hgr_hrnet_tiny'" in err[0] and "dekr_hrnet" in err[0], err
    assert not out.exists() or not any(out.iterdir())
