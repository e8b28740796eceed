"""Checkpoints: metadata travels with the weights.

Our format (a plain dict, loadable with ``torch.load(..., weights_only=True)``)::

    {"format": "logocap", "version", "state_dict", "model_name", "model_kwargs", "meta" (dict),
     "input_size", "normalization": {"mean", "std"}, "config", "epoch",
     "optimizer", "scheduler", + extra keys (e.g. "rng", "global_step", "best_ap")}

A plain state_dict (the released LOGO-CAP / DEKR files), optionally inside {"state_dict": ...}
or {"model": ...} and with DDP's "module." prefix, is accepted when the model name is given.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from .. import __version__
from ..meta import COCO, KeypointMeta, get_meta
from ..utils import LogocapError, atomic_torch_save
from .dist import unwrap

__all__ = ["save_checkpoint", "load_checkpoint", "build_model_from_checkpoint",
           "extract_state_dict", "load_weights"]


def _normalization() -> dict:
    from ..data.transforms import MEAN, STD  # the one place these constants live
    return {"mean": [float(v) for v in MEAN], "std": [float(v) for v in STD]}


def save_checkpoint(path, model: nn.Module, meta: KeypointMeta, cfg: dict | None,
                    optimizer=None, scheduler=None, epoch: int | None = None,
                    extra: dict | None = None) -> None:
    """Write a logocap checkpoint atomically (a crash never leaves half a file)."""
    net = unwrap(model)
    ckpt = {
        "format": "logocap",
        "version": __version__,
        "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()},
        "model_name": getattr(net, "model_name", type(net).__name__),
        "model_kwargs": dict(getattr(net, "model_kwargs", {})),
        "meta": meta.to_dict(),
        "input_size": int(cfg["data"]["input_size"]) if cfg else None,
        "normalization": _normalization(),
        "config": cfg,
        "epoch": epoch,
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
    }
    ckpt.update(extra or {})
    atomic_torch_save(ckpt, path)


def load_checkpoint(path) -> dict:
    """Read a checkpoint safely (weights_only=True) onto the CPU."""
    path = Path(path)
    if not path.is_file():
        raise LogocapError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt, truncated, or holding arbitrary Python objects
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise LogocapError(f"cannot read checkpoint {path}: {first[:200]}") from None
    if not isinstance(ckpt, dict):
        raise LogocapError(f"checkpoint {path} holds a {type(ckpt).__name__}, not a dict")
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


def guess_model_name(state_dict: dict) -> str | None:
    """The registered model a state_dict most likely belongs to, from its key layout (for error
    messages): DEKR keeps the trunk at the top level with per-joint offset branches (HGR at the
    top level too, with one regression head), LOGO-CAP and the center-offset baseline hold it
    under ``backbone.``; the width comes from stage 2."""
    if "offset_final_layer.0.weight" in state_dict:
        family, prefix = "dekr_hrnet", ""
    elif "regression_final.weight" in state_dict:  # HGR: trunk at the top level, as DEKR
        family, prefix = "hgr_hrnet", ""
    elif "joints_mlp.0.weight" in state_dict:
        family, prefix = "logocap_hrnet", "backbone."
    elif "final_layer_reg.weight" in state_dict:
        family, prefix = "center_offset_hrnet", "backbone."
    else:
        return None
    w = state_dict.get(f"{prefix}transition1.0.0.weight")
    width = int(w.shape[0]) if torch.is_tensor(w) and w.dim() == 4 else None
    return f"{family}_w{width}" if width in (32, 48) else f"{family} model"


def _meta_for_state_dict(sd: dict) -> KeypointMeta:
    """The keypoint set of a plain state_dict from its keypoint count: CrowdPose's for 14 (the
    released CrowdPose DEKR files), COCO's otherwise."""
    from ..meta import CROWDPOSE

    if "offset_final_layer.0.weight" in sd:  # DEKR: one offset branch per joint
        k = len({key.split(".")[1] for key in sd if key.startswith("offset_final_layer.")})
    elif torch.is_tensor(sd.get("final_layer_reg.weight")):
        k = int(sd["final_layer_reg.weight"].shape[0]) // 2
    elif torch.is_tensor(sd.get("heatmap_final.weight")):  # HGR: K keypoint heatmaps
        k = int(sd["heatmap_final.weight"].shape[0])
    else:
        return COCO
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
    from ..models import create_model

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
            _meta_for_state_dict(extract_state_dict(ckpt))
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


def checkpoint_test_config(info: dict, overrides: dict | None = None) -> dict:
    """Test settings for a rebuilt model: defaults < its family's < the checkpoint's own config
    < ``overrides``."""
    from ..families import family_of

    return family_of(info["model_name"]).test_settings(
        (info.get("config") or {}).get("test"), overrides)
