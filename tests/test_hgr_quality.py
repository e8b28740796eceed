"""Table 4's heatmap quality: heatmap candidates grouped with ground-truth cues (engine/hgr_quality)."""
import numpy as np
import pytest
import torch

from fixtures import make_coco_fixture
from logocap.data.coco import CocoPoseDataset
from logocap.data.transforms import apply_affine, test_transform
from logocap.engine.hgr_quality import cue_grouped_poses, heatmap_quality_poses
from logocap.evaluation import evaluate_predictions
from logocap.meta import COCO
from logocap.models.hgr import HgrModel
from logocap.predict import Predictor
from logocap.utils import LogocapError

TINY = dict(width=8, stem_channels=16, layer1_planes=16, layer1_blocks=1, num_blocks=2,
            num_modules=(1, 1, 1), regression_channels=8, backbone_init="kaiming")


class MapsModel(HgrModel):
    """An HGR network whose output is fixed keypoint heatmaps (Gaussians at given output px)."""

    def __init__(self, joints_out=None):
        super().__init__(num_keypoints=COCO.num_keypoints, **TINY)
        self.model_name = "hgr_hrnet_tiny"
        self.joints_out = joints_out or {}  # {channel: (x, y)} output px

    def forward(self, x):
        b, _, hh, ww = x.shape
        h, w = hh // 4, ww // 4
        heat = torch.zeros(b, COCO.num_keypoints + 1, h, w, dtype=x.dtype)
        ys = torch.arange(h, dtype=x.dtype).view(h, 1)
        xs = torch.arange(w, dtype=x.dtype).view(1, w)
        for j, (jx, jy) in self.joints_out.items():
            heat[:, j] = torch.exp(-((xs - jx) ** 2 + (ys - jy) ** 2) / (2 * 1.5 ** 2))
        return {"heatmaps": heat, "offsets": torch.zeros(b, 2 * COCO.num_keypoints, h, w, dtype=x.dtype)}


def test_ground_truth_cues_absorb_the_heatmap_peaks():
    h, w, size = 96, 128, 64
    gt = np.zeros((1, 17, 3))
    gt[0, [0, 5, 11]] = [[30.0, 20.0, 2], [40.0, 50.0, 2], [62.5, 71.0, 2]]
    M, _ = test_transform(h, w, size)
    out_px = apply_affine(gt[0, :, :2], M) / 4
    model = MapsModel({j: tuple(out_px[j]) for j in (0, 5, 11)})
    pred = Predictor(model, COCO, size, {"flip": False})
    img = np.zeros((h, w, 3), np.uint8)
    cue = gt.copy()
    cue[0, [0, 5, 11], :2] += 9.0  # the cue is off by 9 px: the heatmap peaks decide
    poses = cue_grouped_poses(pred, img, cue, image_id=7)
    assert len(poses) == 1 and poses.image_id == 7
    kp = poses.keypoints[0]
    assert np.allclose(kp[[0, 5, 11], :2], gt[0, [0, 5, 11], :2], atol=0.1)
    # joints without a label start at the labelled centroid; their types have no candidate, so
    # they are misses, reported far outside the image (heat 0)
    assert (kp[1, :2] > 1000).all() and kp[1, 2] == 0
    assert poses.scores[0] == pytest.approx(3 / 17, abs=0.01)
    # the literal rule keeps them at the cue
    literal = cue_grouped_poses(pred, img, cue, fallback="cue").keypoints[0]
    assert np.allclose(literal[1, :2], cue[0, [0, 5, 11], :2].mean(0), atol=1e-3)
    # a person without a labelled joint is no cue
    two = np.concatenate([cue, np.zeros((1, 17, 3))])
    assert len(cue_grouped_poses(pred, img, two)) == 1
    with pytest.raises(LogocapError, match="test scale 1 only"):
        cue_grouped_poses(Predictor(model, COCO, size, {"scales": [0.5, 1.0]}), img, cue)


def test_empty_heatmaps_score_nothing_and_the_literal_rule_gives_back_the_cues(tmp_path):
    """No candidate anywhere: the heatmap quality is AP 0 (every joint missed). With the literal
    rule every cue joint is kept, so the 'grouped' poses are the ground truth through the
    prediction coordinate path (original -> input -> original): AP 1."""
    ann, images = make_coco_fixture(tmp_path, num_images=2, size=(96, 128))
    ds = CocoPoseDataset(ann, images, mode="val", input_size=64)
    pred = Predictor(MapsModel(), ds.meta, 64, {"flip": True})
    res = heatmap_quality_poses(pred, ds)
    assert set(res) == set(ds.image_ids)
    assert evaluate_predictions(res, ds.coco, ds.meta, verbose=False)["AP"] == pytest.approx(0.0)
    literal = heatmap_quality_poses(pred, ds, fallback="cue")
    assert evaluate_predictions(literal, ds.coco, ds.meta, verbose=False)["AP"] == pytest.approx(1.0)


def test_needs_an_hgr_model():
    from logocap.models import create_model
    pred = Predictor(create_model("dekr_hrnet_tiny"), COCO, 64, {"flip": False})
    with pytest.raises(LogocapError, match="needs an HGR model"):
        cue_grouped_poses(pred, np.zeros((64, 64, 3), np.uint8), np.zeros((1, 17, 3)))
