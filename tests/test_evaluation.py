"""Official evaluation: GT through the whole coordinate path scores AP 1, jitter lowers it, loud errors."""
import json
import subprocess
import sys

import numpy as np
import pytest

from logocap import cli
from logocap.evaluation import (COCO_METRIC_NAMES, CROWDPOSE_METRIC_NAMES, coco_evaluate,
                                evaluate_predictions, poses_to_results, write_results_json)
from logocap.meta import COCO, CROWDPOSE, KeypointMeta
from logocap.structures import Poses
from logocap.utils import LogocapError

from logocap.data import transforms as T


# ------------------------------------------------------------------------- fixtures
def make_gt(meta=COCO, num_images=6, people=3, size=(96, 128), seed=0, crowd=False):
    """A small COCO-format annotation dict: random people, some unlabelled (v=0) joints."""
    rng = np.random.default_rng(seed)
    h, w = size
    k = meta.num_keypoints
    images, anns = [], []
    for i in range(num_images):
        img = {"id": 100 + i, "file_name": f"{i:04d}.jpg", "height": h, "width": w}
        if crowd:
            img["crowdIndex"] = [0.05, 0.5, 0.9][i % 3]  # easy / medium / hard
        images.append(img)
        for _ in range(people):
            bw, bh = rng.uniform(30, 45), rng.uniform(50, 70)
            x0, y0 = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
            xy = np.stack([x0 + rng.uniform(0, bw, k), y0 + rng.uniform(0, bh, k)], 1)
            v = rng.choice([0, 1, 2], size=k, p=[0.15, 0.25, 0.6]).astype(float)
            v[:3] = 2  # every person has labelled joints
            xy[v == 0] = 0.0  # COCO writes unlabelled joints as (0, 0, 0)
            kp = np.concatenate([xy, v[:, None]], 1)
            ann = {"id": len(anns) + 1, "image_id": img["id"], "category_id": 1, "iscrowd": 0,
                   "keypoints": kp.reshape(-1).round(2).tolist(), "bbox": [x0, y0, bw, bh],
                   "num_keypoints": int((v > 0).sum())}
            if not crowd:
                ann["area"] = 0.7 * bw * bh
            anns.append(ann)
    return {"images": images, "annotations": anns, "categories": [meta.coco_category()]}


def write_json(path, obj):
    path.write_text(json.dumps(obj))
    return str(path)


def gt_as_poses(gt, meta=COCO, jitter=0.0, seed=1, affines=None):
    """GT keypoints -> input frame -> (network would predict here) -> original px -> Poses.

    Unlabelled joints go to the person's box centre, never (0, 0). ``jitter`` adds the same
    Gaussian draw scaled by ``jitter`` px (in original px), so larger jitter is strictly worse.
    ``affines``: {image_id: M} from the dataset; default: the test transform computed here.
    """
    rng = np.random.default_rng(seed)
    out = {}
    for img in gt["images"]:
        anns = [a for a in gt["annotations"] if a["image_id"] == img["id"]]
        kp = np.array([a["keypoints"] for a in anns], np.float64).reshape(len(anns), -1, 3)
        box_c = np.array([[a["bbox"][0] + a["bbox"][2] / 2, a["bbox"][1] + a["bbox"][3] / 2] for a in anns])
        xy = np.where(kp[..., 2:] > 0, kp[..., :2], box_c[:, None, :])
        if affines is not None:
            M = affines[img["id"]]
        else:
            M, _ = T.test_transform(img["height"], img["width"], 64)  # the dataset's test resize
        back = T.apply_affine(T.apply_affine(xy, M), T.invert_affine(M))
        back = back + jitter * rng.standard_normal(back.shape)
        score = (kp[..., 2:] > 0).astype(np.float64)
        poses = Poses(np.concatenate([back, score], -1), np.ones(len(anns)), meta, image_id=img["id"],
                      image_size=(img["height"], img["width"]))
        out[img["id"]] = poses
    return out


# ------------------------------------------------------------------------- COCO protocol
def test_gt_through_coordinate_path_scores_ap_one(tmp_path):
    gt = make_gt()
    ann = write_json(tmp_path / "ann.json", gt)
    metrics = evaluate_predictions(gt_as_poses(gt), ann, out_dir=tmp_path / "run", verbose=False)
    assert list(metrics) == list(COCO_METRIC_NAMES)
    for name in ("AP", "AP50", "AP75", "AR", "AR50", "AR75"):
        assert metrics[name] == pytest.approx(1.0, abs=1e-6), name
    # the results json is kept and the metrics json equals what was returned
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert len(results) == len(gt["annotations"])
    assert len(results[0]["keypoints"]) == 3 * COCO.num_keypoints
    assert json.loads((tmp_path / "run" / "metrics.json").read_text()) == metrics


def test_gt_through_val_dataset_scores_ap_one(tmp_path):
    """Same path with the affine the val dataset hands to the model (images written to disk)."""
    import cv2
    from logocap.data.coco import CocoPoseDataset

    gt = make_gt(num_images=3)
    (tmp_path / "images").mkdir()
    for img in gt["images"]:
        cv2.imwrite(str(tmp_path / "images" / img["file_name"]),
                    np.zeros((img["height"], img["width"], 3), np.uint8))
    ann = write_json(tmp_path / "ann.json", gt)
    ds = CocoPoseDataset(ann, tmp_path / "images", mode="val", input_size=64)
    samples = [ds[i] for i in range(len(ds))]
    affines = {s["image_id"]: s["affine"].numpy() for s in samples}
    assert all(np.allclose(s["affine"].numpy()[:, :2], np.eye(2) * 64 / 96) for s in samples)
    m = evaluate_predictions(gt_as_poses(gt, affines=affines), ds.coco, meta=ds.meta, verbose=False)
    assert m["AP"] == pytest.approx(1.0, abs=1e-6) and m["AR"] == pytest.approx(1.0, abs=1e-6)


def test_jitter_lowers_ap_strictly():
    gt = make_gt(num_images=8)
    aps = [coco_evaluate(poses_to_results(gt_as_poses(gt, jitter=j)), _coco(gt), verbose=False)["AP"]
           for j in (0, 1, 2, 4, 8)]
    assert aps[0] == pytest.approx(1.0, abs=1e-6)
    assert all(a > b for a, b in zip(aps, aps[1:])), aps


def _coco(gt):
    from pycocotools.coco import COCO as PyCOCO
    c = PyCOCO()
    c.dataset = gt
    c.createIndex()
    return c


def test_meta_sigmas_are_used():
    """Wider OKS sigmas forgive the same jitter more: proves params.kpt_oks_sigmas is set."""
    gt = make_gt()
    res = poses_to_results(gt_as_poses(gt, jitter=3))
    wide = KeypointMeta(name="wide", keypoint_names=COCO.keypoint_names, flip_pairs=COCO.flip_pairs,
                        skeleton=COCO.skeleton, sigmas=tuple(2 * s for s in COCO.sigmas))
    ap = coco_evaluate(res, _coco(gt), verbose=False)["AP"]
    ap_wide = coco_evaluate(res, _coco(gt), meta=wide, verbose=False)["AP"]
    assert ap_wide > ap + 0.05


def test_img_ids_restrict_the_evaluated_images():
    gt = make_gt()
    half = {i: p for i, p in gt_as_poses(gt).items() if i % 2 == 0}
    res = poses_to_results(half)
    assert coco_evaluate(res, _coco(gt), img_ids=list(half), verbose=False)["AR"] == pytest.approx(1.0)
    # over all images, the people of the images without results are misses
    assert coco_evaluate(res, _coco(gt), verbose=False)["AR"] == pytest.approx(0.5, abs=0.1)


def test_empty_results_are_zeros(tmp_path, capsys):
    gt = make_gt()
    out = tmp_path / "m.json"
    m = coco_evaluate([], _coco(gt), out_json=out)
    assert m == {n: 0.0 for n in COCO_METRIC_NAMES}
    assert json.loads(out.read_text()) == m
    assert "all metrics are 0" in capsys.readouterr().out
    empty = {i: Poses.empty(COCO, image_id=i) for i in (100, 101)}
    assert evaluate_predictions(empty, _coco(gt), verbose=False)["AP"] == 0.0


def _one_line_error(fn):
    with pytest.raises(LogocapError) as e:
        fn()
    msg = str(e.value)
    assert msg and "\n" not in msg
    return msg


def test_bad_inputs_raise_one_line_errors(tmp_path):
    gt = make_gt()
    ann = write_json(tmp_path / "ann.json", gt)
    good = poses_to_results(gt_as_poses(gt))
    ev = lambda res, a=ann: coco_evaluate(res, a, verbose=False)  # noqa: E731

    assert "not found" in _one_line_error(lambda: ev(str(tmp_path / "nope.json")))
    (tmp_path / "broken.json").write_text("[{\"image_id\": 1,")
    assert "not valid JSON" in _one_line_error(lambda: ev(str(tmp_path / "broken.json")))
    assert "JSON list" in _one_line_error(lambda: ev({"image_id": 100}))
    assert "not in the annotation file" in _one_line_error(lambda: ev([dict(good[0], image_id=999)]))
    assert "54 keypoint values" in _one_line_error(
        lambda: ev([dict(good[0], keypoints=good[0]["keypoints"] + [0.0] * 3)]))
    assert "non-numeric" in _one_line_error(lambda: ev([dict(good[0], score="high")]))
    assert "not in the annotation file" in _one_line_error(lambda: ev([dict(good[0], image_id=[100])]))
    assert "NaN" in _one_line_error(lambda: ev([dict(good[0], score=float("nan"))]))
    assert "lacks score" in _one_line_error(lambda: ev([{k: v for k, v in good[0].items() if k != "score"}]))
    assert "category_id" in _one_line_error(lambda: ev([dict(good[0], category_id=7)]))
    assert "category_id" in _one_line_error(lambda: ev([dict(good[0], category_id=[1])]))
    # annotation file problems
    assert "not found" in _one_line_error(lambda: ev(good, str(tmp_path / "none.json")))
    bad_ann = write_json(tmp_path / "bad_ann.json", {"images": []})
    assert "annotations" in _one_line_error(lambda: ev(good, bad_ann))
    no_area = dict(gt, annotations=[{k: v for k, v in a.items() if k != "area"} for a in gt["annotations"]])
    assert "lacks area" in _one_line_error(lambda: ev(good, write_json(tmp_path / "na.json", no_area)))
    assert "not in the annotation file" in _one_line_error(
        lambda: coco_evaluate(good, ann, img_ids=[100, 5], verbose=False))


def test_results_json_is_written_whole(tmp_path):
    res = poses_to_results(gt_as_poses(make_gt()))
    write_results_json(res, tmp_path / "r.json")
    assert json.loads((tmp_path / "r.json").read_text()) == res
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]  # no temp file left behind


# ------------------------------------------------------------------------- CLI
def test_cli_results_mode(tmp_path, capsys):
    gt = make_gt()
    ann = write_json(tmp_path / "ann.json", gt)
    res = tmp_path / "preds.json"
    write_results_json(poses_to_results(gt_as_poses(gt)), res)
    assert cli.main(["eval", "--results", str(res), "--ann", ann]) == 0
    metrics = json.loads((tmp_path / "preds.metrics.json").read_text())
    assert metrics["AP"] == pytest.approx(1.0)
    assert "AP50" in capsys.readouterr().out
    # --result-images-only + --out
    write_results_json([r for r in json.loads(res.read_text()) if r["image_id"] == 100], res)
    out = tmp_path / "sub" / "m.json"
    assert cli.main(["eval", "--results", str(res), "--ann", ann, "--out", str(out),
                     "--result-images-only"]) == 0
    assert json.loads(out.read_text())["AR"] == pytest.approx(1.0)
    # user errors: exit code 2, one line on stderr
    capsys.readouterr()
    assert cli.main(["eval", "--results", str(tmp_path / "missing.json"), "--ann", ann]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("logocap eval: error:") and "\n" not in err
    assert cli.main(["eval", "--ann", ann]) == 2


def test_cli_model_mode_dispatch(monkeypatch, capsys):
    seen = {}
    fake = type(sys)("logocap.engine.evaluate")
    fake.run_model_eval = lambda args: seen.setdefault("args", args) and 0
    monkeypatch.setitem(sys.modules, "logocap.engine.evaluate", fake)
    assert cli.main(["eval", "--weights", "w.pt", "--data", "d", "--no-flip", "--size", "64"]) == 0
    assert seen["args"].weights == "w.pt" and seen["args"].flip is False and seen["args"].size == 64
    monkeypatch.setitem(sys.modules, "logocap.engine.evaluate", None)  # module absent
    assert cli.main(["eval", "--weights", "w.pt", "--data", "d"]) == 2
    assert "model evaluation needs" in capsys.readouterr().err


def test_cli_subprocess_error_exit_code(tmp_path):
    r = subprocess.run([sys.executable, "-m", "logocap.cli", "eval", "--results", str(tmp_path / "x.json"),
                        "--ann", str(tmp_path / "y.json")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "not found" in r.stderr


# ------------------------------------------------------------------------- CrowdPose protocol
def test_crowdpose_gt_scores_ap_one_with_difficulty_split(tmp_path):
    pytest.importorskip("xtcocotools.cocoeval", reason="xtcocotools (logocap[crowdpose]) not installed")
    gt = make_gt(meta=CROWDPOSE, crowd=True)
    ann = write_json(tmp_path / "crowd.json", gt)
    m = evaluate_predictions(gt_as_poses(gt, meta=CROWDPOSE), ann, verbose=False)
    assert list(m) == list(CROWDPOSE_METRIC_NAMES)
    for name in CROWDPOSE_METRIC_NAMES:  # easy / medium / hard each hold two images here
        assert m[name] == pytest.approx(1.0, abs=1e-6), name
    jit = coco_evaluate(poses_to_results(gt_as_poses(gt, meta=CROWDPOSE, jitter=4)), ann, verbose=False)
    assert 0 < jit["AP"] < 1 and all(0 < jit[n] < 1 for n in ("AP_easy", "AP_medium", "AP_hard"))


def test_crowdpose_without_xtcocotools_says_how_to_install(tmp_path, monkeypatch):
    gt = make_gt(meta=CROWDPOSE, crowd=True, num_images=1)
    monkeypatch.setitem(sys.modules, "xtcocotools.cocoeval", None)
    msg = _one_line_error(lambda: coco_evaluate([], write_json(tmp_path / "c.json", gt), verbose=False))
    assert "logocap[crowdpose]" in msg


# ------------------------------------------------------------------------- parity with the stock tools
def _stock_stats(eval_cls, coco_cls, ann, res, iou_type, sigmas, **kw):
    """The textbook call sequence on files, as the official scripts do it."""
    import contextlib
    import io
    with contextlib.redirect_stdout(io.StringIO()):
        gt = coco_cls(ann)
        E = eval_cls(gt, gt.loadRes(res), iou_type, **kw) if sigmas is None else \
            eval_cls(gt, gt.loadRes(res), iou_type, sigmas, **kw)
        E.evaluate()
        E.accumulate()
        E.summarize()
    return list(E.stats)


def test_matches_stock_pycocotools(tmp_path):
    from pycocotools.coco import COCO as PyCOCO
    from pycocotools.cocoeval import COCOeval

    gt = make_gt(num_images=10, people=4)
    ann = write_json(tmp_path / "ann.json", gt)
    res = tmp_path / "res.json"
    write_results_json(poses_to_results(gt_as_poses(gt, jitter=2)), res)
    ours = list(coco_evaluate(str(res), ann, verbose=False).values())
    stock = _stock_stats(COCOeval, PyCOCO, ann, str(res), "keypoints", None)  # COCO sigmas built in
    assert 0.1 < ours[0] < 0.95
    assert ours == pytest.approx(stock, abs=1e-12)


def test_matches_stock_xtcocotools_crowdpose(tmp_path):
    pytest.importorskip("xtcocotools.cocoeval", reason="xtcocotools (logocap[crowdpose]) not installed")
    from xtcocotools.coco import COCO as XCOCO
    from xtcocotools.cocoeval import COCOeval as XCOCOeval

    gt = make_gt(meta=CROWDPOSE, crowd=True, num_images=12, people=4)
    ann = write_json(tmp_path / "crowd.json", gt)
    res = tmp_path / "res.json"
    write_results_json(poses_to_results(gt_as_poses(gt, meta=CROWDPOSE, jitter=3)), res)
    ours = list(coco_evaluate(str(res), ann, verbose=False).values())
    stock = _stock_stats(XCOCOeval, XCOCO, ann, str(res), "keypoints_crowd",
                         np.array(CROWDPOSE.sigmas), use_area=False)
    assert 0.1 < ours[0] < 0.95
    assert ours == pytest.approx(stock, abs=1e-12)
