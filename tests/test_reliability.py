"""Hostile input, tried as a new user would (issue 7): each case runs the command line in a
subprocess on tiny generated data and checks the exit code, the one-line message, and that nothing
half-written is left behind (or, for the cases that must go on, that every result is kept).

Every case runs at least once as a subprocess; its further variants (other verbs, other bad
values) go through ``logocap.cli.main`` in this process, which is the same code without paying
for a fresh interpreter and torch import each time. Shared, module-scoped: one tiny COCO-format
dataset, one tiny checkpoint and one finished 1-epoch training run (copied by the tests that
resume it).
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from fixtures import FIXTURE_LAYOUT, make_coco_fixture, write_tiny_checkpoint
from fixtures import random_image as image
from logocap.engine.checkpoint import save_checkpoint
from logocap.meta import COCO
from logocap.models import create_model

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
# the smallest training a user could ask for: tiny model, 64 px, batch 2, one iteration per epoch
TINY = ["model.name=center_offset_hrnet_tiny", "data.input_size=64", "data.num_workers=0",
        "train.batch_size=2", "train.max_iters_per_epoch=1", "train.eval_every=0",
        "train.log_every=1", "train.precision=fp32", "test.topk=5", "test.flip=false"]
NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")


def cli(*args, timeout=300):  # generous: a busy machine can be 5x slower
    return subprocess.run([sys.executable, "-m", "logocap.cli", *map(str, args)], cwd=REPO, env=ENV,
                          capture_output=True, text=True, timeout=timeout)


def main_error(capsys, argv, *needles):
    """The same checks as ``one_line_error`` for an in-process run of the command line."""
    from logocap.cli import main

    capsys.readouterr()
    rc = main([str(a) for a in argv])
    err = capsys.readouterr().err
    return one_line_error(subprocess.CompletedProcess(argv, rc, "", err), *needles)


def one_line_error(res, *needles):
    """Exit 2, no traceback, and exactly one error line (the last) holding every needle."""
    assert res.returncode == 2, res.stderr[-3000:]
    assert "Traceback" not in res.stderr, res.stderr[-3000:]
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if "error:" in ln]
    assert len(errors) == 1 and lines[-1] == errors[0], res.stderr[-3000:]
    for n in needles:
        assert n in errors[0], errors[0]
    return errors[0]


def train(data, out, *extra, epochs=1, resume=False):
    return cli("train", "--data", data, "--out", out, "--epochs", epochs, "--device", "cpu",
               *(["--resume"] if resume else []), *FIXTURE_LAYOUT, *TINY, *extra)


def jpeg_bytes(seed=0):
    return cv2.imencode(".jpg", image(64, 80, seed))[1].tobytes()


def undecodable_jpeg(seed=0) -> bytes:
    """A real JPEG header (passes the quick signature check) followed by a body no decoder takes."""
    data = jpeg_bytes(seed)
    sos = data.rfind(b"\xff\xda")
    body = np.random.default_rng(seed).integers(0, 255, 3000, dtype=np.uint8).tobytes()
    return data[:sos] + body.replace(b"\xff", b"\x01")


def truncated_jpeg(seed=0) -> bytes:
    data = jpeg_bytes(seed)
    return data[:len(data) * 3 // 4]  # cut inside the compressed data: no end-of-image marker


def files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


# --------------------------------------------------------------------------------- shared
@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    make_coco_fixture(root, num_images=4, size=(64, 80))
    return root


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return write_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pth", cfg={
        "data": {"input_size": 64}, "test": {"topk": 5, "max_people": 5, "flip": False}})


@pytest.fixture(scope="module")
def run1(tmp_path_factory, data):
    """A finished 1-epoch training run (tests resume copies of it)."""
    out = tmp_path_factory.mktemp("runs") / "run1"
    res = train(data, out)
    assert res.returncode == 0, res.stderr[-3000:]
    return out


def copy_run(run1, tmp_path) -> Path:
    dst = tmp_path / "run"
    shutil.copytree(run1, dst)
    return dst


def copy_data(data, tmp_path) -> Path:
    dst = tmp_path / "data"
    shutil.copytree(data, dst)
    return dst


# --------------------------------------------------------------------------------- predict
def test_predict_keeps_every_result_when_names_collide(tmp_path, ckpt):
    """a.jpg beside a.png, and cam1/x.jpg beside cam2/x.jpg, in one run with --out."""
    for rel, seed in (("same/a.jpg", 1), ("same/a.png", 2), ("cam1/x.jpg", 3), ("cam2/x.jpg", 4)):
        (tmp_path / rel).parent.mkdir(exist_ok=True)
        cv2.imwrite(str(tmp_path / rel), image(seed=seed))
    out = tmp_path / "out"
    res = cli("predict", "--weights", ckpt, "--out", out, tmp_path / "same" / "a.jpg",
              tmp_path / "same" / "a.png", tmp_path / "cam1" / "x.jpg", tmp_path / "cam2")
    assert res.returncode == 0 and "processed 4, skipped 0" in res.stdout, res.stderr[-2000:]
    names = ["same/a.jpg", "same/a.png", "cam1/x.jpg", "cam2/x.jpg"]
    assert files(out) == sorted(n + ext for n in names for ext in (".poses.jpg", ".poses.json"))
    for n in names:
        assert json.loads((out / (n + ".poses.json")).read_text())["image_size"] == [48, 64]


def test_predict_warns_about_a_truncated_jpeg(tmp_path, ckpt, capsys):
    from logocap.cli import main

    (tmp_path / "cut.jpg").write_bytes(truncated_jpeg())
    assert main(["predict", "--weights", str(ckpt), str(tmp_path / "cut.jpg")]) == 0
    err = capsys.readouterr().err.splitlines()
    assert any("warning: truncated JPEG" in ln and "cut.jpg" in ln for ln in err)
    assert (tmp_path / "cut.jpg.poses.json").is_file() and (tmp_path / "cut.jpg.poses.jpg").is_file()


def test_predict_draws_huge_coordinates_and_writes_json_and_picture_together(tmp_path, capsys):
    torch.manual_seed(0)
    model = create_model("center_offset_hrnet_tiny")
    with torch.no_grad():
        model.final_layer_reg.bias.fill_(1e9)  # every joint ~4e9 px away: finite, undrawable
    weights = tmp_path / "far.pth"
    save_checkpoint(weights, model, COCO, {"data": {"input_size": 64}, "test": {"topk": 3, "flip": False}})
    cv2.imwrite(str(tmp_path / "p.png"), image(seed=5))
    res = cli("predict", "--weights", weights, "--out", tmp_path / "out", tmp_path / "p.png")
    assert res.returncode == 0, res.stderr[-2000:]
    kp = np.array([p["keypoints"] for p in
                   json.loads((tmp_path / "out" / "p.png.poses.json").read_text())["poses"]])
    assert np.abs(kp[..., :2]).min() > 1e9  # kept in the json as predicted
    assert cv2.imread(str(tmp_path / "out" / "p.png.poses.jpg")).shape == (48, 64, 3)

    # the picture cannot be written (a folder sits at its name): the json is not left alone
    blocked = tmp_path / "blocked"
    (blocked / "p.png.poses.jpg").mkdir(parents=True)
    main_error(capsys, ["predict", "--weights", weights, "--out", blocked, tmp_path / "p.png"],
               "cannot write", "p.png.poses.jpg")
    assert not (blocked / "p.png.poses.json").exists()


# --------------------------------------------------------------------------------- resume
@pytest.mark.parametrize("kind", ["best", "plain"])
def test_resume_from_weights_only_says_what_is_missing_and_warm_start_works(tmp_path, data, kind,
                                                                          capsys):
    out = tmp_path / "run"
    out.mkdir()
    model = create_model("center_offset_hrnet_tiny")
    if kind == "best":  # what best.pth holds: weights + metadata, no optimizer / schedule / rng
        save_checkpoint(out / "last.pth", model, COCO, {"data": {"input_size": 64}}, epoch=1)
    else:
        torch.save(model.state_dict(), out / "last.pth")
    before = (out / "last.pth").read_bytes()
    if kind == "plain":  # the same path in this process (the subprocess run is the "best" case)
        main_error(capsys, ["train", "--data", data, "--out", out, "--epochs", 2, "--device", "cpu",
                            "--resume", *FIXTURE_LAYOUT, *TINY], "cannot resume", "optimizer", "--init-weights")
        assert (out / "last.pth").read_bytes() == before and files(out) == ["last.pth"]
        return
    res = train(data, out, resume=True, epochs=2)
    one_line_error(res, "cannot resume", "optimizer", "--init-weights")
    assert (out / "last.pth").read_bytes() == before and files(out) == ["last.pth"]

    res = cli("train", "--data", data, "--out", tmp_path / "warm", "--epochs", 1, "--device", "cpu",
              "--init-weights", out / "last.pth", *FIXTURE_LAYOUT, *TINY)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "pretrained: last.pth -> model: loaded" in res.stdout
    assert torch.load(tmp_path / "warm" / "last.pth", weights_only=True)["epoch"] == 1


# --------------------------------------------------------------------------------- annotations
def test_bad_validation_annotation_is_found_before_the_first_step(tmp_path, data):
    d = copy_data(data, tmp_path)
    ann = json.loads((d / "annotations" / "person_keypoints.json").read_text())
    del ann["annotations"][0]["keypoints"]
    (d / "annotations" / "val.json").write_text(json.dumps(ann))
    out = tmp_path / "run"
    res = train(d, out, "data.val_ann=annotations/val.json", "train.eval_every=1")
    one_line_error(res, "annotation id 1 lacks keypoints")
    assert not (out / "last.pth").exists() and not (out / "metrics.jsonl").exists()


def test_epoch_checkpoint_is_saved_before_evaluation(tmp_path, data):
    d = copy_data(data, tmp_path)
    shutil.copytree(d / "images", d / "val_images")
    for p in (d / "val_images").iterdir():  # evaluation will fail: no validation image decodes
        p.write_bytes(undecodable_jpeg())
    out = tmp_path / "run"
    res = train(d, out, "data.val_images=val_images", "train.eval_every=1")
    one_line_error(res, "none of the 4 validation images could be read")
    assert torch.load(out / "last.pth", weights_only=True)["epoch"] == 1  # the epoch is not lost


@pytest.mark.parametrize("value, needle", [('"12.5"', "'12.5'"), ("null", "None")])
def test_training_refuses_non_numeric_keypoints_with_the_annotation_id(tmp_path, data, value, needle,
                                                                       capsys):
    d = copy_data(data, tmp_path)
    path = d / "annotations" / "person_keypoints.json"
    text = path.read_text()
    ann = json.loads(text)
    ann["annotations"][2]["keypoints"][4] = json.loads(value)
    path.write_text(json.dumps(ann))
    argv = ["train", "--data", d, "--out", tmp_path / "run", "--device", "cpu", *FIXTURE_LAYOUT, *TINY]
    if value == "null":  # in this process; the subprocess run is the string case
        main_error(capsys, argv, "annotation id 3", "non-numeric", needle)
    else:
        one_line_error(cli(*argv), "annotation id 3", "non-numeric", needle)
    assert not (tmp_path / "run").exists()


def test_training_refuses_an_annotation_without_keypoints_as_eval_does(tmp_path, data, capsys):
    d = copy_data(data, tmp_path)
    path = d / "annotations" / "person_keypoints.json"
    ann = json.loads(path.read_text())
    del ann["annotations"][1]["keypoints"]
    path.write_text(json.dumps(ann))
    main_error(capsys, ["train", "--data", d, "--out", tmp_path / "run", "--device", "cpu", *FIXTURE_LAYOUT,
                        *TINY], "annotation id 2 lacks keypoints")
    assert not (tmp_path / "run").exists()


# --------------------------------------------------------------------------------- images
def test_undecodable_and_truncated_training_images(tmp_path, data):
    d = copy_data(data, tmp_path)
    (d / "images" / "scene-b.jpg").write_bytes(undecodable_jpeg(1))
    (d / "images" / "scene-c.jpg").write_bytes(truncated_jpeg(2))
    out = tmp_path / "run"
    res = train(d, out, "train.max_iters_per_epoch=null")  # 2 iterations: all 4 images are read
    assert res.returncode == 0, res.stderr[-3000:]
    err = res.stderr.splitlines()
    assert sum("skipped" in ln and "scene-b.jpg" in ln for ln in err) == 1, res.stderr[-3000:]
    assert sum("truncated JPEG" in ln and "scene-c.jpg" in ln for ln in err) == 1, res.stderr[-3000:]
    assert torch.load(out / "last.pth", weights_only=True)["global_step"] == 2


# --------------------------------------------------------------------------------- kills
def test_torn_metrics_line_and_stale_temporaries_after_a_kill(tmp_path, run1, data):
    out = copy_run(run1, tmp_path)
    with open(out / "metrics.jsonl", "a") as f:
        f.write('{"type": "step", "epoch": 2, "lo')  # killed in the middle of an append
    stale = [out / ".last.pth.k1ll3d_x.tmp", out / ".metrics.csv.abcdefgh.tmp"]
    for p in stale:
        p.write_bytes(b"half a file")
    (out / "notes.tmp").write_text("not ours")
    res = train(data, out, resume=True, epochs=2)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "dropped 1 unreadable line" in res.stderr
    assert not any(p.exists() for p in stale) and (out / "notes.tmp").is_file()
    records = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records if r["type"] == "epoch"] == [1, 2]
    assert torch.load(out / "last.pth", weights_only=True)["epoch"] == 2


# --------------------------------------------------------------------------------- divergence
def test_nan_loss_stops_with_one_line_and_keeps_the_checkpoint(tmp_path, run1, data):
    out = copy_run(run1, tmp_path)
    before = (out / "last.pth").read_bytes()
    res = train(data, out, "loss.heatmap=.nan", resume=True, epochs=2)
    one_line_error(res, "training loss is nan", "last good checkpoint")
    assert (out / "last.pth").read_bytes() == before
    assert not list(out.glob(".*.tmp"))


def test_diverged_weights_never_overwrite_a_good_checkpoint(tmp_path, data):
    # epoch 1 trains normally; epoch 2 runs at lr 1e30: the weights blow up after a finite loss
    out = tmp_path / "run"
    res = train(data, out, "train.lr_steps=[1]", "train.lr_steps_of=2", "train.lr_gamma=1.0e+33",
                epochs=2)
    one_line_error(res, "training diverged at epoch 2", "NaN/Inf", "last good checkpoint")
    ckpt = torch.load(out / "last.pth", weights_only=True)
    assert ckpt["epoch"] == 1
    assert all(torch.isfinite(v).all() and v.abs().max() < 1e6 for v in ckpt["state_dict"].values()
               if v.is_floating_point())


# --------------------------------------------------------------------------------- settings
@pytest.mark.parametrize("setting, needle", [
    ("test.topk=0", "test.topk must be >= 1"),
    ("test.center_kernel=4", "test.center_kernel must be an odd number"),
    ("test.global_size=1", "test.global_size must be an odd number >= 3"),
    ("test.gaussian_sigma=0", "test.gaussian_sigma must be > 0"),
    ("test.adaptation=maximal", "test.adaptation must be one of none, kems, partial, full"),
    ("test.upsample=nearest", "test.upsample must be one of official, aligned"),
])
def test_bad_test_settings_are_one_line(tmp_path, data, ckpt, setting, needle, capsys):
    out = tmp_path / "ev"
    argv = ["eval", "--weights", ckpt, "--data", data / "annotations" / "person_keypoints.json",
            "--images", data / "images", "--out", out, "--device", "cpu", setting]
    if setting == "test.topk=0":
        one_line_error(cli(*argv), needle)
    else:  # the other values in this process
        main_error(capsys, argv, needle)
    assert not out.exists()


def test_bad_test_setting_stops_training_before_the_first_step(tmp_path, data, capsys):
    main_error(capsys, ["train", "--data", data, "--out", tmp_path / "run", "--device", "cpu",
                        *FIXTURE_LAYOUT, *TINY, "test.center_kernel=2"], "test.center_kernel must be an odd number")
    assert not (tmp_path / "run").exists()


# --------------------------------------------------------------------------------- device, --out
# a weights file that does not exist proves the check runs before any model is loaded
VERBS = {
    "predict": lambda t: ["predict", "--weights", t / "none.pth", t / "img.png"],
    "eval": lambda t: ["eval", "--weights", t / "none.pth", "--data", t],
    "upper-bound": lambda t: ["upper-bound", "--weights", t / "none.pth", "--data", t],
    "train": lambda t: ["train", "--data", t / "no-data"],
}


@NO_CUDA
@pytest.mark.parametrize("verb", sorted(VERBS))
def test_cuda_on_a_machine_without_it(tmp_path, verb, capsys):
    argv = [*VERBS[verb](tmp_path), "--device", "cuda"]
    if verb == "predict":
        one_line_error(cli(*argv), "--device cuda", "CUDA is not available")
    else:  # the other verbs in this process
        main_error(capsys, argv, "--device cuda", "CUDA is not available")


@pytest.mark.parametrize("verb", ["predict", "upper-bound"])
def test_bogus_device(tmp_path, verb, capsys):
    main_error(capsys, [*VERBS[verb](tmp_path), "--device", "gpu0"], "--device 'gpu0' is not a torch device")


@pytest.mark.parametrize("verb", sorted(VERBS))
def test_out_that_is_a_file(tmp_path, verb, capsys):
    (tmp_path / "taken").write_text("a file")
    argv = [*VERBS[verb](tmp_path), "--out", tmp_path / "taken"]
    if verb == "train":
        one_line_error(cli(*argv), "is a file, not a folder")
    else:  # the other verbs in this process
        main_error(capsys, argv, "is a file, not a folder")
    assert (tmp_path / "taken").read_text() == "a file"


def test_out_in_an_unwritable_place(tmp_path, capsys):
    (tmp_path / "taken").write_text("a file")
    main_error(capsys, [*VERBS["predict"](tmp_path), "--out", tmp_path / "taken" / "sub"],
               "taken is a file, not a folder")
    if os.geteuid() != 0:  # the super-user may write anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o555)
        main_error(capsys, [*VERBS["predict"](tmp_path), "--out", locked / "res"], "cannot write in")
        assert list(locked.iterdir()) == []


# --------------------------------------------------------------------------------- decoding
def test_decoding_drops_and_counts_nan_offsets():
    """Library level (the CLI refuses non-finite model outputs before decoding)."""
    from logocap.codecs.decode import decode_center_offset, pose_nms

    k = COCO.num_keypoints
    g = torch.Generator().manual_seed(0)
    out = {"heatmaps": torch.rand(2, k + 1, 16, 16, generator=g),
           "offsets": torch.randn(2, 2 * k, 16, 16, generator=g)}
    out["offsets"][0, 3, :8] = float("nan")  # the top half of image 0 reads NaN offsets
    res = decode_center_offset(out, COCO, {"topk": 10})
    top = res["centers"][0, :, 1] < 32  # candidates whose offsets are read in rows 0..7
    assert res["nonfinite"].tolist() == [int(top.sum()), 0] and top.any()
    assert not res["valid"][0][top].any() and res["valid"][1].all()
    assert torch.isfinite(res["poses"]).all() and torch.isfinite(res["scores"]).all()
    keep = pose_nms(res["poses"], res["scores"], res["valid"])
    assert not keep[0][top].any() and keep[0].any()
