"""Affine transforms: exact inverse, test-time resize, flip, augmentation ranges, image IO."""
import math

import cv2
import numpy as np
import pytest
import torch

from logocap.data.transforms import (MEAN, STD, affine_scale, apply_affine, invert_affine,
                                     load_image, normalize, random_affine, test_transform,
                                     warp_image)
from logocap.meta import COCO
from logocap.utils import LogocapError


def test_inverse_round_trip_is_exact():
    rng = np.random.default_rng(0)
    for _ in range(20):
        M, _ = random_affine(int(rng.integers(50, 700)), int(rng.integers(50, 700)), 512, rng)
        pts = rng.uniform(-1000, 1000, (100, 2))
        back = apply_affine(apply_affine(pts, M), invert_affine(M))
        assert np.abs(back - pts).max() < 1e-6
    with pytest.raises(ValueError):
        invert_affine(np.zeros((2, 3)))


@pytest.mark.parametrize("h,w", [(480, 640), (640, 427), (512, 512), (300, 1000), (37, 51)])
def test_test_transform_shape_and_centering(h, w):
    size = 512
    M, (ow, oh) = test_transform(h, w, size)
    assert min(ow, oh) == size and ow % 64 == 0 and oh % 64 == 0
    s = size / min(h, w)
    long_out, long_in = (ow, w) if w > h else (oh, h)
    assert long_out - 64 < long_in * s <= long_out  # rounded UP, by less than one stride
    # the image centre lands on the canvas centre; the scale is isotropic
    np.testing.assert_allclose(apply_affine([w / 2, h / 2], M), [ow / 2, oh / 2])
    assert M[0, 0] == pytest.approx(s) and M[1, 1] == pytest.approx(s) and M[0, 1] == 0
    # the content is centred: equal padding on both sides of the long axis
    corners = apply_affine(np.array([[0, 0], [w, h]], float), M)
    np.testing.assert_allclose(corners[0], [ow, oh] - corners[1], atol=1e-9)


def test_flip_mirrors_and_reorders_keypoints():
    """A left wrist on the left of the image ends on the right side, labelled right wrist."""
    meta = COCO
    lw, rw = meta.keypoint_names.index("left_wrist"), meta.keypoint_names.index("right_wrist")
    h = w = S = 64
    rng = np.random.default_rng(1)
    M, flipped = random_affine(h, w, S, rng, max_rotation=0, min_scale=1, max_scale=1,
                               max_translate=0, flip_prob=1.0)
    assert flipped
    kps = np.zeros((1, meta.num_keypoints, 3))
    kps[0, lw] = (10.0, 30.0, 2)
    xy = apply_affine(kps[..., :2], M)
    kps_t = np.concatenate([xy, kps[..., 2:]], -1)[:, list(meta.flip_index)]
    assert kps_t[0, lw, 2] == 0 and kps_t[0, rw, 2] == 2
    np.testing.assert_allclose(kps_t[0, rw, :2], [S - 1 - 10.0, 30.0], atol=1e-9)
    # the image is mirrored the same way: a bright pixel follows its keypoint
    img = np.zeros((h, w, 3), np.uint8)
    img[30, 10] = 255
    out = warp_image(img, M, (S, S))
    assert out[30, S - 1 - 10, 0] == 255


def test_augmentation_ranges():
    h, w, S = 400, 600, 256
    rng = np.random.default_rng(2)
    zooms, angles, flips, shifts = [], [], [], []
    for _ in range(400):
        M, flipped = random_affine(h, w, S, rng)
        z = affine_scale(M)
        zooms.append(z * min(h, w) / S)  # = the drawn scale s
        A = M[:, :2] * (np.array([[-1], [1]]) if flipped else 1)  # undo the mirror
        angles.append(math.degrees(math.atan2(A[0, 1], A[0, 0])))
        flips.append(flipped)
        centre = apply_affine([(w - 1) / 2, (h - 1) / 2], M)
        shifts.append(np.abs(centre - (S - 1) / 2).max() / S)  # in crop sides
    zooms, angles, shifts = map(np.asarray, (zooms, angles, shifts))
    assert 0.75 <= zooms.min() < 0.8 and 1.45 < zooms.max() <= 1.5
    assert -30 <= angles.min() < -27 and 27 < angles.max() <= 30
    assert 0.4 < np.mean(flips) < 0.6
    # the crop centre moves at most 40/200 of the crop per axis; rotation can spread it by sqrt 2
    assert shifts.max() <= 0.2 * math.sqrt(2) + 1e-9 and shifts.max() > 0.1


def test_random_affine_is_reproducible():
    a = random_affine(100, 120, 64, np.random.default_rng([0, 3, 5]))
    b = random_affine(100, 120, 64, np.random.default_rng([0, 3, 5]))
    np.testing.assert_array_equal(a[0], b[0])
    assert a[1] == b[1]


def test_normalize_and_load_image(tmp_path):
    img = np.zeros((5, 7, 3), np.uint8)
    img[..., 0] = 255  # red
    x = normalize(img)
    assert x.shape == (3, 5, 7) and x.dtype == torch.float32
    assert x[0, 0, 0].item() == pytest.approx((1 - MEAN[0]) / STD[0], rel=1e-5)
    assert x[2, 0, 0].item() == pytest.approx(-MEAN[2] / STD[2], rel=1e-5)

    p = tmp_path / "red.png"
    cv2.imwrite(str(p), img[..., ::-1])  # cv2 writes BGR
    assert (load_image(p)[..., 0] == 255).all()  # read back as RGB
    with pytest.raises(LogocapError, match="not found"):
        load_image(tmp_path / "missing.jpg")
    bad = tmp_path / "corrupt.jpg"
    bad.write_bytes(b"this is not a jpeg")
    with pytest.raises(LogocapError, match="corrupt.jpg"):
        load_image(bad)
