"""Kpt.Error (evaluation.keypoint_error) on hand-made predictions with known errors."""
import json

import numpy as np
import pytest

from fixtures import make_coco_fixture
from logocap.evaluation import format_keypoint_error, keypoint_error
from logocap.meta import COCO, CROWDPOSE


def _people(ann):
    data = json.loads(ann.read_text())
    k = len(data["categories"][0]["keypoints"])
    return data, [(a["image_id"], np.asarray(a["keypoints"], float).reshape(k, 3))
                  for a in data["annotations"] if a.get("num_keypoints", 0) > 0 and not a["iscrowd"]]


def _record(image_id, xy, score, cat=1):
    kp = np.concatenate([xy, np.ones((len(xy), 1))], 1)
    return {"image_id": image_id, "category_id": cat, "keypoints": kp.ravel().tolist(), "score": score}


def test_known_errors_matching_and_invisible_joints(tmp_path):
    ann, _ = make_coco_fixture(tmp_path, num_images=3, size=(96, 128), people=2)
    data, people = _people(ann)
    k = COCO.num_keypoints
    results, expect = [], []
    for n, (iid, kp) in enumerate(people):
        shift = np.zeros((k, 2))
        shift[:, 0] = 0.3 * (n + 1)  # person n: every joint off by 0.3 (n + 1) px in x
        shift[3] = [0.6, 0.8]  # joint 3 (left ear): off by exactly 1 px
        # invisible joints are parked far away: they must not count
        xy = np.where(kp[:, 2:] > 0, kp[:, :2] + shift, kp[:, :2] + 500)
        results.append(_record(iid, xy, 0.9))
        vis = kp[:, 2] > 0
        expect.append((np.linalg.norm(shift, axis=1), vis))
    # a lower-scored duplicate of person 0 with a big error: COCOeval's matching gives person 0
    # to the higher-scored prediction, the duplicate stays unmatched and does not count
    iid0, kp0 = people[0]
    results.append(_record(iid0, kp0[:, :2] + 4.0, 0.2))
    # a prediction far from anyone (OKS < 0.5): unmatched
    results.append(_record(iid0, kp0[:, :2] * 0 + 1.0, 0.95))
    err = keypoint_error(results, str(ann))
    d = np.concatenate([e for e, _ in expect])
    v = np.concatenate([m for _, m in expect])
    assert err["matched_people"] == len(people) == err["gt_people"]
    assert err["joints"] == int(v.sum())
    assert err["mean_px"] == pytest.approx(float(d[v].mean()), abs=1e-3)  # json keeps 3 decimals
    per3 = err["per_joint_px"]["left_ear"]
    assert per3 == pytest.approx(1.0, abs=1e-3)
    j0 = np.array([e[0] for e, m in expect if m[0]])
    assert err["per_joint_px"]["nose"] == pytest.approx(float(j0.mean()), abs=1e-3)
    assert "Kpt.Error" in format_keypoint_error(err) and "\n" not in format_keypoint_error(err)


def test_unmatched_and_empty(tmp_path):
    ann, _ = make_coco_fixture(tmp_path, num_images=2, size=(96, 128))
    data, people = _people(ann)
    err = keypoint_error([], str(ann))
    assert err["mean_px"] is None and err["matched_people"] == 0 and err["gt_people"] == len(people)
    assert all(v is None for v in err["per_joint_px"].values())
    assert "undefined" in format_keypoint_error(err)
    iid, kp = people[0]  # a single prediction far off: OKS < 0.5, nothing matched
    err = keypoint_error([_record(iid, kp[:, :2] + 60.0, 0.9)], str(ann))
    assert err["mean_px"] is None and err["joints"] == 0
    # restricted to one image: only that image's people count
    err = keypoint_error([_record(iid, kp[:, :2], 0.9)], str(ann), img_ids=[iid])
    assert err["gt_people"] == sum(1 for i, _ in people if i == iid)
    assert err["mean_px"] == pytest.approx(0, abs=1e-3)


def test_crowdpose_protocol(tmp_path):
    pytest.importorskip("xtcocotools")
    ann, _ = make_coco_fixture(tmp_path, num_images=2, size=(96, 128), meta=CROWDPOSE)
    data, people = _people(ann)
    results = [_record(iid, kp[:, :2] + [3.0, 4.0], 0.9, CROWDPOSE.category_id) for iid, kp in people]
    err = keypoint_error(results, str(ann))
    assert err["matched_people"] == len(people) and err["mean_px"] == pytest.approx(5.0, abs=1e-3)
    assert set(err["per_joint_px"]) == set(CROWDPOSE.keypoint_names)
