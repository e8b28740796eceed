"""DEKR network: released key layout (strict load), shapes, CrowdPose, gradients."""
import re
from pathlib import Path

import pytest
import torch

from logocap.engine.checkpoint import load_weights
from logocap.meta import COCO, CROWDPOSE
from logocap.models import create_model, list_models
from logocap.models.adaptive import AdaptBlock
from logocap.models.dekr import DekrModel, is_dekr
from logocap.models.pretrained import load_pretrained

DATA = Path(__file__).resolve().parent / "data"


def released_keys(name: str) -> tuple[dict, dict]:
    """(network {key: shape}, rescoring net {key: shape}) from a released key list."""
    net, rescore = {}, {}
    for line in (DATA / name).read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        target = net
        if line.startswith("RESCORE_NET("):
            target, line = rescore, line.split(") ", 1)[1]
        key, shape = line.split(" ", 1)
        target[key] = tuple(int(v) for v in re.findall(r"\d+", shape))
    return net, rescore


def released_state_dict(name: str, fill=torch.zeros) -> dict:
    net, _ = released_keys(name)
    return {k: (fill(s) if s else torch.tensor(0)) for k, s in net.items()}


@pytest.mark.parametrize("keys,model", [("dekr_w32_keys.txt", "dekr_hrnet_w32"),
                                        ("dekr_w48_keys.txt", "dekr_hrnet_w48")])
def test_released_layout_loads_strictly(keys, model):
    net = create_model(model)
    shapes = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    assert shapes == released_keys(keys)[0]
    net.load_state_dict(released_state_dict(keys), strict=True)
    load_weights(net, released_state_dict(keys))  # the checkpoint reader's strict path
    if model == "dekr_hrnet_w32":
        assert sum(p.numel() for p in net.parameters()) == 29_561_182  # notes 10.1


def test_imagenet_style_file_fills_the_trunk_only():
    net = create_model("dekr_hrnet_w32")
    sd = {k: v for k, v in released_state_dict("dekr_w32_keys.txt", torch.ones).items()
          if k.split(".")[0] in ("conv1", "bn1", "conv2", "bn2", "layer1") or
          k.startswith(("transition1", "transition2", "transition3", "stage"))}
    sd["classifier.weight"] = torch.zeros(1000, 2048)
    rep = load_pretrained(net, sd)
    assert rep.target == "model" and rep.unexpected == ["classifier.weight"]
    assert rep.missing and all(k.split(".")[0] in ("transition_heatmap", "transition_offset",
                                                   "head_heatmap", "offset_feature_layers",
                                                   "offset_final_layer") for k in rep.missing)
    assert torch.equal(net.conv1.weight, torch.ones_like(net.conv1.weight))


@pytest.mark.parametrize("meta", [COCO, CROWDPOSE])
def test_tiny_shapes_and_gradients(meta):
    torch.manual_seed(0)
    k = meta.num_keypoints
    net = create_model("dekr_hrnet_tiny", num_keypoints=k)
    assert is_dekr(net) and not is_dekr(create_model("center_offset_hrnet_tiny"))
    assert len(net.offset_feature_layers) == k and len(net.offset_final_layer) == k
    out = net(torch.randn(2, 3, 64, 96))
    assert out["heatmaps"].shape == (2, k + 1, 16, 24)
    assert out["offsets"].shape == (2, 2 * k, 16, 24)
    (out["heatmaps"].square().sum() + out["offsets"].square().sum()).backward()
    assert net.conv1.weight.grad.abs().sum() > 0
    assert net.offset_final_layer[k - 1].weight.grad.abs().sum() > 0


def test_offsets_of_joint_j_come_from_branch_j_only():
    torch.manual_seed(0)
    net = create_model("dekr_hrnet_tiny", num_keypoints=3).eval()
    x = torch.randn(1, 3, 64, 64)
    before = net(x)["offsets"]
    with torch.no_grad():
        net.offset_final_layer[1].bias += 1.0
    after = net(x)["offsets"]
    assert torch.allclose(after[:, 2:4], before[:, 2:4] + net.offset_scale)
    assert torch.equal(after[:, :2], before[:, :2]) and torch.equal(after[:, 4:], before[:, 4:])


def test_registry_and_released_init():
    names = list_models()
    for n in ("dekr_hrnet_w32", "dekr_hrnet_w48", "dekr_hrnet_small", "dekr_hrnet_tiny"):
        assert n in names
    net = create_model("dekr_hrnet_tiny", num_keypoints=5, joint_channels=4)
    assert isinstance(net, DekrModel) and net.model_kwargs == {"joint_channels": 4}
    blocks = [m for m in net.modules() if isinstance(m, AdaptBlock)]
    assert len(blocks) == 10
    assert all(not b.transform_matrix_conv.weight.detach().any() for b in blocks)
    assert net.head_heatmap[1].weight.std() < 0.01  # normal(0.001)
    rebuilt = create_model(net.model_name, net.num_keypoints, **net.model_kwargs)
    rebuilt.load_state_dict(net.state_dict(), strict=True)


def test_a_logocap_file_given_as_dekr_names_both_models():
    from logocap.utils import LogocapError

    net = create_model("dekr_hrnet_w32")
    sd = released_state_dict("logocap_w32_keys.txt")
    with pytest.raises(LogocapError, match="does not fit model 'dekr_hrnet_w32'.*looks like a "
                                           "'logocap_hrnet_w32' state_dict"):
        load_weights(net, sd)


def test_a_plain_crowdpose_dekr_state_dict_gets_the_crowdpose_keypoints():
    from logocap.engine.checkpoint import build_model_from_checkpoint

    sd = create_model("dekr_hrnet_tiny", num_keypoints=14).state_dict()
    model, meta, info = build_model_from_checkpoint(sd, "dekr_hrnet_tiny")
    assert meta.name == "crowdpose" and model.num_keypoints == 14
    sd = create_model("dekr_hrnet_tiny").state_dict()
    assert build_model_from_checkpoint(sd, "dekr_hrnet_tiny")[1].name == "coco"
