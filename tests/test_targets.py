"""Targets: encode people -> maps -> decode, and the official generator rules (notes 4.2)."""
import time

import numpy as np
import pytest

from logocap.codecs.targets import decode_targets, encode_targets, person_centers
from logocap.meta import COCO

K = COCO.num_keypoints
W = H = 128


def _person(rng, center, spread=12.0, drop=0.2):
    """K joints around a point, some unlabelled, shifted so their mean is exactly ``center``."""
    kp = np.zeros((K, 3))
    kp[:, :2] = rng.normal(0, spread, (K, 2))
    kp[:, 2] = np.where(rng.random(K) < drop, 0, 2)
    kp[0, 2] = 2
    vis = kp[:, 2] > 0
    kp[vis, :2] += np.asarray(center) - kp[vis, :2].mean(0)
    kp[~vis, :2] = 0
    return kp


def _match(decoded, centers):
    """For each GT centre, the decoded person whose peak pixel is nearest (within 1 px)."""
    found = np.array([d["center"] for d in decoded]).reshape(-1, 2)
    out = []
    for c in centers:
        d = np.abs(found - np.asarray(c)).max(1)
        assert d.min() <= 1.0, f"no decoded centre near {c}"
        out.append(decoded[int(d.argmin())])
    return out


def test_round_trip_with_overlap_and_border():
    rng = np.random.default_rng(0)
    centers = [(40.3, 50.2), (46.4, 50.7),  # 6 px apart: their 8x8 offset squares overlap
               (100.2, 30.6), (30.7, 100.1),
               (124.6, 80.3)]  # next to the right border: several joints fall outside
    kps = np.stack([_person(rng, c, spread=18.0 if i == 4 else 12.0) for i, c in enumerate(centers)])
    areas = np.array([5000.0, 2000.0, 3000.0, 4000.0, 6000.0])  # input px^2
    t = encode_targets(kps, areas, None, (W, H), K)
    outside = (kps[..., 0] >= W) | (kps[..., 0] < 0) | (kps[..., 1] >= H) | (kps[..., 1] < 0)
    assert (outside & (kps[..., 2] > 0)).any(), "the border person must have joints outside"

    decoded = decode_targets(t["heatmaps"], t["offsets"], t["offset_weights"])
    assert len(decoded) == len(centers)
    for gt, d in zip(kps, _match(decoded, centers)):
        want = (gt[:, 2] > 0) & (gt[:, 0] >= 0) & (gt[:, 0] < W) & (gt[:, 1] >= 0) & (gt[:, 1] < H)
        np.testing.assert_array_equal(d["keypoints"][:, 2] > 0, want)
        err = np.abs(d["keypoints"][want, :2] - gt[want, :2]).max()
        assert err < 1e-3  # exact up to float32 (the brief asks for < 1 px)


def test_smaller_person_keeps_overlap_and_weights():
    rng = np.random.default_rng(1)
    big, small = _person(rng, (40.3, 50.2), drop=0), _person(rng, (46.4, 50.7), drop=0)
    t = encode_targets(np.stack([big, small]), np.array([5000.0, 2000.0]), None, (W, H), K)
    # pixel (43, 50) lies in both squares: x in [36, 44) and [42, 50)
    px, py = 43, 50
    assert t["offsets"][0, py, px] == pytest.approx(px - small[0, 0], abs=1e-4)
    assert t["offsets"][1, py, px] == pytest.approx(py - small[0, 1], abs=1e-4)
    assert t["offset_weights"][0, py, px] == pytest.approx(1 / np.sqrt(2000.0))
    # the big person's own pixels carry its weight; the square is exactly 8x8
    assert t["offset_weights"][0, 50, 37] == pytest.approx(1 / np.sqrt(5000.0))
    ys, xs = np.nonzero(t["offset_weights"][0])
    assert xs.min() == 36 and xs.max() == 49 and ys.min() == 46 and ys.max() == 53


def test_heatmaps_windows_weights_and_ignore_mask():
    kp = np.zeros((1, K, 3))
    kp[0, 0] = (20.0, 30.0, 2)
    kp[0, 1] = (70.0, 60.0, 1)
    mask = np.ones((H, W), np.float32)
    mask[:, 100:] = 0
    t = encode_targets(kp, np.array([4000.0]), mask, (W, H), K, sigma=2.0, center_sigma=4.0,
                       bg_weight=0.1)
    hm, wt = t["heatmaps"], t["heatmap_weights"]
    assert hm.shape == (K + 1, H, W) and wt.shape == (1, H, W) and hm.dtype == np.float32
    assert hm[0, 30, 20] == 1.0 and hm[0, 30, 21] == pytest.approx(np.exp(-1 / 8))
    assert hm[0, 30, 20 + 7] > 0 and hm[0, 30, 20 + 8] == 0  # window floor(x-7) .. ceil(x+8)
    assert hm[0, 30, 20 - 7] > 0 and hm[0, 30, 20 - 8] == 0
    assert hm[2].max() == 0  # unlabelled joint: nothing drawn
    # the centre (mean of the labelled joints) is the last channel, sigma 4
    assert hm[K, 45, 45] == 1.0 and hm[K, 45, 46] == pytest.approx(np.exp(-1 / 32))
    assert wt[0, 30, 27] == 1.0 and wt[0, 30, 28] == pytest.approx(0.1)  # joint 0's window edge
    assert wt[0, 32, 32] == 1.0 and wt[0, 31, 32] == pytest.approx(0.1)  # centre window [32, 59)
    assert wt[0, 5, 5] == pytest.approx(0.1) and wt[0, 5, 110] == 0  # bg, ignored


def test_centre_rules():
    rng = np.random.default_rng(2)
    tiny = _person(rng, (60.2, 60.3), spread=3.0, drop=0)
    unlabelled = np.zeros((K, 3))
    t = encode_targets(np.stack([tiny, unlabelled]), np.array([500.0, 4000.0]), None, (W, H), K,
                       bboxes=np.array([[0, 0, 0, 0], [10.0, 12.0, 30.0, 40.0]]),
                       min_center_area=32 ** 2)
    # too small for a centre: no centre peak, no offsets, but its joints are still drawn
    assert t["heatmaps"][K, 55:66, 55:66].max() < 0.5
    assert t["offset_weights"].max() == 0
    assert t["heatmaps"][:K].max() > 0.9
    # no labelled joint: the box centre is used
    assert t["heatmaps"][K, 26, 20] == 1.0
    c = person_centers(np.stack([tiny, unlabelled]))
    assert c[1, 2] == 0 and c[0, 2] == 1


def test_encode_speed():
    rng = np.random.default_rng(3)
    centers = rng.uniform(10, 118, (20, 2))
    kps = np.stack([_person(rng, c) for c in centers])
    areas = rng.uniform(1500, 20000, 20)
    encode_targets(kps, areas, None, (W, H), K)  # warm-up
    t0 = time.perf_counter()
    for _ in range(5):
        encode_targets(kps, areas, None, (W, H), K)
    per_person = (time.perf_counter() - t0) / 5 / 20
    assert per_person < 4e-3, f"{per_person * 1e3:.2f} ms per person"  # target < 2 ms; shared CPU
