"""HGR recipes: the paper's hyper-parameters (§4.1, §4.4), and every switch key is read."""
from pathlib import Path

import pytest

from logocap.codecs.hgr_decode import hgr_test_cfg
from logocap.config import load_config
from logocap.losses import build_criterion, target_settings
from logocap.losses.hgr import HgrCriterion
from logocap.models import create_model

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
RECIPES = [("hgr_hrnet_w32_512_coco", 512, 140, [90, 120]),
           ("hgr_hrnet_w48_640_coco", 640, 140, [90, 120]),
           ("hgr_hrnet_w32_512_crowdpose", 512, 300, [200, 260]),
           ("hgr_hrnet_w48_640_crowdpose", 640, 300, [200, 260])]


@pytest.mark.parametrize("name,size,epochs,steps", RECIPES, ids=[r[0] for r in RECIPES])
def test_recipe_has_the_paper_settings(name, size, epochs, steps):
    cfg = load_config(CONFIGS / f"{name}.yaml")
    d, t, loss, test = cfg["data"], cfg["train"], cfg["loss"], cfg["test"]
    assert cfg["model"]["name"] == f"hgr_hrnet_{name.split('_')[2]}" and d["input_size"] == size
    assert d["dataset"] == name.rsplit("_", 1)[1]
    assert (d["max_rotation"], d["min_scale"], d["max_scale"], d["max_translate"]) == (30, 0.75, 1.5, 40)
    assert t["lr"] == 1e-3 and t["epochs"] == t["lr_steps_of"] == epochs and t["lr_steps"] == steps
    assert d["bg_weight"] == 0.1 and d["offset_radius"] == 4
    assert target_settings(cfg["model"]["name"], d) == {"heatmap_weights": "per_channel",
                                                        "offset_area": "instance_box"}
    crit = HgrCriterion(loss)
    assert crit.tradeoff is True and crit.offset_factor == 0.01
    tc = hgr_test_cfg(test)
    assert tc["flip"] and tc["topk"] == 30 and tc["center_threshold"] == 0.01
    assert tc["group_radius"] == 75.0 and test["rescore"] is None


def test_switch_keys_reach_the_model_loss_and_decoder():
    cfg = load_config(CONFIGS / "hgr_hrnet_w32_512_coco.yaml", [
        "model.name=hgr_hrnet_tiny", "model.kwargs.heatmap_guidance=false",
        "model.kwargs.adaptive=false", "loss.tradeoff=false", "test.group_radius=0"])
    m = create_model(cfg["model"]["name"], **cfg["model"]["kwargs"])
    assert not m.heatmap_guidance and not m.adaptive
    crit = build_criterion(m, cfg["loss"], cfg["test"])
    assert isinstance(crit, HgrCriterion) and crit.tradeoff is False
    assert hgr_test_cfg(cfg["test"])["group_radius"] == 0.0
