"""Reading weights: the one reader of checkpoint files and the strict loader.

- :func:`read_weights` / :func:`load_checkpoint`: ``torch.load(..., weights_only=True)`` onto the
  CPU with one-line errors (missing, corrupt, holding Python objects, not a dict);
- :func:`extract_state_dict`: the weights of any accepted layout (our checkpoint format, a plain
  state_dict, ``{"state_dict" | "model" | "best_state_dict": ...}``, DDP's ``module.`` prefix);
- :func:`load_weights`: strict load naming the mismatches and the model a file looks like (its
  method family, from the key only that family's state_dicts hold);
- :func:`build_model_from_checkpoint`: the model, keypoint set and metadata of a checkpoint.

``models.pretrained`` (partial loads: ImageNet trunks, warm starts) reads files through here too.
Writing checkpoints is the training engine's (``engine.checkpoint.save_checkpoint``).
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from ..meta import COCO, KeypointMeta, get_meta
from ..utils import LogocapError

__all__ = ["read_weights", "load_checkpoint", "extract_state_dict", "load_weights",
           "build_model_from_checkpoint", "guess_model_name", "meta_for_state_dict"]


def read_weights(path, what: str = "checkpoint") -> dict:
    """Read a weights file safely (weights_only=True) onto the CPU; ``what`` names it in errors."""
    path = Path(path)
    if not path.is_file():
        raise LogocapError(f"{what} not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt, truncated, or holding arbitrary Python objects
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise LogocapError(f"cannot read {what} {path}: {first[:200]}") from None
    if not isinstance(ckpt, dict):
        raise LogocapError(f"{what} {path} holds a {type(ckpt).__name__}, not a dict")
    return ckpt


def load_checkpoint(path) -> dict:
    """Read a checkpoint safely (weights_only=True) onto the CPU. A slim checkpoint stored in
    half precision (``"stored_dtype": "float16"``, see ``engine.checkpoint.slim_checkpoint``)
    comes back with its floating tensors in float32, so every user sees the usual weights."""
    ckpt = read_weights(path, "checkpoint")
    if ckpt.get("stored_dtype") == "float16" and isinstance(ckpt.get("state_dict"), dict):
        ckpt["state_dict"] = {k: v.float() if torch.is_tensor(v) and v.is_floating_point() else v
                              for k, v in ckpt["state_dict"].items()}
        ckpt["stored_dtype"] = "float32"
    return ckpt


def _is_state_dict(d) -> bool:
    return isinstance(d, dict) and len(d) > 0 and all(torch.is_tensor(v) for v in d.values())


def extract_state_dict(ckpt: dict) -> dict:
    """The weights of any accepted checkpoint, without a DDP "module." prefix."""
    if ckpt.get("format") == "logocap":
        sd = ckpt["state_dict"]
    elif _is_state_dict(ckpt):
        sd = ckpt
    else:
        for key in ("state_dict", "model", "best_state_dict"):
            if _is_state_dict(ckpt.get(key)):
                sd = ckpt[key]
                break
        else:
            raise LogocapError("checkpoint holds no state_dict (expected a logocap checkpoint, "
                               "a plain state_dict, or a {'state_dict': ...} / {'model': ...} dict)")
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


def _family_of_state_dict(state_dict: dict):
    """The method family whose key layout a state_dict has (the most specific one: a LOGO-CAP
    file also holds the center-offset heads), or None."""
    from ..families import get_family, list_families

    best = None
    for f in map(get_family, list_families()):
        if f.state_dict_key and f.state_dict_key in state_dict and \
                (best is None or issubclass(f.model_class, best.model_class)):
            best = f
    return best


def guess_model_name(state_dict: dict) -> str | None:
    """The registered model a state_dict most likely belongs to, from its key layout (for error
    messages): its family (``MethodFamily.state_dict_key``) and the trunk width of stage 2 (at
    ``MethodFamily.trunk_prefix``: the top level for DEKR and HGR, ``backbone.`` otherwise)."""
    from ..models.registry import _MODELS

    family = _family_of_state_dict(state_dict)
    if family is None:
        return None
    w = state_dict.get(f"{family.trunk_prefix}transition1.0.0.weight")
    width = int(w.shape[0]) if torch.is_tensor(w) and w.dim() == 4 else None
    for name in family.models():
        if width is not None and _MODELS[name].default_cfg.get("trunk_width") == width:
            return name
    return f"{family.name}_hrnet model"


def meta_for_state_dict(sd: dict) -> KeypointMeta:
    """The keypoint set of a plain state_dict from its keypoint count (its family's
    ``state_dict_keypoints``): CrowdPose's for 14 (the released CrowdPose DEKR files), COCO's
    otherwise."""
    from ..meta import CROWDPOSE

    family = _family_of_state_dict(sd)
    k = family.state_dict_keypoints(sd) if family and family.state_dict_keypoints else None
    return CROWDPOSE if k == CROWDPOSE.num_keypoints else COCO


def load_weights(model: nn.Module, state_dict: dict, what: str = "checkpoint") -> None:
    """Strict load with a one-line summary of mismatches (missing / unexpected / shapes)."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [f"{k} {tuple(state_dict[k].shape)} vs {tuple(own[k].shape)}"
              for k in own if k in state_dict and state_dict[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        parts = [f"{len(missing)} missing", f"{len(unexpected)} unexpected",
                 f"{len(shapes)} shape mismatches"]
        first = (shapes[:2] + missing[:2] + unexpected[:2])[:4]
        name = getattr(model, "model_name", type(model).__name__)
        guess = guess_model_name(state_dict)
        hint = f"it looks like a '{guess}' state_dict" if guess and guess != name else \
            "is it for another model or keypoint set?"
        raise LogocapError(f"{what} does not fit model '{name}' ({', '.join(parts)}; e.g. "
                           f"{'; '.join(first)}): {hint}")
    model.load_state_dict(state_dict, strict=True)


def build_model_from_checkpoint(ckpt_or_path, model_name: str | None = None, device="cpu",
                                meta: KeypointMeta | str | None = None):
    """Rebuild a model from a checkpoint -> ``(model in eval mode, meta, info)``.

    ``info``: format ("logocap" | "state_dict"), model_name, model_kwargs, input_size,
    normalization, epoch, config (None where the file does not say).
    For a plain state_dict, ``model_name`` is required and ``meta`` defaults to the set with the
    file's keypoint count (CrowdPose for 14, else COCO).
    """
    from .registry import create_model

    ckpt = load_checkpoint(ckpt_or_path) if not isinstance(ckpt_or_path, dict) else ckpt_or_path
    if ckpt.get("format") == "logocap":
        missing = [k for k in ("model_name", "meta", "state_dict") if k not in ckpt]
        if missing:
            raise LogocapError(f"malformed logocap checkpoint: it lacks {', '.join(missing)}")
        saved = ckpt["model_name"]
        if model_name and model_name != saved:
            raise LogocapError(f"checkpoint is a '{saved}' model, not '{model_name}'")
        try:
            kp_meta = KeypointMeta.from_dict(ckpt["meta"])
        except (ValueError, TypeError, AttributeError) as e:
            raise LogocapError(f"malformed logocap checkpoint: bad keypoint meta ({e})") from None
        if meta is not None and not get_meta(meta).same_keypoints(kp_meta):
            raise LogocapError(f"checkpoint predicts the '{kp_meta.name}' keypoints, "
                               f"not '{get_meta(meta).name}'")
        info = {k: ckpt.get(k) for k in ("model_name", "model_kwargs", "input_size",
                                          "normalization", "epoch", "config")}
        info["format"] = "logocap"
    else:
        if not model_name:
            raise LogocapError("this checkpoint is a plain state_dict without metadata: "
                               "give the model name (--model NAME)")
        kp_meta = get_meta(meta) if meta is not None else \
            meta_for_state_dict(extract_state_dict(ckpt))
        info = {"model_name": model_name, "model_kwargs": {}, "input_size": None,
                "normalization": None, "epoch": None, "config": None, "format": "state_dict"}
    try:
        model = create_model(info["model_name"], num_keypoints=kp_meta.num_keypoints,
                             **(info["model_kwargs"] or {}))
    except (KeyError, ValueError) as e:
        raise LogocapError(f"cannot build model '{info['model_name']}': {e}") from None
    load_weights(model, extract_state_dict(ckpt), what="checkpoint")
    model.to(device).eval()
    return model, kp_meta, info
