"""Slim checkpoints (no training state), optionally stored in float16, load back as float32."""
import torch

from logocap.engine.checkpoint import load_checkpoint, save_checkpoint, slim_checkpoint
from logocap.meta import COCO
from logocap.models.registry import create_model
from logocap.models.weights import build_model_from_checkpoint


def _checkpoint(tmp_path):
    torch.manual_seed(0)
    model = create_model("center_offset_hrnet_tiny", num_keypoints=COCO.num_keypoints)
    with torch.no_grad():  # a BN statistic float16 cannot hold: it must stay float32
        model.state_dict()[next(k for k in model.state_dict() if k.endswith("running_var"))][0] = 1e5
    opt = torch.optim.Adam(model.parameters())
    path = tmp_path / "full.pth"
    save_checkpoint(path, model, COCO, {"data": {"input_size": 64}}, optimizer=opt, epoch=3)
    return model, path


def test_slim_half_roundtrip(tmp_path):
    model, path = _checkpoint(tmp_path)
    out = slim_checkpoint(path, tmp_path / "slim.pth", half=True)
    assert 0 < out["max_rel_error"] < 1e-3
    raw = torch.load(tmp_path / "slim.pth", weights_only=True)
    assert raw["stored_dtype"] == "float16" and "optimizer" not in raw
    dtypes = {v.dtype for v in raw["state_dict"].values() if v.is_floating_point()}
    assert dtypes == {torch.float16, torch.float32}  # the 1e5 statistic stayed float32
    assert (tmp_path / "slim.pth").stat().st_size < 0.6 * path.stat().st_size
    ck = load_checkpoint(tmp_path / "slim.pth")
    ref = model.state_dict()
    for k, v in ck["state_dict"].items():
        assert v.dtype == ref[k].dtype, k
        if v.is_floating_point():
            torch.testing.assert_close(v, ref[k], rtol=1e-3, atol=1e-4)
        else:
            assert torch.equal(v, ref[k])
    rebuilt, _, _ = build_model_from_checkpoint(tmp_path / "slim.pth")
    assert next(rebuilt.parameters()).dtype == torch.float32


def test_slim_full_precision_is_exact(tmp_path):
    model, path = _checkpoint(tmp_path)
    out = slim_checkpoint(path, tmp_path / "slim.pth")
    assert out["max_rel_error"] == 0.0
    ck = load_checkpoint(tmp_path / "slim.pth")
    assert "optimizer" not in ck and ck["epoch"] == 3
    for k, v in model.state_dict().items():
        assert torch.equal(ck["state_dict"][k], v)
