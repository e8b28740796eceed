"""The center-offset baseline (the LOGO-CAP papers' initial poses): heatmaps + center offsets.

Decoding: image + mirror in one pass, flip fusion, center NMS, pose_j = c - 4 offset_j, joint
score = heat value x center score (``codecs.decode``), pose NMS (``codecs.nms``).
"""
from __future__ import annotations

from ..meta import COCO
from ..models.center_offset import CenterOffsetModel
from ..models.registry import SMALL, TINY, W32, W48, build, register_model
from .base import MethodFamily, check_finite, register_family

__all__ = ["FAMILY", "network_outputs", "finish", "state_dict_keypoints"]


def network_outputs(net, images, meta, cfg: dict):
    """Image (+ mirror, one pass of 2B when ``cfg["flip"]``) -> (fused maps, the unflipped raw
    outputs); non-finite outputs are a LogocapError."""
    from ..codecs.decode import run_with_flip

    if cfg["flip"]:
        fused, plain = run_with_flip(net, images, meta, cfg.get("flip_shift", "official"))
    else:
        fused = plain = net(images)
    check_finite(plain)
    return fused, plain


def finish(res: dict, cfg: dict, tick) -> dict:
    """Pose NMS (``cfg["pose_nms"]``) of decoded candidates -> ``res["keep"]``."""
    from ..codecs.nms import pose_nms

    res["keep"] = pose_nms(res["poses"], res["scores"], res["valid"], cfg["nms_threshold"],
                           cfg["nms_num_joints"], cfg["max_people"], cfg["pose_nms"])
    tick("pose_nms")
    return res


def decode(net, images, meta, cfg: dict, timings: dict | None = None) -> dict:
    """Stages in ``timings``: network, decode, pose_nms."""
    from ..codecs.decode import decode_center_offset
    from ..codecs.logocap_decode import _Ticker

    tick = _Ticker(timings, images.device)
    fused, _ = network_outputs(net, images, meta, cfg)
    tick("network")
    res = decode_center_offset(fused, meta, cfg)
    tick("decode")
    return finish(res, cfg, tick)


def state_dict_keypoints(sd: dict) -> int:
    """K of a center-offset / LOGO-CAP state_dict: the offset head has 2K outputs."""
    return int(sd["final_layer_reg.weight"].shape[0]) // 2


def criterion(loss_cfg, test_cfg=None, meta=None):
    from ..losses.center_offset import CenterOffsetCriterion
    return CenterOffsetCriterion(loss_cfg)


FAMILY = register_family(MethodFamily(
    name="center_offset", title="center-offset baseline", model_class=CenterOffsetModel,
    criterion=criterion, decode=decode, state_dict_key="final_layer_reg.weight",
    trunk_prefix="backbone.", state_dict_keypoints=state_dict_keypoints))


@register_model(family="center_offset", input_size=512, trunk_width=32)
def center_offset_hrnet_w32(num_keypoints: int = COCO.num_keypoints, **kw):
    return build(CenterOffsetModel, W32, num_keypoints, kw)


@register_model(family="center_offset", input_size=640, trunk_width=48)
def center_offset_hrnet_w48(num_keypoints: int = COCO.num_keypoints, **kw):
    return build(CenterOffsetModel, W48, num_keypoints, kw)


@register_model(family="center_offset", input_size=512)
def center_offset_hrnet_small(num_keypoints: int = COCO.num_keypoints, **kw):
    return build(CenterOffsetModel, SMALL, num_keypoints, kw)


@register_model(family="center_offset", input_size=512)
def center_offset_hrnet_tiny(num_keypoints: int = COCO.num_keypoints, **kw):
    return build(CenterOffsetModel, TINY, num_keypoints, kw)
