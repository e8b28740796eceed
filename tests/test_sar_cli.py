"""Top-down SAR through the command line: `logocap train` (2 steps on a tiny fixture, evaluated
with ground-truth boxes), `logocap eval` (GT boxes / a boxes file, Kpt.Error next to AP),
`logocap predict --boxes` (one json + picture per image) and the one-line errors."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from fixtures import FIXTURE_LAYOUT, make_coco_fixture
from logocap.cli import main
from logocap.commands.predict import output_paths



@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("sar")
    data = root / "data"
    ann, images = make_coco_fixture(data, num_images=2, size=(96, 128))
    run = root / "run"
    rc = main(["train", "--data", str(data), "--out", str(run), "--epochs", "1", "--device", "cpu",
               "model.name=sar_hrnet_tiny_topdown", "data.dataset=coco", "data.input_size=128",
               "train.batch_size=2", "train.max_iters_per_epoch=2", "train.eval_every=1",
               "train.log_every=1", "train.precision=fp32", "train.warmup_iters=2", *FIXTURE_LAYOUT])
    assert rc == 0
    return {"root": root, "ann": ann, "images": images, "run": run}


def test_train_two_steps_then_evaluated_with_gt_boxes(trained):
    run = trained["run"]
    ckpt = torch.load(run / "last.pth", map_location="cpu", weights_only=True)
    assert ckpt["model_name"] == "sar_hrnet_tiny_topdown" and ckpt["input_size"] == 128
    recs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in recs if r["type"] == "step"]
    assert len(steps) == 2 and all(set(r) >= {"loss", "sar", "heatmap"} for r in steps)
    assert all(np.isfinite(r["loss"]) for r in steps)
    epoch = [r for r in recs if r["type"] == "epoch"][-1]
    # train.warmup_iters=2: lr x 0.001, then x (0.001 + 0.999 / 2); the epoch's lr is untouched
    assert [r["lr"] for r in steps] == pytest.approx([1e-6, 1e-3 * (0.001 + 0.999 / 2)])
    assert epoch["lr"] == pytest.approx(1e-3)
    assert "val_AP" in epoch  # the training loop's evaluation ran on ground-truth boxes
    err = json.loads((run / "eval" / "epoch_001" / "kpt_error.json").read_text())
    assert err["gt_people"] == 4 and err["oks_threshold"] == 0.5


def test_eval_gt_boxes_and_boxes_file(trained, tmp_path, capsys):
    run, ann, images = trained["run"], trained["ann"], trained["images"]
    assert main(["eval", "--weights", str(run / "last.pth"), "--data", str(ann), "--images",
                 str(images), "--device", "cpu", "--out", str(tmp_path / "gt")]) == 0
    out = capsys.readouterr().out
    assert "ground-truth person boxes" in out and "AP" in out and "Kpt.Error" in out
    assert (tmp_path / "gt" / "kpt_error.json").is_file()
    gt_results = json.loads((tmp_path / "gt" / "results.json").read_text())
    assert len(gt_results) == 4  # one pose per ground-truth person box
    data = json.loads(ann.read_text())
    boxes = [{"image_id": a["image_id"], "bbox": a["bbox"], "score": 0.5}
             for a in data["annotations"] if a["num_keypoints"] > 0]
    boxes.append({"image_id": boxes[0]["image_id"], "bbox": [900, 900, 10, 10], "score": 0.9})
    bf = tmp_path / "boxes.json"
    bf.write_text(json.dumps(boxes))
    assert main(["eval", "--weights", str(run / "last.pth"), "--data", str(ann), "--images",
                 str(images), "--device", "cpu", "--boxes", str(bf), "--out", str(tmp_path / "b")]) == 0
    cap = capsys.readouterr()
    assert "skipped 1 box(es) lying entirely outside" in cap.err
    res = json.loads((tmp_path / "b" / "results.json").read_text())
    assert len(res) == 4
    # the same crops as with GT boxes, the pose scores halved (box score 0.5 x mean keypoint score)
    key = lambda r: (r["image_id"], r["keypoints"][:6])
    assert sorted(r["score"] / 2 for r in gt_results) == pytest.approx(sorted(r["score"] for r in res))
    assert sorted(map(key, gt_results)) == sorted(map(key, res))
    assert main(["eval", "--weights", str(run / "last.pth"), "--data", str(ann), "--images",
                 str(images), "--boxes", str(bf), "--gt-boxes"]) == 2
    assert "not both" in capsys.readouterr().err


def test_predict_with_boxes_and_its_errors(trained, tmp_path, capsys):
    run, ann, images = trained["run"], trained["ann"], trained["images"]
    data = json.loads(ann.read_text())
    img_dir = tmp_path / "imgs"
    img_dir.mkdir()
    for im in data["images"]:  # COCO-style names: the image id is the file name's number
        shutil.copy(images / im["file_name"], img_dir / f"{im['id']:012d}.jpg")
    boxes = [{"image_id": a["image_id"], "bbox": a["bbox"], "score": 0.8, "category_id": 1}
             for a in data["annotations"] if a["num_keypoints"] > 0]
    boxes += [{"image_id": 4242, "bbox": [1, 1, 10, 10], "score": 0.3}]  # not an input image
    bf = tmp_path / "boxes.json"
    bf.write_text(json.dumps(boxes))
    out = tmp_path / "out"
    assert main(["predict", "--weights", str(run / "last.pth"), "--boxes", str(bf), str(img_dir),
                 "--out", str(out), "--no-flip"]) == 0
    cap = capsys.readouterr()
    assert "4242" in cap.err and "processed 2" in cap.out
    first = sorted(img_dir.iterdir())[0]
    json_path, jpg_path = output_paths(first, Path(first.name), str(out))
    res = json.loads(json_path.read_text())
    assert json_path.is_file() and jpg_path.is_file() and len(res["poses"]) == 2
    h, w = data["images"][0]["height"], data["images"][0]["width"]
    assert res["image_size"] == [h, w]
    # the same with file names looked up in the annotation file (--ann)
    assert main(["predict", "--weights", str(run / "last.pth"), "--boxes", str(bf), "--ann",
                 str(ann), str(images), "--out", str(tmp_path / "out2")]) == 0
    capsys.readouterr()

    def one_line_error(argv, *needles):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and all(n in err[0] for n in needles), err

    # a top-down model without boxes
    one_line_error(["predict", "--weights", str(run / "last.pth"), str(img_dir), "--out",
                    str(tmp_path / "x")], "top-down model", "needs person boxes", "--boxes")
    assert not (tmp_path / "x").exists()
    # a boxes file with bad entries: named, nothing written
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"image_id": boxes[0]["image_id"], "bbox": [1, 1, 0, 5], "score": 1},
                               {"image_id": boxes[0]["image_id"], "bbox": [1, 1, 5, "x"]}]))
    one_line_error(["predict", "--weights", str(run / "last.pth"), "--boxes", str(bad), str(img_dir),
                    "--out", str(tmp_path / "y")], "2 unusable entries", "#0", "#1")
    assert not (tmp_path / "y").exists()
    # no box for any input image
    none = tmp_path / "none.json"
    none.write_text(json.dumps([{"image_id": 4242, "bbox": [1, 1, 5, 5], "score": 1}]))
    one_line_error(["predict", "--weights", str(run / "last.pth"), "--boxes", str(none),
                    str(img_dir)], "no box belongs to the input images", "4242")
    # file names that are not image ids
    one_line_error(["predict", "--weights", str(run / "last.pth"), "--boxes", str(bf), str(images)],
                   "cannot tell the image id", "--ann")


def test_bottom_up_model_refuses_boxes(tmp_path, capsys):
    from logocap.engine.checkpoint import save_checkpoint
    from logocap.meta import COCO
    from logocap.models import create_model

    ann, images = make_coco_fixture(tmp_path / "d", num_images=1, size=(64, 64))
    w = tmp_path / "co.pth"
    save_checkpoint(w, create_model("center_offset_hrnet_tiny"), COCO, None)
    bf = tmp_path / "b.json"
    bf.write_text(json.dumps([{"image_id": 1000, "bbox": [1, 1, 5, 5], "score": 1}]))
    assert main(["predict", "--weights", str(w), "--boxes", str(bf), "--ann", str(ann),
                 str(images)]) == 2
    assert "for top-down models" in capsys.readouterr().err
    assert main(["eval", "--weights", str(w), "--data", str(ann), "--images", str(images),
                 "--gt-boxes"]) == 2
    assert "for top-down models" in capsys.readouterr().err


def test_warmup_spanning_an_lr_step(tmp_path):
    """train.warmup_iters=3 over 2 epochs of 2 iterations, the lr x0.1 after epoch 1: the warm-up
    multiplies the scheduled lr of each epoch and never leaks into the schedule."""
    from logocap.engine.train import warmup_factor

    assert warmup_factor(0, 0) == 1.0 and warmup_factor(5, 4) == 1.0
    assert warmup_factor(2, 4) == pytest.approx(0.001 + 0.999 / 2)
    data = tmp_path / "data"
    make_coco_fixture(data, num_images=2, size=(96, 128))
    run = tmp_path / "run"
    assert main(["train", "--data", str(data), "--out", str(run), "--epochs", "2", "--device", "cpu",
                 "model.name=sar_hrnet_tiny_topdown", "data.dataset=coco", "data.input_size=128",
                 "train.batch_size=2", "train.max_iters_per_epoch=2", "train.eval_every=0",
                 "train.log_every=1", "train.precision=fp32", "train.warmup_iters=3",
                 "train.lr_steps=[1]", "train.lr_steps_of=2", *FIXTURE_LAYOUT]) == 0
    recs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r["lr"] for r in recs if r["type"] == "step"]
    epochs = [r["lr"] for r in recs if r["type"] == "epoch"]
    f = [warmup_factor(i, 3) for i in range(4)]
    assert steps == pytest.approx([1e-3 * f[0], 1e-3 * f[1], 1e-4 * f[2], 1e-4 * f[3]])
    assert epochs == pytest.approx([1e-3, 1e-4]) and f[3] == 1.0
