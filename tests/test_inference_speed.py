"""Test-time speed paths (issue 13): conv+BN folding, test.precision bf16, test.impl, batching."""
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import logocap
from logocap.config import validate_test_cfg
from logocap.data.transforms import load_image
from logocap.engine.speed import ForcedCenters, compare_poses
from logocap.meta import COCO
from logocap.models import create_model
from logocap.models.blocks import AttentiveNorm2d
from logocap.models.fuse import conv_bn_pairs, fuse_conv_bn, output_convs
from logocap.predict import Predictor
from logocap.utils import LogocapError

ROOT = Path(__file__).resolve().parents[1]
CKPT = ROOT / "checkpoints" / "synthetic"
VAL = ROOT / "data" / "synthetic" / "images" / "val"


def _randomise_bn(model: nn.Module) -> nn.Module:
    """Non-trivial BN statistics and affine parameters (fresh models have mean 0 / var 1)."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
                if m.weight is not None:
                    m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                    m.bias.copy_(torch.rand(m.bias.shape, generator=g) - 0.5)
    return model.eval()


@pytest.mark.parametrize("name", ["logocap_hrnet_tiny", "center_offset_hrnet_tiny", "dekr_hrnet_tiny"])
def test_fused_model_equals_unfused(name):
    torch.manual_seed(0)
    model = _randomise_bn(create_model(name))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fused = fuse_conv_bn(model)
    # the caller's model is untouched (a training model handed to the evaluator keeps its BNs)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert fused.fused_conv_bn > 50 and not fused.training
    left = [m for m in fused.modules() if type(m) is nn.BatchNorm2d]
    if name != "dekr_hrnet_tiny":  # DEKR's BNs after the adaptive convs are not Conv2d pairs
        assert not left
    x = torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        a, b = model(x), fused(x)
        for k in a:
            scale = a[k].abs().max().item()
            assert (a[k] - b[k]).abs().max().item() <= 1e-5 * scale + 1e-6, k
        if hasattr(model, "kam"):
            z = torch.randn(5, model.num_keypoints * model.embed_dim, 11, 11)
            torch.testing.assert_close(fused.kam(z), model.kam(z), rtol=1e-5, atol=1e-5)
            # Attentive Norm reads the BN input for its gates: never folded
            assert any(isinstance(m, AttentiveNorm2d) for m in fused.modules())


class _Residual(nn.Module):
    """conv -> BN, but the conv output also feeds the sum: folding would change it."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)
        self.head = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4))

    def forward(self, x):
        y = self.conv(x)
        return {"out": self.head(self.bn(y) + y)}


def test_only_exact_conv_bn_pairs_are_folded():
    model = _randomise_bn(_Residual())
    assert conv_bn_pairs(model) == [("head.0", "head.1")]
    fused = fuse_conv_bn(model)
    assert isinstance(fused.bn, nn.BatchNorm2d) and isinstance(fused.head[1], nn.Identity)
    x = torch.randn(1, 3, 16, 16)
    torch.testing.assert_close(fused(x)["out"], model(x)["out"], rtol=1e-5, atol=1e-6)


def test_output_convs_are_the_heads_last_layers():
    assert set(output_convs(create_model("logocap_hrnet_tiny"))) == {
        "final_layer_cls", "final_layer_reg", "joints_mlp.9"}
    dekr = output_convs(create_model("dekr_hrnet_tiny"))
    assert "head_heatmap.1" in dekr and len(dekr) == 1 + COCO.num_keypoints


def _val_images(n):
    files = sorted(VAL.glob("*.jpg"))[:n]
    if len(files) < n or not CKPT.is_dir():
        pytest.skip("synthetic data / checkpoints not present")
    return [load_image(f) for f in files]


def test_fast_fp32_equals_reference_on_the_synthetic_checkpoint():
    imgs = _val_images(2)
    ck = CKPT / "logocap_hrnet_tiny_256.pth"
    ref = Predictor.from_checkpoint(ck, impl="reference", input_size=128, topk=10)
    fast = Predictor.from_checkpoint(ck, impl="fast", input_size=128, topk=10)
    assert fast.net.model is not ref.net.model
    c = compare_poses([ref.predict(i) for i in imgs], [fast.predict(i) for i in imgs], 0.01)
    assert c["same_people"] and c["share"] == 1.0 and c["max_err_px"] < 0.01


def test_bf16_keypoints_close_to_fp32():
    imgs = _val_images(3)
    ck = CKPT / "center_offset_hrnet_tiny_256.pth"
    fp32 = Predictor.from_checkpoint(ck)
    bf16 = Predictor.from_checkpoint(ck, precision="bf16")
    assert bf16.precision.name == "bf16" and fp32.precision.name == "fp32"
    a, b = [fp32.predict(i) for i in imgs], [bf16.predict(i) for i in imgs]
    # the confident people (pose score >= 0.2) are where fp32 put them, within 0.5 px
    strong = [p.__class__(p.keypoints[p.scores >= 0.2], p.scores[p.scores >= 0.2], p.meta) for p in a]
    assert sum(len(p) for p in strong) >= 3
    for s, o in zip(strong, b):
        for person in s.keypoints:
            err = np.linalg.norm(o.keypoints[:, :, :2] - person[None, :, :2], axis=-1).max(-1)
            assert err.min() < 0.5
    # decoding reads float32 outputs, and the heads' output layers ran in fp32: the offsets are
    # not bfloat16-rounded values
    x = torch.stack([bf16.prepare(imgs[0])[0]])
    with torch.inference_mode():
        out = bf16.net(x)
    assert all(v.dtype == torch.float32 and v.is_contiguous() for v in out.values())
    off = out["offsets"]
    assert not torch.equal(off, off.bfloat16().float())


def test_batch_of_8_decodes_like_8_single_images():
    imgs = _val_images(8)
    for name, opts in (("center_offset_hrnet_tiny_256.pth", {}),
                       ("logocap_hrnet_tiny_256.pth", {"input_size": 128, "topk": 8})):
        pred = Predictor.from_checkpoint(CKPT / name, **opts)
        prepared = [pred.prepare(i) for i in imgs]
        assert len({tuple(t.shape) for t, _, _ in prepared}) == 1  # one forward pass
        batch = pred.predict_prepared(*zip(*prepared))
        for one_in, got in zip(prepared, batch):
            one = pred.predict_prepared(*zip(one_in))[0]
            assert len(one) == len(got)
            np.testing.assert_allclose(got.keypoints, one.keypoints, atol=1e-3)
            np.testing.assert_allclose(got.scores, one.scores, atol=1e-5)


def test_forced_centers_refine_exactly_topk():
    torch.manual_seed(0)
    pred = Predictor(create_model("logocap_hrnet_tiny"), COCO, 64,
                     {"topk": 7, "center_threshold": -float("inf")})
    pred.net = ForcedCenters(pred.net)
    x = torch.stack([pred.prepare(np.zeros((64, 64, 3), np.uint8))[0]])
    timings = {}
    res = pred.decode(x, timings)
    assert int(res["valid"].sum()) == 7
    assert {"network", "local_kems", "local_kams", "global_kams", "pose_nms"} <= set(timings)


def test_precision_and_impl_are_checked():
    with pytest.raises(LogocapError, match="test.precision must be one of fp32, bf16; got 'fp16'"):
        validate_test_cfg({"precision": "fp16"})
    with pytest.raises(LogocapError, match="test.impl must be one of fast, reference"):
        validate_test_cfg({"impl": "quick"})
    with pytest.raises(LogocapError, match="test.precision"):
        Predictor(create_model("center_offset_hrnet_tiny"), COCO, 64, {"precision": "half"})
    with pytest.warns(UserWarning, match="randomly"):
        with pytest.raises(LogocapError, match="test.precision"):
            logocap.load("center_offset_hrnet_tiny", precision="int8")

    class Other:  # a network that is not a torch module (e.g. another runtime)
        num_keypoints = COCO.num_keypoints

        def __call__(self, x):
            raise AssertionError("not called")

        def to(self, *args, **kwargs):
            return self

        def eval(self):
            return self

    with pytest.raises(LogocapError, match="needs a PyTorch network"):
        Predictor(Other(), COCO, 64, {"precision": "bf16"})


def test_cli_precision_flag(tmp_path, capsys):
    from logocap.cli import main

    img = tmp_path / "a.png"
    import cv2
    cv2.imwrite(str(img), np.zeros((64, 64, 3), np.uint8))
    with pytest.raises(SystemExit) as e:
        main(["predict", str(img), "--weights", str(CKPT / "center_offset_hrnet_tiny_256.pth"),
              "--precision", "fp16"])
    assert e.value.code == 2
    assert "invalid choice: 'fp16'" in capsys.readouterr().err


def test_chunked_global_stage_equals_one_call():
    from logocap.codecs.logocap_decode import decode_cfg, refine

    torch.manual_seed(0)
    model = create_model("logocap_hrnet_tiny").eval()
    g = torch.Generator().manual_seed(4)
    up = torch.rand(2, COCO.num_keypoints + 1, 96, 128, generator=g)
    emb = torch.randn(2, model.embed_dim, 24, 32, generator=g)
    n = 11
    bi = torch.arange(n) % 2
    poses = torch.rand(n, COCO.num_keypoints, 2, generator=g) * torch.tensor([127.0, 95.0])
    cfg = decode_cfg({"global_size": 41})
    with torch.no_grad():
        for level in ("full", "kems"):
            one = refine(model, up, emb, bi, poses, COCO.sigmas, cfg, level=level)
            parts = refine(model, up, emb, bi, poses, COCO.sigmas, cfg, level=level, chunk=4)
            torch.testing.assert_close(parts["joints"], one["joints"], rtol=0, atol=1e-5)
            torch.testing.assert_close(parts["values"], one["values"], rtol=1e-6, atol=1e-7)
            assert "global_kem" in one and "global_kem" not in parts


def test_inference_model_keeps_only_the_embedding_channels_last():
    """The fast path's network runs channels_last: its embedding comes back as it is (the
    local-KEM gather reads it as a view), every other output as contiguous NCHW; the plain
    (reference) network's outputs are all contiguous NCHW. Same values in both layouts."""
    from logocap.models import create_model
    from logocap.models.fuse import fuse_conv_bn
    from logocap.precision import InferenceModel, resolve_precision

    torch.manual_seed(0)
    model = create_model("logocap_hrnet_tiny").eval()
    x = torch.randn(2, 3, 64, 64)
    fast = InferenceModel(fuse_conv_bn(model, channels_last=True),
                          resolve_precision("fp32", "cpu", channels_last=True))
    ref = InferenceModel(model, resolve_precision("fp32", "cpu", channels_last=False))
    with torch.no_grad():
        out, out_ref = fast(x), ref(x)
    assert out["embedding"].is_contiguous(memory_format=torch.channels_last)
    assert not out["embedding"].is_contiguous()
    for key in ("heatmaps", "offsets"):
        assert out[key].is_contiguous()
    assert all(v.is_contiguous() for v in out_ref.values())
    for key, v in out_ref.items():
        assert torch.allclose(out[key], v, atol=1e-4), key
