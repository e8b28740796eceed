"""Bottom-up SAR through the verbs: `logocap train` (a tiny model, one epoch on a fixture),
`logocap eval`, `logocap predict` and `logocap bench speed` with the trained checkpoint."""
import json

import pytest
import torch

from fixtures import FIXTURE_LAYOUT, make_coco_fixture
from logocap.cli import main
from logocap.predict import Predictor



@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("sar_dekr")
    data = root / "data"
    make_coco_fixture(data, num_images=4, size=(64, 96))
    run = root / "run"
    rc = main(["train", "--data", str(data), "--out", str(run), "--epochs", "1", "--device", "cpu",
               "model.name=sar_dekr_hrnet_tiny", "data.input_size=64", "data.num_workers=0",
               "train.batch_size=2", "train.eval_every=1", "train.log_every=1",
               "train.precision=fp32", "loss.sar_min_area=0", *FIXTURE_LAYOUT])
    assert rc == 0
    return data, run


def test_train_writes_a_sar_dekr_checkpoint_and_logs_its_terms(trained):
    _, run = trained
    ckpt = torch.load(run / "last.pth", map_location="cpu", weights_only=True)
    assert ckpt["model_name"] == "sar_dekr_hrnet_tiny" and ckpt["meta"]["name"] == "coco"
    cfg = ckpt["config"]
    assert cfg["loss"]["sar_normalise"] == "image" and cfg["test"]["sar_score"] == "weights"
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    step = next(r for r in rows if r["type"] == "step")
    assert set(step) >= {"loss", "heatmap", "sar"} and step["sar"] > 0
    assert "val_AP" in [r for r in rows if r["type"] == "epoch"][-1]


def test_eval_predict_and_bench_on_the_checkpoint(trained, tmp_path, capsys):
    data, run = trained
    w = str(run / "last.pth")
    assert main(["eval", "--weights", w, "--data", str(data / "annotations/person_keypoints.json"),
                 "--images", str(data / "images"), "--out", str(tmp_path / "eval")]) == 0
    assert "AP" in json.loads((tmp_path / "eval" / "metrics.json").read_text())
    out = tmp_path / "pred"
    assert main(["predict", "--weights", w, str(data / "images"), "--out", str(out)]) == 0
    files = sorted(out.glob("*.poses.json"))
    assert len(files) == 4 and len(json.loads(files[0].read_text())["keypoint_names"]) == 17
    # the speed benchmark: the checkpoint (natural candidates) and the registered model with
    # forced candidates (a random map in the selector channel)
    for what in (["--weights", w], ["--model", "sar_dekr_hrnet_tiny", "--candidates", "3"]):
        rep = tmp_path / "speed.json"
        assert main(["bench", "speed", *what, "--size", "64", "--iters", "1", "--batch", "1",
                     "--threads", "1", "--paths", "reference", "fast", "--out", str(rep)]) == 0
        rows = json.loads(rep.read_text())["rows"]
        assert len(rows) == 2 and all(r["ms_per_image"] > 0 for r in rows)
    assert {r["model"] for r in rows} == {"sar_dekr_hrnet_tiny"}
    # a Predictor from the checkpoint: the family's decoder, a batch of two, any threshold
    pred = Predictor.from_checkpoint(run / "last.pth", center_threshold=-1.0)
    assert pred.family.name == "sar_dekr" and pred.cfg["sar_score"] == "weights"
    import numpy as np
    imgs = [np.random.default_rng(i).integers(0, 255, (64, 96, 3), dtype=np.uint8) for i in range(2)]
    res = pred.predict_batch(imgs)
    assert all(len(p) >= 1 and p.keypoints.shape[1:] == (17, 3) for p in res)


def test_export_onnx_runtime_gives_the_torch_poses(tmp_path):
    pytest.importorskip("onnxruntime")
    import numpy as np
    from logocap.engine.checkpoint import save_checkpoint
    from logocap.export import export_checkpoint
    from logocap.meta import KeypointMeta
    from logocap.models import create_model
    from logocap.onnx_backend import load_network, load_predictor

    torch.manual_seed(0)
    meta = KeypointMeta(name="three", keypoint_names=("nose", "left_eye", "right_eye"),
                        flip_pairs=(("left_eye", "right_eye"),), skeleton=(), sigmas=(0.03,) * 3)
    model = create_model("sar_dekr_hrnet_tiny", num_keypoints=3)
    with torch.no_grad():  # selector margins far above float32 noise: a test of the backend
        model.head_heatmap[1].weight[3].normal_(0.0, 1.0)
    ckpt = tmp_path / "sar_dekr.pth"
    save_checkpoint(ckpt, model, meta, {"data": {"input_size": 64},
                                        "test": {"topk": 5, "max_people": 5,
                                                 "center_threshold": 0.0}})
    report = export_checkpoint(ckpt, tmp_path / "net.onnx")
    assert load_network(report["files"][0]).family == "sar_dekr"
    images = [np.random.default_rng(i).integers(0, 256, (60, 80, 3), dtype=np.uint8)
              for i in range(2)]
    ref = Predictor.from_checkpoint(ckpt).predict_batch(images)
    got = load_predictor(report["files"][0]).predict_batch(images)
    assert sum(len(p) for p in ref) > 0
    for r, g in zip(ref, got):
        assert len(r) == len(g)
        assert np.abs(r.keypoints[..., :2] - g.keypoints[..., :2]).max() < 1e-2
        assert np.allclose(r.scores, g.scores, rtol=1e-3, atol=1e-6)
