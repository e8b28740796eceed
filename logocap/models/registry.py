"""Model registry (timm style): a dict of builder functions, ``create_model``, ``list_models``.

Every model made by :func:`create_model` carries ``model_name``, ``model_kwargs`` (the
overrides it was built with, so ``create_model(m.model_name, m.num_keypoints, **m.model_kwargs)``
rebuilds it), ``num_keypoints`` and ``stride`` (4).

Each entry names its method family (``logocap.families``) and a default config, as timm keeps a
``pretrained_cfg`` per model: ``input_size`` (the official test size: 512 for W32, 640 for W48;
the crop height for top-down models). The builders themselves live with their family
(``logocap/families/<family>.py``), which registers them with :func:`register_model`; the
registry loads the families the first time it is asked.

Variants (the backbone settings below, shared by the families):
- ``*_w32`` / ``*_w48``: the official networks (LOGO-CAP and DEKR checkpoints load strictly).
- ``*_small``: width 16, 2 blocks per branch, 1 module per stage; CPU training experiments.
- ``*_tiny``: width 8, 2 blocks per branch, 1 module per stage; tests and the synthetic benchmark.
  Both small variants train from scratch, so their backbone keeps PyTorch's default init.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from torch import nn

from ..meta import COCO
from ..utils import LogocapError

__all__ = ["register_model", "create_model", "list_models", "model_entry", "ModelEntry",
           "DEFAULT_INPUT_SIZE", "W32", "W48", "SMALL", "TINY", "HEAD_ONLY", "build"]

DEFAULT_INPUT_SIZE = 512  # test input size of a model whose entry does not give one


@dataclass(frozen=True)
class ModelEntry:
    """A registered model: its builder, its method family and its default config."""
    name: str
    builder: Callable[..., nn.Module]
    family: str | None = None
    default_cfg: dict = field(default_factory=dict)  # e.g. {"input_size": 640}

    @property
    def input_size(self) -> int:
        return int(self.default_cfg.get("input_size", DEFAULT_INPUT_SIZE))


_MODELS: dict[str, ModelEntry] = {}


def register_model(fn: Callable[..., nn.Module] | None = None, *, family: str | None = None,
                   **default_cfg):
    """Decorator: register ``fn(num_keypoints, **overrides) -> nn.Module`` under its name.

    ``@register_model`` or ``@register_model(family="dekr", input_size=640)``.
    """
    def add(f):
        if f.__name__ in _MODELS:
            raise ValueError(f"model '{f.__name__}' is registered twice")
        _MODELS[f.__name__] = ModelEntry(f.__name__, f, family, dict(default_cfg))
        return f

    return add(fn) if fn is not None else add


def _load_families() -> None:
    """The families register their builders when imported (once; a no-op afterwards)."""
    from .. import families  # noqa: F401


def list_models() -> list[str]:
    _load_families()
    return sorted(_MODELS)


def model_entry(name: str) -> ModelEntry:
    """The registry entry of a model name; LogocapError naming the known models otherwise."""
    _load_families()
    if name not in _MODELS:
        raise LogocapError(f"unknown model '{name}'; known models: {', '.join(list_models())}")
    return _MODELS[name]


def create_model(name: str, num_keypoints: int = COCO.num_keypoints, **overrides) -> nn.Module:
    """Build a registered model; ``overrides`` replace the variant's constructor defaults."""
    entry = model_entry(name)
    try:
        model = entry.builder(num_keypoints=int(num_keypoints), **overrides)
    except (TypeError, ValueError) as e:
        raise LogocapError(f"cannot build model '{name}' with {overrides}: {e}") from None
    model.model_name = name
    model.model_kwargs = dict(overrides)
    model.num_keypoints = int(num_keypoints)
    model.stride = 4
    return model


# ------------------------------------------------------------------ backbone settings
W32 = dict(width=32)
W48 = dict(width=48)  # heatmap transition = width (48), offset transition 256 (notes 2.2)
SMALL = dict(width=16, stem_channels=32, layer1_planes=32, layer1_blocks=1, num_blocks=2,
             num_modules=(1, 1, 1), offset_channels=64, backbone_init="kaiming",
             head_init="small", offset_scale=10.0)
TINY = dict(width=8, stem_channels=16, layer1_planes=16, layer1_blocks=1, num_blocks=2,
            num_modules=(1, 1, 1), offset_channels=32, backbone_init="kaiming",
            head_init="small", offset_scale=10.0)
HEAD_ONLY = ("offset_channels", "head_init")  # center-offset head settings other heads do not take


def build(cls, defaults: dict, num_keypoints: int, overrides: dict) -> nn.Module:
    """``cls(num_keypoints, **defaults)`` with ``overrides`` replacing the defaults."""
    return cls(num_keypoints=num_keypoints, **{**defaults, **overrides})
