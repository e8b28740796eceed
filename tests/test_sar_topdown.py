"""Top-down SAR: crop geometry round trip, crop sampling, hard-argmax decoding, flip test,
predictor (known answers, batching, mirror equivariance), boxes files, training crops."""
import json

import numpy as np
import pytest
import torch

from fixtures import make_coco_fixture, train_steps
from logocap.codecs.topdown import (box_to_crop, crop_affines, crop_images, crop_size,
                                    crop_to_original, invert_affines, sar_decode, sar_flip_fuse)
from logocap.data.transforms import apply_affine
from logocap.meta import COCO, CROWDPOSE
from logocap.models import create_model
from logocap.topdown import (TopDownPredictor, check_topdown_boxes, gt_boxes, image_ids_for_files,
                             load_boxes)
from logocap.utils import LogocapError


def test_box_to_crop_aspect_and_padding():
    c, s = box_to_crop([[10, 20, 30, 80], [0, 0, 90, 40]])
    assert np.allclose(c, [[25, 60], [45, 20]])
    assert np.allclose(s, [[60 * 1.25, 80 * 1.25], [90 * 1.25, 120 * 1.25]])  # 3:4 then x1.25
    assert crop_size(256) == (256, 192) and crop_size(384) == (384, 288)
    assert crop_size(128) == (128, 96)
    with pytest.raises(LogocapError, match="multiple of 128"):
        crop_size(320)  # 240 px wide: not a multiple of 32


def test_crop_round_trip_is_exact():
    """GT keypoints -> crop px -> back to the original image: the same points within 1e-4 px,
    with and without rotation / flip / off-aspect regions."""
    rng = np.random.default_rng(0)
    n, k = 6, 17
    boxes = np.c_[rng.uniform(-50, 600, (n, 2)), rng.uniform(5, 300, (n, 2))]
    centres, sizes = box_to_crop(boxes)
    pts = centres[:, None, :] + rng.uniform(-0.6, 0.6, (n, k, 2)) * sizes[:, None, :]
    for kw in ({}, {"rotation": rng.uniform(-40, 40, n), "flip": rng.random(n) < 0.5}):
        m = crop_affines(centres, sizes * rng.uniform(0.7, 1.3, (n, 1)), (256, 192), **kw)
        crop_px = np.stack([apply_affine(pts[i], m[i]) for i in range(n)])
        back = crop_to_original(torch.as_tensor(crop_px), m).numpy()
        assert np.abs(back - pts).max() < 1e-4
    # the box centre lands on the crop centre, the padded region spans the crop
    m = crop_affines(centres, sizes, (256, 192))
    assert np.allclose(np.einsum("nij,nj->ni", m[:, :, :2], centres) + m[:, :, 2], [95.5, 127.5])
    assert np.allclose(m[:, 0, 0] * sizes[:, 0], 192) and np.allclose(m[:, 1, 1] * sizes[:, 1], 256)
    assert np.allclose(np.einsum("nij,njk->nik", invert_affines(m)[:, :, :2], m[:, :, :2]), np.eye(2))


def test_crop_images_samples_the_right_pixels():
    h, w = 70, 90
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    ramp = torch.from_numpy(np.stack([xs, 2 * ys, xs + ys]))  # linear: bilinear sampling is exact
    centres = np.array([[40.0, 30.0], [20.3, 41.7]])
    sizes = np.array([[30.0, 40.0], [21.0, 28.0]])
    m = crop_affines(centres, sizes, (64, 48), rotation=np.array([0.0, 25.0]))
    crops = crop_images(ramp, m, (64, 48))
    assert crops.shape == (2, 3, 64, 48)
    inv = invert_affines(m)
    v, u = np.mgrid[0:64, 0:48]
    for i in range(2):
        src = apply_affine(np.stack([u, v], -1).astype(np.float64), inv[i])
        inside = (src[..., 0] >= 0) & (src[..., 0] <= w - 1) & (src[..., 1] >= 0) & (src[..., 1] <= h - 1)
        expect = np.stack([src[..., 0], 2 * src[..., 1], src.sum(-1)])
        assert inside.sum() > 1000
        assert np.abs(crops[i].numpy() - expect)[:, inside].max() < 2e-3
    # outside the image: zeros (as warp_image's border)
    far = crop_affines([[-500.0, -500.0]], [[30.0, 40.0]], (64, 48))
    assert float(crop_images(ramp, far, (64, 48)).abs().max()) == 0.0


def test_sar_decode_hard_argmax_and_normalised_score():
    n, k, h, w = 2, 3, 8, 6
    sel = torch.full((n, k, h, w), -6.0)
    off = torch.zeros(n, 2 * k, h, w)
    cells = [(2, 1), (7, 5), (0, 0)]  # (y, x) per joint
    for j, (y, x) in enumerate(cells):
        sel[:, j, y, x] = 3.0
        off[:, 2 * j, y, x] = 0.25 * (j + 1)
        off[:, 2 * j + 1, y, x] = -0.5
    coords, scores = sar_decode(sel, off, stride=4)
    for j, (y, x) in enumerate(cells):
        assert torch.allclose(coords[:, j], torch.tensor([(x - 0.25 * (j + 1)) * 4, (y + 0.5) * 4]))
    c = torch.sigmoid(torch.tensor([3.0, -6.0]))
    expect = c[0] / (c[0] + (h * w - 1) * c[1])  # the NORMALISED weight of the argmax cell
    assert torch.allclose(scores, expect.expand(n, k))


def test_flip_fuse_mirrors_back_with_one_pixel_shift():
    """The mirrored crop's decoding, mirrored back (x -> W - 1 - x, joints swapped), equals the
    plain one; in map-normalised units this is the released 1 - x - 1 / (stride W)."""
    g = torch.Generator().manual_seed(0)
    k, crop_w = COCO.num_keypoints, 192
    coords = torch.rand(4, k, 2, generator=g) * torch.tensor([191.0, 255.0])
    scores = torch.rand(4, k, generator=g)
    fi = torch.as_tensor(COCO.flip_index)
    cflip = coords[:, fi].clone()
    cflip[..., 0] = crop_w - 1 - cflip[..., 0]
    fused, fs = sar_flip_fuse(coords, scores, cflip, scores[:, fi], COCO.flip_index, crop_w)
    assert torch.allclose(fused, coords, atol=1e-4) and torch.allclose(fs, scores)
    x_n = cflip[..., 0] / crop_w  # the released normalised form gives the same mirror
    released = (1 - x_n - 1 / crop_w) * crop_w
    assert torch.allclose(released[:, fi], coords[..., 0], atol=1e-4)


class _CentreModel(torch.nn.Module):
    """Every joint at the crop centre, chosen at one cell with a known normalised weight."""
    stride, topdown, num_keypoints = 4, True, COCO.num_keypoints

    def __init__(self):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(1))
        self.input_hw = (128, 96)

    def forward(self, x):
        n, _, hi, wi = x.shape
        h, w, k = hi // 4, wi // 4, self.num_keypoints
        sel = torch.full((n, k, h, w), -5.0) + self.dummy
        sel[:, :, h // 2, w // 2] = 2.0
        off = torch.zeros(n, 2 * k, h, w)
        off[:, 0::2, h // 2, w // 2] = w // 2 - (wi - 1) / 2 / 4  # location - joint, map px
        off[:, 1::2, h // 2, w // 2] = h // 2 - (hi - 1) / 2 / 4
        return {"selector": sel, "offsets": off, "aux_heatmaps": None}


def test_predictor_known_answer_boxes_chunks_and_outside():
    img = np.zeros((120, 160, 3), np.uint8)
    boxes = np.array([[10, 10, 30, 60], [100, 20, 50, 40], [170, 10, 20, 20], [5, 50, 80, 30],
                      [-40, -40, 30, 30]], np.float64)  # the last two: outside the image
    boxes[3] = [5, 50, 80, 30]
    scores = np.array([0.9, 0.5, 0.7, 0.3, 0.8])
    c = torch.sigmoid(torch.tensor([2.0, -5.0]))
    w = float(c[0] / (c[0] + (32 * 24 - 1) * c[1]))
    for batch in (1, 2, 16):
        pred = TopDownPredictor(_CentreModel(), COCO, None, {"flip": True}, batch=batch)
        poses = pred.predict(img, boxes, scores, image_id=7)
        assert pred.last_skipped == 2 and len(poses) == 3 and poses.image_id == 7
        centres = boxes[[0, 1, 3], :2] + boxes[[0, 1, 3], 2:] / 2
        order = np.argsort(-scores[[0, 1, 3]])
        assert np.abs(poses.keypoints[..., :2] - centres[order][:, None]).max() < 1e-3
        assert np.allclose(poses.keypoints[..., 2], w, rtol=1e-5)
        assert np.allclose(poses.scores, scores[[0, 1, 3]][order] * w, rtol=1e-5)  # box x mean kpt
    with pytest.raises(LogocapError, match="not a box"):
        pred.predict(img, [[0, 0, 0, 10]])
    with pytest.raises(LogocapError, match="predicts 17 keypoints but the keypoint set 'crowdpose'"):
        TopDownPredictor(_CentreModel(), CROWDPOSE)
    empty = pred.predict(img, np.zeros((0, 4)))
    assert len(empty) == 0 and empty.keypoints.shape == (0, 17, 3)


def test_predictor_batch_equals_single_and_is_mirror_equivariant():
    torch.manual_seed(0)
    model = create_model("sar_hrnet_tiny_topdown")
    img = np.random.default_rng(1).integers(0, 255, (100, 140, 3), dtype=np.uint8)
    boxes = np.array([[10.0, 5.0, 40.0, 80.0], [60.5, 20.25, 70.0, 60.0], [100.0, 30.0, 30.0, 50.0]])
    pred = TopDownPredictor(model, COCO, 128, {"flip": True}, batch=8)
    together = pred.predict(img, boxes, [0.9, 0.8, 0.7])
    single = [pred.predict(img, b[None], [s]) for b, s in zip(boxes, [0.9, 0.8, 0.7])]
    for i in range(3):
        assert np.abs(together.keypoints[i] - single[i].keypoints[0]).max() < 1e-3
    # flip test: predicting the mirrored image from mirrored boxes gives the mirrored poses
    W = img.shape[1]
    mboxes = boxes.copy()
    mboxes[:, 0] = W - 1 - boxes[:, 0] - boxes[:, 2]
    mirrored = pred.predict(img[:, ::-1], mboxes, [0.9, 0.8, 0.7])
    expect = together.keypoints[:, list(COCO.flip_index)].copy()
    expect[..., 0] = W - 1 - expect[..., 0]
    assert np.abs(mirrored.keypoints - expect).max() < 1e-2


def test_boxes_file_checks(tmp_path):
    p = tmp_path / "boxes.json"
    p.write_text(json.dumps([
        {"image_id": 1, "bbox": [1, 2, 30, 40], "score": 0.9, "category_id": 1},
        {"image_id": 1, "bbox": [5, 5, 0, 40], "score": 0.8},
        {"image_id": 2, "bbox": [5, 5, 10, float("nan")], "score": 0.8},
        {"image_id": 2, "bbox": [5, 5, 10, 10], "score": 0.5, "category_id": 3},  # not a person
        {"image_id": 3, "bbox": [5, 5], "score": 0.5},
        {"image_id": 3, "bbox": [5, 5, -3, 4]},
    ]))
    with pytest.raises(LogocapError) as e:
        load_boxes(p)
    msg = str(e.value)
    assert "4 unusable entries" in msg and "#1 (image_id 1): zero or negative size" in msg
    assert "#2 (image_id 2): NaN" in msg and "#4" in msg and "#5" in msg and "\n" not in msg
    p.write_text(json.dumps([{"image_id": 1, "bbox": [1, 2, 30, 40], "score": 0.9},
                             {"image_id": 1, "bbox": [3, 2, 10, 20]},
                             {"image_id": 9, "bbox": [3, 2, 10, 20], "score": 0.1}]))
    boxes = load_boxes(p)
    assert np.allclose(boxes[1][0], [[1, 2, 30, 40], [3, 2, 10, 20]])
    assert np.allclose(boxes[1][1], [0.9, 1.0])  # a missing score counts as 1
    assert check_topdown_boxes(boxes, [1, 2]) == [9]
    with pytest.raises(LogocapError, match="no box belongs to the input images"):
        check_topdown_boxes(boxes, [4, 5])
    p.write_text("{not json")
    with pytest.raises(LogocapError, match="not valid JSON"):
        load_boxes(p)


def test_image_id_rule(tmp_path):
    a, b = tmp_path / "val" / "000000000139.jpg", tmp_path / "val" / "scene-a.jpg"
    assert image_ids_for_files([a]) == {a: 139}
    with pytest.raises(LogocapError, match="scene-a.jpg"):
        image_ids_for_files([a, b])
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps({"images": [{"id": 5, "file_name": "scene-a.jpg"},
                                          {"id": 6, "file_name": "val/scene-a.jpg"}],
                               "annotations": [], "categories": []}))
    assert image_ids_for_files([b], ann) == {b: 6}  # the longest matching file_name wins
    with pytest.raises(LogocapError, match="not in"):
        image_ids_for_files([a], ann)


def test_training_crops_round_trip_and_targets(tmp_path):
    from logocap.data.topdown import TopDownPoseDataset, collate_topdown

    ann, images = make_coco_fixture(tmp_path, num_images=3, size=(96, 128))
    ds = TopDownPoseDataset(ann, images, input_size=128, flip_prob=0.5, max_rotation=30)
    assert len(ds) == 6  # 2 annotated people per image; crowd / keypoint-less ones are not samples
    boxes = gt_boxes(ds.coco)
    assert sum(len(b) for b, _ in boxes.values()) == 6
    flips = set()
    for epoch in range(3):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            s = ds[i]
            iid, _, kp = ds.people[i]
            assert s["image"].shape == (3, 128, 96) and s["heatmaps"].shape == (17, 32, 24)
            idx = list(COCO.flip_index) if s["flipped"] else list(range(17))
            gt = kp[idx]
            wgt = s["keypoint_weights"].numpy()
            assert np.all(wgt <= (gt[:, 2] > 0))
            back = crop_to_original(s["keypoints"][None].double(), s["affine"][None].numpy())[0]
            valid = wgt > 0
            assert np.abs(back.numpy()[valid] - gt[valid, :2]).max() < 1e-3  # float32 storage
            xy = s["keypoints"].numpy()[valid]
            assert (xy >= -0.5).all() and (xy[:, 0] < 95.5).all() and (xy[:, 1] < 127.5).all()
            peak = s["heatmaps"].flatten(1).argmax(1)[valid].numpy()
            cell = np.stack([peak % 24, peak // 24], 1)  # the Gaussian peaks at the joint's cell
            assert np.abs(cell - np.clip(xy / 4, 0, [23, 31])).max() <= 0.5 + 1e-6
            assert float(s["heatmaps"][~valid].abs().sum()) == 0.0
            flips.add(bool(s["flipped"]))
    assert flips == {True, False}
    batch = collate_topdown([ds[0], ds[1], ds[2]])
    assert batch["keypoints"].shape == (3, 17, 2) and batch["image_id"] == [ds.people[i][0] for i in range(3)]


def test_tiny_model_loss_decreases_on_one_batch(tmp_path):
    from logocap.data.topdown import TopDownPoseDataset, collate_topdown
    from logocap.losses import build_criterion

    ann, images = make_coco_fixture(tmp_path, num_images=2, size=(96, 128))
    ds = TopDownPoseDataset(ann, images, input_size=128)
    torch.manual_seed(0)
    model = create_model("sar_hrnet_tiny_topdown")
    model.model_name = "sar_hrnet_tiny_topdown"
    crit = build_criterion(model, {"heatmap": 1.0})
    batch = collate_topdown([ds[0], ds[1]])
    losses = [h["loss"] for h in train_steps(model, crit, batch, 4)]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0], losses


def test_ground_truth_through_the_top_down_path_gives_ap_1(tmp_path):
    """GT keypoints -> the predictor's crops (GT boxes) -> SAR maps (selector peak at the joint's
    cell, offset = cell - joint) -> hard-argmax decoding -> back-projection -> COCOeval: AP 1 and
    Kpt.Error 0; the coordinate path of top-down prediction and evaluation is sound."""
    from logocap.data.coco import CocoPoseDataset
    from logocap.evaluation import evaluate_predictions, keypoint_error, poses_to_results
    from logocap.structures import Poses

    ann, images = make_coco_fixture(tmp_path, num_images=3, size=(96, 128))
    ds = CocoPoseDataset(ann, images, mode="val", input_size=128)
    boxes = gt_boxes(ds.coco)
    hw, k, stride = (128, 96), 17, 4
    h, w = hw[0] // stride, hw[1] // stride
    out = {}
    for iid, (b, s) in boxes.items():
        anns = [a for a in ds.gt_annotations(iid) if a["num_keypoints"] > 0 and not a["iscrowd"]]
        kp = np.array([a["keypoints"] for a in anns], np.float64).reshape(-1, k, 3)
        c, z = box_to_crop(b)
        m = crop_affines(c, z, hw)
        crop_px = np.einsum("nij,nkj->nki", m[:, :, :2], kp[..., :2]) + m[:, None, :, 2]
        n = len(b)
        sel = torch.full((n, k, h, w), -8.0)
        off = torch.zeros(n, 2 * k, h, w)
        cell = np.clip(np.round(crop_px / stride), 0, [w - 1, h - 1]).astype(int)
        for i in range(n):  # encoding a handful of people: a plain loop is fine in a test
            for j in range(k):
                x, y = cell[i, j]
                sel[i, j, y, x] = 4.0
                off[i, 2 * j:2 * j + 2, y, x] = torch.tensor([x, y] - crop_px[i, j] / stride)
        coords, scores = sar_decode(sel, off, stride)
        xy = crop_to_original(coords.double(), m).numpy()
        vis = kp[..., 2:] > 0
        xy = np.where(vis, xy, kp[..., :2].mean(1, keepdims=True))  # unlabelled: off the corner
        out[iid] = Poses(np.concatenate([xy, scores.numpy()[..., None]], -1), s, COCO, image_id=iid)
        assert np.abs(xy - kp[..., :2])[vis[..., 0]].max() < 1e-3
    m = evaluate_predictions(out, ds.coco, verbose=False)
    assert m["AP"] == pytest.approx(1.0)
    err = keypoint_error(poses_to_results(out), ds.coco)
    assert err["matched_people"] == err["gt_people"] == 6 and err["mean_px"] < 1e-2


def test_model_variants_init_and_every_parameter_trains():
    """Released init; the trunk's last module fuses into the stride-4 branch only, so every
    parameter gets a gradient (DDP without find_unused_parameters); W32 / W48 sizes match the
    top-down HRNets (28.54 M / 63.60 M with a 17-channel head; SAR's three heads add 1.7 / 2.5 k)."""
    from logocap.losses.sar import sar_loss, sar_candidates

    torch.manual_seed(0)
    m = create_model("sar_hrnet_tiny_topdown", num_keypoints=4)
    assert m.input_hw == (128, 96)
    for conv in (m.selector, m.aux_heatmap):
        assert torch.allclose(conv.bias, torch.full_like(conv.bias, -np.log(99.0)))
    assert float(m.regressor.bias.detach().abs().max()) == 0.0
    assert 0.5e-3 < float(m.selector.weight.detach().std()) < 1.5e-3
    out = m(torch.randn(2, 3, 128, 96))
    loss = sar_loss(sar_candidates(out["offsets"]), out["selector"].flatten(2),
                    torch.rand(2, 4, 2), torch.ones(2, 4)) + out["aux_heatmaps"].mean()
    loss.backward()
    assert all(p.grad is not None for p in m.parameters())
    for name, params in (("sar_hrnet_w32_topdown", 28.54e6), ("sar_hrnet_w48_topdown", 63.60e6)):
        n = sum(p.numel() for p in create_model(name).parameters())
        assert abs(n - params) < 0.01e6, (name, n)
