"""Load ImageNet HRNet files and official DEKR / LOGO-CAP state_dicts into our models.

Accepted inputs (a path, read with ``torch.load(..., weights_only=True)``, or a state_dict):
- ImageNet HRNet classification files (``hrnet_w32-36af842e.pth``,
  ``hrnetv2_w48_imagenet_pretrained.pth``): backbone keys at the top level plus classification
  keys (``incre_modules``, ``downsamp_modules``, ``final_layer``, ``classifier``), which are
  reported as unexpected. Loaded into ``model.backbone``.
- DEKR checkpoints: backbone keys at the top level too (heads reported as unexpected).
- LOGO-CAP checkpoints and our own files: keys prefixed ``backbone.``, loaded into the whole model.
  A model whose trunk sits at the top level (DEKR, HGR: no ``backbone`` attribute) takes the
  ``backbone.`` keys without the prefix, so a center-offset or LOGO-CAP file initialises their
  trunk (fine-tuning one family from another).
- Wrappers: a ``{"state_dict": ...}`` dict (our format, the official training checkpoint) and a
  DDP ``module.`` prefix are unwrapped.

Tensors whose shape differs (e.g. another keypoint count) are skipped and reported; nothing is
loaded half-way silently: the returned :class:`LoadReport` has the full lists and ``summary()``
gives one line with the counts.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from ..utils import LogocapError

__all__ = ["LoadReport", "load_pretrained", "read_state_dict"]


@dataclass
class LoadReport:
    source: str
    target: str  # "backbone", "model", or "model (trunk from backbone.*)" (prefix dropped)
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple, tuple]] = field(default_factory=list)  # key, file, model

    @staticmethod
    def _groups(keys: list[str]) -> str:
        counts = Counter(k.split(".")[0] for k in keys)
        return ", ".join(f"{g} {n}" for g, n in counts.most_common())

    def summary(self) -> str:
        line = (f"{self.source} -> {self.target}: loaded {len(self.loaded)} tensors, "
                f"{len(self.missing)} missing, {len(self.unexpected)} unexpected, "
                f"{len(self.mismatched)} shape mismatches")
        if self.missing:
            line += f"; missing: {self._groups(self.missing)}"
        if self.unexpected:
            line += f"; unexpected: {self._groups(self.unexpected)}"
        if self.mismatched:
            line += f"; mismatched: {self._groups([k for k, _, _ in self.mismatched])}"
        return line


def read_state_dict(source) -> tuple[dict, str]:
    """A plain {name: tensor} dict from a path or a (possibly wrapped) dict; plus a display name.
    Files are read by the one weights reader (``models.weights``)."""
    from .weights import extract_state_dict, read_weights

    name = "state_dict"
    if isinstance(source, (str, Path)):
        name = Path(source).name
        source = read_weights(source, "pretrained weights")
    if not isinstance(source, dict):
        raise LogocapError(f"{name} does not hold a state_dict of tensors")
    if not source:
        return {}, name
    try:
        return dict(extract_state_dict(source)), name
    except LogocapError:
        raise LogocapError(f"{name} does not hold a state_dict of tensors") from None


def load_pretrained(model: nn.Module, source, strict: bool = False) -> LoadReport:
    """Copy the matching tensors of ``source`` into ``model`` (or ``model.backbone``).

    ``strict=True`` raises :class:`LogocapError` when anything is missing, unexpected or of another
    shape. With ``strict=False`` it raises only when nothing at all matches (wrong file).
    """
    sd, name = read_state_dict(source)
    prefixed = any(k.startswith("backbone.") for k in sd)
    whole = prefixed or not hasattr(model, "backbone")
    target = model if whole else model.backbone
    report = LoadReport(source=name, target="model" if whole else "backbone")
    if prefixed and not hasattr(model, "backbone"):  # trunk at the top level (DEKR, HGR)
        sd = {k.removeprefix("backbone."): v for k, v in sd.items()}
        report.target = "model (trunk from backbone.*)"
    own = target.state_dict()
    matched = {}
    for key, value in own.items():
        if key not in sd:
            report.missing.append(key)
        elif tuple(sd[key].shape) != tuple(value.shape):
            report.mismatched.append((key, tuple(sd[key].shape), tuple(value.shape)))
        else:
            matched[key] = sd[key]
            report.loaded.append(key)
    report.unexpected = [k for k in sd if k not in own]
    if not matched:
        raise LogocapError(f"no tensor of {name} matches the model: {report.summary()}")
    if strict and (report.missing or report.unexpected or report.mismatched):
        raise LogocapError(f"weights do not match the model exactly: {report.summary()}")
    target.load_state_dict(matched, strict=False)
    return report
