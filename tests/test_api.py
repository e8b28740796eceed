"""logocap.load / PoseModel on tiny random models: every source kind, batching, errors, drawing."""
import inspect
import warnings

import cv2
import numpy as np
import pytest
import torch

import logocap
from logocap.meta import COCO
from logocap.models import create_model
from logocap.predict import Predictor
from logocap.utils import LogocapError
from fixtures import random_image as image
from fixtures import write_tiny_checkpoint
from test_sources import write_video


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return write_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pth")


@pytest.fixture(scope="module")
def model(ckpt):
    return logocap.load(ckpt)


def test_import_is_light_and_load_is_exported():
    import subprocess
    import sys
    code = "import sys, logocap; print('torch' in sys.modules, callable(logocap.load))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["False", "True"], out.stderr


def test_load_forms(ckpt, model):
    assert model.input_size == 64 and model.meta is COCO or model.meta.same_keypoints(COCO)
    assert "center_offset_hrnet_tiny" in repr(model)
    named = logocap.load("center_offset_hrnet_tiny", weights=ckpt, device="cpu", flip=False)
    assert named.predictor.cfg["flip"] is False and named.predictor.cfg["max_people"] == 5
    with pytest.warns(UserWarning, match="randomly initialised"):
        rnd = logocap.load("logocap_hrnet_tiny", input_size=64)
    assert rnd.input_size == 64
    with pytest.raises(LogocapError, match="neither a checkpoint file nor a model name"):
        logocap.load("no_such_model")
    with pytest.raises(LogocapError, match="checkpoint is a 'center_offset_hrnet_tiny'"):
        logocap.load("logocap_hrnet_tiny", weights=ckpt)
    with pytest.raises(LogocapError, match="device 'gpu9'"):
        logocap.load(ckpt, device="gpu9")
    with pytest.raises(LogocapError, match="batch must be a positive integer"):
        logocap.load(ckpt, batch=0)


@pytest.mark.parametrize("name", ["center_offset_hrnet_tiny", "logocap_hrnet_tiny"])
def test_batch_of_four_equals_batch_of_one_on_different_sizes(name):
    """Padding would change HRNet's outputs; batches group same-shape inputs instead."""
    torch.manual_seed(1)
    m = logocap.api.PoseModel(Predictor(create_model(name), COCO, 64, {"topk": 10, "max_people": 5}))
    images = [image(50, 90, 1), image(64, 64, 2), image(90, 40, 3), image(50, 90, 4),
              image(33, 70, 5), image(64, 64, 6), image(120, 100, 7)]
    one = m(images, batch=1)
    four = m(images, batch=4)
    assert [p.speed["batch"] for p in one] == [1] * 7
    assert max(p.speed["batch"] for p in four) == 2  # (50, 90) twice, (64, 64) twice in a window
    for a, b, img in zip(one, four, images):
        assert a.image_size == b.image_size == img.shape[:2]
        assert len(a) == len(b) >= 1
        np.testing.assert_allclose(a.keypoints, b.keypoints, atol=1e-4)
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-6)
    # the predictor's own batch call agrees too
    for a, b in zip(one, m.predictor.predict_batch(images)):
        np.testing.assert_allclose(a.keypoints, b.keypoints, atol=1e-4)


def test_every_image_source_kind(tmp_path, model):
    folder = tmp_path / "pics"
    (folder / "sub").mkdir(parents=True)
    cv2.imwrite(str(folder / "a.jpg"), image(48, 64, 1))
    cv2.imwrite(str(folder / "sub" / "b.png"), image(70, 40, 2))
    single = model(str(folder / "a.jpg"))
    assert isinstance(single, list) and len(single) == 1
    assert single[0].path == str(folder / "a.jpg") and single[0].image_size == (48, 64)
    assert single[0].image is None  # files are not kept: plot() reads the file again
    assert single[0].plot().shape == (48, 64, 3)
    by_folder = model(folder)
    assert [p.path for p in by_folder] == [str(folder / "a.jpg"), str(folder / "sub" / "b.png")]
    by_glob = model(str(folder / "**" / "*.png"))
    assert [p.image_size for p in by_glob] == [(70, 40)]
    by_list = model([folder / "sub" / "b.png", str(folder / "a.jpg")])
    assert [p.image_size for p in by_list] == [(70, 40), (48, 64)]
    np.testing.assert_allclose(by_list[1].keypoints, single[0].keypoints, atol=1e-4)
    arr = image(40, 56, 3)
    from_array = model(arr)[0]
    assert from_array.path is None and from_array.image is not None
    assert from_array.plot().shape == (40, 56, 3)
    assert len(model([arr, arr])) == 2 and len(model(np.stack([arr, arr]))) == 2
    gen = model(folder, stream=True)
    assert inspect.isgenerator(gen) and len(list(gen)) == 2
    d = single[0].to_dict()
    assert d["path"] == str(folder / "a.jpg") and "frame" not in d
    assert single[0].to_coco(image_id=3)[0]["image_id"] == 3


def test_video_is_streamed_frame_by_frame(tmp_path, model):
    path = write_video(tmp_path / "clip.avi", n=9)
    gen = model(path, batch=2)
    assert inspect.isgenerator(gen)
    first = next(gen)  # only the first batch is read so far
    assert first.frame_index == 0 and first.image.shape == (48, 64, 3) and first.path == str(path)
    rest = list(gen)
    assert [p.frame_index for p in rest] == list(range(1, 9))
    assert rest[0].to_dict()["frame"] == 1 and rest[0].plot().shape == (48, 64, 3)
    every = model(path, every=3, max_frames=2, stream=False)
    assert [p.frame_index for p in every] == [0, 3] and every[0].image is None
    with pytest.raises(LogocapError, match="camera 63 cannot be opened"):
        model(63)
    with pytest.raises(LogocapError, match="every must be a positive integer"):
        model(path, every=0)


def test_bad_items_single_raises_collection_skips(tmp_path, model):
    folder = tmp_path / "mixed"
    folder.mkdir()
    cv2.imwrite(str(folder / "good.png"), image(40, 40, 1))
    (folder / "zero.jpg").write_bytes(b"")
    (folder / "junk.png").write_text("not an image")
    cv2.imwrite(str(folder / "gray16.png"), (image(30, 50, 2)[..., 0].astype(np.uint16) * 257))
    cv2.imwrite(str(folder / "rgba.png"), np.concatenate([image(30, 50, 3), image(30, 50, 4)[..., :1]], 2))
    cv2.imwrite(str(folder / "tiny.png"), image(1, 1, 5))
    with pytest.warns(UserWarning, match="skipped"):
        res = model(folder)
    assert sorted(p.path.split("/")[-1] for p in res) == ["good.png", "gray16.png", "rgba.png", "tiny.png"]
    assert sorted(n.split("/")[-1] for n, _ in model.skipped) == ["junk.png", "zero.jpg"]
    with pytest.raises(LogocapError, match="0 bytes"):
        model(folder / "zero.jpg")
    with pytest.raises(LogocapError, match="cannot decode"):  # junk.png is the first bad file
        model(folder, errors="raise")
    with pytest.raises(LogocapError, match="no such file or folder"):
        model(tmp_path / "missing.jpg")
    with pytest.raises(LogocapError, match="uint8"):
        model(np.zeros((20, 20, 3), np.float32))
    with pytest.raises(LogocapError, match="megapixels"):
        model(np.broadcast_to(np.zeros((1, 1, 3), np.uint8), (20000, 20000, 3)))
    gray = image(30, 50, 6)[..., 0]  # grayscale and 16-bit arrays are converted
    np.testing.assert_allclose(model(gray)[0].keypoints,
                               model(np.repeat(gray[..., None], 3, 2))[0].keypoints, atol=1e-5)
    np.testing.assert_allclose(model(gray.astype(np.uint16) * 257)[0].keypoints,
                               model(gray)[0].keypoints, atol=1e-5)


def test_dataloader_workers_give_the_same_results(tmp_path, model):
    for i, (h, w) in enumerate([(48, 64), (64, 48), (48, 64)]):
        cv2.imwrite(str(tmp_path / f"im{i}.png"), image(h, w, i))
    here = model(tmp_path, batch=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning expected
        there = model(tmp_path, batch=2, workers=1)
    assert [p.path for p in here] == [p.path for p in there]
    for a, b in zip(here, there):
        np.testing.assert_allclose(a.keypoints, b.keypoints, atol=1e-5)


def test_drawing_colours_by_body_side_and_keeps_resolution():
    """Left limbs in the meta's left colour, right limbs in the right colour, original size."""
    k = COCO.num_keypoints
    kp = np.zeros((1, k, 3), np.float32)
    names = COCO.keypoint_names
    for j, n in enumerate(names):
        side_x = 60 if n.startswith("left") else 200 if n.startswith("right") else 130
        kp[0, j] = (side_x, 40 + 12 * j, 0.9)
    poses = logocap.Poses(kp, np.array([0.87], np.float32), COCO, image=np.zeros((300, 260, 3), np.uint8))
    out = poses.plot()
    assert out.shape == (300, 260, 3)
    li, ri = names.index("left_knee"), names.index("left_ankle")
    y_mid = int((kp[0, li, 1] + kp[0, ri, 1]) / 2)
    left_colour = np.array(COCO.keypoint_colors[li])
    right_colour = np.array(COCO.keypoint_colors[names.index("right_knee")])
    assert not np.array_equal(left_colour, right_colour)
    assert np.abs(out[y_mid, 58:63].astype(int) - left_colour).sum(1).min() < 60   # left shin
    assert np.abs(out[y_mid + 12, 198:203].astype(int) - right_colour).sum(1).min() < 60  # right shin
    # joints below the threshold are not drawn
    low = logocap.Poses(kp * np.array([1, 1, 0.1], np.float32), np.array([0.87], np.float32), COCO)
    assert not low.draw(np.zeros((300, 260, 3), np.uint8))[:, :, :].any()
    with pytest.raises(LogocapError, match="needs an image"):
        logocap.Poses.empty().draw()
