"""CocoPoseDataset on the tiny fixture: sample layout, ids, ignore mask, flips, bad inputs."""
import json

import numpy as np
import pytest
import torch

from fixtures import CROWD_BOX, NOKPT_BOX, make_coco_fixture
from logocap.codecs.targets import decode_targets
from logocap.data.coco import CocoPoseDataset, collate_train, collate_val
from logocap.data.transforms import affine_scale, apply_affine
from logocap.meta import COCO, CROWDPOSE
from logocap.utils import LogocapError

S = 64
NO_AUG = dict(max_rotation=0, min_scale=1.0, max_scale=1.0, max_translate=0, flip_prob=0.0)


@pytest.fixture()
def coco_fixture(tmp_path):
    return make_coco_fixture(tmp_path, num_images=3, num_empty=1)


def _json(ann_file):
    return json.loads(ann_file.read_text())


def test_train_samples_layout_and_collate(coco_fixture):
    ds = CocoPoseDataset(*coco_fixture, input_size=S)
    K = ds.meta.num_keypoints
    assert ds.meta is COCO and K == 17
    # ids come from the json (file names are "scene-a.jpg" ...); the empty image is dropped
    assert ds.image_ids == [1000, 1007, 1014]
    s = ds[0]
    shapes = {"image": (3, S, S), "heatmaps": (K + 1, S // 4, S // 4),
              "heatmap_weights": (1, S // 4, S // 4), "offsets": (2 * K, S // 4, S // 4),
              "offset_weights": (2 * K, S // 4, S // 4), "affine": (2, 3)}
    for k, shape in shapes.items():
        assert tuple(s[k].shape) == shape, k
        assert s[k].dtype == (torch.float64 if k == "affine" else torch.float32), k
    assert s["gt_keypoints"].shape[1:] == (K, 3) and s["gt_areas"].shape == s["gt_keypoints"].shape[:1]
    assert s["image_id"] == 1000 and s["heatmaps"].max() <= 1.0

    loader = torch.utils.data.DataLoader(ds, batch_size=3, collate_fn=collate_train)
    b = next(iter(loader))
    m = max(ds[i]["gt_keypoints"].shape[0] for i in range(3))
    assert b["image"].shape == (3, 3, S, S) and b["heatmaps"].shape == (3, K + 1, S // 4, S // 4)
    assert b["gt_keypoints"].shape == (3, m, K, 3) and b["gt_areas"].shape == (3, m)
    assert b["gt_mask"].dtype == torch.bool and b["gt_mask"].sum() == sum(
        ds[i]["gt_keypoints"].shape[0] for i in range(3))
    assert b["image_id"] == [1000, 1007, 1014]


def test_gt_keypoints_and_areas_follow_the_affine(coco_fixture):
    ann_file, _ = coco_fixture
    anns = [a for a in _json(ann_file)["annotations"] if a["image_id"] == 1000 and not a["iscrowd"]
            and a["num_keypoints"] > 0]
    for flip in (0.0, 1.0):
        ds = CocoPoseDataset(*coco_fixture, input_size=S, **{**NO_AUG, "flip_prob": flip})
        s = ds[0]
        assert s["flipped"] == bool(flip)
        M = s["affine"].numpy()
        gt = np.stack([np.asarray(a["keypoints"], float).reshape(-1, 3) for a in anns])
        want = apply_affine(gt[..., :2], M)
        if flip:
            gt, want = gt[:, list(COCO.flip_index)], want[:, list(COCO.flip_index)]
        vis = gt[..., 2] > 0
        got = s["gt_keypoints"].numpy()
        np.testing.assert_array_equal(got[..., 2] > 0, vis)
        np.testing.assert_allclose(got[vis][:, :2], want[vis], atol=1e-3)
        np.testing.assert_allclose(s["gt_areas"].numpy(),
                                   [a["area"] * affine_scale(M) ** 2 for a in anns], rtol=1e-5)


def test_ignore_mask_covers_crowd_and_unlabelled_people(coco_fixture):
    ds = CocoPoseDataset(*coco_fixture, input_size=S, **NO_AUG)
    s = ds[0]
    wt = s["heatmap_weights"][0].numpy()
    M_out = s["affine"].numpy() / 4
    h, w = 96, 128

    def weight_at(frac_box):  # weight at the output pixel over the box centre
        x0, y0, x1, y1 = frac_box
        x, y = apply_affine([(x0 + x1) / 2 * w, (y0 + y1) / 2 * h], M_out).round().astype(int)
        return wt[y, x]

    assert weight_at(CROWD_BOX) == 0  # crowd region (RLE)
    assert weight_at(NOKPT_BOX) == 0  # person with num_keypoints 0 (polygon)
    assert (wt > 0).mean() > 0.5  # most of the map is used
    # zooming out shows the outside of the image: ignored, as in the official code
    s2 = CocoPoseDataset(*coco_fixture, input_size=S, **{**NO_AUG, "min_scale": 0.5,
                                                         "max_scale": 0.5})[2]
    assert s2["heatmap_weights"][0, 0, 0] == 0 and s2["heatmap_weights"][0, 8, 8] > 0
    # image 1: a num_keypoints-0 person without segmentation -> its bbox (2, 2, 10 x 12) is used
    s1 = CocoPoseDataset(*coco_fixture, input_size=S, **{**NO_AUG, "min_scale": 0.5,
                                                         "max_scale": 0.5})[1]
    M1 = s1["affine"].numpy() / 4
    (bx, by), (ox, oy) = apply_affine(np.array([[7.0, 8.0], [40.0, 30.0]]), M1).round().astype(int)
    assert s1["heatmap_weights"][0, by, bx] == 0 and s1["heatmap_weights"][0, oy, ox] > 0


def test_targets_decode_to_the_gt_keypoints(coco_fixture):
    ds = CocoPoseDataset(*coco_fixture, input_size=128, min_center_area=0, seed=3)
    found = 0
    for i in range(len(ds)):
        s = ds[i]
        gt = s["gt_keypoints"].numpy() / np.array([4, 4, 1])
        for person in decode_targets(s["heatmaps"].numpy(), s["offsets"].numpy(),
                                     s["offset_weights"].numpy()):
            lab = person["keypoints"][:, 2] > 0
            if not lab.any():  # a centre without joints: the num_keypoints-0 person's box centre
                continue
            # joint-wise: where centres are < 4 px apart the smaller person owns the pixels
            err = np.abs(person["keypoints"][None, :, :2] - gt[:, :, :2]).max(-1).min(0)
            assert err[lab].max() < 1e-3
            found += 1
    assert found >= 3


def test_augmentation_is_reproducible_per_epoch(coco_fixture):
    ds = CocoPoseDataset(*coco_fixture, input_size=S, seed=5)
    a, b = ds[1], ds[1]
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["affine"], b["affine"])
    ds.set_epoch(1)
    assert not torch.equal(ds[1]["affine"], a["affine"])
    ds2 = CocoPoseDataset(*coco_fixture, input_size=S, seed=5)
    ds2.set_epoch(1)
    assert torch.equal(ds2[1]["heatmaps"], ds[1]["heatmaps"])


def test_val_samples_and_collate(coco_fixture):
    ds = CocoPoseDataset(*coco_fixture, mode="val", input_size=S)
    assert ds.image_ids == [1000, 1007, 1014, 1021]  # validation keeps the empty image
    s = ds[3]
    assert s["image"].shape == (3, S, 128) and s["affine"].dtype == torch.float64
    assert s["orig_size"] == (96, 128) and s["image_id"] == 1021
    b = collate_val([ds[0], ds[3]])
    assert b["image"].shape == (2, 3, S, 128) and b["affine"].shape == (2, 2, 3)
    assert b["image_id"] == [1000, 1021] and b["orig_size"] == [(96, 128), (96, 128)]
    anns = ds.gt_annotations(1000)
    assert {a["iscrowd"] for a in anns} == {0, 1} and ds.coco.imgs[1000]["file_name"] == "scene-a.jpg"


def test_crowdpose_json_loads(tmp_path):
    ann_file, image_dir = make_coco_fixture(tmp_path, num_images=2, meta=CROWDPOSE)
    assert "crowdIndex" in _json(ann_file)["images"][0]
    ds = CocoPoseDataset(ann_file, image_dir, input_size=S)
    assert ds.meta is CROWDPOSE
    s = ds[0]
    assert s["heatmaps"].shape[0] == 15 and s["offsets"].shape[0] == 28
    assert s["gt_keypoints"].shape[1] == 14


def _write(path, data):
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def test_bad_annotation_files(coco_fixture, tmp_path):
    ann_file, image_dir = coco_fixture
    good = _json(ann_file)
    with pytest.raises(LogocapError, match="not found"):
        CocoPoseDataset(tmp_path / "nope.json", image_dir)
    with pytest.raises(LogocapError, match="not valid JSON"):
        CocoPoseDataset(_write(tmp_path / "a.json", "{broken"), image_dir)
    with pytest.raises(LogocapError, match="'annotations'"):
        CocoPoseDataset(_write(tmp_path / "b.json", {k: v for k, v in good.items()
                                                     if k != "annotations"}), image_dir)
    no_kpts = {**good, "categories": [{"id": 1, "name": "person"}]}
    with pytest.raises(LogocapError, match="keypoints"):
        CocoPoseDataset(_write(tmp_path / "c.json", no_kpts), image_dir)
    short = json.loads(json.dumps(good))
    short["annotations"][0]["keypoints"] = short["annotations"][0]["keypoints"][:-3]
    with pytest.raises(LogocapError, match="keypoint values"):
        CocoPoseDataset(_write(tmp_path / "d.json", short), image_dir)
    with pytest.raises(LogocapError, match="14 keypoints"):
        CocoPoseDataset(ann_file, image_dir, meta=CROWDPOSE)
    with pytest.raises(LogocapError, match="multiple of 32"):
        CocoPoseDataset(ann_file, image_dir, input_size=100)
    with pytest.raises(LogocapError, match="image folder"):
        CocoPoseDataset(ann_file, tmp_path / "no_images")


def test_missing_and_corrupt_images(coco_fixture):
    ann_file, image_dir = coco_fixture
    (image_dir / "scene-b.jpg").unlink()
    (image_dir / "scene-c.jpg").write_bytes(b"garbage")
    ds = CocoPoseDataset(ann_file, image_dir, input_size=S)
    bad = dict((p.rsplit("/", 1)[-1], why) for p, why in ds.check_images())
    assert bad == {"scene-b.jpg": "missing", "scene-c.jpg": "not a readable image"}
    # mid-epoch, an unreadable file is replaced by the next readable image (index order) and named
    s = ds[1]
    assert s["image_id"] == ds.image_ids[0]
    assert [m.rsplit("/", 1)[-1] for m in s["skipped_images"]] == ["scene-b.jpg", "scene-c.jpg"]
    assert ds[2]["image_id"] == ds.image_ids[0] and ds[0]["skipped_images"] == []
    (image_dir / "scene-a.jpg").write_bytes(b"\xff\xd8\xff\xe0 broken body")  # none readable left
    with pytest.raises(LogocapError, match="3 training images in a row cannot be read"):
        ds[0]


def test_image_and_keypoints_stay_aligned_under_augmentation(coco_fixture):
    """The fixture paints every labelled joint (green channel >= 128, background <= 120): after
    rotation, zoom and flip the warped image must still show paint under each gt keypoint."""
    ds = CocoPoseDataset(*coco_fixture, input_size=128, min_scale=1.2, max_scale=1.5, seed=1)
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    hits, flips = [], set()
    for epoch in range(3):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            s = ds[i]
            flips.add(s["flipped"])
            green = (s["image"][1] * std[1] + mean[1]) * 255
            kp = s["gt_keypoints"].numpy()
            x, y = np.round(kp[..., 0]).astype(int), np.round(kp[..., 1]).astype(int)
            ok = (kp[..., 2] > 0) & (x >= 0) & (y >= 0) & (x < 128) & (y < 128)
            hits += list(green[y[ok], x[ok]].numpy() > 124)
    assert flips == {True, False} and len(hits) > 50
    assert np.mean(hits) > 0.9
