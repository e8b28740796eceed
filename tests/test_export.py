"""ONNX export and the ONNX Runtime backend: the final keypoints and scores of ``predict`` equal the
torch backend's, for the committed synthetic checkpoints (trained, so there are real people to
compare) on images of two sizes (dynamic shapes), and for the other families on tiny models."""
import json
import os
import shutil
import sys
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

import logocap  # noqa: E402
from fixtures import write_tiny_checkpoint  # noqa: E402
from logocap.cli import main  # noqa: E402
from logocap.data.synthetic import render_image  # noqa: E402
from logocap.engine.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from logocap.export import export_checkpoint, kam_path_for  # noqa: E402
from logocap.meta import KeypointMeta  # noqa: E402
from logocap.models import create_model  # noqa: E402
from logocap.onnx_backend import load_network, load_predictor  # noqa: E402
from logocap.predict import Predictor  # noqa: E402
from logocap.utils import LogocapError  # noqa: E402

SYNTHETIC = Path(__file__).resolve().parents[1] / "checkpoints" / "synthetic"
TOL_PX, TOL_SCORE = 0.01, 1e-4
# three keypoints keep the per-joint DEKR / HGR branches (and their export) small
META3 = KeypointMeta("three", ("nose", "left_eye", "right_eye"), flip_pairs=(("left_eye", "right_eye"),),
                     skeleton=((0, 1), (0, 2)), sigmas=(0.026, 0.025, 0.025))


def synthetic_images():
    """Two synthetic scenes of two sizes plus the mirror of the first (same shape: a batch of 2)."""
    a = render_image(np.random.default_rng(0), 256)[0]
    b = cv2.resize(render_image(np.random.default_rng(1), 256)[0], (300, 200))
    return [a, b, np.ascontiguousarray(a[:, ::-1])]


def assert_same_poses(ref, got):
    assert len(ref) == len(got)
    for r, g in zip(ref, got):
        assert len(r) == len(g)
        if len(r):
            assert np.abs(r.keypoints[..., :2] - g.keypoints[..., :2]).max() <= TOL_PX
            assert np.abs(r.keypoints[..., 2] - g.keypoints[..., 2]).max() <= TOL_SCORE
            assert np.abs(r.scores - g.scores).max() <= TOL_SCORE


@pytest.fixture(scope="module", params=["center_offset_hrnet_tiny_256", "logocap_hrnet_tiny_256"])
def exported(request, tmp_path_factory):
    """(checkpoint copy, network .onnx) via `logocap export` with the default output path."""
    folder = tmp_path_factory.mktemp(request.param)
    ckpt = folder / f"{request.param}.pth"
    shutil.copy(SYNTHETIC / ckpt.name, ckpt)
    assert main(["export", "--weights", str(ckpt)]) == 0
    return ckpt, ckpt.with_suffix(".onnx")


def test_predict_equals_torch_backend(exported):
    ckpt, onnx_path = exported
    images = synthetic_images()
    for size in (128, 256):  # network inputs 128x128, 128x192, 256x256, 256x384
        ref = Predictor.from_checkpoint(ckpt, input_size=size).predict_batch(images)
        got = load_predictor(onnx_path, input_size=size).predict_batch(images)
        assert sum(len(p) for p in ref) >= 10  # people to compare, not an empty agreement
        assert_same_poses(ref, got)


def test_metadata_travels_in_the_file(exported):
    ckpt, onnx_path = exported
    info = load_checkpoint(ckpt)
    net = load_network(onnx_path)
    assert net.model_name == info["model_name"] and net.num_keypoints == 17
    assert KeypointMeta.from_dict(net.info["meta"]).same_keypoints(KeypointMeta.from_dict(info["meta"]))
    assert net.info["input_size"] == info["input_size"] == 256
    assert net.info["normalization"] == info["normalization"]
    assert net.info["test"] == info["config"]["test"]
    assert list(net.parameters()) == [] and net.to("cpu") is net and net.eval() is net
    pred = load_predictor(onnx_path)
    torch_pred = Predictor.from_checkpoint(ckpt)
    assert pred.input_size == torch_pred.input_size and pred.cfg == torch_pred.cfg
    assert hasattr(net, "kam") == ("logocap" in info["model_name"])


def test_kam_graph_dynamic_candidates_and_zero(exported, monkeypatch):
    ckpt, onnx_path = exported
    net = load_network(onnx_path)
    if not hasattr(net, "kam"):
        pytest.skip("center-offset has no KAM graph")
    model = Predictor.from_checkpoint(ckpt).model
    k, d = net.num_keypoints, net.embed_dim
    for n, m in ((1, 11), (4, 5)):
        x = torch.randn(n, k * d, m, m)
        ref, got = model.kam(x), net.kam(x)
        assert got.shape == ref.shape == (n, k, m, m)
        assert (got - ref).abs().max() <= 1e-4 * ref.abs().max()

    def boom(*a, **kw):
        raise AssertionError("ONNX Runtime must not be called with N = 0")
    monkeypatch.setattr(net._kam, "run", boom)
    assert net.kam(torch.zeros(0, k * d, 11, 11)).shape == (0, k, 11, 11)


def test_cli_predict_backend_onnxruntime(exported, tmp_path, capsys):
    ckpt, onnx_path = exported
    img = tmp_path / "scene.png"
    cv2.imwrite(str(img), cv2.cvtColor(synthetic_images()[1], cv2.COLOR_RGB2BGR))
    args = ["predict", str(img), "--weights", str(ckpt), "--size", "128"]
    assert main(args + ["--out", str(tmp_path / "torch")]) == 0
    assert main(args + ["--backend", "onnxruntime", "--out", str(tmp_path / "ort")]) == 0
    assert main(["predict", str(img), "--onnx", str(onnx_path), "--size", "128",
                 "--out", str(tmp_path / "ort2")]) == 0  # --onnx alone implies the backend
    ref = json.loads((tmp_path / "torch" / "scene.png.poses.json").read_text())
    for out in ("ort", "ort2"):
        got = json.loads((tmp_path / out / "scene.png.poses.json").read_text())
        assert len(got["poses"]) == len(ref["poses"]) > 0
        for r, g in zip(ref["poses"], got["poses"]):
            assert np.abs(np.array(r["keypoints"]) - np.array(g["keypoints"])).max() <= TOL_PX
            assert abs(r["score"] - g["score"]) <= TOL_SCORE


def test_cli_video_backend_onnxruntime(exported, tmp_path):
    ckpt, onnx_path = exported
    video = tmp_path / "scene.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (256, 256))
    for i in range(3):
        writer.write(cv2.cvtColor(render_image(np.random.default_rng(i), 256)[0], cv2.COLOR_RGB2BGR))
    writer.release()
    args = ["video", str(video), "--size", "128"]
    assert main(args + ["--weights", str(ckpt), "--out", str(tmp_path / "torch")]) == 0
    assert main(args + ["--onnx", str(onnx_path), "--out", str(tmp_path / "ort")]) == 0
    ref, got = [[json.loads(line) for line in (tmp_path / d / "scene.avi.poses.jsonl").open()]
                for d in ("torch", "ort")]
    assert len(ref) == len(got) == 3 and sum(len(r["poses"]) for r in ref) > 0
    for r, g in zip(ref, got):
        assert len(r["poses"]) == len(g["poses"])
        for a, b in zip(r["poses"], g["poses"]):
            assert np.abs(np.array(a["keypoints"]) - np.array(b["keypoints"])).max() <= TOL_PX


def test_api_load_onnxruntime(exported):
    ckpt, onnx_path = exported
    images = synthetic_images()[:2]
    ref = logocap.load(ckpt, input_size=128)(images)
    for model in (logocap.load(onnx_path, input_size=128),
                  logocap.load(ckpt, backend="onnxruntime", input_size=128, batch=2)):
        assert "Onnx" in type(model.predictor.model).__name__
        assert_same_poses(ref, model(images))


def family_checkpoint(name, path):
    """A tiny random K=3 model whose heatmap biases are raised so that candidates exist."""
    torch.manual_seed(0)
    model = create_model(name, num_keypoints=3)
    with torch.no_grad():
        for conv in model.modules():
            if isinstance(conv, nn.Conv2d) and conv.bias is not None and conv.out_channels in (4, 7):
                conv.bias.add_(0.05)
    save_checkpoint(path, model, META3, {"data": {"input_size": 64},
                                         "test": {"topk": 10, "max_people": 5}})
    return path


@pytest.mark.parametrize("name", ["dekr_hrnet_tiny", "hgr_hrnet_tiny"])
def test_other_bottom_up_families(name, tmp_path):
    ckpt = family_checkpoint(name, tmp_path / f"{name}.pth")
    report = export_checkpoint(ckpt, tmp_path / "net.onnx")
    assert report["exporter"] == {"network": "torchscript"}
    assert load_network(report["files"][0]).family == name.split("_")[0]
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (60, 80, 3), dtype=np.uint8),
              rng.integers(0, 256, (100, 70, 3), dtype=np.uint8)]
    ref = Predictor.from_checkpoint(ckpt).predict_batch(images)
    got = load_predictor(report["files"][0]).predict_batch(images)
    assert sum(len(p) for p in ref) > 0
    assert_same_poses(ref, got)


def test_top_down_sar(tmp_path):
    from logocap.meta import COCO
    from logocap.topdown import TopDownPredictor

    torch.manual_seed(0)
    model = create_model("sar_hrnet_tiny_topdown")
    # The released init (std 1e-3, bias -4.595) makes the selector almost flat, so its hard
    # argmax is decided by float noise and any two correct backends may pick different cells.
    # Large selector weights give argmax margins far above float32 noise: the comparison is then
    # about the backend, not about ties.
    with torch.no_grad():
        model.selector.weight.normal_(0.0, 1.0)
    ckpt = tmp_path / "sar.pth"
    save_checkpoint(ckpt, model, COCO, {"data": {"input_size": 128}})
    report = export_checkpoint(ckpt, tmp_path / "sar.onnx")
    net = load_network(report["files"][0])
    assert net.family == "topdown" and tuple(net.input_hw) == tuple(model.input_hw)
    img = np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    boxes = [[10, 10, 60, 90], [70, 20, 50, 80], [5, 40, 100, 70]]
    ref = TopDownPredictor(model.eval(), COCO).predict(img, boxes)
    got = TopDownPredictor(net, COCO).predict(img, boxes)
    assert len(ref) == 3
    assert_same_poses([ref], [got])
    with pytest.raises(LogocapError, match="top-down"):
        load_predictor(report["files"][0])


# ------------------------------------------------------------------ bad input: one clear line
@pytest.fixture
def tiny_ckpt(tmp_path):
    return write_tiny_checkpoint(tmp_path / "tiny.pth", cfg={"data": {"input_size": 64}},
                                 meta=KeypointMeta.from_dict(logocap.COCO.to_dict()))


def run_cli(args, capsys):
    rc = main(args)
    err = capsys.readouterr().err.strip().splitlines()
    return rc, err


def test_missing_extra_names_it(monkeypatch, tmp_path, tiny_ckpt, capsys):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import now raises ImportError
    with pytest.raises(LogocapError, match=r"pip install logocap\[export\]"):
        load_network(tmp_path / "x.onnx")
    rc, err = run_cli(["export", "--weights", str(tiny_ckpt)], capsys)
    assert rc == 2 and len(err) == 1 and "logocap[export]" in err[0]
    assert not tiny_ckpt.with_suffix(".onnx").exists()


def test_bad_files_and_options(tmp_path, tiny_ckpt, capsys):
    img = tmp_path / "a.png"
    cv2.imwrite(str(img), np.zeros((64, 64, 3), np.uint8))
    cases = [
        (["export", "--weights", str(tiny_ckpt), "--out", str(tmp_path / "m.txt")], "must end with .onnx"),
        (["export", "--weights", str(tmp_path / "nope.pth")], "checkpoint not found"),
        (["predict", str(img), "--weights", str(tiny_ckpt), "--backend", "onnxruntime"], "no ONNX export of"),
        (["predict", str(img), "--onnx", str(tmp_path / "missing.onnx")], "ONNX file not found"),
        (["predict", str(img), "--weights", str(tiny_ckpt), "--backend", "torch", "--onnx", "x.onnx"],
         "onnxruntime backend, not torch"),
        (["predict", str(img)], "--weights FILE is required"),
    ]
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not an onnx model at all")
    cases.append((["predict", str(img), "--onnx", str(garbage)], "cannot read ONNX file"))
    plain = tmp_path / "plain.onnx"  # a valid ONNX file that `logocap export` did not write
    with warnings.catch_warnings():  # the legacy exporter's deprecation notice
        warnings.simplefilter("ignore")
        torch.onnx.export(nn.Conv2d(3, 1, 1), (torch.zeros(1, 3, 8, 8),), str(plain), dynamo=False)
    cases.append((["predict", str(img), "--onnx", str(plain)], "no logocap metadata"))
    for args, message in cases:
        rc, err = run_cli(args, capsys)
        assert rc == 2 and len(err) == 1 and message in err[0], (args, err)
    assert not list((tmp_path).glob("*.poses.json"))


def test_stale_kam_file_is_refused(tmp_path):
    import onnx

    ckpt = tmp_path / "l.pth"
    shutil.copy(SYNTHETIC / "logocap_hrnet_tiny_256.pth", ckpt)
    onnx_path = Path(export_checkpoint(ckpt)["files"][-1])
    kam = kam_path_for(onnx_path)
    with pytest.raises(LogocapError, match="is the kam graph of an export"):
        load_network(kam)
    proto = onnx.load(str(kam))
    info = json.loads(proto.metadata_props[0].value)
    info["export_id"] = "another export"
    proto.metadata_props[0].value = json.dumps(info)
    onnx.save(proto, str(kam))
    with pytest.raises(LogocapError, match="different exports"):
        load_network(onnx_path)
    kam.unlink()
    with pytest.raises(LogocapError, match="ONNX file not found"):
        load_network(onnx_path)


@pytest.mark.skipif(not os.environ.get("LOGOCAP_TEST_DYNAMO"), reason="the dynamo exporter takes "
                    "1-2 minutes on a CPU; set LOGOCAP_TEST_DYNAMO=1 to run it")
def test_dynamo_exporter(tmp_path):
    """torch's default (dynamo) exporter gives the same predictions as the TorchScript one."""
    ckpt = tmp_path / "c.pth"
    shutil.copy(SYNTHETIC / "center_offset_hrnet_tiny_256.pth", ckpt)
    report = export_checkpoint(ckpt, exporter="dynamo")
    assert report["exporter"] == {"network": "dynamo"}
    images = synthetic_images()
    ref = Predictor.from_checkpoint(ckpt, input_size=128).predict_batch(images)
    assert_same_poses(ref, load_predictor(report["files"][0], input_size=128).predict_batch(images))
