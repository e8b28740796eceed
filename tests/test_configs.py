"""Every recipe in configs/ loads, names a registered model, and overrides behave."""
from pathlib import Path

import pytest

from logocap.config import DEFAULTS, apply_overrides, load_config
from logocap.models import list_models
from logocap.utils import LogocapError

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


def test_there_are_recipes():
    names = {p.stem for p in CONFIGS}
    assert {"logocap_hrnet_w32_512_coco", "logocap_hrnet_w48_640_coco",
            "center_offset_hrnet_tiny_256_synthetic", "logocap_hrnet_tiny_256_synthetic"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_recipe_loads(path):
    cfg = load_config(path)
    assert cfg["model"]["name"] in list_models()
    assert set(cfg) == set(DEFAULTS)


def test_paper_settings_in_coco_recipes():
    for name, size in (("logocap_hrnet_w32_512_coco", 512), ("logocap_hrnet_w48_640_coco", 640)):
        cfg = load_config(CONFIGS[[p.stem for p in CONFIGS].index(name)])
        assert cfg["data"]["input_size"] == size
        assert cfg["train"]["lr"] == 1e-3 and cfg["train"]["epochs"] == 140
        assert cfg["train"]["lr_steps"] == [90, 120] and cfg["train"]["batch_size"] == 12
        assert cfg["test"]["flip"] and cfg["test"]["topk"] == 30 and cfg["test"]["center_threshold"] == 0.01


def test_dotted_overrides_parse_values_and_reject_unknown_keys():
    cfg = apply_overrides(DEFAULTS, ["train.lr=0.002", "test.flip=false", "train.lr_steps=[1, 2]",
                                     "model.kwargs.attentive_norm=false"])
    assert cfg["train"]["lr"] == 0.002 and cfg["test"]["flip"] is False
    assert cfg["train"]["lr_steps"] == [1, 2] and cfg["model"]["kwargs"] == {"attentive_norm": False}
    with pytest.raises(LogocapError, match="unknown config key 'train.lrr'"):
        apply_overrides(DEFAULTS, ["train.lrr=1"])
    with pytest.raises(LogocapError, match="key=value"):
        apply_overrides(DEFAULTS, ["train.lr"])


def test_bad_config_file(tmp_path):
    with pytest.raises(LogocapError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(LogocapError, match="not valid YAML"):
        load_config(bad)
    typo = tmp_path / "typo.yaml"
    typo.write_text("trian:\n  lr: 1\n")
    with pytest.raises(LogocapError, match="unknown config key 'trian'"):
        load_config(typo)


def test_top_down_sar_recipes_carry_the_released_schedule():
    for name, size in (("sar_hrnet_w48_384_coco", 384), ("sar_hrnet_w32_256_coco", 256)):
        cfg = load_config(CONFIGS[[p.stem for p in CONFIGS].index(name)])
        t = cfg["train"]
        assert cfg["data"]["input_size"] == size and cfg["model"]["name"].endswith("_topdown")
        assert (t["lr"], t["epochs"], t["lr_steps"], t["lr_steps_of"]) == (5e-4, 210, [170, 200], 210)
        assert t["warmup_iters"] == 500 and t["lr_gamma"] == 0.1 and t["weight_decay"] == 0.0
        assert cfg["loss"]["sar_lambda"] == 16.0 and cfg["loss"]["sar_form"] == "reference"
