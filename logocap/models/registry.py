"""Model registry (timm style): a dict of builder functions, ``create_model``, ``list_models``.

Every model made by :func:`create_model` carries ``model_name``, ``model_kwargs`` (the
overrides it was built with, so ``create_model(m.model_name, m.num_keypoints, **m.model_kwargs)``
rebuilds it), ``num_keypoints`` and ``stride`` (4).

Variants:
- ``*_w32`` / ``*_w48``: the official networks (LOGO-CAP and DEKR checkpoints load strictly).
- ``*_small``: width 16, 2 blocks per branch, 1 module per stage; CPU training experiments.
- ``*_tiny``: width 8, 2 blocks per branch, 1 module per stage; tests and the synthetic benchmark.
  Both small variants train from scratch, so their backbone keeps PyTorch's default init.
"""
from __future__ import annotations

from typing import Callable

from torch import nn

from ..meta import COCO
from ..utils import LogocapError
from .center_offset import CenterOffsetModel
from .dekr import DekrModel
from .hgr import HgrModel
from .logocap import LogoCapModel

__all__ = ["register_model", "create_model", "list_models"]

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Decorator: register ``fn(num_keypoints, **overrides) -> nn.Module`` under its name."""
    if fn.__name__ in _MODELS:
        raise ValueError(f"model '{fn.__name__}' is registered twice")
    _MODELS[fn.__name__] = fn
    return fn


def list_models() -> list[str]:
    return sorted(_MODELS)


def create_model(name: str, num_keypoints: int = COCO.num_keypoints, **overrides) -> nn.Module:
    """Build a registered model; ``overrides`` replace the variant's constructor defaults."""
    if name not in _MODELS:
        raise LogocapError(f"unknown model '{name}'; known models: {', '.join(list_models())}")
    try:
        model = _MODELS[name](num_keypoints=int(num_keypoints), **overrides)
    except (TypeError, ValueError) as e:
        raise LogocapError(f"cannot build model '{name}' with {overrides}: {e}") from None
    model.model_name = name
    model.model_kwargs = dict(overrides)
    model.num_keypoints = int(num_keypoints)
    model.stride = 4
    return model


# ------------------------------------------------------------------ backbone settings
_W32 = dict(width=32)
_W48 = dict(width=48)  # heatmap transition = width (48), offset transition 256 (notes 2.2)
_SMALL = dict(width=16, stem_channels=32, layer1_planes=32, layer1_blocks=1, num_blocks=2,
              num_modules=(1, 1, 1), offset_channels=64, backbone_init="kaiming",
              head_init="small", offset_scale=10.0)
_TINY = dict(width=8, stem_channels=16, layer1_planes=16, layer1_blocks=1, num_blocks=2,
             num_modules=(1, 1, 1), offset_channels=32, backbone_init="kaiming",
              head_init="small", offset_scale=10.0)
# LOGO-CAP head sizes of the small variants: the official CMP costs ~0.6 GMAC per candidate
_SMALL_CMP = dict(embed_dim=16, cmp_widths=(64, 32, 32))
_TINY_CMP = dict(embed_dim=8, cmp_widths=(32, 16, 16))


# DEKR small variants: the same trunks; the per-joint branch is 8 channels wide in the tiny one
_HEAD_ONLY = ("offset_channels", "head_init")  # center-offset head settings DEKR does not take
_DEKR_SMALL = {**{k: v for k, v in _SMALL.items() if k not in _HEAD_ONLY}, "joint_channels": 15}
_DEKR_TINY = {**{k: v for k, v in _TINY.items() if k not in _HEAD_ONLY}, "joint_channels": 8}


def _build(cls, defaults: dict, num_keypoints: int, overrides: dict) -> nn.Module:
    return cls(num_keypoints=num_keypoints, **{**defaults, **overrides})


@register_model
def center_offset_hrnet_w32(num_keypoints: int = COCO.num_keypoints, **kw) -> nn.Module:
    return _build(CenterOffsetModel, _W32, num_keypoints, kw)


@register_model
def center_offset_hrnet_w48(num_keypoints: int = COCO.num_keypoints, **kw) -> nn.Module:
    return _build(CenterOffsetModel, _W48, num_keypoints, kw)


@register_model
def center_offset_hrnet_small(num_keypoints: int = COCO.num_keypoints, **kw) -> nn.Module:
    return _build(CenterOffsetModel, _SMALL, num_keypoints, kw)


@register_model
def center_offset_hrnet_tiny(num_keypoints: int = COCO.num_keypoints, **kw) -> nn.Module:
    return _build(CenterOffsetModel, _TINY, num_keypoints, kw)


@register_model
def logocap_hrnet_w32(num_keypoints: int = COCO.num_keypoints, **kw) -> nn.Module:
    return _build(LogoCapModel, _W32, num_keypoints, kw)


@register_model
def logocap_hrnet_w48(num_keypoints: int = COCO.num_keypoints, **kw) -> nn.Module:
    return _build(LogoCapModel, _W48, num_keypoints, kw)


@register_model
def logocap_hrnet_small(num_keypoints: int = COCO.num_keypoints, **kw) -> nn.Module:
    return _build(LogoCapModel, {**_SMALL, **_SMALL_CMP}, num_keypoints, kw)


@register_model
def logocap_hrnet_tiny(num_keypoints: int = COCO.num_keypoints, **kw) -> nn.Module:
    return _build(LogoCapModel, {**_TINY, **_TINY_CMP}, num_keypoints, kw)


@register_model
def dekr_hrnet_w32(num_keypoints: int = COCO.num_keypoints, **kw) -> nn.Module:
    return _build(DekrModel, _W32, num_keypoints, kw)


@register_model
def dekr_hrnet_w48(num_keypoints: int = COCO.num_keypoints, **kw) -> nn.Module:
    return _build(DekrModel, _W48, num_keypoints, kw)


@register_model
def dekr_hrnet_small(num_keypoints: int = COCO.num_keypoints, **kw) -> nn.Module:
    return _build(DekrModel, _DEKR_SMALL, num_keypoints, kw)


@register_model
def dekr_hrnet_tiny(num_keypoints: int = COCO.num_keypoints, **kw) -> nn.Module:
    return _build(DekrModel, _DEKR_TINY, num_keypoints, kw)


# HGR (the seed paper's HRNet bottom-up method): the same trunks; heads 2 ART units each, the
# regressor 256 channels wide (W32 / W48), 64 (small) and 32 (tiny)
_HGR_SMALL = {**{k: v for k, v in _SMALL.items() if k not in _HEAD_ONLY}, "regression_channels": 64}
_HGR_TINY = {**{k: v for k, v in _TINY.items() if k not in _HEAD_ONLY}, "regression_channels": 32}


@register_model
def hgr_hrnet_w32(num_keypoints: int = COCO.num_keypoints, **kw) -> nn.Module:
    return _build(HgrModel, _W32, num_keypoints, kw)


@register_model
def hgr_hrnet_w48(num_keypoints: int = COCO.num_keypoints, **kw) -> nn.Module:
    return _build(HgrModel, _W48, num_keypoints, kw)


@register_model
def hgr_hrnet_small(num_keypoints: int = COCO.num_keypoints, **kw) -> nn.Module:
    return _build(HgrModel, _HGR_SMALL, num_keypoints, kw)


@register_model
def hgr_hrnet_tiny(num_keypoints: int = COCO.num_keypoints, **kw) -> nn.Module:
    return _build(HgrModel, _HGR_TINY, num_keypoints, kw)
