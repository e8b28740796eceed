"""HGR targets and loss (seed paper Eqns. 4-6) on hand-made targets."""
import json

import numpy as np
import pytest
import torch

from fixtures import make_coco_fixture
from logocap.codecs.targets import box_diagonal_area, encode_targets
from logocap.data.coco import CocoPoseDataset
from logocap.data.transforms import affine_scale
from logocap.losses import build_criterion, target_settings
from logocap.losses.hgr import HgrCriterion, hgr_heatmap_weights
from logocap.models import create_model
from logocap.utils import LogocapError

SMOOTH_L1_AT_1 = 1.0 - 0.5 / 9.0  # SmoothL1(beta = 1/9) of an error of 1


def _batch(k=2, h=8, w=8):
    """One image, K = 2: one joint of type 0 (its region = the Gaussian window), no joint of type
    1, one person centre with a single offset pixel; a 1/Z = 1/50 offset weight (box 30 x 40)."""
    kp = np.zeros((1, k, 3))
    kp[0, 0] = (2.0, 2.0, 2)
    t = encode_targets(kp, np.array([2000.0]), None, (w, h), k, sigma=0.5, radius=1,
                       min_center_area=0.0, per_channel_weights=True)
    batch = {k_: torch.from_numpy(v)[None] for k_, v in t.items()}
    batch["offsets"].zero_()
    batch["offset_weights"].zero_()
    batch["offset_weights"][0, 0:2, 3, 3] = 1.0 / 50.0  # joint 0 (x, y) at pixel (3, 3)
    return batch


def test_tradeoff_weights_are_one_in_each_joint_region_and_bg_elsewhere():
    b = _batch()
    w = b["heatmap_weights"]
    kp_w, ct_w = hgr_heatmap_weights(w, 2, tradeoff=True)
    region0 = kp_w[0, 0] == 1.0
    assert region0.any() and region0.sum() < 64
    assert torch.allclose(kp_w[0, 0][~region0], torch.tensor(0.1))
    assert torch.allclose(kp_w[0, 1], torch.tensor(0.1))  # no joint of type 1: no region at all
    assert torch.all(b["heatmaps"][0, 0][~region0] == 0)  # the region holds the whole Gaussian
    plain, ct_plain = hgr_heatmap_weights(w, 2, tradeoff=False)
    assert torch.all(plain == 1.0) and torch.all(ct_w == 1.0) and torch.equal(ct_w, ct_plain)
    # ignored pixels (weight 0 from the dataset) stay 0 in every variant
    w2 = w.clone()
    w2[..., 0, :] = 0
    for tr in (True, False):
        a, c = hgr_heatmap_weights(w2, 2, tr)
        assert torch.all(a[..., 0, :] == 0) and torch.all(c[..., 0, :] == 0)
    with pytest.raises(LogocapError, match="per-channel heatmap weights"):
        hgr_heatmap_weights(w[:, :1], 2)


def test_loss_terms_by_hand():
    b = _batch()
    k, h, w = 2, 8, 8
    region = int((b["heatmap_weights"][0, 0] == 1).sum())
    pred = {"heatmaps": torch.cat([torch.ones(1, k, h, w), b["heatmaps"][:, k:] + 0.5], 1),
            "offsets": torch.zeros(1, 2 * k, h, w)}
    pred["offsets"][0, 0:2, 3, 3] = 1.0  # error 1 in x and y at the weighted pixel
    gt0 = b["heatmaps"][0, :k]

    def model(_):
        return pred

    b["image"] = torch.zeros(1, 3, 32, 32)
    out = HgrCriterion({})(model, b)
    wts = torch.full((k, h, w), 0.1)
    wts[0][b["heatmap_weights"][0, 0] == 1] = 1.0
    assert region > 0
    assert out["heatmap"].item() == pytest.approx(float((wts * (1 - gt0) ** 2).mean()), rel=1e-6)
    assert out["center"].item() == pytest.approx(0.25, rel=1e-6)  # (0.5)^2, weight 1 everywhere
    # Eqn. 5-6: lambda x SmoothL1 / Z averaged over the 2 weighted entries
    assert out["offset"].item() == pytest.approx(0.01 * SMOOTH_L1_AT_1 / 50.0, rel=1e-6)
    assert out["loss"].item() == pytest.approx(out["heatmap"].item() + out["center"].item()
                                               + out["offset"].item(), rel=1e-6)
    plain = HgrCriterion({"tradeoff": False, "center": 0.01, "offset": 0.03})(model, b)
    assert plain["heatmap"].item() == pytest.approx(float(((1 - gt0) ** 2).mean()), rel=1e-6)
    assert plain["center"].item() == pytest.approx(0.0025, rel=1e-6)
    assert plain["offset"].item() == pytest.approx(3 * out["offset"].item(), rel=1e-6)
    with pytest.raises(LogocapError, match="loss.tradeoff"):
        HgrCriterion({"tradeoff": "no"})


def test_dispatch_by_model_name():
    assert target_settings("hgr_hrnet_tiny") == {"heatmap_weights": "per_channel",
                                                 "offset_area": "instance_box"}
    assert target_settings("hgr_hrnet_w32", {"offset_area": "segmentation"})["offset_area"] == \
        "segmentation"
    assert isinstance(build_criterion(create_model("hgr_hrnet_tiny"), {"offset": None}), HgrCriterion)


def test_box_diagonal_area():
    boxes = np.array([[10, 20, 40, 60], [0, 0, 0, 0]], float)  # 30 x 40; no box
    kp = np.zeros((2, 3, 3))
    kp[1] = [[5, 5, 2], [11, 13, 2], [100, 100, 0]]  # labelled span 6 x 8, an unlabelled outlier
    assert box_diagonal_area(boxes, kp) == pytest.approx([2500.0, 100.0])


def test_dataset_offset_weights_are_one_over_box_diagonal(tmp_path):
    ann, images = make_coco_fixture(tmp_path, num_images=2, size=(96, 128))
    ds = CocoPoseDataset(ann, images, input_size=64, **target_settings("hgr_hrnet_tiny"))
    anns = json.loads(ann.read_text())["annotations"]
    for i in range(2):
        s = ds[i]
        scale = affine_scale(s["affine"].numpy())
        image_id = s["image_id"]
        boxes = [a["bbox"] for a in anns if a["image_id"] == image_id and a.get("num_keypoints")]
        expected = [1.0 / (np.hypot(bw, bh) * scale) for _, _, bw, bh in boxes]
        got = np.unique(s["offset_weights"].numpy())
        got = got[got > 0]
        assert len(got) >= 1
        for g in got:
            assert np.min(np.abs(np.array(expected) - g) / g) < 1e-5, (g, expected)
        assert s["heatmap_weights"].shape[0] == 18  # per channel: K + 1
