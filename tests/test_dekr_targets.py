"""DEKR targets (per-channel heatmap weights, keypoint-box offset area) and criterion."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from logocap.codecs.targets import encode_targets, keypoint_box_area
from logocap.data.coco import CocoPoseDataset, collate_train
from logocap.data.transforms import affine_scale
from logocap.losses import build_criterion, target_settings
from logocap.losses.center_offset import CenterOffsetCriterion
from logocap.losses.dekr import DekrCriterion
from logocap.meta import CROWDPOSE
from logocap.models import create_model
from logocap.utils import LogocapError

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fixtures import FIXTURE_LAYOUT, make_coco_fixture  # noqa: E402


def test_keypoint_box_area_is_the_released_quirk():
    kp = np.zeros((2, 4, 3))
    kp[0, 1] = (10, 20, 2)
    kp[0, 2] = (30, 50, 2)  # joints 0 and 3 unlabelled at (0, 0)
    kp[1] = [(100, 200, 2), (130, 260, 2), (120, 230, 1), (110, 210, 2)]  # all labelled
    # the (0, 0) centre row pulls the minimum to 0 even when every joint is labelled
    assert keypoint_box_area(kp).tolist() == [30 ** 2 + 50 ** 2, 130 ** 2 + 260 ** 2]


def test_per_channel_weights_hold_each_channels_own_windows():
    kp = np.zeros((1, 3, 3))
    kp[0, 0] = (5, 5, 2)
    kp[0, 1] = (24, 20, 2)  # joint 2 unlabelled: its channel is all background
    ignore = np.ones((32, 32), np.float32)
    ignore[:, 30:] = 0
    args = dict(out_size=(32, 32), num_keypoints=3, min_center_area=0.0)
    shared = encode_targets(kp, np.array([4000.0]), ignore, **args)
    per = encode_targets(kp, np.array([4000.0]), ignore, per_channel_weights=True, **args)
    w = per["heatmap_weights"]
    assert shared["heatmap_weights"].shape == (1, 32, 32) and w.shape == (4, 32, 32)
    assert w[0, 5, 5] == 1 and w[0, 20, 24] == pytest.approx(0.1)  # joint 1 is not channel 0's
    assert w[1, 20, 24] == 1 and w[1, 5, 5] == pytest.approx(0.1)
    assert np.allclose(w[2], 0.1 * ignore)
    assert w[3, 12, 14] == 1  # the centre (mean of the labelled joints) window
    # the shared map is the union of the per-channel windows; maps and offsets are unchanged
    assert np.array_equal(w.max(0, keepdims=True), shared["heatmap_weights"])
    for k in ("heatmaps", "offsets", "offset_weights"):
        assert np.array_equal(per[k], shared[k])


def test_offset_areas_set_the_weights_but_not_who_gets_a_centre():
    kp = np.zeros((2, 2, 3))
    kp[0] = [(8, 8, 2), (10, 12, 2)]
    kp[1] = [(22, 8, 2), (24, 12, 2)]
    areas = np.array([2000.0, 100.0])  # person 1 is below 32^2: no centre, no offsets
    t = encode_targets(kp, areas, None, (32, 32), 2, offset_areas=np.array([400.0, 900.0]))
    ow = t["offset_weights"]
    assert np.isclose(ow[ow > 0], 1 / 20).all()  # 1 / sqrt(400), only person 0
    assert ow[:, :, 16:].max() == 0
    with pytest.raises(ValueError, match="offset areas"):
        encode_targets(kp, areas, None, (32, 32), 2, offset_areas=np.ones(3))


def test_dataset_makes_dekr_targets(tmp_path):
    ann, img = make_coco_fixture(tmp_path, num_images=2, people=2)
    common = dict(input_size=64, seed=3, min_center_area=0.0)
    dekr = CocoPoseDataset(ann, img, heatmap_weights="per_channel", offset_area="keypoint_box",
                           **common)
    plain = CocoPoseDataset(ann, img, **common)
    a, b = dekr[0], plain[0]
    k = dekr.meta.num_keypoints
    assert a["heatmap_weights"].shape == (k + 1, 16, 16) and b["heatmap_weights"].shape == (1, 16, 16)
    assert torch.equal(a["heatmaps"], b["heatmaps"])
    assert torch.equal(a["heatmap_weights"].amax(0, keepdim=True), b["heatmap_weights"])
    # offset weights are 1 / sqrt(quirk area x augmentation scale^2) of the annotation
    raw = json.loads(Path(ann).read_text())
    anns = [x for x in raw["annotations"] if x["image_id"] == dekr.image_ids[0] and not x["iscrowd"]
            and x["num_keypoints"] > 0]
    quirk = keypoint_box_area(np.array([x["keypoints"] for x in anns]).reshape(len(anns), k, 3))
    expected = 1 / np.sqrt(quirk * affine_scale(a["affine"].numpy()) ** 2)
    got = np.unique(a["offset_weights"][a["offset_weights"] > 0].numpy())
    assert len(got) and all(np.isclose(expected, g, rtol=1e-5).any() for g in got)
    batch = collate_train([a, dekr[1]])
    assert batch["heatmap_weights"].shape == (2, k + 1, 16, 16)
    with pytest.raises(LogocapError, match="heatmap_weights"):
        CocoPoseDataset(ann, img, heatmap_weights="per_joint", **common)
    with pytest.raises(LogocapError, match="offset_area"):
        CocoPoseDataset(ann, img, offset_area="bbox", **common)


def test_target_settings_and_criterion_dispatch():
    assert target_settings("dekr_hrnet_w32") == {"heatmap_weights": "per_channel",
                                                 "offset_area": "keypoint_box"}
    assert target_settings("dekr_hrnet_tiny", {"offset_area": "segmentation",
                                               "heatmap_weights": None})["offset_area"] == "segmentation"
    assert target_settings("logocap_hrnet_w32", {"heatmap_weights": None}) == {
        "heatmap_weights": "shared", "offset_area": "segmentation"}
    net = create_model("dekr_hrnet_tiny", num_keypoints=CROWDPOSE.num_keypoints)
    net.model_name = "dekr_hrnet_tiny"
    crit = build_criterion(net, {"heatmap": 1.0, "offset": None})
    assert isinstance(crit, DekrCriterion) and crit.offset_factor == 0.03
    assert DekrCriterion({"offset": 0.05}).offset_factor == 0.05
    assert CenterOffsetCriterion({"offset": None}).offset_factor == 0.01


def test_dekr_loss_on_a_batch(tmp_path):
    torch.manual_seed(0)
    ann, img = make_coco_fixture(tmp_path, num_images=2, people=2, meta=CROWDPOSE)
    ds = CocoPoseDataset(ann, img, input_size=64, **target_settings("dekr_hrnet_tiny"))
    batch = collate_train([ds[0], ds[1]])
    net = create_model("dekr_hrnet_tiny", num_keypoints=14)
    out = DekrCriterion({"heatmap": 1.0})(net, batch)
    base = CenterOffsetCriterion({"heatmap": 1.0, "offset": 0.01}).terms(net(batch["image"]), batch)
    assert torch.allclose(out["heatmap"], base["heatmap"])
    assert torch.allclose(out["offset"], 3 * base["offset"], rtol=1e-5)
    assert torch.allclose(out["loss"], out["heatmap"] + out["offset"])
    out["loss"].backward()
    assert net.offset_feature_layers[0][0].adapt_conv.weight.grad.abs().sum() > 0


def test_dekr_recipes_hold_the_released_settings():
    from logocap.config import load_config

    root = Path(__file__).resolve().parents[1] / "configs"
    for name, size, epochs, steps, joints, decrease, bs in (
            ("dekr_hrnet_w32_512_coco", 512, 140, [90, 120], 8, 0.9, 10),
            ("dekr_hrnet_w48_640_coco", 640, 140, [90, 120], 8, 0.9, 5),
            ("dekr_hrnet_w32_512_crowdpose", 512, 300, [200, 260], 7, 0.8, 10),
            ("dekr_hrnet_w48_640_crowdpose", 640, 300, [200, 260], 7, 0.8, 5)):
        cfg = load_config(root / f"{name}.yaml")
        assert cfg["model"]["name"] == name.rsplit("_", 2)[0]
        assert cfg["data"]["input_size"] == size and cfg["data"]["dataset"] in name
        assert target_settings(cfg["model"]["name"], cfg["data"]) == {
            "heatmap_weights": "per_channel", "offset_area": "keypoint_box"}
        assert cfg["loss"]["offset"] == 0.03 and cfg["train"]["lr"] == 1e-3
        assert cfg["train"]["epochs"] == epochs and cfg["train"]["lr_steps"] == steps
        assert cfg["train"]["lr_steps_of"] == epochs and cfg["train"]["batch_size"] == bs
        t = cfg["test"]
        assert (t["nms_threshold"], t["nms_num_joints"], t["scale_decrease"]) == (0.05, joints, decrease)
        assert t["flip"] and t["topk"] == 30 and t["center_threshold"] == 0.01


def test_training_dataset_follows_the_model(tmp_path):
    from logocap.config import load_config
    from logocap.engine.train import build_train_dataset

    make_coco_fixture(tmp_path, num_images=2)
    layout = [*FIXTURE_LAYOUT, f"data.root={tmp_path}", "data.input_size=64"]
    ds = build_train_dataset(load_config(None, ["model.name=dekr_hrnet_tiny", *layout]))
    assert ds.target_args["per_channel_weights"] and ds.offset_area == "keypoint_box"
    assert ds[0]["heatmap_weights"].shape[0] == ds.meta.num_keypoints + 1
    ds = build_train_dataset(load_config(None, ["model.name=dekr_hrnet_tiny",
                                                "data.offset_area=segmentation", *layout]))
    assert ds.offset_area == "segmentation"
    ds = build_train_dataset(load_config(None, ["model.name=logocap_hrnet_tiny", *layout]))
    assert not ds.target_args["per_channel_weights"] and ds.offset_area == "segmentation"
