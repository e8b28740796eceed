"""Synthetic benchmark: determinism, COCO validity, occlusion flags, crowd overlap, bad input, CLI."""
import json
import subprocess
import sys

import numpy as np
import pytest
from pycocotools.coco import COCO as CocoApi

from logocap.data import synthetic as S
from logocap.meta import COCO
from logocap.utils import LogocapError


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("syn") / "ds"
    stats = S.generate_synthetic(out, "default", num_train=6, num_val=3, size=96, seed=3,
                                 preview=True, progress=False)
    return out, stats


def test_layout_and_stats(dataset):
    out, stats = dataset
    for split, n in (("train", 6), ("val", 3)):
        assert (out / "annotations" / f"person_keypoints_{split}.json").is_file()
        assert len(list((out / "images" / split).iterdir())) == n
        assert (out / f"preview_{split}.png").is_file()
        assert stats[split]["images"] == n
    saved = json.loads((out / "stats.json").read_text())
    assert saved["train"] == stats["train"]
    assert stats["images_per_second"] > 0
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temp leftovers


def test_coco_json_valid(dataset):
    out, _ = dataset
    ann_file = out / "annotations" / "person_keypoints_train.json"
    coco = CocoApi(str(ann_file))
    data = json.loads(ann_file.read_text())
    assert data["categories"] == [COCO.coco_category()]
    assert len(coco.getImgIds()) == 6
    anns = data["annotations"]
    assert anns, "expected people in 6 default-preset images"
    assert len({a["id"] for a in anns}) == len(anns)
    for a in anns:
        assert a["iscrowd"] == 0 and a["category_id"] == 1 and a["area"] > 0
        kp = np.array(a["keypoints"], np.float64).reshape(COCO.num_keypoints, 3)
        assert set(np.unique(kp[:, 2])) <= {0, 1, 2}
        assert np.all(kp[kp[:, 2] == 0, :2] == 0)
        assert a["num_keypoints"] == int((kp[:, 2] > 0).sum())
        m = coco.annToMask(a)
        assert int(m.sum()) == a["area"]
        ys, xs = np.nonzero(m)
        x, y, w, h = a["bbox"]
        assert (x, y, x + w - 1, y + h - 1) == (xs.min(), ys.min(), xs.max(), ys.max())
        lab = kp[kp[:, 2] > 0]
        assert np.all((lab[:, :2] >= -0.5) & (lab[:, :2] < 96))
        if a["num_keypoints"] == 0:
            continue
        assert a["area"] >= S.MIN_AREA


def test_deterministic(tmp_path):
    a = S.generate_synthetic(tmp_path / "a", "crowd", 3, 1, size=64, seed=7, progress=False)
    b = S.generate_synthetic(tmp_path / "b", "crowd", 3, 1, size=64, seed=7, progress=False)
    c = S.generate_synthetic(tmp_path / "c", "crowd", 3, 1, size=64, seed=8, progress=False)
    rel = "annotations/person_keypoints_train.json"
    assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()
    assert (tmp_path / "a" / rel).read_bytes() != (tmp_path / "c" / rel).read_bytes()
    assert (tmp_path / "a/images/train/000002.jpg").read_bytes() == \
        (tmp_path / "b/images/train/000002.jpg").read_bytes()
    assert a["train"] == b["train"]
    img1, ann1 = S.render_image(S.image_rng(1, "val", 4), 64, "easy")
    img2, ann2 = S.render_image(S.image_rng(1, "val", 4), 64, "easy")
    assert np.array_equal(img1, img2) and ann1 == ann2


def test_front_person_occludes_back_person():
    rng = np.random.default_rng(0)
    back = S.sample_person(rng, 60, (50, 64), lying_p=0.0, yaw=0.0)
    front = S.sample_person(rng, 60, (70, 64), lying_p=0.0, yaw=0.0)
    _, label, kp = S.render_people(128, [back, front])
    front_mask = (label.astype(int) - 1) // S.SLOTS == 1
    labelled = kp[0, :, 2] > 0
    xi, yi = np.round(back.joints).astype(int).T
    covered = labelled & front_mask[np.clip(yi, 0, 127), np.clip(xi, 0, 127)]
    assert covered.any(), "the test scene should hide some joints of the back person"
    assert np.all(kp[0, covered, 2] == 1)
    # alone, the same person shows those joints
    _, _, kp_alone = S.render_people(128, [back])
    assert np.all(kp_alone[0, covered, 2] == 2)
    # the front person is never covered by the one behind
    assert (kp[1, :, 2] == 2).sum() >= (kp_alone[0, :, 2] == 2).sum() - 4


def test_outside_joints_unlabelled():
    rng = np.random.default_rng(1)
    p = S.sample_person(rng, 80, (-5, 40), lying_p=0.0, yaw=0.0)  # pelvis on the left border
    _, _, kp = S.render_people(96, [p])
    outside = p.joints[:, 0] < -0.5
    assert outside.any()
    assert np.all(kp[0, outside] == 0)


def test_back_of_head_hides_face():
    p = S.sample_person(np.random.default_rng(2), 80, (48, 48), lying_p=0.0, yaw=np.pi)
    names = COCO.keypoint_names
    for n in ("nose",):
        assert not p.labelled[names.index(n)]


def test_crowd_has_high_iou_pairs():
    imgs = 8
    with_pair = 0
    for i in range(imgs):
        _, anns = S.render_image(S.image_rng(0, "train", i), 96, "crowd")
        boxes = [a["bbox"] for a in anns]
        with_pair += bool((S.box_iou_pairs(boxes) > 0.5).any())
    assert with_pair >= imgs - 1


def test_box_iou_pairs():
    iou = S.box_iou_pairs([[0, 0, 10, 10], [5, 0, 10, 10], [100, 100, 1, 1]])
    assert np.allclose(iou, [50 / 150, 0, 0])


@pytest.mark.parametrize("kw, msg", [
    (dict(preset="nope"), "unknown preset"),
    (dict(size=32), ">= 64"),
    (dict(num_train=-1), "non-negative"),
    (dict(num_train=0, num_val=0), "nothing to generate"),
    (dict(ext="gif"), "jpg or png"),
])
def test_bad_args(tmp_path, kw, msg):
    args = dict(preset="easy", num_train=1, num_val=1, size=64, progress=False)
    args.update(kw)
    with pytest.raises(LogocapError, match=msg):
        S.generate_synthetic(tmp_path / "out", **args)
    assert not (tmp_path / "out").exists()


def test_non_empty_out_dir(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(LogocapError, match="not empty"):
        S.generate_synthetic(out, "easy", 1, 0, size=64, progress=False)
    assert (out / "keep.txt").exists()
    S.generate_synthetic(out, "easy", 1, 0, size=64, progress=False, overwrite=True)
    assert not (out / "keep.txt").exists() and (out / "images/train/000000.jpg").is_file()


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "logocap.cli", "synth", *args],
                          capture_output=True, text=True, timeout=60)


def test_cli(tmp_path):
    r = _cli("--out", str(tmp_path / "d"), "--preset", "easy", "--train", "2", "--val", "1",
             "--size", "64", "--quiet")
    assert r.returncode == 0, r.stderr
    assert "images/s" in r.stdout
    assert (tmp_path / "d/annotations/person_keypoints_val.json").is_file()
    r = _cli("--out", str(tmp_path / "e"), "--preset", "huge", "--train", "1")
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "unknown preset" in r.stderr
    assert not (tmp_path / "e").exists()
