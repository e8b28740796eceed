"""Drawing: poses change pixels where joints are, inputs stay untouched, sheets and saving work."""
import cv2
import numpy as np
import pytest

from logocap import Poses
from logocap.meta import COCO
from logocap.utils import LogocapError
from logocap.viz import contact_sheet, draw_poses, save_image

K = COCO.num_keypoints


def _pose(v=2.0):
    rng = np.random.default_rng(0)
    kp = np.zeros((1, K, 3), np.float32)
    kp[0, :, :2] = rng.uniform(10, 54, (K, 2))
    kp[0, :, 2] = v
    return kp


def test_draw_changes_joint_pixels_and_keeps_input():
    img = np.full((64, 64, 3), 128, np.uint8)
    before = img.copy()
    kp = _pose()
    out = draw_poses(img, kp, COCO)
    assert np.array_equal(img, before)
    assert out.shape == img.shape and out.dtype == np.uint8
    xi, yi = np.round(kp[0, :, :2]).astype(int).T
    assert np.all(np.any(out[yi, xi] != 128, axis=1))


def test_threshold_and_unlabelled():
    img = np.zeros((64, 64, 3), np.uint8)
    kp = _pose(0.1)  # all below the threshold: nothing drawn
    assert np.array_equal(draw_poses(img, kp, COCO, threshold=0.3), img)
    gt = _pose(0.0)
    gt[0, 0, 2] = 2  # ground truth with a single labelled joint
    out = draw_poses(img, gt, COCO)
    assert out.any()
    x, y = np.round(gt[0, 0, :2]).astype(int)
    assert out[y, x].any()


def test_occluded_gt_joint_is_hollow():
    img = np.zeros((64, 64, 3), np.uint8)
    kp = np.zeros((1, K, 3), np.float32)
    kp[0, 0] = (32, 32, 1)
    out = draw_poses(img, kp, COCO, gt=True)
    ring = out[26:39, 26:39].any(axis=2)
    assert ring.any() and not out[32, 32].any()  # a ring around an empty centre
    kp[0, 0, 2] = 2
    assert draw_poses(img, kp, COCO, gt=True)[32, 32].any()  # visible joints are filled


def test_poses_object_and_scores():
    img = np.zeros((96, 96, 3), np.uint8)
    kp = _pose(0.9)
    poses = Poses(kp, np.array([0.75], np.float32), COCO)
    a = draw_poses(img, poses, COCO)
    b = draw_poses(img, kp, COCO)
    assert not np.array_equal(a, b)  # the score text is drawn only with scores
    assert np.array_equal(draw_poses(img, Poses.empty(), COCO), img)


def test_bad_shapes():
    with pytest.raises(LogocapError):
        draw_poses(np.zeros((8, 8), np.uint8), _pose(), COCO)
    with pytest.raises(LogocapError):
        draw_poses(np.zeros((8, 8, 3), np.uint8), np.zeros((1, 5, 3)), COCO)


def test_contact_sheet_and_save(tmp_path):
    ims = [np.full((20, 30, 3), i * 40, np.uint8) for i in range(5)]
    sheet = contact_sheet(ims, cols=2, pad=2)
    assert sheet.shape == (3 * 20 + 4 * 2, 2 * 30 + 3 * 2, 3)
    assert np.all(sheet[2 + 22, 2 + 32] == 120)  # image 3: second row, second column
    save_image(tmp_path / "s.png", sheet)
    back = cv2.cvtColor(cv2.imread(str(tmp_path / "s.png")), cv2.COLOR_BGR2RGB)
    assert np.array_equal(back, sheet)
    with pytest.raises(LogocapError):
        save_image(tmp_path / "s.gif", sheet)
    with pytest.raises(LogocapError):
        contact_sheet([])
