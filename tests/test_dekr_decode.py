"""DEKR decoding: flip alignment, aligned resampling, round trip, multi-scale, heatmap matching."""
import numpy as np
import pytest
import torch
from torch import nn

from logocap.codecs.decode import upsample_heatmaps
from logocap.codecs.dekr_decode import (center_pool_kernel, decode_dekr, decode_dekr_outputs,
                                        dekr_outputs, dekr_test_cfg, match_heatmap,
                                        posemap_from_offsets, resample_aligned, shift_mirror)
from logocap.codecs.targets import encode_targets
from logocap.meta import COCO, CROWDPOSE
from logocap.models import create_model
from logocap.utils import LogocapError


class BrightSpotModel(nn.Module):
    """A stand-in network: finds the brightest input pixel (X, Y) and 'predicts' joint k at
    (X, Y) + d_k input px everywhere; its heatmaps are the input sampled at pixel 4 i."""

    def __init__(self, meta):
        super().__init__()
        k = meta.num_keypoints
        d = torch.zeros(k, 2)
        for j, name in enumerate(meta.keypoint_names):  # a mirror-symmetric skeleton
            side = 1.0 if name.startswith("left") else -1.0 if name.startswith("right") else 0.0
            d[j] = torch.tensor([5.0 * side, 3.0 * (j - meta.flip_index[j]) ** 2 + j % 3])
            d[meta.flip_index[j], 1] = d[j, 1]
        self.register_buffer("d", d)
        self.k = k

    def forward(self, x):
        b, _, hh, ww = x.shape
        flat = x[:, 0].reshape(b, -1).argmax(1)
        spot = torch.stack([flat % ww, flat // ww], -1).to(x.dtype)  # [B, 2] input px
        joints = (spot[:, None] + self.d) / 4.0  # output px
        h, w = hh // 4, ww // 4
        loc = torch.stack(torch.meshgrid(torch.arange(w, dtype=x.dtype), torch.arange(h, dtype=x.dtype),
                                         indexing="xy"), 0)  # [2, h, w] (x, y)
        offsets = loc[None, None] - joints[..., None, None]  # [B, K, 2, h, w]
        heat = x[:, :1, ::4, ::4].expand(b, self.k + 1, h, w)
        return {"heatmaps": heat, "offsets": offsets.reshape(b, 2 * self.k, h, w)}


@pytest.mark.parametrize("meta", [COCO, CROWDPOSE])
def test_flip_with_the_3px_shift_is_exactly_aligned(meta):
    torch.manual_seed(0)
    x = torch.rand(2, 3, 32, 48)
    x[0, 0, 13, 21] = 5.0
    x[1, 0, 7, 30] = 5.0
    net = BrightSpotModel(meta)
    plain = net(x)
    fused = dekr_outputs(net, x, meta, flip=True)
    assert torch.allclose(fused["heatmaps"], plain["heatmaps"])  # no 3 px (0.75 output px) bias
    assert torch.allclose(fused["posemap"], posemap_from_offsets(plain["offsets"]), atol=1e-5)
    # without the shift the mirrored half would sit 3 px off
    m = x.flip(-1)
    assert torch.equal(shift_mirror(x)[..., :-3], m[..., 3:])


@pytest.mark.parametrize("factor", [2, 4, 8])
def test_aligned_resampling_is_dekrs_up_interpolate(factor):
    hm = torch.rand(2, 3, 5, 7)
    ref = upsample_heatmaps(hm, factor, "aligned")
    assert torch.allclose(resample_aligned(hm, ref.shape[-2:], factor), ref, atol=1e-6)


def test_center_pool_kernel_rule():
    assert center_pool_kernel(128, 128) == 3  # 512 px input
    assert center_pool_kernel(210, 220) == 5
    assert center_pool_kernel(300, 310) == 7
    assert center_pool_kernel(200, 200) == 3 and center_pool_kernel(300, 300) == 5  # strict >


def _maps(people, meta, hw=(24, 32), areas=None):
    """Targets of ``people`` [M, K, 3] (output px) as network maps: heatmaps, posemap."""
    h, w = hw
    m = len(people)
    t = encode_targets(np.asarray(people, np.float64), np.full(m, 5000.0) if areas is None else areas,
                       None, (w, h), meta.num_keypoints, min_center_area=0.0)
    hm = torch.from_numpy(t["heatmaps"])[None]
    pm = posemap_from_offsets(torch.from_numpy(t["offsets"])[None])
    return hm, pm


def _person(meta, x0, y0, rng):
    k = meta.num_keypoints
    xy = np.stack([x0 + rng.uniform(-3, 3, k), y0 + rng.uniform(-3, 3, k)], 1)
    return np.concatenate([xy, np.full((k, 1), 2.0)], 1)


def test_round_trip_batch_of_two_crowdpose():
    meta = CROWDPOSE
    rng = np.random.default_rng(0)
    a = [_person(meta, 8, 10, rng), _person(meta, 22, 12, rng)]
    b = [_person(meta, 15, 8, rng)]
    (ha, pa), (hb, pb) = _maps(a, meta), _maps(b, meta)
    out = decode_dekr_outputs([(1.0, torch.cat([ha, hb]), torch.cat([pa, pb]))], (96, 128), meta,
                              {"flip": False})
    assert out["poses"].shape == (2, 30, 14, 3)
    keep = out["keep"]
    assert keep.sum(1).tolist() == [2, 1]
    for bi, gt in ((0, a), (1, b)):
        got = out["poses"][bi][keep[bi]]
        got = got[got[:, :, 0].mean(1).argsort()]  # left to right
        gt = np.stack(sorted(gt, key=lambda p: p[:, 0].mean()))
        # the pose map at a centre pixel holds each joint exactly (x 4 to input px)
        assert np.allclose(got[..., :2].numpy(), 4 * gt[..., :2], atol=1e-4)
        # joint score = center score x heat value at (floor x, floor y) of the upsampled map
        heat_up = upsample_heatmaps((ha, hb)[bi], 4, "aligned")[0]
        for p in got:
            xy = p[:, :2].floor().long()
            hv = heat_up[torch.arange(14), xy[:, 1], xy[:, 0]]
            ratio = p[:, 2] / hv
            assert torch.allclose(ratio, ratio[0].expand(14), atol=1e-5) and 0.9 < ratio[0] <= 1.0
    assert torch.allclose(out["scores"], out["poses"][..., 2].mean(-1))


def test_duplicates_go_and_the_best_heat_survives():
    meta = COCO
    rng = np.random.default_rng(1)
    p = _person(meta, 14, 12, rng)
    hm, pm = _maps([p], meta)
    # a second center peak 3 output px away with a HIGHER center score whose pose shares 9 joints
    # and has 8 joints far from any heat: a duplicate (> 8 close joints) with a lower heat rank
    cy, cx = divmod(int(hm[0, -1].argmax()), hm.shape[-1])
    hm[0, -1, cy, cx + 3] = 3.0
    pm[0, :, :, cy, cx + 3] = pm[0, :, :, cy, cx]
    pm[0, 9:, :, cy, cx + 3] += 2.5
    out = decode_dekr_outputs([(1.0, hm, pm)], (96, 128), meta, {"flip": False})
    valid, keep = out["valid"][0], out["keep"][0]
    assert valid.sum() == 2 and keep.sum() == 1
    kept = keep.nonzero()[0, 0]
    assert out["rank"][0, kept] == out["rank"][0][valid].max()
    assert out["scores"][0, kept] < out["scores"][0][valid].max()  # ranked by heat, not score
    assert np.allclose(out["poses"][0, kept, :, :2].numpy(), 4 * p[:, :2], atol=1e-4)


def test_multi_scale_pools_candidates_in_the_scale_1_frame():
    meta = CROWDPOSE
    rng = np.random.default_rng(2)
    p = _person(meta, 12, 10, rng)
    h1, p1 = _maps([p], meta)
    p2 = p.copy()
    p2[:, :2] *= 2
    h2, pm2 = _maps([p2], meta, hw=(48, 64))
    ph = p.copy()
    ph[:, :2] /= 2
    hh, pmh = _maps([ph], meta, hw=(12, 16))
    cfg = {"scales": [0.5, 1.0, 2.0], "scale_decrease": 0.9}
    out = decode_dekr_outputs([(2.0, h2, pm2), (1.0, h1, p1), (0.5, hh, pmh)], (96, 128), meta, cfg)
    valid = out["valid"][0]
    assert out["poses"].shape[1] == 90 and valid.sum() == 3
    # candidates come in descending scale order; all three land on the same person
    assert [int(i) // 30 for i in valid.nonzero()[:, 0]] == [0, 1, 2]
    got = out["poses"][0][valid][..., :2]
    assert torch.allclose(got, torch.as_tensor(4 * p[:, :2], dtype=got.dtype).expand_as(got),
                          atol=1e-3)
    assert out["keep"][0].sum() == 1
    # center scores of the other scales: their max -> scale-1 max x 0.9
    c = out["poses"][0][valid][:, :, 2] / _heat(out, p)
    assert torch.allclose(c[:, 0], torch.tensor([0.9, 1.0, 0.9]) * c[1, 0], atol=1e-4)
    assert out["heatmaps_avg"].shape == (1, 15, 96, 128)
    with pytest.raises(LogocapError, match="1.0"):
        dekr_test_cfg({"scales": [0.5, 2.0]})


def _heat(out, p):
    xy = torch.as_tensor(4 * p[:, :2]).floor().long()
    k = len(p)
    return out["heatmaps_avg"][0, torch.arange(k), xy[:, 1], xy[:, 0]]


def test_an_image_without_people_keeps_nobody():
    meta = COCO
    hm = torch.zeros(2, 18, 16, 16)
    pm = torch.zeros(2, 17, 2, 16, 16)
    hm[1, -1, 5, 5] = 0.5
    out = decode_dekr_outputs([(1.0, hm, pm)], (64, 64), meta, {"flip": False})
    assert out["keep"].sum(1).tolist() == [0, 1]


def test_match_heatmap_snaps_and_fits_a_subpixel_peak():
    k = 2
    heat = torch.zeros(1, k, 64, 96)
    ys, xs = torch.meshgrid(torch.arange(64.0), torch.arange(96.0), indexing="ij")
    heat[0, 0] = 0.8 * torch.exp(-((xs - 40.3) ** 2 + (ys - 22.7) ** 2) / (2 * 2.5 ** 2))
    heat[0, 1] = 0.6 * torch.exp(-((xs - 10.6) ** 2 + (ys - 50.2) ** 2) / (2 * 2.0 ** 2))
    poses = torch.tensor([[[[45.0, 25.0, 0.5], [90.0, 5.0, 0.5]],     # joint 1 is > 75 px away
                           [[41.0, 23.0, 0.5], [11.0, 50.0, 0.01]]]])  # low score: snap, no fit
    keep = torch.tensor([[True, True]])
    out = match_heatmap(poses, keep, heat)
    assert torch.allclose(out[0, 0, 0, :2], torch.tensor([40.3, 22.7]), atol=0.02)
    assert torch.allclose(out[0, 1, 0, :2], torch.tensor([40.3, 22.7]), atol=0.02)
    assert torch.equal(out[0, 0, 1], poses[0, 0, 1])  # nothing to absorb, nothing to fit
    assert torch.equal(out[0, 1, 1, :2], torch.tensor([11.0, 50.0]))  # the peak pixel, unfitted
    assert torch.equal(out[..., 2], poses[..., 2])
    # poses not kept by NMS are left alone
    assert torch.equal(match_heatmap(poses, ~keep, heat), poses)


def test_decode_dekr_tiny_model_batch_multiscale_flip_match():
    torch.manual_seed(0)
    meta = CROWDPOSE
    net = create_model("dekr_hrnet_tiny", num_keypoints=14).eval()
    x = torch.randn(2, 3, 64, 128)
    batches = {1.0: x, 0.5: torch.nn.functional.interpolate(x, scale_factor=0.5),
               2.0: torch.nn.functional.interpolate(x, scale_factor=2.0)}
    with torch.no_grad():
        out = decode_dekr(net, batches, meta, {"scales": [0.5, 1, 2], "match_heatmap": True,
                                               "center_threshold": -1.0})
    assert out["poses"].shape == (2, 90, 14, 3) and torch.isfinite(out["poses"]).all()
    assert out["keep"].any(1).all() and (out["keep"].sum(1) <= 30).all()
    assert out["raw"]["heatmaps"].shape == (2, 15, 16, 32)
    with pytest.raises(LogocapError, match="no input batch"):
        decode_dekr(net, {1.0: x}, meta, {"scales": [1.0, 2.0]})
