"""Bottom-up SAR on the DEKR trunk: pose targets, the pose-level loss (gradient identity, empty
image, masking, normalisation domains, scale normalisation), the network, decoding round trips
(batch = per image, multi-scale, flip) and ground truth -> Predictor -> COCOeval AP 1."""
import math

import numpy as np
import pytest
import torch

from logocap.codecs.dekr_decode import posemap_from_offsets
from logocap.codecs.sar_dekr import (decode_sar_dekr, decode_sar_dekr_outputs, sar_dekr_test_cfg,
                                     sar_pose_targets, selector_scores)
from logocap.codecs.targets import encode_targets
from logocap.families import family_of
from logocap.losses import build_criterion, target_settings
from logocap.losses.sar import EPS, LAMBDA
from logocap.losses.sar_dekr import SarDekrCriterion, pose_distances, sar_pose_loss
from logocap.meta import COCO, CROWDPOSE
from logocap.models import create_model
from logocap.models.dekr import DekrModel
from logocap.models.sar_dekr import SarDekrModel
from logocap.utils import LogocapError

FORMS = ("reference", "logsumexp")


# ------------------------------------------------------------------------------- helpers
def _targets(people, k, mask=None, hw=(64, 64), min_area=0.0):
    """people: list (per image) of [M_b, K, 3] input px -> sar_pose_targets of the padded batch."""
    m = max(len(p) for p in people)
    kp = torch.zeros(len(people), m, k, 3, dtype=torch.float64)
    real = torch.zeros(len(people), m, dtype=torch.bool)
    for b, p in enumerate(people):
        if len(p):
            kp[b, :len(p)] = torch.as_tensor(np.asarray(p), dtype=torch.float64)
            real[b, :len(p)] = True
    areas = torch.full(real.shape, 5000.0, dtype=torch.float64)
    return sar_pose_targets(kp, areas, real if mask is None else mask, hw, 4, min_area)


def _problem(seed=0, b=2, k=3, hw=(8, 10), people=((20.0, 12.0), (5.0, 20.0))):
    """A random pose map near two people (input px positions), their targets and logits."""
    g = torch.Generator().manual_seed(seed)
    h, w = hw
    gt = []
    for _ in range(b):
        ps = []
        for (x, y) in people:
            xy = torch.tensor([x, y]) + 4 * torch.rand(k, 2, generator=g)
            ps.append(torch.cat([xy, torch.full((k, 1), 2.0)], 1).numpy())
        gt.append(np.stack(ps))
    tg = _targets(gt, k, hw=(4 * h, 4 * w))
    posemap = (tg["joints"][:, :1].permute(0, 2, 3, 1)[..., None].expand(b, k, 2, h, w)
               + 2.0 * torch.randn(b, k, 2, h, w, generator=g, dtype=torch.float64)).contiguous()
    logits = torch.randn(b, h, w, generator=g, dtype=torch.float64)
    return posemap, logits, tg


# ------------------------------------------------------------------------------- targets
def test_pose_targets_visibility_centre_and_scale():
    k = 4
    p0 = np.array([[8, 8, 2], [24, 40, 2], [100, 8, 2], [0, 0, 0]], float)  # joint 2 outside W=64
    p1 = np.array([[30, 30, 1], [34, 30, 2], [30, 33, 2], [-1, 5, 2]], float)  # joint 3 x < 0
    t = _targets([[p0, p1], [p1]], k, hw=(64, 64))
    assert t["visible"][0, 0].tolist() == [True, True, False, False]
    assert t["visible"][0, 1].tolist() == [True, True, True, False]
    assert not t["visible"][1, 1].any() and not t["person"][1, 1]  # padding
    assert torch.allclose(t["joints"][0, 0, :2], torch.tensor([[2.0, 2.0], [6.0, 10.0]], dtype=torch.float64))
    assert (t["joints"][0, 0, 2:] == 0).all()  # invisible: 0, never NaN
    assert torch.allclose(t["center"][0, 0], torch.tensor([4.0, 6.0], dtype=torch.float64))
    assert math.isclose(float(t["diag"][0, 0]), math.hypot(4, 8))
    assert math.isclose(float(t["diag"][0, 1]), math.hypot(1, 0.75))
    # the area rule (DEKR's center rule) and the one-joint floor of the diagonal
    kp = torch.zeros(1, 2, k, 3)
    kp[0, :, 0] = torch.tensor([10.0, 10.0, 2.0])
    t = sar_pose_targets(kp, torch.tensor([[2000.0, 500.0]]), torch.ones(1, 2, dtype=torch.bool),
                         (64, 64))
    assert t["person"].tolist() == [[True, False]] and t["diag"][0, 0] == 1.0
    with pytest.raises(ValueError, match="do not match"):
        sar_pose_targets(kp, torch.zeros(1, 3), torch.ones(1, 2, dtype=torch.bool), (64, 64))


# ------------------------------------------------------------------------------- loss
@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("scale_norm", [False, True])
def test_pose_gradient_is_lambda_gamma_sign_over_visible_joints(form, scale_norm):
    """dL/dK_t^j = lambda gamma_t^(i) sign(K_t^j - K*_j) / (|V_i| z) / N_people, where
    gamma^(i) = w r^(i) / sum w r^(i) and z is W (H for y) or the person's diagonal."""
    posemap, logits, tg = _problem()
    tg["visible"][1, 0, 2] = False  # an invisible joint: no gradient from that person's joint 2
    posemap.requires_grad_(True)
    loss = sar_pose_loss(posemap, logits, tg, form=form, scale_norm=scale_norm)
    loss.backward()
    b, k, _, h, w = posemap.shape
    with torch.no_grad():
        d = pose_distances(posemap, tg["joints"], tg["visible"], tg["diag"] if scale_norm else None)
        c = torch.sigmoid(logits).reshape(b, 1, h * w)
        wt = c / c.sum(-1, keepdim=True)
        r = torch.exp(-LAMBDA * d)
        s = (wt * r).sum(-1, keepdim=True)
        gamma = wt * r / (s + (EPS if form == "reference" else 0.0))  # [B, M, T]
        sign = torch.sign(posemap.reshape(b, 1, k, 2, h * w) - tg["joints"][..., None])
        vis = tg["visible"].to(sign.dtype)
        if scale_norm:
            z = tg["diag"][..., None, None, None].expand(b, 2, 1, 2, 1)
        else:
            z = torch.tensor([w, h], dtype=sign.dtype).view(1, 1, 1, 2, 1)
        per = LAMBDA * gamma[:, :, None, None] * sign / z * (vis / vis.sum(-1, keepdim=True))[..., None, None]
        expected = per.sum(1).reshape(b, k, 2, h, w) / tg["person"].sum()
    assert torch.allclose(posemap.grad, expected, rtol=1e-9, atol=1e-14)


def test_selector_is_normalised_over_the_image_and_ignored_cells_are_out():
    posemap, logits, tg = _problem(seed=1)
    base = sar_pose_loss(posemap, logits, tg)
    # the loss is invariant to rescaling c only through w: a cell's logit changes the loss
    bumped = logits.clone()
    bumped[0, 0, 0] += 3.0
    assert not torch.isclose(sar_pose_loss(posemap, bumped, tg), base)
    # an ignored cell is outside the normalisation domain: its logit does not matter
    mask = torch.ones(logits.shape, dtype=torch.bool)
    mask[0, 0, 0] = False
    a = sar_pose_loss(posemap, logits, tg, mask)
    assert torch.isclose(sar_pose_loss(posemap, bumped, tg, mask), a)
    # known answer: two cells hold the mass, half each, and regress the two people exactly:
    # L_i = -log(1/2 + r_other / 2), r_other the kernel of the other person's cell
    pm = posemap.clone()
    lg = torch.full_like(logits, -60.0)
    cells = ((1, 1), (5, 7))
    for i, (y, x) in enumerate(cells):
        pm[:, :, :, y, x] = tg["joints"][:, i]
        lg[:, y, x] = 60.0
    d = pose_distances(pm, tg["joints"], tg["visible"])  # [B, 2, T]
    w = pm.shape[-1]
    r_other = torch.stack([torch.exp(-LAMBDA * d[:, i, cells[1 - i][0] * w + cells[1 - i][1]])
                           for i in range(2)], 1)
    assert (r_other < 0.5).all()
    expected = -torch.log(0.5 + 0.5 * r_other).mean()
    assert abs(float(sar_pose_loss(pm, lg, tg, form="logsumexp") - expected)) < 1e-9
    assert abs(float(sar_pose_loss(pm, lg, tg, form="reference") - expected)) < 1e-5


@pytest.mark.parametrize("form", FORMS)
def test_empty_image_adds_nothing_and_invisible_joints_are_masked(form):
    posemap, logits, tg = _problem(seed=2)
    one = {k: v[:1] for k, v in tg.items()}
    alone = sar_pose_loss(posemap[:1], logits[:1], one, form=form)
    # image 1 without people: same loss as image 0 alone, zero gradient for image 1's selector
    tg["person"][1] = False
    lg = logits.clone().requires_grad_(True)
    pm = posemap.clone().requires_grad_(True)
    loss = sar_pose_loss(pm, lg, tg, form=form)
    loss.backward()
    assert torch.isclose(loss, alone)
    assert (lg.grad[1] == 0).all() and (pm.grad[1] == 0).all() and lg.grad[0].abs().sum() > 0
    # no person at all: 0 with finite (zero) gradients
    none = {**tg, "person": torch.zeros_like(tg["person"])}
    lg.grad = None
    z = sar_pose_loss(pm, lg, none, form=form)
    z.backward()
    assert float(z.detach()) == 0.0 and torch.isfinite(lg.grad).all() and (lg.grad == 0).all()
    # an invisible joint's target (NaN included) does not enter the loss, nor (invisible for
    # every person of the image) its hypotheses
    tg["visible"][0, :, 1] = False
    ref = sar_pose_loss(posemap, logits, tg, form=form)
    tg["joints"][0, 1, 1] = float("nan")
    pm2 = posemap.clone()
    pm2[0, 1] += 100.0
    again = sar_pose_loss(pm2, logits, tg, form=form)
    assert torch.isfinite(again) and torch.isclose(again, ref)


def test_person_normalisation_only_sees_the_region_around_the_centre():
    posemap, logits, tg = _problem(seed=3, b=1, hw=(12, 12), people=((8.0, 8.0),))
    cx, cy = tg["center"][0, 0].floor().long().tolist()
    far = logits.clone()
    far[0, (cy + 6) % 12, (cx + 6) % 12] += 5.0  # outside the radius-4 window
    near = logits.clone()
    near[0, cy, cx] += 5.0
    img = sar_pose_loss(posemap, logits, tg)
    per = sar_pose_loss(posemap, logits, tg, normalise="person")
    assert not torch.isclose(per, img)
    assert torch.isclose(sar_pose_loss(posemap, far, tg, normalise="person"), per)
    assert not torch.isclose(sar_pose_loss(posemap, far, tg), img)  # image-wide: it matters
    assert not torch.isclose(sar_pose_loss(posemap, near, tg, normalise="person"), per)
    with pytest.raises(ValueError, match="sar_normalise"):
        sar_pose_loss(posemap, logits, tg, normalise="box")


def test_scale_normalisation_makes_the_kernel_scale_free():
    """Doubling the person and its hypotheses (about the origin) keeps the scale-normalised loss
    and changes the map-normalised one."""
    posemap, logits, tg = _problem(seed=4, b=1, people=((10.0, 8.0),))
    big = {**tg, "joints": 2 * tg["joints"], "diag": 2 * tg["diag"]}
    a = sar_pose_loss(posemap, logits, tg, scale_norm=True)
    b = sar_pose_loss(2 * posemap, logits, big, scale_norm=True)
    assert torch.isclose(a, b, rtol=1e-12)
    assert not torch.isclose(sar_pose_loss(posemap, logits, tg),
                             sar_pose_loss(2 * posemap, logits, big))


def test_criterion_on_a_fixture_batch(tmp_path):
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from fixtures import make_coco_fixture
    from logocap.data.coco import CocoPoseDataset, collate_train

    torch.manual_seed(0)
    ann, img = make_coco_fixture(tmp_path, num_images=2, people=2, meta=CROWDPOSE)
    assert target_settings("sar_dekr_hrnet_tiny") == {"heatmap_weights": "per_channel",
                                                      "offset_area": "keypoint_box"}
    ds = CocoPoseDataset(ann, img, input_size=64, **target_settings("sar_dekr_hrnet_tiny"))
    batch = collate_train([ds[0], ds[1]])
    net = create_model("sar_dekr_hrnet_tiny", num_keypoints=14, aux_center=True)
    crit = build_criterion(net, {"sar_min_area": 0.0})
    assert isinstance(crit, SarDekrCriterion)
    out = crit(net, batch)
    assert set(out) == {"loss", "heatmap", "sar", "aux"} and torch.isfinite(out["loss"])
    assert out["sar"] > 0 and torch.isclose(out["loss"], out["heatmap"] + out["sar"] + out["aux"])
    out["loss"].backward()
    assert net.offset_final_layer[0].weight.grad.abs().sum() > 0
    assert net.head_heatmap[1].weight.grad[14].abs().sum() > 0  # the selector channel
    assert net.aux_center_head.weight.grad.abs().sum() > 0
    # the default area rule drops these small fixture people: SAR term 0, still finite
    small = SarDekrCriterion({"sar_min_area": 1e9})(net, batch)
    assert float(small["sar"].detach()) == 0.0 and torch.isfinite(small["loss"])
    with pytest.raises(ValueError, match="sar_normalise"):
        SarDekrCriterion({"sar_normalise": "everything"})


# ------------------------------------------------------------------------------- network
def test_registry_init_and_dekr_weights():
    net = create_model("sar_dekr_hrnet_tiny", num_keypoints=5)
    assert isinstance(net, SarDekrModel) and family_of(net).name == "sar_dekr"
    assert family_of("sar_dekr_hrnet_w32").name == "sar_dekr"
    bias = net.head_heatmap[1].bias
    assert math.isclose(float(bias[5].detach()), -math.log(0.99 / 0.01), rel_tol=1e-6)
    assert (bias[:5] == 0).all()
    out = net(torch.randn(1, 3, 64, 64))
    assert set(out) == {"heatmaps", "offsets"} and out["heatmaps"].shape == (1, 6, 16, 16)
    assert set(create_model("sar_dekr_hrnet_tiny", aux_center=True)(torch.randn(1, 3, 64, 64))) \
        == {"heatmaps", "offsets", "aux_center"}
    # the layout is DEKR's: a DEKR state_dict loads strictly, W32 has DEKR's parameter count
    dekr = create_model("dekr_hrnet_tiny", num_keypoints=5)
    net.load_state_dict(dekr.state_dict(), strict=True)
    w32 = create_model("sar_dekr_hrnet_w32")
    assert sum(p.numel() for p in w32.parameters()) == 29_561_182
    assert isinstance(w32, DekrModel)
    with pytest.raises(LogocapError, match="selector_prior"):
        create_model("sar_dekr_hrnet_tiny", selector_prior=1.5)


def test_pretrained_from_dekr_and_center_offset_files(tmp_path):
    from logocap.models.pretrained import load_pretrained

    torch.manual_seed(0)
    net = create_model("sar_dekr_hrnet_tiny")
    dekr = create_model("dekr_hrnet_tiny")
    rep = load_pretrained(net, dekr.state_dict())
    assert not rep.missing and not rep.unexpected and not rep.mismatched
    assert torch.equal(net.conv1.weight, dekr.conv1.weight)
    # a center-offset file: its trunk (backbone.*) fills ours, its heads are reported
    co = create_model("center_offset_hrnet_tiny")
    path = tmp_path / "co.pth"
    torch.save(co.state_dict(), path)
    rep = load_pretrained(create_model("sar_dekr_hrnet_tiny"), path)
    assert rep.loaded and rep.unexpected and rep.missing
    assert all(k.split(".")[0] in ("transition_heatmap", "transition_offset", "head_heatmap",
                                   "offset_feature_layers", "offset_final_layer")
               for k in rep.missing)
    assert "loaded" in rep.summary()


# ------------------------------------------------------------------------------- decoding
def _ideal_maps(people, meta, hw):
    """Ideal network maps of people [M, K, 3] (output px): DEKR's keypoint-heatmap and offset
    targets (each person's pose at the cells around its center), and the selector logits of a
    converged mixture: all the mass on the cell floor(center) of each person (the center of
    :func:`sar_pose_targets`), so w = 1 / M there (channel K of the heatmaps)."""
    h, w = hw
    kp = np.asarray(people, np.float64)
    t = encode_targets(kp, np.full(len(kp), 5000.0), None, (w, h), meta.num_keypoints,
                       min_center_area=0.0)
    hm = torch.from_numpy(t["heatmaps"])[None]
    kp_in = torch.as_tensor(kp)[None].clone()
    kp_in[..., :2] *= 4.0
    tg = sar_pose_targets(kp_in, torch.full((1, len(kp)), 5000.0, dtype=torch.float64),
                          torch.ones(1, len(kp), dtype=torch.bool), (4 * h, 4 * w))
    cell = tg["center"][0].floor().long()
    hm[:, -1] = -20.0
    hm[0, -1, cell[:, 1], cell[:, 0]] = 20.0
    return hm, posemap_from_offsets(torch.from_numpy(t["offsets"])[None])


def _person(meta, x0, y0, rng):
    k = meta.num_keypoints
    xy = np.stack([x0 + rng.uniform(-3, 3, k), y0 + rng.uniform(-3, 3, k)], 1)
    return np.concatenate([xy, np.full((k, 1), 2.0)], 1)


def test_selector_scores():
    lg = torch.randn(2, 4, 5)
    w = selector_scores(lg, "weights")
    assert torch.allclose(w.flatten(1).sum(1), torch.ones(2))
    assert torch.allclose(selector_scores(lg, "sigmoid"), torch.sigmoid(lg))
    with pytest.raises(LogocapError, match="sar_score"):
        selector_scores(lg, "softmax")
    with pytest.raises(LogocapError, match="sar_score"):
        sar_dekr_test_cfg({"sar_score": "max"})


@pytest.mark.parametrize("meta", [COCO, CROWDPOSE])
def test_round_trip_and_batch_equals_single_images(meta):
    rng = np.random.default_rng(0)
    a = [_person(meta, 8, 10, rng), _person(meta, 22, 12, rng)]
    b = [_person(meta, 15, 8, rng)]
    (ha, pa), (hb, pb) = _ideal_maps(a, meta, (24, 32)), _ideal_maps(b, meta, (24, 32))
    cfg = {"flip": False}
    out = decode_sar_dekr_outputs([(1.0, torch.cat([ha, hb]), torch.cat([pa, pb]))], (96, 128),
                                  meta, cfg)
    keep = out["keep"]
    assert keep.sum(1).tolist() == [2, 1]
    for bi, gt in ((0, a), (1, b)):
        got = out["poses"][bi][keep[bi]]
        got = got[got[:, :, 0].mean(1).argsort()]
        gt = np.stack(sorted(gt, key=lambda p: p[:, 0].mean()))
        assert np.allclose(got[..., :2].numpy(), 4 * gt[..., :2], atol=1e-4)  # within a pixel
    # the proposal scores are the image-normalised selector weights: 1 / M per person
    assert torch.allclose(out["valid"].sum(1), keep.sum(1))
    assert torch.allclose(out["scores"][keep] / out["rank"][keep], torch.tensor([0.5, 0.5, 1.0]),
                          atol=1e-6)
    # a batch decodes exactly as its images one by one
    one = decode_sar_dekr_outputs([(1.0, hb, pb)], (96, 128), meta, cfg)
    for key in ("poses", "scores", "valid", "keep"):
        assert torch.equal(one[key][0], out[key][1]), key


def test_an_image_without_people_keeps_nobody_and_the_threshold_reads_w():
    meta = COCO
    hm = torch.full((2, 18, 16, 16), -20.0)
    pm = torch.zeros(2, 17, 2, 16, 16)
    hm[1, -1, 5, 5] = 20.0  # one sure cell: w ~ 1
    out = decode_sar_dekr_outputs([(1.0, hm, pm)], (64, 64), meta, {"flip": False})
    assert out["keep"].sum(1).tolist() == [0, 1]
    # a flat selector spreads w = 1/256 < 0.01 everywhere: no proposal, whatever c is
    flat = torch.zeros(1, 18, 16, 16)
    assert decode_sar_dekr_outputs([(1.0, flat, pm[:1])], (64, 64), meta,
                                   {"flip": False})["valid"].sum() == 0
    assert decode_sar_dekr_outputs([(1.0, flat, pm[:1])], (64, 64), meta,
                                   {"flip": False, "sar_score": "sigmoid"})["valid"].sum() == 30


def test_decode_tiny_model_flip_multiscale_batch_and_aux():
    torch.manual_seed(0)
    meta = CROWDPOSE
    net = create_model("sar_dekr_hrnet_tiny", num_keypoints=14, aux_center=True).eval()
    x = torch.randn(2, 3, 64, 128)
    batches = {1.0: x, 2.0: torch.nn.functional.interpolate(x, scale_factor=2.0)}
    cfg = {"scales": [1, 2], "center_threshold": -1.0}
    with torch.no_grad():
        out = decode_sar_dekr(net, batches, meta, cfg)
        single = decode_sar_dekr(net, {s: v[1:] for s, v in batches.items()}, meta, cfg)
        aux = decode_sar_dekr(net, {1.0: x}, meta, {"sar_score": "aux_center", "center_threshold": -1.0})
    assert out["poses"].shape == (2, 60, 14, 3) and torch.isfinite(out["poses"]).all()
    assert out["keep"].any(1).all() and (out["keep"].sum(1) <= 30).all()
    assert torch.allclose(single["poses"][0], out["poses"][1], atol=1e-4)
    assert torch.equal(single["keep"][0], out["keep"][1])
    assert aux["poses"].shape == (2, 30, 14, 3) and "aux_center" in aux["raw"]
    with pytest.raises(LogocapError, match="aux_center"):
        decode_sar_dekr(create_model("sar_dekr_hrnet_tiny", num_keypoints=14).eval(), {1.0: x},
                        meta, {"sar_score": "aux_center"})


class _OracleNet(torch.nn.Module):
    """Ideal SAR-on-DEKR outputs for known people (input px of one image), whatever the input."""

    def __init__(self, people_in, meta):
        super().__init__()
        self.people, self.meta = people_in, meta
        self.num_keypoints = meta.num_keypoints
        self.model_name = "sar_dekr_hrnet_tiny"

    def forward(self, x):
        h, w = x.shape[-2] // 4, x.shape[-1] // 4
        kp = self.people.copy()
        kp[..., :2] /= 4.0
        hm, _ = _ideal_maps(kp, self.meta, (h, w))
        # each person's pose exactly at its selected cell (DEKR's windows of overlapping people
        # overwrite each other's centers; a trained network has no such constraint)
        b, k = x.shape[0], self.meta.num_keypoints
        loc = posemap_from_offsets(torch.zeros(1, 2 * k, h, w, dtype=torch.float64))
        pm = loc.clone()
        cells = (hm[0, -1] > 0).nonzero()
        tg = sar_pose_targets(torch.as_tensor(self.people)[None], torch.full((1, len(kp)), 5e3,
                              dtype=torch.float64), torch.ones(1, len(kp), dtype=torch.bool),
                              tuple(x.shape[-2:]))
        for i, c in enumerate(tg["center"][0].floor().long()):  # a handful of people (test)
            pm[0, :, :, c[1], c[0]] = torch.as_tensor(kp[i, :, :2])
        assert len(cells) == len(kp)
        offsets = (loc - pm).reshape(1, 2 * k, h, w)
        return {"heatmaps": hm.expand(b, -1, -1, -1).float(),
                "offsets": offsets.expand(b, -1, -1, -1).float()}


def test_ground_truth_through_predictor_and_cocoeval_gives_ap_1(tmp_path):
    """GT -> input frame -> ideal maps -> SAR decoding -> original px -> COCOeval: AP 1."""
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from fixtures import make_coco_fixture
    import cv2
    from logocap.data.coco import CocoPoseDataset
    from logocap.data.transforms import apply_affine, test_transform
    from logocap.evaluation import evaluate_predictions
    from logocap.predict import Predictor

    ann, img_dir = make_coco_fixture(tmp_path, num_images=3, people=2)
    ds = CocoPoseDataset(ann, img_dir, mode="val", input_size=128)
    results = {}
    for image_id in ds.image_ids:
        anns = [a for a in ds.gt_annotations(image_id) if not a.get("iscrowd") and a["num_keypoints"]]
        kp = np.array([a["keypoints"] for a in anns], np.float64).reshape(len(anns), -1, 3)
        img = cv2.cvtColor(cv2.imread(str(ds.image_path(image_id))), cv2.COLOR_BGR2RGB)
        M, _ = test_transform(*img.shape[:2], 128)
        box_c = np.array([[a["bbox"][0] + a["bbox"][2] / 2, a["bbox"][1] + a["bbox"][3] / 2]
                          for a in anns])
        xy = np.where(kp[..., 2:] > 0, kp[..., :2], box_c[:, None])  # unlabelled: the box centre
        people = np.concatenate([apply_affine(xy, M), np.full(kp[..., 2:].shape, 2.0)], -1)
        pred = Predictor(_OracleNet(people, COCO), COCO, 128, {"flip": False})
        assert pred.family.name == "sar_dekr"
        poses = pred.predict(img)
        poses.image_id = image_id
        results[image_id] = poses
        assert len(results[image_id]) == len(anns)
    m = evaluate_predictions(results, ds.coco, meta=ds.meta, verbose=False)
    assert m["AP"] == pytest.approx(1.0, abs=1e-6) and m["AR"] == pytest.approx(1.0, abs=1e-6)


def test_recipes_carry_the_multi_person_schedule():
    from pathlib import Path
    from logocap.config import load_config

    root = Path(__file__).resolve().parents[1] / "configs"
    for name, dataset, joints in (("sar_dekr_hrnet_w32_512_coco", "coco", 8),
                                  ("sar_dekr_hrnet_w32_512_crowdpose", "crowdpose", 7)):
        cfg = load_config(root / f"{name}.yaml")
        t, d, loss, test = cfg["train"], cfg["data"], cfg["loss"], cfg["test"]
        assert cfg["model"]["name"] == "sar_dekr_hrnet_w32" and d["dataset"] == dataset
        assert d["input_size"] == 512
        assert (t["lr"], t["epochs"], t["lr_steps"], t["lr_steps_of"], t["lr_gamma"]) == \
            (1e-3, 140, [90, 120], 140, 0.1)
        assert target_settings(cfg["model"]["name"], d) == {"heatmap_weights": "per_channel",
                                                            "offset_area": "keypoint_box"}
        assert (loss["sar_lambda"], loss["sar_form"], loss["sar_normalise"],
                loss["sar_scale_norm"]) == (16.0, "reference", "image", False)
        assert (test["topk"], test["center_threshold"], test["sar_score"]) == (30, 0.01, "weights")
        assert test["flip"] and test["nms_num_joints"] == joints
    tiny = load_config(root / "sar_dekr_hrnet_tiny_256_synthetic.yaml")
    assert tiny["model"]["name"] == "sar_dekr_hrnet_tiny" and tiny["data"]["input_size"] == 256


def test_tiny_model_loss_decreases_on_one_batch(tmp_path):
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from fixtures import make_coco_fixture, train_steps
    from logocap.data.coco import CocoPoseDataset, collate_train

    torch.manual_seed(0)
    ann, img = make_coco_fixture(tmp_path, num_images=2, people=2)
    ds = CocoPoseDataset(ann, img, input_size=64, seed=1, **target_settings("sar_dekr_hrnet_tiny"))
    batch = collate_train([ds[0], ds[1]])
    net = create_model("sar_dekr_hrnet_tiny")
    crit = SarDekrCriterion({"sar_min_area": 0.0})
    losses = [h["sar"] for h in train_steps(net, crit, batch, 8)]
    assert losses[-1] < 0.9 * losses[0], losses
