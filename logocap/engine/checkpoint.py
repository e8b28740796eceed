"""Checkpoints: metadata travels with the weights.

Our format (a plain dict, loadable with ``torch.load(..., weights_only=True)``)::

    {"format": "logocap", "version", "state_dict", "model_name", "model_kwargs", "meta" (dict),
     "input_size", "normalization": {"mean", "std"}, "config", "epoch",
     "optimizer", "scheduler", + extra keys (e.g. "rng", "global_step", "best_ap")}

A plain state_dict (the released LOGO-CAP / DEKR files), optionally inside {"state_dict": ...}
or {"model": ...} and with DDP's "module." prefix, is accepted when the model name is given.
Reading (``load_checkpoint``, ``build_model_from_checkpoint``, ``load_weights``, ...) lives in
``logocap.models.weights``, the one weights reader, and is re-exported here; this module writes.
"""
from __future__ import annotations

import torch.nn as nn

from .. import __version__
from ..meta import KeypointMeta
from ..models.weights import (build_model_from_checkpoint, extract_state_dict,  # noqa: F401
                              guess_model_name, load_checkpoint, load_weights)
from ..utils import atomic_torch_save
from .dist import unwrap

__all__ = ["save_checkpoint", "slim_checkpoint", "load_checkpoint", "build_model_from_checkpoint",
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


def checkpoint_test_config(info: dict, overrides: dict | None = None) -> dict:
    """Test settings for a rebuilt model: defaults < its family's < the checkpoint's own config
    < ``overrides``."""
    from ..families import family_of

    return family_of(info["model_name"]).test_settings(
        (info.get("config") or {}).get("test"), overrides)


TRAINING_STATE = ("optimizer", "scheduler", "rng", "scaler")
FP16_MAX = 6.0e4  # tensors with larger values stay float32 (float16 overflows at 65504)


def slim_checkpoint(src, dst, half: bool = False) -> dict:
    """Copy a checkpoint without its training state (optimizer, scheduler, RNG, scaler): the
    weights and metadata a user or ``logocap demo`` needs. With ``half`` the floating tensors are
    stored in float16 (half the file; ``load_checkpoint`` turns them back into float32), except
    any whose values float16 cannot hold. Returns what was written, with ``"max_rel_error"``: the
    largest relative error float16 rounding put on any stored tensor (0 without ``half``)."""
    ck = load_checkpoint(src)
    for k in TRAINING_STATE:
        ck.pop(k, None)
    worst = 0.0
    if half:
        sd = {}
        for k, v in ck["state_dict"].items():
            scale = float(v.abs().max()) if v.is_floating_point() and v.numel() else None
            if scale is not None and scale < FP16_MAX:
                h = v.half()
                if scale > 0:
                    worst = max(worst, float((h.float() - v).abs().max()) / scale)
                v = h
            sd[k] = v
        ck["state_dict"], ck["stored_dtype"] = sd, "float16"
    atomic_torch_save(ck, dst)
    return {"path": str(dst), "max_rel_error": worst}
