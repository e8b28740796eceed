"""Center-offset and LOGO-CAP networks: shapes, official checkpoint layout, AN maths, registry."""
from pathlib import Path

import pytest
import torch
from torch import nn

from logocap.meta import COCO, CROWDPOSE
from logocap.models import create_model, list_models
from logocap.models.blocks import AttentiveNorm2d
from logocap.utils import LogocapError

DATA = Path(__file__).parent / "data"


def official_state_dict(name: str) -> dict:
    """Random tensors with exactly the keys and shapes of an official checkpoint listing."""
    sd = {}
    for line in (DATA / name).read_text().splitlines():
        key, shape = line.rsplit(" [", 1)
        dims = [int(s) for s in shape.rstrip("]").split(",") if s.strip()]
        sd[key] = torch.tensor(3) if key.endswith("num_batches_tracked") else torch.rand(dims)
    return sd


@pytest.mark.parametrize("width,params", [(32, 35_991_429), (48, 72_107_333)])
def test_logocap_loads_official_checkpoint_strictly(width, params):
    model = create_model(f"logocap_hrnet_w{width}", num_keypoints=COCO.num_keypoints)
    sd = official_state_dict(f"logocap_w{width}_keys.txt")
    model.load_state_dict(sd, strict=True)
    assert torch.equal(model.joints_mlp[4].weight_, sd["joints_mlp.4.weight_"])
    # trainable parameter count of the official network (notes 2.4)
    assert sum(p.numel() for p in model.parameters()) == params


@pytest.mark.parametrize("meta", [COCO, CROWDPOSE])
def test_center_offset_forward_shapes(meta):
    k = meta.num_keypoints
    model = create_model("center_offset_hrnet_tiny", num_keypoints=k)
    out = model(torch.randn(2, 3, 64, 96))
    assert set(out) == {"heatmaps", "offsets"}
    assert out["heatmaps"].shape == (2, k + 1, 16, 24)
    assert out["offsets"].shape == (2, 2 * k, 16, 24)


def test_logocap_forward_kam_and_backward():
    k = COCO.num_keypoints
    model = create_model("logocap_hrnet_tiny", num_keypoints=k)
    out = model(torch.randn(2, 3, 64, 64))
    d = model.embed_dim
    assert out["embedding"].shape == (2, d, 16, 16)
    kems = torch.randn(5, k * d, 11, 11, requires_grad=True)
    kam = model.kam(kems)
    assert kam.shape == (5, k, 11, 11)
    (kam.sum() + out["heatmaps"].sum() + out["offsets"].sum() + out["embedding"].sum()).backward()
    assert kems.grad is not None and model.joints_mlp[4].weight_.grad is not None
    assert model.backbone.conv1.weight.grad is not None
    assert model.kam(torch.zeros(0, k * d, 11, 11)).shape == (0, k, 11, 11)
    with pytest.raises(ValueError, match="local KEMs"):
        model.kam(torch.zeros(1, k * d + 1, 11, 11))


def test_logocap_switches():
    k = 5
    bn = create_model("logocap_hrnet_tiny", num_keypoints=k, attentive_norm=False)
    assert type(bn.joints_mlp[4]) is nn.BatchNorm2d and bn.joints_mlp[4].affine
    one = create_model("logocap_hrnet_tiny", num_keypoints=k, message_passing="1", embed_dim=4)
    assert len(one.joints_mlp) == 1 and one.joints_mlp[0].kernel_size == (1, 1)
    assert one.kam(torch.randn(3, k * 4, 11, 11)).shape == (3, k, 11, 11)
    with pytest.raises(LogocapError, match="message_passing"):
        create_model("logocap_hrnet_tiny", message_passing="2")


def test_attentive_norm_matches_hand_computation():
    torch.manual_seed(0)
    c, n_aff = 3, 4
    an = AttentiveNorm2d(c, n_aff).train()
    x = torch.randn(2, c, 5, 5) * 2 + 1
    out = an(x)
    # BN without affine, batch statistics (biased variance), eps 1e-5
    mu = x.mean(dim=(0, 2, 3), keepdim=True)
    var = x.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
    normed = (x - mu) / torch.sqrt(var + 1e-5)
    # gates: per sample and channel mean / sqrt(unbiased var + 1e-3), 1x1 conv, hard sigmoid
    stat = x.mean(dim=(2, 3)) / torch.sqrt(x.var(dim=(2, 3), unbiased=True) + 1e-3)  # [B, C]
    logits = stat @ an.attn_weights.attention[0].weight[:, :, 0, 0].T  # [B, n_aff]
    gates = torch.clamp(logits + 3, 0, 6) / 6
    gamma = gates @ an.weight_
    beta = gates @ an.bias_
    expected = gamma[:, :, None, None] * normed + beta[:, :, None, None]
    assert torch.allclose(out, expected, atol=1e-5)
    # running statistics sit on the module itself, as in the official checkpoint
    assert {"running_mean", "running_var", "num_batches_tracked", "weight_", "bias_",
            "attn_weights.attention.0.weight"} == set(an.state_dict())


def test_registry_names_attributes_and_rebuild():
    names = list_models()
    for n in ["center_offset_hrnet_w32", "center_offset_hrnet_w48", "center_offset_hrnet_tiny",
              "center_offset_hrnet_small", "logocap_hrnet_w32", "logocap_hrnet_w48",
              "logocap_hrnet_tiny", "logocap_hrnet_small"]:
        assert n in names
    m = create_model("logocap_hrnet_tiny", num_keypoints=14, embed_dim=4, cmp_widths=(8, 8, 8))
    assert (m.model_name, m.num_keypoints, m.stride) == ("logocap_hrnet_tiny", 14, 4)
    assert m.model_kwargs == {"embed_dim": 4, "cmp_widths": (8, 8, 8)}
    again = create_model(m.model_name, m.num_keypoints, **m.model_kwargs)
    assert {k: v.shape for k, v in again.state_dict().items()} == \
        {k: v.shape for k, v in m.state_dict().items()}


def test_registry_errors():
    with pytest.raises(LogocapError, match="known models: .*logocap_hrnet_w32"):
        create_model("logocap_hrnet_w64")
    with pytest.raises(LogocapError, match="no_such_arg"):
        create_model("center_offset_hrnet_tiny", no_such_arg=1)
