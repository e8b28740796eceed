"""DEKR (CVPR 2021, the released code; notes 10): disentangled keypoint regression.

Decoding (``codecs.dekr_decode``): 3 px-shifted flip with pose-map averaging, the test scales,
center NMS with the 3/5/7 rule, heat-ranked pose NMS. Targets: per-channel heatmap weights and
the released keypoint-box area (``losses.dekr``); offset loss factor 0.03.
"""
from __future__ import annotations

from ..meta import COCO
from ..models.dekr import DekrModel
from ..models.registry import HEAD_ONLY, SMALL, TINY, W32, W48, build, register_model
from ..utils import LogocapError
from .base import MethodFamily, check_finite, register_family

__all__ = ["FAMILY", "scale_inputs"]

# small variants: the same trunks; the per-joint branch is 8 channels wide in the tiny one
DEKR_SMALL = {**{k: v for k, v in SMALL.items() if k not in HEAD_ONLY}, "joint_channels": 15}
DEKR_TINY = {**{k: v for k, v in TINY.items() if k not in HEAD_ONLY}, "joint_channels": 8}


def scale_inputs(images, scales) -> dict:
    """{scale: input batch} for the test scales: the scale-1 batch resampled with aligned bilinear
    interpolation (pixel X <-> X / s), so every scale shares the scale-1 frame exactly (the
    release re-warps the original image instead: more detail at scale 2 for large images)."""
    from ..codecs.dekr_decode import resample_aligned

    h, w = images.shape[-2:]
    out = {}
    for s in scales:
        hs, ws = h * s, w * s
        if hs != round(hs) or ws != round(ws) or round(hs) % 32 or round(ws) % 32:
            raise LogocapError(f"test scale {s} turns the {w}x{h} input into {ws:g}x{hs:g}, "
                               "not a multiple of 32 px (the network needs one)")
        out[s] = images if s == 1.0 else resample_aligned(images, (round(hs), round(ws)), s)
    return out


def decode(net, images, meta, cfg: dict, timings: dict | None = None) -> dict:
    """Stages in ``timings``: the network's (``stage_marks``: backbone, heads, adaptive_convs) and
    decode (flip fusion, candidates, pose NMS)."""
    from ..codecs.dekr_decode import decode_dekr, dekr_test_cfg
    from ..codecs.logocap_decode import _Ticker

    tick = _Ticker(timings, images.device)
    cfg = dekr_test_cfg(cfg)
    res = decode_dekr(net, scale_inputs(images, cfg["scales"]), meta, cfg,
                     tick=tick if timings is not None else None)  # None: no timing hooks
    check_finite(res["raw"])
    tick("decode")
    return res


def state_dict_keypoints(sd: dict) -> int:
    """K of a DEKR state_dict: one offset branch per joint."""
    return len({key.split(".")[1] for key in sd if key.startswith("offset_final_layer.")})


def criterion(loss_cfg, test_cfg=None, meta=None):
    from ..losses.dekr import DekrCriterion
    return DekrCriterion(loss_cfg)


def _targets() -> dict:
    from ..losses.dekr import TARGET_DEFAULTS
    return dict(TARGET_DEFAULTS)


FAMILY = register_family(MethodFamily(
    name="dekr", title="DEKR", model_class=DekrModel, criterion=criterion, decode=decode,
    targets=_targets(), state_dict_key="offset_final_layer.0.weight", trunk_prefix="",
    state_dict_keypoints=state_dict_keypoints))


@register_model(family="dekr", input_size=512, trunk_width=32)
def dekr_hrnet_w32(num_keypoints: int = COCO.num_keypoints, **kw):
    return build(DekrModel, W32, num_keypoints, kw)


@register_model(family="dekr", input_size=640, trunk_width=48)
def dekr_hrnet_w48(num_keypoints: int = COCO.num_keypoints, **kw):
    return build(DekrModel, W48, num_keypoints, kw)


@register_model(family="dekr", input_size=512)
def dekr_hrnet_small(num_keypoints: int = COCO.num_keypoints, **kw):
    return build(DekrModel, DEKR_SMALL, num_keypoints, kw)


@register_model(family="dekr", input_size=512)
def dekr_hrnet_tiny(num_keypoints: int = COCO.num_keypoints, **kw):
    return build(DekrModel, DEKR_TINY, num_keypoints, kw)
