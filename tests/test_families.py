"""Method families as units: every registered model has one family that owns its decoder,
criterion, targets, test settings and default input size; the verbs ask the record."""
import subprocess
import sys

import pytest
import torch

from logocap.config import DEFAULTS
from logocap.families import family_of, get_family, list_families
from logocap.meta import COCO
from logocap.models import create_model, list_models
from logocap.models.registry import model_entry
from logocap.predict import Predictor, default_input_size
from logocap.utils import LogocapError


def test_every_registered_model_has_a_family_and_a_default_config():
    assert {"center_offset", "logocap", "dekr", "hgr", "sar"} <= set(list_families())
    for name in list_models():
        fam = family_of(name)
        assert name in fam.models()
        assert model_entry(name).input_size >= 64
    # the official test sizes (notes 3.1) come from the registry, not from the name
    assert default_input_size("logocap_hrnet_w48") == 640 == default_input_size("dekr_hrnet_w48")
    assert default_input_size("logocap_hrnet_w32") == 512 == default_input_size("hgr_hrnet_tiny")
    assert default_input_size("sar_hrnet_w32_topdown") == 256  # the crop height
    assert default_input_size("not_registered") == 512


def test_family_of_names_networks_and_wrappers():
    net = create_model("logocap_hrnet_tiny")
    assert family_of(net).name == "logocap" and family_of("dekr_hrnet_tiny").name == "dekr"
    wrapped = torch.nn.Module()
    wrapped.module = net  # DDP-like
    assert family_of(wrapped).name == "logocap"

    class Exported:  # an exported network stands in for the torch one
        model_name, family = "dekr_hrnet_w32", "dekr"
    assert family_of(Exported()).name == "dekr"
    # a network built from its class: the most derived family class wins
    from logocap.models.logocap import LogoCapModel
    bare = LogoCapModel(embed_dim=4, cmp_widths=(8, 8, 8), width=8, stem_channels=16,
                        layer1_planes=16, layer1_blocks=1, num_blocks=2, num_modules=(1, 1, 1))
    assert family_of(bare).name == "logocap"
    with pytest.raises(LogocapError, match="unknown model"):
        family_of("logocap_hrnet_w64")
    with pytest.raises(LogocapError, match="no method family"):
        family_of(torch.nn.Conv2d(1, 1, 1))


def test_family_settings():
    dekr, co = get_family("dekr"), get_family("center_offset")
    assert dekr.target_settings() == {"heatmap_weights": "per_channel", "offset_area": "keypoint_box"}
    assert co.target_settings({"offset_area": "keypoint_box"})["offset_area"] == "keypoint_box"
    t = co.test_settings({"topk": 5}, {"flip": False})
    assert t["topk"] == 5 and not t["flip"] and t["max_people"] == DEFAULTS["test"]["max_people"]
    assert get_family("sar").topdown and get_family("sar").decode is None
    from logocap.losses.dekr import DekrCriterion
    assert isinstance(dekr.build_criterion({"offset": None}), DekrCriterion)


def test_predictor_uses_the_family_decoder():
    torch.manual_seed(0)
    pred = Predictor(create_model("center_offset_hrnet_tiny"), COCO, 64, {"topk": 5})
    assert pred.family.name == "center_offset"
    res = pred.decode(torch.randn(1, 3, 64, 64))
    assert set(res) >= {"poses", "scores", "valid", "keep"} and res["poses"].shape[1:] == (5, 17, 3)
    with pytest.raises(LogocapError, match="top-down model"):
        Predictor(create_model("sar_hrnet_tiny_topdown"), COCO, 128)


def test_predict_does_not_import_the_engine():
    code = ("import sys, logocap.predict, logocap.api; "
            "print(sorted(m for m in sys.modules if m.startswith('logocap.engine')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
