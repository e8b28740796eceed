"""Bottom-up SAR on the DEKR trunk (SAR notes §7, default A; docs/SAR.md "Bottom-up").

Network ``models.sar_dekr`` (DEKR's, with channel K of the heatmaps as the selector), loss
``losses.sar_dekr`` (the pose-level mixture-of-Laplace loss + DEKR's keypoint-heatmap MSE),
decoding ``codecs.sar_dekr`` (DEKR's pipeline with the selector's score map as the center map).
Targets: DEKR's dataset options (per-channel heatmap weights). No released checkpoint exists;
``model.pretrained`` fills it from a DEKR file (whole network) or a center-offset / LOGO-CAP /
ImageNet file (trunk), with the usual load report.
"""
from __future__ import annotations

from ..meta import COCO
from ..models.registry import W32, W48, build, register_model
from ..models.sar_dekr import SarDekrModel
from .base import MethodFamily, check_finite, register_family
from .dekr import DEKR_SMALL, DEKR_TINY, scale_inputs

__all__ = ["FAMILY"]


def decode(net, images, meta, cfg: dict, timings: dict | None = None) -> dict:
    """Stages in ``timings``: the network's (``stage_marks``: backbone, heads, adaptive_convs) and
    decode (flip fusion, candidates, pose NMS)."""
    from ..codecs.logocap_decode import _Ticker
    from ..codecs.sar_dekr import decode_sar_dekr, sar_dekr_test_cfg

    tick = _Ticker(timings, images.device)
    cfg = sar_dekr_test_cfg(cfg)
    res = decode_sar_dekr(net, scale_inputs(images, cfg["scales"]), meta, cfg,
                     tick=tick if timings is not None else None)  # None: no timing hooks
    check_finite(res["raw"])
    tick("decode")
    return res


def criterion(loss_cfg, test_cfg=None, meta=None):
    from ..losses.sar_dekr import SarDekrCriterion
    return SarDekrCriterion(loss_cfg)


def _targets() -> dict:
    from ..losses.sar_dekr import TARGET_DEFAULTS
    return dict(TARGET_DEFAULTS)


# The state_dict layout is DEKR's (no key of its own): a plain state_dict is told apart by the
# model name given with it; our checkpoints name their model.
FAMILY = register_family(MethodFamily(
    name="sar_dekr", title="SAR on DEKR (bottom-up)", model_class=SarDekrModel,
    criterion=criterion, decode=decode, targets=_targets(), state_dict_key=None, trunk_prefix=""))


@register_model(family="sar_dekr", input_size=512, trunk_width=32)
def sar_dekr_hrnet_w32(num_keypoints: int = COCO.num_keypoints, **kw):
    return build(SarDekrModel, W32, num_keypoints, kw)


@register_model(family="sar_dekr", input_size=640, trunk_width=48)
def sar_dekr_hrnet_w48(num_keypoints: int = COCO.num_keypoints, **kw):
    return build(SarDekrModel, W48, num_keypoints, kw)


@register_model(family="sar_dekr", input_size=512)
def sar_dekr_hrnet_small(num_keypoints: int = COCO.num_keypoints, **kw):
    return build(SarDekrModel, DEKR_SMALL, num_keypoints, kw)


@register_model(family="sar_dekr", input_size=512)
def sar_dekr_hrnet_tiny(num_keypoints: int = COCO.num_keypoints, **kw):
    return build(SarDekrModel, DEKR_TINY, num_keypoints, kw)
