"""Predictor and ``logocap predict`` on tiny random models (CPU, 64 px inputs)."""
import json

import cv2
import numpy as np
import pytest
import torch

from fixtures import random_image as image
from logocap.cli import main
from logocap.engine.checkpoint import save_checkpoint
from logocap.meta import COCO, CROWDPOSE
from logocap.models import create_model
from logocap.predict import Predictor
from logocap.utils import LogocapError

CFG = {"topk": 10, "max_people": 5}


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return create_model("center_offset_hrnet_tiny")


@pytest.fixture
def ckpt(tmp_path, tiny):
    path = tmp_path / "tiny.pth"
    cfg = {"data": {"input_size": 64}, "test": {"topk": 10, "max_people": 5}}
    save_checkpoint(path, tiny, COCO, cfg)
    return path


@pytest.mark.parametrize("name", ["center_offset_hrnet_tiny", "logocap_hrnet_tiny"])
def test_predictor_returns_poses_in_original_pixels(name):
    torch.manual_seed(0)
    pred = Predictor(create_model(name), COCO, input_size=64, test_cfg=CFG)
    poses = pred.predict(image(50, 90))
    assert poses.keypoints.shape[1:] == (COCO.num_keypoints, 3)
    assert 1 <= len(poses) <= CFG["max_people"]
    assert poses.image_size == (50, 90)
    assert np.all(np.diff(poses.scores) <= 0)  # sorted by score
    assert np.all(np.isfinite(poses.keypoints))
    # the 64 px short side is a 64/50 zoom: joints inside the input canvas map into a frame a bit
    # wider than the image (the long side is rounded up to a multiple of 64)
    assert np.all(np.abs(poses.keypoints[..., :2]) < 200)


def test_predict_batch_equals_single_images(tiny):
    pred = Predictor(tiny, COCO, input_size=64, test_cfg=CFG)
    a, b = image(64, 80, 1), image(64, 80, 2)
    batch = pred.predict_batch([a, b])
    for img, got in zip((a, b), batch):
        one = pred.predict(img)
        np.testing.assert_allclose(got.keypoints, one.keypoints, atol=1e-4)
        np.testing.assert_allclose(got.scores, one.scores, atol=1e-6)
    # different sizes: padded into one batch, each keeps its own size and frame
    mixed = pred.predict_batch([a, image(40, 30, 3)])
    assert [p.image_size for p in mixed] == [(64, 80), (40, 30)]


def test_predictor_rejects_bad_input(tiny):
    pred = Predictor(tiny, COCO, input_size=64, test_cfg=CFG)
    with pytest.raises(LogocapError, match="uint8"):
        pred.predict(np.zeros((10, 10, 3), np.float32))
    with pytest.raises(LogocapError, match="keypoint set"):
        Predictor(tiny, CROWDPOSE, input_size=64)
    with pytest.raises(LogocapError, match="multiple of 64"):
        Predictor(tiny, COCO, input_size=100)


def test_from_checkpoint_roundtrip_and_plain_state_dict(tmp_path, tiny, ckpt):
    img = image(64, 64, 4)
    ref = Predictor(tiny, COCO, input_size=64, test_cfg=CFG).predict(img)
    loaded = Predictor.from_checkpoint(ckpt)
    assert loaded.input_size == 64 and loaded.cfg["max_people"] == 5
    np.testing.assert_allclose(loaded.predict(img).keypoints, ref.keypoints, atol=1e-4)
    assert not Predictor.from_checkpoint(ckpt, flip=False).cfg["flip"]

    plain = tmp_path / "plain.pth"
    torch.save(tiny.state_dict(), plain)
    with pytest.raises(LogocapError, match="model name"):
        Predictor.from_checkpoint(plain)
    p = Predictor.from_checkpoint(plain, "center_offset_hrnet_tiny", input_size=64, **CFG)
    assert p.input_size == 64 and p.meta is COCO
    np.testing.assert_allclose(p.predict(img).keypoints, ref.keypoints, atol=1e-4)
    with pytest.raises(LogocapError, match="does not fit"):  # weights of another model
        Predictor.from_checkpoint(plain, "logocap_hrnet_tiny")
    with pytest.raises(LogocapError, match="unknown test option"):
        Predictor.from_checkpoint(ckpt, topkk=3)


def test_cli_predict_folder_with_a_corrupt_image(tmp_path, ckpt, capsys):
    folder = tmp_path / "imgs"
    (folder / "sub").mkdir(parents=True)
    cv2.imwrite(str(folder / "a.png"), image(48, 64, 5))
    cv2.imwrite(str(folder / "sub" / "b.jpg"), image(70, 40, 6))
    (folder / "broken.jpg").write_bytes(b"not an image")
    (folder / "notes.txt").write_text("ignored")
    rc = main(["predict", "--weights", str(ckpt), "--no-flip", str(folder)])
    cap = capsys.readouterr()
    assert rc == 0
    assert "processed 2, skipped 1" in cap.out
    assert "broken.jpg" in cap.err and "warning" in cap.err
    data = json.loads((folder / "sub" / "b.jpg.poses.json").read_text())
    assert data["image_size"] == [70, 40] and data["keypoint_names"] == list(COCO.keypoint_names)
    assert 1 <= len(data["poses"]) <= 5 and len(data["poses"][0]["keypoints"]) == COCO.num_keypoints
    drawn = cv2.imread(str(folder / "a.png.poses.jpg"))
    assert drawn is not None and drawn.shape == (48, 64, 3)

    # --out keeps sub-folders; a second run does not pick up its own .poses.jpg outputs
    out = tmp_path / "out"
    rc = main(["predict", "--weights", str(ckpt), "--out", str(out), str(folder)])
    assert rc == 0 and "processed 2, skipped 1" in capsys.readouterr().out
    assert (out / "sub" / "b.jpg.poses.json").is_file() and (out / "a.png.poses.jpg").is_file()


def test_cli_predict_without_readable_image_fails(tmp_path, ckpt, capsys):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG broken")
    assert main(["predict", "--weights", str(ckpt), str(bad)]) == 2
    assert "could be read" in capsys.readouterr().err
    assert main(["predict", "--weights", str(ckpt), str(tmp_path / "nothing_here")]) == 2
    assert not (tmp_path / "bad.png.poses.json").exists()


def test_cli_predict_as_a_subprocess(tmp_path, ckpt):
    import subprocess
    import sys

    cv2.imwrite(str(tmp_path / "one.bmp"), image(40, 56, 8))
    r = subprocess.run([sys.executable, "-m", "logocap.cli", "predict", "--weights", str(ckpt),
                        "--out", str(tmp_path / "res"), str(tmp_path / "one.bmp")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "processed 1, skipped 0" in r.stdout
    assert json.loads((tmp_path / "res" / "one.bmp.poses.json").read_text())["image_size"] == [40, 56]
