"""HGR, the seed paper's HRNet bottom-up method: heatmap-guided adaptive keypoint regression.

Decoding: DEKR's maps (flip, test scales; ``families.dekr.scale_inputs``) and the heatmap-guided
grouping of ``codecs.hgr_decode``. Targets: per-channel heatmap weights and the instance-box
offset normaliser; the tradeoff loss (``losses.hgr``).
"""
from __future__ import annotations

from ..meta import COCO
from ..models.hgr import HgrModel
from ..models.registry import HEAD_ONLY, SMALL, TINY, W32, W48, build, register_model
from .base import MethodFamily, check_finite, register_family
from .dekr import scale_inputs

__all__ = ["FAMILY"]

# the same trunks; heads 2 ART units each, the regressor 256 channels wide (W32 / W48), 64
# (small) and 32 (tiny)
HGR_SMALL = {**{k: v for k, v in SMALL.items() if k not in HEAD_ONLY}, "regression_channels": 64}
HGR_TINY = {**{k: v for k, v in TINY.items() if k not in HEAD_ONLY}, "regression_channels": 32}


def decode(net, images, meta, cfg: dict, timings: dict | None = None, cues=None) -> dict:
    """Stages in ``timings``: the network's (``stage_marks``: backbone, heads, regression) and
    decode (flip fusion, candidates, pose NMS). ``cues`` [B, M, K, 3] input
    px replace the regressed poses as the grouping cues."""
    from ..codecs.hgr_decode import decode_hgr, hgr_test_cfg
    from ..codecs.logocap_decode import _Ticker

    tick = _Ticker(timings, images.device)
    cfg = hgr_test_cfg(cfg)
    res = decode_hgr(net, scale_inputs(images, cfg["scales"]), meta, cfg, cues,
                     tick=tick if timings is not None else None)  # None: no timing hooks
    check_finite(res["raw"])
    tick("decode")
    return res


def state_dict_keypoints(sd: dict) -> int:
    """K of an HGR state_dict: K keypoint heatmaps."""
    return int(sd["heatmap_final.weight"].shape[0])


def criterion(loss_cfg, test_cfg=None, meta=None):
    from ..losses.hgr import HgrCriterion
    return HgrCriterion(loss_cfg)


def _targets() -> dict:
    from ..losses.hgr import TARGET_DEFAULTS
    return dict(TARGET_DEFAULTS)


FAMILY = register_family(MethodFamily(
    name="hgr", title="HGR (HRNet bottom-up)", model_class=HgrModel, criterion=criterion,
    decode=decode, targets=_targets(), state_dict_key="regression_final.weight", trunk_prefix="",
    state_dict_keypoints=state_dict_keypoints))


@register_model(family="hgr", input_size=512, trunk_width=32)
def hgr_hrnet_w32(num_keypoints: int = COCO.num_keypoints, **kw):
    return build(HgrModel, W32, num_keypoints, kw)


@register_model(family="hgr", input_size=640, trunk_width=48)
def hgr_hrnet_w48(num_keypoints: int = COCO.num_keypoints, **kw):
    return build(HgrModel, W48, num_keypoints, kw)


@register_model(family="hgr", input_size=512)
def hgr_hrnet_small(num_keypoints: int = COCO.num_keypoints, **kw):
    return build(HgrModel, HGR_SMALL, num_keypoints, kw)


@register_model(family="hgr", input_size=512)
def hgr_hrnet_tiny(num_keypoints: int = COCO.num_keypoints, **kw):
    return build(HgrModel, HGR_TINY, num_keypoints, kw)
