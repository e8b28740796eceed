"""Center-offset losses against hand computations, and build_criterion dispatch."""

import pytest
import torch

from logocap.losses import build_criterion, heatmap_loss, offset_loss
from logocap.models import create_model


def test_heatmap_loss_weighted_mean():
    pred = torch.tensor([[[[1.0, 2.0]], [[0.0, 0.0]]]])  # [1, 2, 1, 2]
    gt = torch.zeros_like(pred)
    weight = torch.tensor([[[[1.0, 0.1]]]])  # [1, 1, 1, 2], broadcast over channels
    # (1*1 + 4*0.1 + 0 + 0) / 4 entries
    assert heatmap_loss(pred, gt, weight).item() == pytest.approx(1.4 / 4)


def test_offset_loss_smooth_l1_beta_and_count():
    beta = 1 / 9
    pred = torch.tensor([[[[0.05, 1.0, 3.0, 7.0]]]])  # [1, 1, 1, 4]
    gt = torch.zeros_like(pred)
    weight = torch.tensor([[[[0.5, 0.25, 0.0, 0.0]]]])
    expected = (0.5 * (0.5 * 0.05 ** 2 / beta) + 0.25 * (1.0 - beta / 2)) / 2  # 2 entries > 0
    assert offset_loss(pred, gt, weight).item() == pytest.approx(expected)
    zero = offset_loss(pred, gt, torch.zeros_like(pred))  # no person: 0, not NaN
    assert zero.item() == 0.0
    with pytest.raises(ValueError, match="offset"):
        offset_loss(pred, gt, weight[..., :1])


def _batch(k: int, b: int = 2, s: int = 64):
    h = s // 4
    g = torch.Generator().manual_seed(0)
    return {
        "image": torch.randn(b, 3, s, s, generator=g),
        "heatmaps": torch.rand(b, k + 1, h, h, generator=g),
        "heatmap_weights": torch.ones(b, 1, h, h),
        "offsets": torch.randn(b, 2 * k, h, h, generator=g),
        "offset_weights": (torch.rand(b, 2 * k, h, h, generator=g) > 0.8).float() * 0.05,
    }


def test_center_offset_criterion_terms_and_factors():
    torch.manual_seed(0)
    model = create_model("center_offset_hrnet_tiny", num_keypoints=5)
    batch = _batch(5)
    out = build_criterion(model, {"heatmap": 1.0, "offset": 0.01})(model, batch)
    assert set(out) == {"loss", "heatmap", "offset"}
    assert torch.allclose(out["loss"], out["heatmap"] + out["offset"])
    out["loss"].backward()
    assert model.final_layer_reg.weight.grad.abs().sum() > 0
    # factors are applied inside the terms
    model.eval()  # fixed BN statistics so both calls see the same outputs
    a = build_criterion(model, {"heatmap": 1.0, "offset": 0.01})(model, batch)
    b = build_criterion(model, {"heatmap": 2.0, "offset": 0.5})(model, batch)
    assert b["heatmap"].item() == pytest.approx(2 * a["heatmap"].item(), rel=1e-5)
    assert b["offset"].item() == pytest.approx(50 * a["offset"].item(), rel=1e-5)


def test_logocap_models_get_the_logocap_criterion():
    from logocap.losses.logocap import LogoCapCriterion
    from logocap.meta import CROWDPOSE

    model = create_model("logocap_hrnet_tiny", num_keypoints=CROWDPOSE.num_keypoints)
    crit = build_criterion(model, {"kam": 0.01}, {"topk": 30}, meta=CROWDPOSE)
    assert isinstance(crit, LogoCapCriterion)
    assert tuple(crit.sigmas) == CROWDPOSE.sigmas  # the keypoint set's sigmas, not COCO's
    plain = build_criterion(create_model("center_offset_hrnet_tiny", num_keypoints=3), {})
    assert not isinstance(plain, LogoCapCriterion)
