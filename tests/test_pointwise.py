"""Conv + ReLU / conv + residual + ReLU as single oneDNN calls in the fast inference copy
(``models.pointwise``): float32 gives the separate ops' bits, bfloat16 stays within bfloat16
rounding, names and parameters are unchanged, and calls the fused operator cannot take run the
plain ops."""
import pytest
import torch
from torch import nn

from logocap.models import create_model
from logocap.models.blocks import BasicBlock, Bottleneck
from logocap.models.fuse import fuse_conv_bn
from logocap.models.pointwise import conv_add_relu, conv_relu, fuse_pointwise, pointwise_available
from logocap.predict import Predictor

pytestmark = pytest.mark.skipif(not pointwise_available(), reason="no oneDNN fused convolutions")


@pytest.mark.parametrize("name", ["logocap_hrnet_tiny", "dekr_hrnet_tiny"])
def test_fused_network_gives_the_float32_values(name):
    """Same bits on the development machine (the same oneDNN kernels with the ReLU / add applied
    to their float32 results); the check allows float rounding, since where PyTorch's plain path
    takes another kernel for a conv (its own 1x1 GEMM on some shapes) the summation order may
    differ on another CPU."""
    torch.manual_seed(0)
    model = create_model(name).eval()
    folded = fuse_conv_bn(model, channels_last=True)
    fused = fuse_pointwise(fuse_conv_bn(model, channels_last=True))
    assert fused.fused_pointwise > 0
    blocks = [m for m in fused.modules() if type(m) in (BasicBlock, Bottleneck)]
    assert blocks and all("forward" in vars(b) for b in blocks)
    assert fused.state_dict().keys() == folded.state_dict().keys()
    x = torch.randn(2, 3, 96, 128).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        a, b = folded(x), fused(x)
        for k in a:
            assert torch.allclose(a[k], b[k], rtol=1e-5, atol=1e-6), k
        if hasattr(model, "kam"):
            local = torch.randn(4, model.num_keypoints * model.embed_dim, 11, 11)
            assert torch.allclose(folded.kam(local), fused.kam(local), rtol=1e-5, atol=1e-6)


def test_bf16_predictor_stays_within_bf16_rounding():
    torch.manual_seed(0)
    model = create_model("center_offset_hrnet_tiny").eval()
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        ref = Predictor(model, test_cfg={"precision": "fp32"}).net(x)
        got = Predictor(model, test_cfg={"precision": "bf16"}).net(x)
    for k in ref:
        scale = ref[k].abs().max()
        assert (got[k] - ref[k]).abs().max() <= 0.05 * scale, k


def test_fused_calls_fall_back_to_the_plain_ops():
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 4, 3, padding=1)
    x = torch.randn(1, 4, 9, 9, requires_grad=True)
    other = torch.randn(1, 4, 9, 9)
    y = conv_add_relu(conv, x, other)  # autograd wants a gradient: the plain ops
    y.sum().backward()
    assert x.grad is not None
    with torch.no_grad():  # the fused call (on a tiny map PyTorch may pick another conv kernel)
        assert torch.allclose(conv_relu(conv, x), torch.relu(conv(x)), atol=1e-6)
        assert torch.allclose(conv_add_relu(conv, x, other), torch.relu(conv(x) + other), atol=1e-6)


def test_only_conv_identity_relu_chains_and_unpatched_convs_are_rewired():
    seq = nn.Sequential(nn.Conv2d(3, 4, 1), nn.Identity(), nn.ReLU(), nn.Conv2d(4, 4, 1),
                        nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1))
    kept = nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU())
    kept[0].forward = kept[0].forward  # a patched forward (e.g. precision.keep_fp32) is left alone
    net = nn.ModuleDict({"a": seq, "b": kept}).eval()
    fuse_pointwise(net)
    assert net.fused_pointwise == 1
    assert "forward" in vars(seq[0]) and type(seq[2]) is nn.Identity
    assert type(seq[5]) is nn.ReLU and "forward" not in vars(seq[3])  # BN in between: not fused
    assert type(kept[1]) is nn.ReLU


def test_bf16_calls_take_the_plain_ops_where_onednn_has_no_bf16(monkeypatch):
    """On a CPU without oneDNN's bfloat16 kernels (e.g. AVX2-only) the fused calls under bf16
    autocast run the plain ops, which PyTorch falls back for; float32 calls stay fused."""
    import logocap.models.pointwise as pw

    calls = []
    real = torch.ops.mkldnn._convolution_pointwise

    class Spy:
        def __call__(self, *a):
            calls.append(a[0].dtype)
            return real(*a)

    monkeypatch.setattr(pw, "_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.ops.mkldnn, "_convolution_pointwise", Spy(), raising=False)
    conv = nn.Conv2d(4, 4, 3, padding=1).eval()
    x = torch.randn(1, 4, 9, 9)
    with torch.no_grad():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = conv_relu(conv, x)
        assert y.dtype == torch.bfloat16 and calls == []
        conv_relu(conv, x)
    assert calls == [torch.float32]
