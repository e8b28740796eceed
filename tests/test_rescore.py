"""Rescoring net: features, the released key layout, keypoint-set checks, Predictor hook."""
import numpy as np
import pytest
import torch

from logocap.meta import COCO, CROWDPOSE, KeypointMeta, rescore_limbs
from logocap.models.rescore import (RescoreNet, load_rescorer, num_features, rescore_features,
                                    rescore_scores, save_rescorer)
from logocap.utils import LogocapError
from test_dekr_model import released_keys


def _released_rescore_sd(seed=0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(s, generator=g) * 0.1 for k, s in released_keys("dekr_w32_keys.txt")[1].items()}


def test_released_layout_loads_strictly_for_coco_only(tmp_path):
    sd = _released_rescore_sd()
    assert sd["l1.weight"].shape == (256, 74) and num_features(COCO) == 74
    f = tmp_path / "final_rescore_coco_kpt.pth"
    torch.save(sd, f)
    net = load_rescorer(f, COCO)
    assert torch.equal(net.l3.bias, sd["l3.bias"])
    with pytest.raises(LogocapError, match="takes 74 features, but the keypoint set 'crowdpose'.*59"):
        load_rescorer(f, CROWDPOSE)
    torch.save({"l1.weight": torch.zeros(3)}, tmp_path / "bad.pth")
    with pytest.raises(LogocapError, match="not a rescoring net"):
        load_rescorer(tmp_path / "bad.pth", COCO)
    with pytest.raises(LogocapError, match="not found"):
        load_rescorer(tmp_path / "missing.pth", COCO)


def test_features_known_answer_and_invariance():
    limbs, scale = rescore_limbs(COCO)
    assert len(limbs) == 19 and scale == (9, 11)
    assert (COCO.keypoint_names[limbs[9][0]], COCO.keypoint_names[limbs[9][1]]) == ("left_shoulder", "left_hip")
    rng = np.random.default_rng(0)
    pose = torch.tensor(np.concatenate([rng.uniform(0, 100, (17, 2)), rng.uniform(0, 1, (17, 1))], 1))
    f = rescore_features(pose, COCO)
    assert f.shape == (74,)
    s = ((pose[5, :2] - pose[11, :2]).norm() + (pose[6, :2] - pose[12, :2]).norm()) / 2
    assert torch.allclose(f[0:2], (pose[0, :2] - pose[1, :2]) / s)  # limb 0 = nose - left eye
    assert torch.allclose(f[38 + 9], torch.tensor(1.0, dtype=f.dtype) * (pose[5, :2] - pose[11, :2]).norm() / s)
    assert torch.equal(f[57:], pose[:, 2])
    moved = pose.clone()
    moved[:, :2] = 3.0 * pose[:, :2] + torch.tensor([20.0, -7.0], dtype=pose.dtype)
    assert torch.allclose(rescore_features(moved, COCO), f)
    # batched, CrowdPose, and the 1 px floor of a collapsed pose
    crowd = torch.zeros(2, 5, 14, 3)
    assert rescore_features(crowd, CROWDPOSE).shape == (2, 5, 59)
    assert torch.isfinite(rescore_features(crowd, CROWDPOSE)).all()


def test_our_format_round_trip_and_keypoint_set_refusal(tmp_path):
    torch.manual_seed(0)
    net = RescoreNet(num_features(CROWDPOSE))
    f = tmp_path / "rescore_crowdpose.pth"
    save_rescorer(f, net, CROWDPOSE, extra={"epochs": 1})
    back = load_rescorer(f, CROWDPOSE)
    x = torch.randn(4, 59)
    assert torch.allclose(back(x), net(x))
    # a custom 14-keypoint set with the same feature size is still another keypoint set
    names = tuple(f"k{i}" for i in range(14))
    other = KeypointMeta("custom14", names, (), tuple((i, i + 1) for i in range(13)) + ((0, 2), (3, 5)),
                         (0.05,) * 14)
    assert num_features(other) == 59
    with pytest.raises(LogocapError, match="trained for the keypoint set 'crowdpose'"):
        load_rescorer(f, other)


def test_rescore_scores_multiplies_the_predicted_oks():
    torch.manual_seed(0)
    net = RescoreNet(74).eval()
    poses = torch.rand(2, 3, 17, 3) * 50
    scores = torch.rand(2, 3)
    out = rescore_scores(net, poses, scores, COCO)
    assert torch.allclose(out, net(rescore_features(poses, COCO)).detach() * scores)
    with torch.no_grad():
        net.l3.bias.fill_(float("nan"))
    assert torch.equal(rescore_scores(net, poses, scores, COCO), torch.zeros(2, 3))


def test_predictor_rescores_any_model(tmp_path):
    from logocap.models import create_model
    from logocap.predict import Predictor

    torch.manual_seed(0)
    net = RescoreNet(74).eval()
    f = tmp_path / "rescore.pth"
    torch.save(net.state_dict(), f)  # the released (plain state_dict) layout
    img = np.random.default_rng(0).integers(0, 255, (64, 96, 3), dtype=np.uint8)
    for name in ("dekr_hrnet_tiny", "center_offset_hrnet_tiny"):
        model = create_model(name)
        cfg = {"center_threshold": -1.0}
        base = Predictor(model, COCO, 64, cfg).predict(img)
        res = Predictor(model, COCO, 64, {**cfg, "rescore": str(f)}).predict(img)
        assert len(base) == len(res) >= 1
        expect = rescore_scores(net, torch.as_tensor(base.keypoints), torch.as_tensor(base.scores), COCO)
        assert np.allclose(np.sort(res.scores), np.sort(expect.numpy()), atol=1e-6)
    with pytest.raises(LogocapError, match="keypoint set 'crowdpose'"):
        Predictor(create_model("dekr_hrnet_tiny", num_keypoints=14), CROWDPOSE, 64, {"rescore": str(f)})


def test_oks_known_answer():
    from logocap.engine.rescore import pose_oks

    gt = np.zeros((1, 17, 3))
    gt[0, :, :2] = np.arange(34).reshape(17, 2)
    gt[0, :10, 2] = 2
    pred = gt[None, 0, :, :2].copy()
    assert np.allclose(pose_oks(pred, gt, np.array([400.0]), COCO.sigmas), 1.0)
    pred[0, 0, 0] += 1.0  # joint 0: d^2 = 1, var = (2 x 0.026)^2, area 400
    e = 1.0 / (2 * 0.026) ** 2 / 400 / 2
    assert np.allclose(pose_oks(pred, gt, np.array([400.0]), COCO.sigmas), (9 + np.exp(-e)) / 10)
    pred[0, 12] += 50.0  # an unlabelled joint does not count
    assert np.allclose(pose_oks(pred, gt, np.array([400.0]), COCO.sigmas), (9 + np.exp(-e)) / 10)


def test_rescore_train_cli(tmp_path, capsys):
    from fixtures import make_coco_fixture
    from logocap.cli import main
    from logocap.engine.checkpoint import save_checkpoint
    from logocap.models import create_model

    data = tmp_path / "data"
    ann, images = make_coco_fixture(data, num_images=3, size=(64, 96), meta=CROWDPOSE)
    model = create_model("dekr_hrnet_tiny", num_keypoints=14)
    ckpt = tmp_path / "model.pth"
    cfg = {"data": {"input_size": 64}, "test": {"center_threshold": -1.0}}
    save_checkpoint(ckpt, model, CROWDPOSE, cfg)
    out = tmp_path / "rescore.pth"
    assert main(["rescore-train", "--weights", str(ckpt), "--ann", str(ann), "--images", str(images),
                 "--out", str(out), "--epochs", "3", "--batch-size", "16"]) == 0
    net = load_rescorer(out, CROWDPOSE)
    assert net.in_features == 59
    info = torch.load(out, weights_only=True)["training"]
    assert info["samples"] >= 3 and len(info["losses"]) == 3
    assert main(["predict", "--weights", str(ckpt), str(images), "--rescore", str(out),
                 "--out", str(tmp_path / "pred")]) == 0
    # a COCO model refuses the CrowdPose rescoring file in one line
    save_checkpoint(tmp_path / "coco.pth", create_model("dekr_hrnet_tiny"), COCO, cfg)
    capsys.readouterr()
    assert main(["predict", "--weights", str(tmp_path / "coco.pth"), str(images), "--rescore",
                 str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "trained for the keypoint set 'crowdpose'" in err[0], err
