"""Predictor: RGB images -> :class:`logocap.Poses` in original-image pixels.

One pass per batch: test transform (short side -> input size, long side to a multiple of 64),
normalisation, padding to the largest image (bottom / right, which leaves each affine unchanged),
image + mirror as one forward pass, decoding (LOGO-CAP when the model has ``kam``, else the
center-offset baseline), pose NMS, the ``max_people`` cap, and back-projection.
"""
from __future__ import annotations

import copy

import numpy as np
import torch

from .codecs.decode import decode_center_offset, pose_nms, run_with_flip, to_original
from .config import DEFAULTS, validate_test_cfg
from .data.transforms import MEAN, STD, test_transform, warp_image
from .meta import KeypointMeta, get_meta
from .structures import Poses
from .utils import LogocapError

__all__ = ["Predictor", "default_input_size"]


def default_input_size(model_name: str) -> int:
    """Official test sizes (notes 3.1): 640 for W48 models, 512 otherwise."""
    return 640 if "w48" in (model_name or "").lower() else 512


def _as_rgb(image) -> np.ndarray:
    img = np.asarray(image)
    if img.dtype != np.uint8:
        raise LogocapError(f"Predictor needs uint8 RGB images, got dtype {img.dtype}")
    if img.ndim == 2:  # grayscale: the network is trained on RGB
        img = np.repeat(img[:, :, None], 3, axis=2)
    elif img.ndim == 3 and img.shape[2] == 4:  # drop alpha
        img = img[:, :, :3]
    if img.ndim != 3 or img.shape[2] != 3 or img.shape[0] < 1 or img.shape[1] < 1:
        raise LogocapError(f"Predictor needs an (H, W, 3) RGB image, got shape {img.shape}")
    return img


class Predictor:
    """Run a pose model on RGB uint8 images.

    ``test_cfg``: keys of ``config.DEFAULTS["test"]`` (flip, topk, center_threshold, nms_threshold,
    nms_num_joints, max_people, pose_nms, upsample, LOGO-CAP decoding keys), plus optionally
    ``flip_shift`` ("official" | "aligned", see ``codecs.decode.flip_fuse``). ``normalization``:
    {"mean", "std"} (RGB, for [0, 1] images), ImageNet by default.
    """

    def __init__(self, model: torch.nn.Module, meta: KeypointMeta | str = "coco", input_size: int = 512,
                 test_cfg: dict | None = None, device: str | torch.device = "cpu",
                 normalization: dict | None = None):
        self.meta = get_meta(meta)
        k = getattr(model, "num_keypoints", self.meta.num_keypoints)
        if k != self.meta.num_keypoints:
            raise LogocapError(f"model predicts {k} keypoints but the keypoint set "
                               f"'{self.meta.name}' has {self.meta.num_keypoints}")
        if int(input_size) < 64 or int(input_size) % 64:
            raise LogocapError(f"input size must be a multiple of 64 (>= 64), got {input_size}")
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.input_size = int(input_size)
        self.cfg = copy.deepcopy(DEFAULTS["test"])
        self.cfg.update(test_cfg or {})
        validate_test_cfg(self.cfg)
        norm = normalization or {"mean": MEAN, "std": STD}
        self.mean = torch.tensor(norm["mean"], dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(norm["std"], dtype=torch.float32).view(3, 1, 1)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_checkpoint(cls, path, model_name: str | None = None, device="cpu", **overrides):
        """Load a logocap checkpoint (metadata inside) or a plain state_dict (``model_name`` needed;
        COCO keypoints, input size 512 / 640 for W32 / W48, ImageNet normalisation).

        ``overrides``: ``input_size=...``, ``meta=...`` (plain state_dicts only) and any test-config
        key (``flip=False``, ``topk=...``); they win over the checkpoint's own config.
        """
        from .engine.checkpoint import build_model_from_checkpoint, load_checkpoint

        input_size = overrides.pop("input_size", None)
        meta = overrides.pop("meta", None)
        ckpt = load_checkpoint(path)
        model, kp_meta, info = build_model_from_checkpoint(ckpt, model_name, device, meta=meta)
        test_cfg = dict(((info.get("config") or {}).get("test") or {}))
        unknown = [k for k in overrides if k not in DEFAULTS["test"] and k != "flip_shift"]
        if unknown:
            raise LogocapError(f"unknown test option(s) {', '.join(unknown)}; known: "
                               f"{', '.join(sorted(DEFAULTS['test']))}, flip_shift")
        test_cfg.update(overrides)
        size = input_size or info.get("input_size") or default_input_size(info["model_name"])
        return cls(model, kp_meta, int(size), test_cfg, device, info.get("normalization"))

    # ------------------------------------------------------------------ inference
    def _prepare(self, images):
        """Warp + normalise each image, pad to one batch; returns (batch, affines [B,2,3], sizes)."""
        tensors, affines, sizes = [], [], []
        for image in images:
            img = _as_rgb(image)
            h, w = img.shape[:2]
            m, (ow, oh) = test_transform(h, w, self.input_size)
            warped = warp_image(img, m, (ow, oh))
            x = torch.from_numpy(np.ascontiguousarray(warped)).permute(2, 0, 1).float().div_(255.0)
            tensors.append((x - self.mean) / self.std)
            affines.append(m)
            sizes.append((h, w))
        hmax = max(t.shape[1] for t in tensors)
        wmax = max(t.shape[2] for t in tensors)
        batch = torch.zeros(len(tensors), 3, hmax, wmax)
        for i, t in enumerate(tensors):
            batch[i, :, :t.shape[1], :t.shape[2]] = t  # bottom / right padding keeps the affine
        return batch, torch.as_tensor(np.stack(affines)), sizes

    @torch.inference_mode()
    def decode(self, batch: torch.Tensor) -> dict:
        """Normalised input batch [B, 3, H, W] -> decoded candidates (input px) plus ``keep``."""
        cfg = self.cfg
        batch = batch.to(self.device)
        if cfg["flip"]:
            fused, plain = run_with_flip(self.model, batch, self.meta, cfg.get("flip_shift", "official"))
        else:
            fused = plain = self.model(batch)
        bad = [k for k, v in plain.items() if not torch.isfinite(v).all()]
        if bad:  # a diverged or broken checkpoint: say so instead of decoding garbage
            raise LogocapError(f"the model produced non-finite values (NaN/Inf) in {', '.join(bad)}: "
                               "its weights are broken (diverged training or a damaged file)")
        if hasattr(self.model, "kam"):  # LOGO-CAP
            from .codecs.logocap_decode import decode_logocap
            res = decode_logocap(self.model, fused, plain["embedding"], self.meta, cfg)
        else:
            res = decode_center_offset(fused, self.meta, cfg)
        res["keep"] = pose_nms(res["poses"], res["scores"], res["valid"], cfg["nms_threshold"],
                               cfg["nms_num_joints"], cfg["max_people"], cfg["pose_nms"])
        return res

    def predict_batch(self, images) -> list[Poses]:
        """A list of RGB uint8 images -> one :class:`Poses` per image, sorted by score."""
        images = list(images)
        if not images:
            return []
        batch, affines, sizes = self._prepare(images)
        res = self.decode(batch)
        # Pose NMS ran in input px; the test transform is a similarity, so the relative
        # (diagonal-based) NMS threshold gives the same result as in original px.
        orig = to_original(res["poses"], affines.to(res["poses"].device)).float().cpu().numpy()
        keep = res["keep"].cpu().numpy()
        scores = res["scores"].float().cpu().numpy()
        out = []
        for b, size in enumerate(sizes):  # packaging only: the decoding above is batched
            poses = Poses(orig[b][keep[b]], scores[b][keep[b]], self.meta, image_size=size)
            out.append(poses.sorted())
        return out

    def predict(self, image) -> Poses:
        """One RGB uint8 image [H, W, 3] -> :class:`Poses` (original px, sorted by score)."""
        return self.predict_batch([image])[0]
