"""The whole coordinate path on a synthetic split: ground truth -> dataset test resize -> inverse
-> results json -> official COCOeval scores AP 1, and jitter lowers AP monotonically."""
import numpy as np
import pytest

from logocap.data.coco import CocoPoseDataset
from logocap.data.synthetic import generate_synthetic
from logocap.evaluation import evaluate_predictions, ground_truth_poses


@pytest.fixture(scope="module")
def synthetic_val(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    generate_synthetic(root / "d", preset="default", num_train=1, num_val=10, size=128, seed=3,
                       progress=False)
    # input 96 != 128: the test resize really scales, so the inverse is exercised
    return CocoPoseDataset(str(root / "d/annotations/person_keypoints_val.json"),
                           str(root / "d/images/val"), mode="val", input_size=96)


def test_ground_truth_scores_ap_one(synthetic_val, tmp_path):
    ds = synthetic_val
    assert sum(len(ds.gt_annotations(i)) for i in ds.image_ids) > 10
    m = evaluate_predictions(ground_truth_poses(ds), ds.coco, meta=ds.meta, out_dir=tmp_path,
                             verbose=False)
    for k in ("AP", "AP50", "AP75", "AR"):
        assert m[k] == pytest.approx(1.0, abs=1e-6), (k, m)
    assert (tmp_path / "results.json").is_file()


def test_the_affine_is_the_datasets(synthetic_val):
    ds = synthetic_val
    s = ds[0]
    M = s["affine"].numpy() if hasattr(s["affine"], "numpy") else np.asarray(s["affine"])
    assert np.allclose(M[:, :2], np.eye(2) * 96 / 128)


def test_jitter_lowers_ap_monotonically(synthetic_val):
    ds = synthetic_val
    aps = [evaluate_predictions(ground_truth_poses(ds, jitter=j), ds.coco, meta=ds.meta,
                                verbose=False)["AP"] for j in (0.0, 1.0, 2.0, 4.0, 8.0)]
    assert aps[0] == pytest.approx(1.0, abs=1e-6)
    assert all(a > b for a, b in zip(aps, aps[1:])), aps
