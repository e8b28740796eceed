"""LogoCapCriterion: all terms present, candidates pass the OKS gate, a few Adam steps lower every term."""
import torch

from fixtures import train_steps
from logocap.losses.logocap import LogoCapCriterion
from logocap.meta import COCO
from logocap.models import create_model

K = COCO.num_keypoints


def _batch(model, S=64, B=2):
    g = torch.Generator().manual_seed(1)
    h = S // 4
    gt = torch.zeros(B, 2, K, 3)
    gt[..., :2] = 8 + torch.rand(B, 2, K, 2, generator=g) * (S - 16)
    gt[..., 2] = 2
    gt[1, 1, :, 2] = 0
    img = torch.randn(B, 3, S, S, generator=g)
    with torch.no_grad():  # center target = the model's own center map: candidates stay put
        center0 = model(img)["heatmaps"][:, K:]
    ys, xs = torch.meshgrid(torch.arange(h).float(), torch.arange(h).float(), indexing="ij")
    j = gt[..., :2] / 4
    hm = torch.exp(-((xs - j[..., 0, None, None]) ** 2 + (ys - j[..., 1, None, None]) ** 2) / 8)
    hm = (hm * (gt[..., 2, None, None] > 0)).amax(1)
    return {"image": img, "heatmaps": torch.cat([hm, center0], 1),
            "heatmap_weights": torch.ones(B, 1, h, h),
            "offsets": torch.randn(B, 2 * K, h, h, generator=g),
            "offset_weights": torch.ones(B, 2 * K, h, h),
            # a huge area makes the random model's candidates pass the OKS >= 0.5 gate
            "gt_keypoints": gt, "gt_areas": torch.full((B, 2), 4.0e5),
            "gt_mask": torch.tensor([[True, True], [True, False]])}


def test_adam_steps_lower_every_term():
    torch.manual_seed(0)
    model = create_model("logocap_hrnet_tiny").train()
    batch = _batch(model)
    crit = LogoCapCriterion({}, {"topk": 6, "global_size": 33, "gaussian_sigma": 5.0})
    heads = [model.joints_mlp, model.transition_embedding, model.final_layer_reg, model.final_layer_cls]
    hist = train_steps(model, crit, batch, 6, params=[p for h in heads for p in h.parameters()])
    assert crit.last_num_kept > 0
    assert set(hist[0]) == {"loss", "heatmap", "offset", "kam", "refined"}
    for key in hist[0]:
        assert hist[0][key] > 0
        assert hist[-1][key] < hist[0][key], (key, [h[key] for h in hist])


def test_gradient_reaches_heatmap_head_and_oks_switch():
    torch.manual_seed(0)
    model = create_model("logocap_hrnet_tiny").train()
    batch = _batch(model)
    cfg = {"topk": 4, "global_size": 21}
    only_refined = LogoCapCriterion({"heatmap": 0.0, "offset": 0.0, "kam": 0.0}, cfg)
    only_refined(model, batch)["loss"].backward()
    assert model.final_layer_cls.weight.grad.abs().sum() > 0  # heatmaps not detached in the crops
    assert model.final_layer_reg.weight.grad is None or model.final_layer_reg.weight.grad.abs().sum() == 0
    off = LogoCapCriterion({"oks_loss": False}, cfg)(model, batch)
    assert off["kam"].item() == 0.0


def test_no_candidate_passes_gives_zero_refinement_losses():
    torch.manual_seed(0)
    model = create_model("logocap_hrnet_tiny").train()
    batch = _batch(model)
    batch["gt_areas"] = torch.full_like(batch["gt_areas"], 1.0)  # tiny people: OKS ~ 0
    crit = LogoCapCriterion({}, {"topk": 4, "global_size": 21})
    d = crit(model, batch)
    assert crit.last_num_kept == 0
    assert d["kam"].item() == 0.0 and d["refined"].item() == 0.0
    d["loss"].backward()  # the zero-weight placeholder keeps the CMP in the graph
    assert model.joints_mlp[0].weight.grad is not None
