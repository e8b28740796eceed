"""HGR decoding (seed paper §3.2) on hand-built maps: candidates, grouping, naive score, cues."""
import math

import pytest
import torch

from logocap.codecs.dekr_decode import resample_aligned
from logocap.codecs.hgr_decode import (MISSED_JOINT_PX, decode_hgr_outputs, group_keypoints,
                                      group_with_cues,
                                       heatmap_candidates, hgr_test_cfg)
from logocap.meta import KeypointMeta
from logocap.utils import LogocapError

META3 = KeypointMeta("three", ("a", "b", "c"), flip_pairs=(), skeleton=((0, 1), (1, 2)),
                     sigmas=(0.05, 0.05, 0.05))


def gauss(h, w, x, y, sigma, peak=1.0):
    ys = torch.arange(h, dtype=torch.float64).view(h, 1)
    xs = torch.arange(w, dtype=torch.float64).view(1, w)
    return peak * torch.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * sigma ** 2))


def test_candidates_threshold_topk_and_subpixel_peaks():
    heat = torch.zeros(2, 2, 64, 80, dtype=torch.float64)
    heat[0, 0] = gauss(64, 80, 20.3, 30.6, 8.0)
    heat[1, 0] = gauss(64, 80, 50.7, 10.2, 8.0, 0.5)
    heat[0, 1] = gauss(64, 80, 40.0, 40.0, 8.0, 0.005)  # below the 0.01 threshold
    xy, val, ok = heatmap_candidates(heat, num=30)
    assert xy.shape == (2, 2, 30, 2) and ok.shape == (2, 2, 30)
    assert ok[0, 0].sum() == 1 and ok[1, 0].sum() == 1
    assert not ok[0, 1].any() and not ok[1, 1].any()  # image 1 type 1: an all-zero map
    # a Gaussian read on the 4 px grid is located exactly by the log-parabola
    assert torch.allclose(xy[0, 0, 0], torch.tensor([20.3, 30.6], dtype=torch.float64), atol=1e-6)
    assert torch.allclose(xy[1, 0, 0], torch.tensor([50.7, 10.2], dtype=torch.float64), atol=1e-6)
    assert val[0, 0, 0] == pytest.approx(1.0) and val[1, 0, 0] == pytest.approx(0.5)
    # grid points when the refinement is off
    xy0, _, _ = heatmap_candidates(heat, refine=False)
    assert xy0[0, 0, 0].tolist() == [20.0, 32.0]
    # top-num: several separate peaks, only the highest num are kept, best first
    many = torch.zeros(1, 1, 64, 80, dtype=torch.float64)
    for i in range(5):
        many[0, 0] = torch.maximum(many[0, 0], gauss(64, 80, 8 + 16 * i, 32, 4.0, 0.2 + 0.1 * i))
    xy, val, ok = heatmap_candidates(many, num=3)
    assert ok.all() and val[0, 0].tolist() == pytest.approx([0.6, 0.5, 0.4])


def test_no_false_peaks_on_the_replicated_border():
    """Aligned upsampling replicates the last map column over 3 px: a flat strip that a 3x3
    max-pool on the input-resolution map would take for peaks."""
    small = gauss(16, 20, 15.0, 8.0, 1.5).float()[None, None]
    up = resample_aligned(small, (64, 80), 4.0)
    assert torch.equal(up[0, 0, :, 77], up[0, 0, :, 79])  # the flat strip is there
    xy, _, ok = heatmap_candidates(up)
    assert ok[0, 0].sum() == 1 and xy[0, 0, 0].tolist() == pytest.approx([60.0, 32.0], abs=1e-4)


def test_candidates_on_an_upsampled_stride_4_heatmap():
    """The decoder's real input: a sigma-2 Gaussian on the 1/4 map, resampled to input px."""
    small = gauss(16, 20, 5.3, 7.6, 2.0).float()[None, None]
    up = resample_aligned(small, (64, 80), 4.0)
    xy, _, ok = heatmap_candidates(up)
    assert ok[0, 0].sum() == 1
    assert torch.allclose(xy[0, 0, 0], torch.tensor([4 * 5.3, 4 * 7.6]), atol=0.1)


def test_grouping_absorbs_nearest_within_radius_else_keeps_the_regressed_joint():
    cues = torch.tensor([[[[10.0, 10.0], [50.0, 50.0], [30.0, 5.0]],
                          [[40.0, 12.0], [52.0, 40.0], [31.0, 6.0]]]])  # [B=1, N=2, K=3, 2]
    cand_xy = torch.zeros(1, 3, 4, 2)
    cand_ok = torch.zeros(1, 3, 4, dtype=torch.bool)
    cand_xy[0, 0, :2] = torch.tensor([[12.0, 11.0], [38.0, 10.0]])
    cand_ok[0, 0, :2] = True
    cand_xy[0, 1, 0] = torch.tensor([200.0, 200.0])  # type 1: only a candidate far away
    cand_ok[0, 1, 0] = True
    cand_xy[0, 2, 3] = torch.tensor([30.0, 6.0])  # type 2: a candidate in a slot marked not ok
    xy, absorbed, index = group_keypoints(cues, cand_xy, cand_ok, radius=75.0)
    assert torch.equal(xy[0, 0, 0], torch.tensor([12.0, 11.0]))
    assert torch.equal(xy[0, 1, 0], torch.tensor([38.0, 10.0]))
    assert index[0, :, 0].tolist() == [0, 1]
    assert torch.equal(xy[0, :, 1:], cues[0, :, 1:])  # far / no candidate: the regressed joint
    assert not absorbed[0, :, 1:].any() and (index[0, :, 1:] == -1).all()
    # the radius is a hard limit
    xy, absorbed, _ = group_keypoints(cues, cand_xy, cand_ok, radius=2.5)
    assert absorbed[0, :, 0].tolist() == [True, False]  # 2.24 px and 2.83 px away
    # no cue / no candidate slot at all: nothing to do, no crash
    assert group_keypoints(cues[:, :0], cand_xy, cand_ok)[0].shape == (1, 0, 3, 2)
    assert torch.equal(group_keypoints(cues, cand_xy[:, :, :0], cand_ok[:, :, :0])[0], cues)


def _maps(people, h=16, w=20, shift=(2.0, -1.5), empty_type=2):
    """Maps [1, K+1, h, w] and a posemap [1, K, 2, h, w] (output px) for people = list of
    (center (x, y), joints [(x, y)] * K): Gaussian heatmaps (sigma 1.5) at the joints except
    ``empty_type``, a center peak of height 0.9, and a pose map regressing every joint ``shift``
    away from the truth around each center."""
    k = len(people[0][1])
    heat = torch.zeros(1, k + 1, h, w, dtype=torch.float64)
    pose = torch.zeros(1, k, 2, h, w, dtype=torch.float64)
    for (cx, cy), joints in people:
        heat[0, k] = torch.maximum(heat[0, k], gauss(h, w, cx, cy, 1.0, 0.9))
        for j, (x, y) in enumerate(joints):
            if j != empty_type:
                heat[0, j] = torch.maximum(heat[0, j], gauss(h, w, x, y, 1.5))
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    pose[0, j, 0, cy + dy, cx + dx] = x + shift[0]
                    pose[0, j, 1, cy + dy, cx + dx] = y + shift[1]
    return heat, pose


def test_decode_groups_regressed_poses_with_heatmap_candidates():
    joints_a = [(4.25, 4.5), (7.5, 10.25), (5.0, 13.0)]
    joints_b = [(14.5, 3.25), (16.75, 9.5), (15.0, 12.0)]
    h0, p0 = _maps([((6, 8), joints_a), ((15, 8), joints_b)])
    h1, p1 = _maps([((10, 6), joints_b)], shift=(-1.0, 1.0))
    heat, pose = torch.cat([h0, h1]), torch.cat([p0, p1])
    cfg = {"flip": False}
    res = decode_hgr_outputs([(1.0, heat, pose)], (64, 80), META3, cfg)
    keep, poses = res["keep"], res["poses"]
    assert keep[0].sum() == 2 and keep[1].sum() == 1
    for b, truth, shift in ((0, [joints_a, joints_b], (2.0, -1.5)), (1, [joints_b], (-1.0, 1.0))):
        kept = poses[b][keep[b]]
        for person in truth:
            t = 4 * torch.tensor(person, dtype=torch.float64)
            n = int((kept[:, 0, :2] - t[0]).norm(dim=-1).argmin())
            # joints 0, 1 absorbed their heatmap candidates; joint 2 (empty map) keeps the regression
            assert torch.allclose(kept[n, :2, :2], t[:2], atol=0.15), (kept[n], t)
            assert torch.allclose(kept[n, 2, :2], t[2] + 4 * torch.tensor(shift, dtype=torch.float64))
    assert not res["absorbed"][..., 2].any()
    # naive score: center score x heat value; joint 2 reads the empty map -> 0
    i = int(keep[1].nonzero()[0])
    assert res["poses"][1, i, 0, 2].item() == pytest.approx(0.9, abs=0.02)
    assert res["poses"][1, i, 2, 2].item() == 0.0
    assert res["scores"][1, i].item() == pytest.approx(res["poses"][1, i, :, 2].mean().item())
    # group_radius 0: the regressed poses alone
    reg = decode_hgr_outputs([(1.0, heat, pose)], (64, 80), META3, {**cfg, "group_radius": 0})
    assert not reg["absorbed"].any()
    assert torch.equal(reg["poses"][..., :2], reg["regressed"])
    assert torch.equal(reg["regressed"], res["regressed"])


def test_cues_that_absorb_the_same_candidates_are_one_pose():
    joints = [(6.0, 4.0), (7.0, 10.0), (6.0, 13.0)]
    h, p = _maps([((4, 8), joints)], empty_type=None)
    h2, p2 = _maps([((9, 8), joints)], shift=(1.0, 1.0), empty_type=None)
    heat = torch.maximum(h, h2)
    pose = torch.where(p2 != 0, p2, p)
    res = decode_hgr_outputs([(1.0, heat, pose)], (64, 80), META3, {"flip": False})
    assert res["valid"][0].sum() == 2  # two centers, two cues
    assert torch.allclose(res["poses"][0][res["valid"][0]][0, :, :2],
                          res["poses"][0][res["valid"][0]][1, :, :2])
    assert res["keep"][0].sum() == 1  # pose NMS merges the two identical groupings


def test_group_with_ground_truth_cues():
    heat = torch.zeros(1, 3, 64, 80, dtype=torch.float64)
    heat[0, 0] = gauss(64, 80, 20.0, 20.0, 6.0, 0.8)
    heat[0, 1] = gauss(64, 80, 30.0, 40.0, 6.0, 0.6)
    cues = torch.tensor([[[[24.0, 18.0, 2], [0.0, 0.0, 0], [50.0, 50.0, 2]],
                          [[0.0, 0.0, 0], [0.0, 0.0, 0], [0.0, 0.0, 0]]]], dtype=torch.float64)
    res = group_with_cues(heat, cues, radius=75.0)
    assert res["valid"].tolist() == [[True, False]] and torch.equal(res["keep"], res["valid"])
    g = res["poses"][0, 0]
    assert torch.allclose(g[0, :2], torch.tensor([20.0, 20.0], dtype=torch.float64), atol=0.05)
    # the unlabelled joint starts at the labelled centroid (37, 34) and absorbs the type-1 peak
    assert torch.allclose(g[1, :2], torch.tensor([30.0, 40.0], dtype=torch.float64), atol=0.05)
    # type 2 has no candidate at all: a miss, far from the cue, with heat 0
    assert torch.equal(g[2, :2], cues[0, 0, 2, :2] + MISSED_JOINT_PX) and g[2, 2] == 0
    assert res["scores"][0, 0].item() == pytest.approx((0.8 + 0.6 + 0.0) / 3, abs=0.01)
    literal = group_with_cues(heat, cues, radius=75.0, fallback="cue")
    assert torch.equal(literal["poses"][0, 0, 2, :2], cues[0, 0, 2, :2])  # the cue's joint stays
    with pytest.raises(LogocapError, match="cues must be"):
        group_with_cues(heat, cues[..., :2])
    with pytest.raises(LogocapError, match="fallback"):
        group_with_cues(heat, cues, fallback="gt")


def test_group_with_cues_beyond_the_radius():
    """A candidate farther than the radius: the heatmap quality takes it (the heatmaps' answer),
    the literal rule keeps the cue's joint."""
    heat = torch.zeros(1, 1, 64, 80, dtype=torch.float64)
    heat[0, 0] = gauss(64, 80, 60.0, 40.0, 6.0, 0.7)
    cues = torch.tensor([[[[10.0, 10.0, 2]]]], dtype=torch.float64)
    near = group_with_cues(heat, cues, radius=20.0)
    assert torch.allclose(near["poses"][0, 0, 0, :2], torch.tensor([60.0, 40.0], dtype=torch.float64),
                          atol=0.05)
    assert near["poses"][0, 0, 0, 2].item() == pytest.approx(0.7, abs=0.01)
    assert not near["absorbed"][0, 0, 0]
    cue = group_with_cues(heat, cues, radius=20.0, fallback="cue")
    assert torch.equal(cue["poses"][0, 0, 0, :2], cues[0, 0, 0, :2])


@pytest.mark.parametrize("bad", [-1, "far", True, math.inf])
def test_bad_group_radius_is_one_clear_error(bad):
    with pytest.raises(LogocapError, match="test.group_radius"):
        hgr_test_cfg({"group_radius": bad})
    assert hgr_test_cfg({"group_radius": 0})["group_radius"] == 0.0
    assert hgr_test_cfg(None)["group_radius"] == 75.0
