"""LOGO-CAP (CVPR 2022): the center-offset candidates refined by local KAMs and global KEMs.

Decoding: the center-offset network outputs (flip fused; the embedding of the unflipped pass),
then ``codecs.logocap_decode.decode_logocap`` (the refinement, ``test.adaptation`` levels of
Table 7) and pose NMS. Training: ``losses.logocap.LogoCapCriterion`` (KAM / refined-heatmap
losses on the same refinement, ``codecs.logocap_decode.refine``).
"""
from __future__ import annotations

from ..meta import COCO
from ..models.logocap import LogoCapModel
from ..models.registry import SMALL, TINY, W32, W48, build, register_model
from .base import MethodFamily, register_family
from .center_offset import finish, network_outputs, state_dict_keypoints

__all__ = ["FAMILY"]

# LOGO-CAP head sizes of the small variants: the official CMP costs ~0.6 GMAC per candidate
SMALL_CMP = dict(embed_dim=16, cmp_widths=(64, 32, 32))
TINY_CMP = dict(embed_dim=8, cmp_widths=(32, 16, 16))


def decode(net, images, meta, cfg: dict, timings: dict | None = None) -> dict:
    """Stages in ``timings``: network, local_kems, local_kams, global_kams, pose_nms."""
    from ..codecs.logocap_decode import _Ticker, decode_logocap

    tick = _Ticker(timings, images.device)
    fused, plain = network_outputs(net, images, meta, cfg)
    tick("network")
    res = decode_logocap(net, fused, plain["embedding"], meta, cfg, timings)
    tick.t = tick._now() if timings is not None else 0.0  # decode_logocap timed its own stages
    return finish(res, cfg, tick)


def criterion(loss_cfg, test_cfg=None, meta=None):
    from ..losses.logocap import LogoCapCriterion
    sigmas = None if meta is None else meta.sigmas
    return LogoCapCriterion(dict(loss_cfg or {}), dict(test_cfg or {}), sigmas=sigmas)


FAMILY = register_family(MethodFamily(
    name="logocap", title="LOGO-CAP", model_class=LogoCapModel, criterion=criterion,
    decode=decode, state_dict_key="joints_mlp.0.weight", trunk_prefix="backbone.",
    state_dict_keypoints=state_dict_keypoints))


@register_model(family="logocap", input_size=512, trunk_width=32)
def logocap_hrnet_w32(num_keypoints: int = COCO.num_keypoints, **kw):
    return build(LogoCapModel, W32, num_keypoints, kw)


@register_model(family="logocap", input_size=640, trunk_width=48)
def logocap_hrnet_w48(num_keypoints: int = COCO.num_keypoints, **kw):
    return build(LogoCapModel, W48, num_keypoints, kw)


@register_model(family="logocap", input_size=512)
def logocap_hrnet_small(num_keypoints: int = COCO.num_keypoints, **kw):
    return build(LogoCapModel, {**SMALL, **SMALL_CMP}, num_keypoints, kw)


@register_model(family="logocap", input_size=512)
def logocap_hrnet_tiny(num_keypoints: int = COCO.num_keypoints, **kw):
    return build(LogoCapModel, {**TINY, **TINY_CMP}, num_keypoints, kw)
