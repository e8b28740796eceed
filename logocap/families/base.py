"""The method-family record and its lookup (``family_of``).

A :class:`MethodFamily` names, for one method, what every verb needs to know about it: its
registered models (builders and per-model default configs live in the registry entries its module
registers), the dataset target options, the criterion, the test-time decoder, the test settings
that differ from ``config.DEFAULTS["test"]``, and how to recognise its state_dicts. Predict, eval,
train, upper-bound and bench ask the record instead of testing names or attributes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from ..utils import LogocapError

__all__ = ["MethodFamily", "register_family", "get_family", "list_families", "family_of",
           "TARGET_DEFAULTS", "check_finite", "unwrap_model"]

# dataset target options shared by the families that do not set their own (keys of
# CocoPoseDataset / config ``data``): one weight map for all channels, the segmentation area
TARGET_DEFAULTS = {"heatmap_weights": "shared", "offset_area": "segmentation"}


@dataclass(frozen=True)
class MethodFamily:
    """One method family.

    - ``decode(net, images [B, 3, H, W], meta, cfg, timings=None) -> dict``: the test decoder the
      Predictor calls with its full test config; returns ``poses`` [B, T, K, 3] (x, y, joint
      score; input px), ``scores`` [B, T], ``valid`` [B, T] and ``keep`` [B, T] (after pose
      NMS). None for families that cannot decode a whole image (top-down: person boxes needed).
      ``timings`` (a dict or None) accumulates seconds per stage.
    - ``criterion(loss_cfg, test_cfg, meta) -> fn(model, batch) -> dict`` (``losses``).
    - ``test_defaults``: this family's overrides of ``config.DEFAULTS["test"]``.
    - ``targets``: its overrides of :data:`TARGET_DEFAULTS` (dataset target options).
    - ``state_dict_key``: a key only this family's state_dicts hold, ``trunk_prefix`` where the
      HRNet trunk sits in them (to name the model a mismatched file looks like),
      ``state_dict_keypoints(sd) -> K`` the keypoint count of a plain state_dict (to pick the
      keypoint set of a released file).
    - ``topdown``: the model works on person crops (it needs person boxes).
    - ``train_dataset(ann, images, meta, data_cfg, seed) -> dataset``: the training set; None =
      the bottom-up ``CocoPoseDataset`` with this family's target options.
    - ``model_input_size(model) -> int``: the test input size a built network asks for (e.g. its
      crop height); None = its registry entry's ``input_size``.
    """
    name: str
    title: str
    model_class: type
    criterion: Callable
    decode: Callable | None = None
    test_defaults: dict = field(default_factory=dict)
    targets: dict = field(default_factory=dict)
    state_dict_key: str | None = None
    trunk_prefix: str = ""
    state_dict_keypoints: Callable | None = None
    topdown: bool = False
    train_dataset: Callable | None = None
    model_input_size: Callable | None = None

    def models(self) -> list[str]:
        """The registered model names of this family."""
        from ..models.registry import _MODELS, _load_families
        _load_families()
        return sorted(n for n, e in _MODELS.items() if e.family == self.name)

    def test_settings(self, *cfgs: dict | None) -> dict:
        """``config.DEFAULTS["test"]`` < this family's ``test_defaults`` < each of ``cfgs``."""
        import copy

        from ..config import default_test_settings
        out = default_test_settings()
        out.update(copy.deepcopy(self.test_defaults))
        for c in cfgs:
            out.update(c or {})
        return out

    def default_input_size(self, model) -> int:
        """Test input size of ``model`` (a network or a registered name) when neither the user nor
        the checkpoint gives one: the per-model default config of the registry."""
        from ..models.registry import DEFAULT_INPUT_SIZE, model_entry

        if self.model_input_size is not None and not isinstance(model, str):
            return int(self.model_input_size(unwrap_model(model)))
        name = model if isinstance(model, str) else getattr(unwrap_model(model), "model_name", None)
        try:
            return model_entry(str(name)).input_size
        except LogocapError:
            return DEFAULT_INPUT_SIZE

    def target_settings(self, data_cfg: dict | None = None) -> dict:
        """Dataset target options: a value set in ``data_cfg`` wins; None means the family's."""
        out = {**TARGET_DEFAULTS, **self.targets}
        for k in out:
            if (data_cfg or {}).get(k) is not None:
                out[k] = data_cfg[k]
        return out

    def build_train_dataset(self, ann, images, meta, data_cfg: dict, seed: int = 0):
        """The training dataset of ``data_cfg`` (config ``data`` section) for this family."""
        if self.train_dataset is not None:
            return self.train_dataset(ann, images, meta, data_cfg, seed)
        from ..data.coco import CocoPoseDataset

        d = data_cfg
        return CocoPoseDataset(
            str(ann), str(images), meta=meta, mode="train", input_size=d["input_size"],
            max_rotation=d["max_rotation"], min_scale=d["min_scale"], max_scale=d["max_scale"],
            max_translate=d["max_translate"], flip_prob=d["flip_prob"], sigma=d["sigma"],
            center_sigma=d["center_sigma"], bg_weight=d["bg_weight"],
            offset_radius=d["offset_radius"], min_center_area=d["min_center_area"],
            max_images=d["max_images"], seed=seed, **self.target_settings(d))

    def build_criterion(self, loss_cfg: dict | None = None, test_cfg: dict | None = None,
                        meta=None):
        return self.criterion(loss_cfg, test_cfg, meta)


_FAMILIES: dict[str, MethodFamily] = {}


def register_family(family: MethodFamily) -> MethodFamily:
    if family.name in _FAMILIES:
        raise ValueError(f"method family '{family.name}' is registered twice")
    _FAMILIES[family.name] = family
    return family


def _load() -> None:
    from .. import families  # noqa: F401  (imports every family module once)


def list_families() -> list[str]:
    _load()
    return list(_FAMILIES)


def get_family(name: str) -> MethodFamily:
    _load()
    if name not in _FAMILIES:
        raise LogocapError(f"unknown method family '{name}'; known: {', '.join(_FAMILIES)}")
    return _FAMILIES[name]


def unwrap_model(model):
    """The network inside DDP (``.module``), a TrainStep or an inference wrapper (``.model``)."""
    net, seen = model, set()
    while id(net) not in seen:
        seen.add(id(net))
        if isinstance(getattr(net, "module", None), torch.nn.Module):
            net = net.module
        elif getattr(net, "model_name", None) is None and getattr(net, "model", None) is not None:
            net = net.model
    return net


def family_of(model_or_name) -> MethodFamily:
    """The family of a registered model name, or of a network: from its registry entry
    (``model_name``), the ``family`` an exported network names, else its class."""
    _load()
    if isinstance(model_or_name, MethodFamily):
        return model_or_name
    from ..models.registry import model_entry
    if isinstance(model_or_name, str):
        entry = model_entry(model_or_name)
        if entry.family not in _FAMILIES:
            raise LogocapError(f"model '{model_or_name}' belongs to no method family")
        return _FAMILIES[entry.family]
    net = unwrap_model(model_or_name)
    name = getattr(net, "model_name", None)
    if isinstance(name, str):
        try:
            family = model_entry(name).family
        except LogocapError:
            family = None
        if family in _FAMILIES:
            return _FAMILIES[family]
    tag = getattr(net, "family", None)
    if isinstance(tag, str) and tag in _FAMILIES:
        return _FAMILIES[tag]
    # a network built from its class directly: the family of the most derived class it is
    best = None
    for f in _FAMILIES.values():
        if isinstance(net, f.model_class) and (best is None or issubclass(f.model_class, best.model_class)):
            best = f
    if best is None:
        raise LogocapError(f"{type(net).__name__} belongs to no method family "
                           f"({', '.join(_FAMILIES)})")
    return best


def check_finite(outputs: dict) -> None:
    """A diverged or broken checkpoint: say so instead of decoding garbage (one host sync)."""
    flags = torch.stack([torch.isfinite(v).all() for v in outputs.values()])
    if not bool(flags.all()):
        bad = [k for k, ok in zip(outputs, flags.tolist()) if not ok]
        raise LogocapError(f"the model produced non-finite values (NaN/Inf) in {', '.join(bad)}: "
                           "its weights are broken (diverged training or a damaged file)")
