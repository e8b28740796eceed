"""Known-answer tests for center-offset decoding (logocap/codecs/decode.py, nms.py)."""
import numpy as np
import pytest
import torch

from logocap.codecs.decode import (bilinear_gather, center_nms, decode_center_offset, flip_fuse,
                                   offsets_to_poses, pose_nms, run_with_flip, to_original,
                                   upsample_heatmaps)
from logocap.meta import COCO

K = COCO.num_keypoints


def render(people, h, w, sigma=2.0, center_sigma=4.0, radius=4):
    """Ideal network outputs for people given in input px ([M, K, 2], stride 4).

    Heatmaps: Gaussians at joint / 4 (peak 1, merged by max), center = mean of the joints, last
    channel. Offsets: location - joint / 4 on a (2 radius)^2 square around int(center / 4).
    """
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64),
                            torch.arange(w, dtype=torch.float64), indexing="ij")
    hm = torch.zeros(K + 1, h, w, dtype=torch.float64)
    off = torch.zeros(2 * K, h, w, dtype=torch.float64)
    for person in people:
        p = torch.as_tensor(person, dtype=torch.float64) / 4
        c = p.mean(0)
        for j in range(K):
            g = torch.exp(-((xs - p[j, 0]) ** 2 + (ys - p[j, 1]) ** 2) / (2 * sigma ** 2))
            hm[j] = torch.maximum(hm[j], g)
        g = torch.exp(-((xs - c[0]) ** 2 + (ys - c[1]) ** 2) / (2 * center_sigma ** 2))
        hm[K] = torch.maximum(hm[K], g)
        cx, cy = int(c[0]), int(c[1])
        sl = (slice(max(cy - radius, 0), cy + radius), slice(max(cx - radius, 0), cx + radius))
        off[0::2][(slice(None),) + sl] = xs[sl] - p[:, 0, None, None]
        off[1::2][(slice(None),) + sl] = ys[sl] - p[:, 1, None, None]
    return hm.float(), off.float()


def make_people(rng, n, size):
    """n people: a random 17-joint layout of about 40 px around separated centers (input px)."""
    out = []
    for i in range(n):
        ctr = np.array([28.0 + 64 * i + rng.uniform(-2, 2), 40.0 + 40 * i + rng.uniform(-2, 2)])
        out.append(ctr + rng.uniform(-18, 18, size=(K, 2)))
    return np.stack(out)


# ----------------------------------------------------------------------------- center NMS
def test_center_nms_peaks_plateau_threshold_and_fallback():
    m = torch.zeros(2, 16, 16)
    m[0, 3, 4] = 0.9            # peak
    m[0, 10, 12] = 0.5          # peak
    m[0, 10, 11] = 0.4          # neighbour of a peak: suppressed
    m[0, 6, 6] = m[0, 6, 7] = 0.3   # plateau: both pixels equal the local max, both kept
    m[0, 14, 2] = 0.005         # peak below the threshold: returned but not valid
    m[1] = -0.1                 # no peak at all ...
    m[1, 5, 9] = -0.05          # ... the raw argmax is the top-1 fallback
    centers, scores, valid = center_nms(m, topk=6, threshold=0.01)
    assert centers.shape == (2, 6, 2) and scores.shape == valid.shape == (2, 6)
    assert centers[0, :2].tolist() == [[4, 3], [12, 10]]
    assert sorted(centers[0, 2:4].tolist()) == [[6, 6], [7, 6]]  # tie order is free
    assert scores[0, :5].tolist() == pytest.approx([0.9, 0.5, 0.3, 0.3, 0.005])
    assert valid[0].tolist() == [True, True, True, True, False, False]
    assert centers[1, 0].tolist() == [9, 5] and valid[1].tolist() == [True] + [False] * 5


def test_center_nms_top1_fallback_below_threshold_and_small_map():
    m = torch.zeros(1, 2, 2)
    m[0, 1, 0] = 0.004
    centers, scores, valid = center_nms(m, topk=30, threshold=0.01)
    assert centers.shape == (1, 4, 2)  # T = min(topk, H*W)
    assert centers[0, 0].tolist() == [0, 1] and valid[0].tolist() == [True, False, False, False]


# ----------------------------------------------------------------------------- offsets, sampling
def test_offsets_to_poses_reads_floor_of_center_and_clamps():
    off = torch.zeros(1, 2 * K, 8, 8)
    off[0, 0::2, 2, 3] = torch.arange(K, dtype=torch.float32)  # x offsets at output (3, 2)
    off[0, 1::2, 2, 3] = -1.0
    off[0, 0::2, 7, 7] = 0.5
    centers = torch.tensor([[[15.0, 11.9], [100.0, 100.0]]])  # floor(c/4) = (3, 2); clamped (7, 7)
    poses = offsets_to_poses(centers, off)
    assert poses.shape == (1, 2, K, 2)
    assert torch.allclose(poses[0, 0, :, 0], 15.0 - 4 * torch.arange(K, dtype=torch.float32))
    assert torch.allclose(poses[0, 0, :, 1], torch.full((K,), 15.9))
    assert torch.allclose(poses[0, 1, :, 0], torch.full((K,), 98.0))


def test_bilinear_gather_reads_own_channel_and_clamps():
    maps = torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(1, 2, 3, 4)  # value = 12c + 4y + x
    pts = torch.tensor([[[[1.5, 1.0], [0.25, 2.0]], [[-5.0, 9.0], [3.0, 0.0]]]])
    v = bilinear_gather(maps, pts)
    assert v.tolist() == [[[5.5, 20.25], [8.0, 15.0]]]


# ----------------------------------------------------------------------------- upsampling
@pytest.mark.parametrize("mode,expected", [("aligned", 40.0), ("official", 41.5)])
def test_upsample_peak_position(mode, expected):
    hm = torch.zeros(1, 1, 16, 16)
    hm[0, 0, 5, 10] = 1.0
    up = upsample_heatmaps(hm, 4, mode)
    assert up.shape == (1, 1, 64, 64)
    row = up[0, 0, 20] if mode == "aligned" else up[0, 0, 21:23].mean(0)
    xs = torch.arange(64, dtype=torch.float32)
    assert float((row * xs).sum() / row.sum()) == pytest.approx(expected, abs=1e-4)


# ----------------------------------------------------------------------------- flip
def test_flip_fuse_of_a_mirror_pair_is_the_original_for_official():
    hm, off = render(make_people(np.random.default_rng(0), 1, 128), 32, 32)
    out = {"heatmaps": hm[None], "offsets": off[None]}
    # A network whose output on the mirror is the exact mirror of its maps (joints swapped,
    # x offsets negated): flipping back must give the maps themselves, channel by channel.
    fi = list(COCO.flip_index)
    mir_off = off.reshape(K, 2, 32, 32)[fi].flip(-1) * torch.tensor([-1.0, 1.0]).view(1, 2, 1, 1)
    mirrored = {"heatmaps": hm[fi + [K]].flip(-1)[None], "offsets": mir_off.reshape(2 * K, 32, 32)[None]}
    fused = flip_fuse(out, mirrored, COCO, "official")
    assert torch.allclose(fused["heatmaps"], out["heatmaps"], atol=1e-6)
    assert torch.allclose(fused["offsets"], out["offsets"], atol=1e-6)


@pytest.mark.parametrize("shift,bias", [("official", -1.5), ("aligned", 0.0)])
def test_flip_shift_bias_end_to_end(shift, bias):
    """The mirrored input maps pixel x to W-1-x: render that scene, fuse, decode.

    With no shift the flipped-back half is 3 px to the left, so fused joints (from offsets) and
    fused heatmap peaks are 1.5 px to the left; "aligned" removes it.
    """
    size = 128
    people = make_people(np.random.default_rng(1), 1, size)
    mirror = people.copy()
    mirror[..., 0] = size - 1 - mirror[..., 0]
    mirror = mirror[:, list(COCO.flip_index)]  # the mirrored left wrist is a right wrist
    hm, off = render(people, 32, 32)
    hm_m, off_m = render(mirror, 32, 32)
    fused = flip_fuse({"heatmaps": hm[None], "offsets": off[None]},
                      {"heatmaps": hm_m[None], "offsets": off_m[None]}, COCO, shift)
    res = decode_center_offset(fused, COCO, {"upsample": "aligned", "topk": 5})
    # joint x of a pose, from its center and the fused offsets: bias of the offsets alone
    gt = torch.as_tensor(people, dtype=torch.float32)
    err_x = res["poses"][0, 0, :, 0] - gt[0, :, 0]  # rank 0 = the person's center
    assert float(err_x.mean()) == pytest.approx(bias, abs=0.3)
    # heatmap: the fused peak of one joint moves by the same bias (centroid within +-4 sigma)
    j = int(gt[0, :, 0].argmax())
    x0, y0 = (int(round(float(v) / 4)) for v in gt[0, j])
    cols = torch.arange(max(x0 - 8, 0), min(x0 + 9, 32))
    def centroid(maps):
        prof = maps[0, j, y0 - 8:y0 + 9][:, cols].sum(0)
        return 4 * float((prof * cols).sum() / prof.sum())  # in input px
    cx_fused, cx_ref = centroid(fused["heatmaps"]), centroid(hm[None])
    assert cx_fused - cx_ref == pytest.approx(bias, abs=0.3)


# ----------------------------------------------------------------------------- pose NMS
def test_pose_nms_duplicates_and_cap():
    base = torch.rand(1, 1, K, 2, generator=torch.Generator().manual_seed(0)) * 100
    far = base + 500.0
    near = base + 1.0           # all joints within 0.05 x diagonal (~140 px): duplicate
    half = base.clone()
    half[:, :, :9] += 1.0        # 9 joints close -> duplicate (more than 8)
    half[:, :, 9:] += 60.0
    eight = base.clone()
    eight[:, :, 8:] += 60.0      # exactly 8 joints close -> not a duplicate
    poses = torch.cat([near, base, far, half, eight], dim=1)  # [1, 5, K, 2]
    scores = torch.tensor([[0.5, 0.9, 0.4, 0.3, 0.2]])
    valid = torch.ones(1, 5, dtype=torch.bool)
    keep = pose_nms(poses, scores, valid, 0.05, 8, 30, method="greedy")
    assert keep.tolist() == [[False, True, True, False, True]]
    # the released procedure differs on `eight`: walking it, its own (wider) box makes `half` a
    # duplicate; `half` is the group's best but already suppressed, so `eight` is dropped too
    assert pose_nms(poses, scores, valid, 0.05, 8, 30).tolist() == [[False, True, True, False, False]]
    # the higher-scored duplicate wins whatever its index
    scores2 = torch.tensor([[0.95, 0.9, 0.4, 0.3, 0.2]])
    assert pose_nms(poses, scores2, valid, 0.05, 8, 30,
                    method="greedy").tolist() == [[True, False, True, False, True]]
    # invalid candidates neither survive nor suppress
    valid3 = torch.tensor([[True, False, True, True, True]])
    assert pose_nms(poses, scores, valid3, 0.05, 8, 30,
                    method="greedy").tolist() == [[True, False, True, False, True]]
    # cap by score
    assert pose_nms(poses, scores, valid, 0.05, 8, 2,
                    method="greedy").tolist() == [[False, True, True, False, False]]


def test_pose_nms_chain_is_greedy():
    # A suppresses B, B would suppress C, C is not a duplicate of A: greedy keeps A and C.
    # (The released procedure, the default, keeps B and A here: tests/test_pose_nms.py.)
    a = torch.zeros(1, 1, K, 2)
    a[..., 0] = torch.linspace(0, 100, K)
    b = a.clone()
    b[..., 0] += 4.0
    c = a.clone()
    c[..., 0] += 8.0
    poses = torch.cat([c, b, a], 1)
    keep = pose_nms(poses, torch.tensor([[0.1, 0.5, 0.9]]), torch.ones(1, 3, dtype=torch.bool),
                    threshold=0.05, num_joints=8, method="greedy")  # 0.05 x diag 100 = 5 px
    assert keep.tolist() == [[True, False, True]]


# ----------------------------------------------------------------------------- batch, end to end
def test_batch_equals_single_images():
    g = torch.Generator().manual_seed(0)
    out = {"heatmaps": torch.rand(3, K + 1, 16, 20, generator=g),
           "offsets": torch.randn(3, 2 * K, 16, 20, generator=g)}
    cfg = {"topk": 10, "upsample": "official"}
    full = decode_center_offset(out, COCO, cfg)
    keep = pose_nms(full["poses"], full["scores"], full["valid"], 0.05, 8, 5)
    for i in range(3):
        one = decode_center_offset({k: v[i:i + 1] for k, v in out.items()}, COCO, cfg)
        for key in ("poses", "scores", "valid", "centers"):
            assert torch.equal(one[key][0], full[key][i]), key
        k1 = pose_nms(one["poses"], one["scores"], one["valid"], 0.05, 8, 5)
        assert torch.equal(k1[0], keep[i])


def test_end_to_end_recovers_people_in_original_pixels():
    rng = np.random.default_rng(3)
    people = make_people(rng, 2, 128)
    hm, off = render(people, 32, 32)
    res = decode_center_offset({"heatmaps": hm[None].repeat(2, 1, 1, 1),
                                "offsets": off[None].repeat(2, 1, 1, 1)},
                               COCO, {"upsample": "aligned", "topk": 30})
    assert res["poses"].shape == (2, 30, K, 3)
    keep = pose_nms(res["poses"], res["scores"], res["valid"], 0.05, 8, 30)
    # Besides the two people, replicate-padded borders make flat low peaks whose offsets are 0 in
    # these hand-made maps (collapsed poses, scores < 0.01); keep the confident ones.
    keep &= res["scores"] > 0.1
    assert keep.sum(1).tolist() == [2, 2]
    # original -> input: scale 2 and a translation, different per image
    aff = torch.tensor([[[2.0, 0, 10], [0, 2.0, -4]], [[0.5, 0, 3], [0, 0.5, 7]]], dtype=torch.float64)
    orig = to_original(res["poses"], aff)
    for b in range(2):
        got = orig[b][keep[b]]
        want = (torch.as_tensor(people) - aff[b, :, 2]) / aff[b, 0, 0]
        d = (got[:, None, :, :2].double() - want[None]).norm(dim=-1).mean(-1)  # [kept, people]
        assert d.min(0).values.max() < 2.0 / float(aff[b, 0, 0])  # within 2 input px
        assert torch.all(got[..., 2] > 0.5)  # joint score = heat at the joint x center score


def test_decode_rejects_wrong_keypoint_count():
    out = {"heatmaps": torch.zeros(1, 15, 8, 8), "offsets": torch.zeros(1, 28, 8, 8)}
    with pytest.raises(ValueError, match="14 keypoints"):
        decode_center_offset(out, COCO, {})


def test_round_trip_through_encode_targets_and_test_transform():
    """GT (original px) -> test transform -> encode_targets -> decode -> to_original."""
    from logocap.codecs.targets import encode_targets
    from logocap.data.transforms import apply_affine, test_transform

    h, w = 100, 150
    m, (ow, oh) = test_transform(h, w, 128)
    rng = np.random.default_rng(7)
    gt = np.stack([np.array([c, 50.0]) + rng.uniform(-22, 22, (K, 2)) for c in (35.0, 110.0)])
    kp_in = apply_affine(gt, m)
    kp_out = np.concatenate([kp_in / 4, np.full(gt.shape[:2] + (1,), 2.0)], axis=-1)
    t = encode_targets(kp_out, np.full(2, 64.0 ** 2), None, (ow // 4, oh // 4), K)
    out = {"heatmaps": torch.from_numpy(t["heatmaps"])[None],
           "offsets": torch.from_numpy(t["offsets"])[None]}
    res = decode_center_offset(out, COCO, {"upsample": "aligned"})
    keep = pose_nms(res["poses"], res["scores"], res["valid"]) & (res["scores"] > 0.1)
    got = to_original(res["poses"], torch.from_numpy(m)[None])[0][keep[0]]
    assert len(got) == 2
    d = (got[:, None, :, :2].double() - torch.from_numpy(gt)[None]).norm(dim=-1).mean(-1)
    assert d.min(1).values.max() < 0.05  # original px: aligned decoding inverts the targets exactly


def test_run_with_flip_is_one_forward_of_2b():
    calls = []

    def model(x):  # flip-equivariant toy "network": 4x4 average pooling, no offsets signal
        calls.append(x.shape[0])
        hm = torch.nn.functional.avg_pool2d(x.mean(1, keepdim=True), 4).repeat(1, K + 1, 1, 1)
        return {"heatmaps": hm, "offsets": torch.zeros(x.shape[0], 2 * K, *hm.shape[-2:]),
                "embedding": torch.full((x.shape[0], 2) + hm.shape[-2:], float(x.shape[0]))}

    x = torch.rand(3, 3, 16, 24, generator=torch.Generator().manual_seed(0))
    fused, plain = run_with_flip(model, x, COCO)
    assert calls == [6]
    assert plain["embedding"].shape[0] == 3 and torch.allclose(fused["heatmaps"], plain["heatmaps"])
    assert torch.equal(fused["embedding"], plain["embedding"])


def test_pose_nms_num_joints_default_is_half_of_k():
    k = 14
    base = torch.rand(1, 1, k, 2, generator=torch.Generator().manual_seed(1)) * 100
    seven, eight = base.clone(), base.clone()
    seven[:, :, 7:] += 60.0  # 7 joints close: not more than 14 // 2
    eight[:, :, 8:] += 60.0  # 8 joints close: a duplicate
    scores, valid = torch.tensor([[0.9, 0.5]]), torch.ones(1, 2, dtype=torch.bool)
    assert pose_nms(torch.cat([base, seven], 1), scores, valid).tolist() == [[True, True]]
    assert pose_nms(torch.cat([base, eight], 1), scores, valid).tolist() == [[True, False]]
