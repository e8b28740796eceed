"""HGR network (seed paper Fig. 2): sizes of Table 1, output layout, and the Table 4 switches."""
import pytest
import torch

from logocap.models import create_model, list_models
from logocap.models.adaptive import AdaptBlock
from logocap.models.hgr import HgrModel, PlainUnit, is_hgr
from logocap.utils import LogocapError


def _params(m):
    return sum(p.numel() for p in m.parameters())


def test_registered_variants():
    assert {"hgr_hrnet_w32", "hgr_hrnet_w48", "hgr_hrnet_small", "hgr_hrnet_tiny"} <= set(list_models())


@pytest.mark.parametrize("name,millions", [("hgr_hrnet_w32", 30.7), ("hgr_hrnet_w48", 66.8)])
def test_parameter_count_matches_table_1(name, millions):
    m = create_model(name)
    assert is_hgr(m)
    assert abs(_params(m) / 1e6 - millions) < 0.05, _params(m)


def test_outputs_batch_and_keypoint_count():
    torch.manual_seed(0)
    m = create_model("hgr_hrnet_tiny", num_keypoints=14).eval()
    x = torch.randn(2, 3, 64, 96)
    out = m(x)
    assert out["heatmaps"].shape == (2, 15, 16, 24) and out["offsets"].shape == (2, 28, 16, 24)
    # one image alone gives what it gives in the batch (no cross-talk between images)
    one = m(x[:1])
    for key in ("heatmaps", "offsets"):
        assert torch.allclose(one[key], out[key][:1], atol=1e-5)


def _grad_norm_of_heatmap_head(model, x):
    model.zero_grad()
    out = model(x)
    (out["offsets"].square().sum() + out["heatmaps"][:, -1].square().sum()).backward()
    g = model.heatmap_final.weight.grad
    return 0.0 if g is None else float(g.abs().sum())


def test_heatmap_guidance_switch():
    torch.manual_seed(0)
    x = torch.randn(1, 3, 64, 64)
    guided = create_model("hgr_hrnet_tiny")
    plain = create_model("hgr_hrnet_tiny", heatmap_guidance=False)
    feat = guided.out_channels
    assert guided.transition_regression[0].in_channels == feat + 17
    assert plain.transition_regression[0].in_channels == feat
    # with guidance the regression outputs depend on the heatmap head (H is not detached)
    for m in (guided, plain):
        torch.nn.init.normal_(m.heatmap_final.weight, std=0.1)
        torch.nn.init.normal_(m.transition_regression[0].weight, std=0.1)
    assert _grad_norm_of_heatmap_head(guided, x) > 0
    assert _grad_norm_of_heatmap_head(plain, x) == 0


def test_adaptive_switch_and_identity_start():
    art = create_model("hgr_hrnet_tiny")
    plain = create_model("hgr_hrnet_tiny", adaptive=False)
    assert all(isinstance(u, AdaptBlock) for u in list(art.heatmap_units) + list(art.regression_units))
    assert all(isinstance(u, PlainUnit) for u in list(plain.heatmap_units) + list(plain.regression_units))
    assert len(art.heatmap_units) == len(art.regression_units) == 2
    # the ART transform starts at T = I, t = 0 (the model's init): the unit equals the plain
    # unit with the same kernel, so the switch differs only in the learnt deformation
    blk = art.regression_units[0]
    ch = blk.adapt_conv.weight.shape[0]
    q = PlainUnit(ch)
    torch.manual_seed(1)
    with torch.no_grad():
        w = torch.randn_like(blk.adapt_conv.weight) * 0.1
        blk.adapt_conv.weight.copy_(w)
        q.conv.weight.copy_(w)
    blk.eval(), q.eval()
    x = torch.randn(2, ch, 9, 11)
    assert torch.allclose(blk(x), q(x), atol=1e-5)
    # once the transform is learnt the units differ
    with torch.no_grad():
        blk.transform_matrix_conv.bias.copy_(torch.tensor([2.0, 0.0, 0.0, 2.0]))
    assert not torch.allclose(blk(x), q(x), atol=1e-3)


def test_rebuilds_from_model_kwargs_and_rejects_bad_switches():
    m = create_model("hgr_hrnet_tiny", heatmap_guidance=False, adaptive=False)
    again = create_model(m.model_name, m.num_keypoints, **m.model_kwargs)
    assert again.state_dict().keys() == m.state_dict().keys()
    assert not again.heatmap_guidance and not again.adaptive
    with pytest.raises(LogocapError, match="heatmap_guidance must be true or false"):
        create_model("hgr_hrnet_tiny", heatmap_guidance="yes")
    with pytest.raises(LogocapError, match="cannot build model"):
        create_model("hgr_hrnet_tiny", regression_channels=0)
    assert isinstance(m, HgrModel)
