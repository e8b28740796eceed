"""HRNet backbone: official key layout, output shapes, init, and the pretrained-weight loader."""
from pathlib import Path

import pytest
import torch

from logocap.models.hrnet import HRNet
from logocap.models.pretrained import load_pretrained
from logocap.models.registry import create_model
from logocap.utils import LogocapError

DATA = Path(__file__).parent / "data"
TINY = dict(width=8, stem_channels=16, layer1_planes=16, layer1_blocks=1, num_blocks=1,
            num_modules=(1, 1, 1))


def read_keys(name: str, prefix: str = "") -> dict:
    """{key: shape} of an official state_dict listing, keys starting with ``prefix`` (stripped)."""
    out = {}
    for line in (DATA / name).read_text().splitlines():
        key, shape = line.rsplit(" [", 1)  # shapes are the last field; "[]" = scalar
        if key.startswith(prefix):
            out[key[len(prefix):]] = tuple(int(s) for s in shape.rstrip("]").split(",") if s.strip())
    return out


@pytest.mark.parametrize("width", [32, 48])
def test_backbone_matches_official_keys(width):
    net = HRNet(width)
    ours = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    assert ours == read_keys(f"logocap_w{width}_keys.txt", "backbone.")
    # DEKR keeps the same backbone at the top level of its state_dict
    dekr = read_keys(f"dekr_w{width}_keys.txt")
    assert all(dekr.get(k) == s for k, s in ours.items())
    assert net.out_channels == 15 * width


@pytest.mark.parametrize("size", [(64, 64), (64, 96)])
def test_tiny_output_shape(size):
    net = HRNet(**TINY)
    x = torch.randn(2, 3, *size)
    y = net(x)
    assert y.shape == (2, 15 * 8, size[0] // 4, size[1] // 4)
    assert torch.isfinite(y).all()


def test_backbone_init_is_official():
    net = HRNet(**TINY)
    assert abs(net.conv1.weight.std().item() - 0.001) < 3e-4
    assert torch.all(net.bn1.weight == 1) and torch.all(net.bn1.bias == 0)


def _fake_imagenet_file(tmp_path, net):
    sd = {k: torch.randn_like(v.float()).to(v.dtype) for k, v in net.state_dict().items()}
    sd["incre_modules.0.0.conv1.weight"] = torch.randn(4, 8, 1, 1)
    sd["downsamp_modules.0.0.weight"] = torch.randn(4, 4, 3, 3)
    sd["final_layer.0.weight"] = torch.randn(8, 4, 1, 1)
    sd["classifier.weight"] = torch.randn(1000, 8)
    sd["classifier.bias"] = torch.randn(1000)
    path = tmp_path / "hrnet_imagenet.pth"
    torch.save(sd, path)
    return path, sd


def test_load_imagenet_layout_reports_head_keys(tmp_path):
    model = create_model("center_offset_hrnet_tiny", num_blocks=1)
    path, sd = _fake_imagenet_file(tmp_path, model.backbone)
    report = load_pretrained(model, path)
    assert report.target == "backbone"
    assert len(report.loaded) == len(model.backbone.state_dict())
    assert not report.missing and not report.mismatched
    assert sorted(report.unexpected) == sorted(
        ["incre_modules.0.0.conv1.weight", "downsamp_modules.0.0.weight", "final_layer.0.weight",
         "classifier.weight", "classifier.bias"])
    line = report.summary()
    assert "5 unexpected" in line and "classifier 2" in line and "\n" not in line
    assert torch.equal(model.backbone.conv1.weight, sd["conv1.weight"])
    with pytest.raises(LogocapError, match="exactly"):
        load_pretrained(model, path, strict=True)


def test_load_full_model_reports_shape_mismatch():
    src = create_model("center_offset_hrnet_tiny", num_keypoints=17)
    dst = create_model("center_offset_hrnet_tiny", num_keypoints=14)
    wrapped = {"state_dict": {"module." + k: v for k, v in src.state_dict().items()}}
    report = load_pretrained(dst, wrapped)
    assert report.target == "model"
    assert {k for k, _, _ in report.mismatched} == {
        "final_layer_cls.weight", "final_layer_cls.bias", "final_layer_reg.weight", "final_layer_reg.bias"}
    assert torch.equal(dst.backbone.conv1.weight, src.backbone.conv1.weight)


def test_load_errors_are_clear(tmp_path):
    model = create_model("center_offset_hrnet_tiny")
    with pytest.raises(LogocapError, match="not found"):
        load_pretrained(model, tmp_path / "nope.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(LogocapError, match="cannot read"):
        load_pretrained(model, tmp_path / "junk.pth")
    with pytest.raises(LogocapError, match="no tensor"):
        load_pretrained(model, {"foo.weight": torch.zeros(1)})


@pytest.mark.parametrize("name", ["dekr_hrnet_tiny", "hgr_hrnet_tiny"])
def test_prefixed_trunk_loads_into_a_top_level_trunk(name):
    """A center-offset file (trunk under backbone.) initialises the trunk of DEKR / HGR, whose
    trunk sits at the top level; the other head's tensors are reported, not loaded."""
    torch.manual_seed(0)
    src = create_model("center_offset_hrnet_tiny")
    dst = create_model(name)
    report = load_pretrained(dst, src.state_dict())
    trunk = {k for k in src.backbone.state_dict()}
    assert report.target == "model (trunk from backbone.*)" and not report.mismatched
    assert set(report.loaded) == trunk & set(dst.state_dict())
    assert "conv1.weight" in report.loaded and "stage4.0.fuse_layers.0.1.0.weight" in report.loaded
    assert report.missing and not any(k in trunk for k in report.missing)  # only the new heads
    assert "final_layer_reg.weight" in report.unexpected
    assert torch.equal(dst.conv1.weight, src.backbone.conv1.weight)
