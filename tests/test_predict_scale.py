"""``logocap predict DIR --batch B --workers W``: one COCO results json, resume, skipped files, drawings."""
import json

import cv2
import numpy as np
import pytest

from fixtures import random_image as image
from fixtures import write_tiny_checkpoint
from logocap.cli import main
from logocap.folder_predict import index_path, predict_files
from logocap.meta import COCO
from logocap.predict import Predictor
from logocap.sources import read_image
from logocap.utils import LogocapError


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return write_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pth")


def make_folder(root, with_bad=True):
    (root / "sub").mkdir(parents=True)
    sizes = {"000000000139.jpg": (48, 64), "000000000285.png": (64, 48), "sub/000000000632.png": (48, 64),
             "000000000724.png": (40, 90)}
    for i, (name, (h, w)) in enumerate(sizes.items()):
        cv2.imwrite(str(root / name), image(h, w, i))
    if with_bad:
        (root / "000000000776.jpg").write_bytes(b"")  # zero bytes
        (root / "000000000785.png").write_text("not an image")
    return sizes


def test_one_json_for_the_folder_resumes_and_lists_bad_files(tmp_path, ckpt, capsys):
    folder = tmp_path / "val"
    sizes = make_folder(folder)
    rc = main(["predict", str(folder), "--weights", str(ckpt), "--batch", "3", "--workers", "1"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "predicted 4 images" in out and "images/s" in out and "skipped 2" in out
    assert "skipped 000000000776.jpg: empty image file (0 bytes)" in out
    assert "skipped 000000000785.png: cannot decode" in out
    results_path = folder / "poses.results.json"
    assert f"wrote {results_path}" in out
    assert not list(folder.rglob("*.poses.jpg"))  # no drawings unless --draw
    records = json.loads(results_path.read_text())
    index = json.loads(index_path(results_path).read_text())
    assert {im["file_name"]: (im["height"], im["width"]) for im in index["images"]} == sizes
    assert sorted(im["id"] for im in index["images"]) == [139, 285, 632, 724]  # COCO-style names
    assert {s["file_name"] for s in index["skipped"]} == {"000000000776.jpg", "000000000785.png"}
    # the records are those of single-image prediction, in original pixels
    predictor = Predictor.from_checkpoint(ckpt)
    for im in index["images"]:
        mine = sorted((r for r in records if r["image_id"] == im["id"]), key=lambda r: -r["score"])
        ref = predictor.predict(read_image(folder / im["file_name"]))
        assert len(mine) == len(ref) >= 1 and mine[0]["file_name"] == im["file_name"]
        np.testing.assert_allclose(np.array([r["keypoints"] for r in mine]),
                                   ref.keypoints.reshape(len(ref), -1), atol=2e-3)
    # COCOeval takes the file as it is
    from pycocotools.coco import COCO as CocoApi
    gt = CocoApi()
    gt.dataset = {"images": [{"id": im["id"], "height": im["height"], "width": im["width"]}
                             for im in index["images"]], "annotations": [],
                  "categories": [COCO.coco_category()]}
    gt.createIndex()
    assert len(gt.loadRes(str(results_path)).getAnnIds()) == len(records)

    # a re-run resumes: nothing new is predicted, nothing is duplicated; a new image is added
    cv2.imwrite(str(folder / "000000000999.png"), image(50, 50, 9))
    assert main(["predict", str(folder), "--weights", str(ckpt), "--batch", "3", "--workers", "0"]) == 0
    out = capsys.readouterr().out
    assert "predicted 1 images" in out and "4 done by an earlier run" in out
    again = json.loads(results_path.read_text())
    assert again[:len(records)] == records
    assert {r["image_id"] for r in again} == {139, 285, 632, 724, 999}

    # other settings are refused rather than mixed into the same file
    assert main(["predict", str(folder), "--weights", str(ckpt), "--batch", "2", "--no-flip"]) == 2
    assert "other settings (test.flip differ)" in capsys.readouterr().err


def test_draw_and_out_folder(tmp_path, ckpt, capsys):
    folder = tmp_path / "pics"
    make_folder(folder, with_bad=False)
    out = tmp_path / "res"
    assert main(["predict", str(folder), "--weights", str(ckpt), "--workers", "0", "--draw",
                 "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"wrote {out / 'poses.results.json'}" in text and f"drawings <name>.poses.jpg under {out}" in text
    drawn = cv2.imread(str(out / "sub" / "000000000632.png.poses.jpg"))
    assert drawn is not None and drawn.shape == (48, 64, 3)  # original resolution
    assert not list(folder.rglob("*.poses.*"))  # the input folder is untouched


def test_interrupted_save_is_repaired_on_resume(tmp_path, ckpt):
    folder = tmp_path / "f"
    make_folder(folder, with_bad=False)
    predictor = Predictor.from_checkpoint(ckpt)
    files = [(p, p.relative_to(folder).as_posix()) for p in sorted(folder.rglob("*.png"))]
    results = tmp_path / "r" / "poses.results.json"
    s = predict_files(predictor, files, results, batch=2, workers=0, progress=False)
    assert s["done"] == 3 and s["resumed"] == 0
    # a save cut between the two files: the index lost its last image, the results kept it
    index = json.loads(index_path(results).read_text())
    lost = index["images"].pop()
    index_path(results).write_text(json.dumps(index))
    s = predict_files(predictor, files, results, batch=2, workers=0, progress=False)
    assert s["done"] == 1 and s["resumed"] == 2
    records = json.loads(results.read_text())
    again = [r for r in records if r["file_name"] == lost["file_name"]]
    assert len(again) == len(predictor.predict(read_image(folder / lost["file_name"])))
    assert len({(r["image_id"], r["score"]) for r in records}) == len(records)  # no duplicates
    # a results file this command did not write is never overwritten
    alien = tmp_path / "alien.json"
    alien.write_text("[]")
    with pytest.raises(LogocapError, match="not written by this command"):
        predict_files(predictor, files, alien, workers=0, progress=False)


def test_without_batch_flags_the_per_image_mode_is_unchanged(tmp_path, ckpt, capsys):
    folder = tmp_path / "p"
    make_folder(folder, with_bad=False)
    assert main(["predict", str(folder), "--weights", str(ckpt)]) == 0
    out = capsys.readouterr().out
    assert "wrote 4 <name>.poses.json + <name>.poses.jpg next to the images" in out
    assert (folder / "sub" / "000000000632.png.poses.json").is_file()
    assert not (folder / "poses.results.json").exists()
