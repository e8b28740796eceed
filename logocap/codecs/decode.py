"""Center-offset decoding: network maps -> candidate poses in input pixels (batched torch).

Conventions (docs/DESIGN.md): output index i <-> input pixel 4 i; heatmaps [B, K+1, h, w] with
the center channel last; offsets [B, 2K, h, w] with channel 2j = x, 2j+1 = y and
value = location - joint in output pixels. Every function takes a batch and loops over no person.

Steps, as in the official inference (notes 3): flip fusion -> upsampling to input size -> center
NMS (top-T) -> pose_j = c - 4 * offset_j(floor(c / 4)) -> joint scores. Pose NMS lives in
``nms.py`` and back-projection in ``to_original``; the caller (``logocap.predict``) chains them.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .mesh import sample_per_channel  # the one per-channel bilinear gather
from .nms import center_nms, pose_nms

__all__ = ["run_with_flip", "flip_fuse", "upsample_heatmaps", "center_nms", "offsets_to_poses",
           "bilinear_gather", "joint_scores", "center_offset_candidates", "decode_center_offset",
           "pose_nms", "to_original", "FLIP_SHIFTS", "UPSAMPLE_MODES"]

FLIP_SHIFTS = ("official", "aligned")
UPSAMPLE_MODES = ("official", "aligned")


# --------------------------------------------------------------------------- flip test
def run_with_flip(model, images: torch.Tensor, meta, flip_shift: str = "official"):
    """Forward images and their mirrors as ONE batch of 2B; return (fused dict, unflipped raw dict).

    The raw dict of the unflipped half is what LOGO-CAP needs for its embedding (notes 3.2).
    """
    b = images.shape[0]
    out = model(torch.cat([images, images.flip(-1)], dim=0))
    plain = {k: v[:b] for k, v in out.items()}
    mirrored = {k: v[b:] for k, v in out.items()}
    return flip_fuse(plain, mirrored, meta, flip_shift), plain


def _shift_right(x: torch.Tensor, frac: float) -> torch.Tensor:
    """Resample the last axis at index i - frac (0 <= frac <= 1), linear, edge replicated."""
    prev = torch.cat([x[..., :1], x[..., :-1]], dim=-1)
    return (1.0 - frac) * x + frac * prev


def flip_fuse(out: dict, out_flipped: dict, meta, flip_shift: str = "official") -> dict:
    """Average the outputs of an image and of its mirror (notes 3.2).

    The mirrored heatmaps are flipped back and their channels reordered with
    ``meta.flip_index_with_center``; the mirrored offsets are flipped back, their joints reordered
    with ``meta.flip_index`` and x negated (an offset is location - joint, so mirroring negates x).

    ``flip_shift``: a mirrored input of width W = 4w maps pixel x to W-1-x, so after ``flip(-1)``
    output index i holds input pixel W-1-4(w-1-i) = 4i + 3, not 4i: the flipped-back half is 3 px
    (0.75 output px) off: its heatmap peaks and offset-decoded joints sit 3 px to the LEFT, so the
    fused ones are biased by -1.5 px in x (with "official" upsampling, +1.5 px in x and y on top).
    - "official": no correction (the released LOGO-CAP code; keep it to match its checkpoints).
    - "aligned": remove the 3 px exactly: the flipped-back heatmaps are linearly resampled at
      i - 0.75, and 0.75 output px is subtracted from the flipped-back x offsets (an offset field
      grows by 1 per output px of location, so this is the offset of location 4i, exact inside
      each person's region, without blurring across people). DEKR reaches the same alignment by
      shifting the mirrored input image 3 px, which needs no resampling but loses 3 columns.
    Keys other than heatmaps/offsets (e.g. the LOGO-CAP embedding) are taken from ``out``.
    """
    if flip_shift not in FLIP_SHIFTS:
        raise ValueError(f"flip_shift must be one of {FLIP_SHIFTS}, got {flip_shift!r}")
    fused = dict(out)
    k = meta.num_keypoints
    hm_idx = torch.as_tensor(meta.flip_index_with_center, device=out["heatmaps"].device)
    hm_f = out_flipped["heatmaps"].flip(-1).index_select(1, hm_idx)
    if flip_shift == "aligned":
        hm_f = _shift_right(hm_f, 0.75)
    fused["heatmaps"] = 0.5 * (out["heatmaps"] + hm_f)
    if "offsets" in out:
        b, _, h, w = out["offsets"].shape
        off_f = out_flipped["offsets"].flip(-1).reshape(b, k, 2, h, w)
        off_f = off_f.index_select(1, torch.as_tensor(meta.flip_index, device=off_f.device))
        sign = torch.tensor([-1.0, 1.0], dtype=off_f.dtype, device=off_f.device).view(1, 1, 2, 1, 1)
        off_f = off_f * sign
        if flip_shift == "aligned":
            off_f = off_f - torch.tensor([0.75, 0.0], dtype=off_f.dtype,
                                         device=off_f.device).view(1, 1, 2, 1, 1)
        fused["offsets"] = 0.5 * (out["offsets"] + off_f.reshape(b, 2 * k, h, w))
    return fused


# --------------------------------------------------------------------------- maps
def upsample_heatmaps(hm: torch.Tensor, stride: int = 4, mode: str = "official") -> torch.Tensor:
    """[B, C, h, w] -> [B, C, stride*h, stride*w] input-resolution maps.

    "official": bilinear align_corners=False (released code; output index i peaks at input px
    4i + 1.5, notes 8). "aligned": index i <-> pixel 4i exactly: align_corners=True to 4h-3, then
    replicate the last row / column 3 times (DEKR's up_interpolate).
    """
    h, w = hm.shape[-2:]
    if mode == "official":
        return F.interpolate(hm, size=(stride * h, stride * w), mode="bilinear", align_corners=False)
    if mode == "aligned":
        pad = stride - 1
        up = F.interpolate(hm, size=(stride * h - pad, stride * w - pad), mode="bilinear",
                           align_corners=True)
        return F.pad(up, (0, pad, 0, pad), mode="replicate")
    raise ValueError(f"upsample mode must be one of {UPSAMPLE_MODES}, got {mode!r}")


def offsets_to_poses(centers: torch.Tensor, offsets: torch.Tensor, stride: int = 4) -> torch.Tensor:
    """Initial poses from centers (notes 3.5): pose_j = c - stride * offset_j(floor(c / stride)).

    centers [B, T, 2] (x, y) input px; offsets [B, 2K, h, w]. Returns [B, T, K, 2] input px.
    The read index is clamped to the map.
    """
    b, c2, h, w = offsets.shape
    ix = torch.div(centers[..., 0], stride, rounding_mode="floor").long().clamp(0, w - 1)
    iy = torch.div(centers[..., 1], stride, rounding_mode="floor").long().clamp(0, h - 1)
    flat = (iy * w + ix)[:, None, :].expand(b, c2, centers.shape[1])  # [B, 2K, T]
    off = offsets.reshape(b, c2, h * w).gather(2, flat)
    off = off.permute(0, 2, 1).reshape(b, centers.shape[1], c2 // 2, 2)
    return centers[:, :, None, :] - stride * off


def bilinear_gather(maps: torch.Tensor, pts: torch.Tensor) -> torch.Tensor:
    """Bilinear value of channel c at pts[b, n, c] for every (b, n, c).

    maps [B, C, H, W], pts [B, N, C, 2] (x, y) in that map's pixels (pixel centres at integers);
    points are clamped to the map (border values outside). Returns [B, N, C].
    Unlike ``grid_sample`` each channel is read at its own point (joint j on heatmap j).
    """
    b, n, c, _ = pts.shape
    rows = torch.arange(b, device=maps.device).repeat_interleave(n)
    return sample_per_channel(maps, rows, pts.reshape(b * n, c, 2), "clean").reshape(b, n, c)


def joint_scores(heatmaps_up: torch.Tensor, poses: torch.Tensor, center_scores: torch.Tensor):
    """Center-offset baseline scores (notes 3, adaptation ``none``).

    Per-joint score = heat value of joint j at the joint (bilinear on the upsampled map) times the
    center score, as DEKR does; pose score = mean over joints. Returns ([B, T, K], [B, T]).
    """
    k = poses.shape[2]
    heat = bilinear_gather(heatmaps_up[:, :k], poses)
    js = heat * center_scores[..., None]
    return js, js.mean(-1)


# --------------------------------------------------------------------------- full decode
# the test settings the center-offset decoder reads (defaults: config.DEFAULTS["test"])
CENTER_OFFSET_KEYS = ("topk", "center_threshold", "upsample", "flip_shift", "nms_threshold",
                      "nms_num_joints", "max_people", "center_kernel", "pose_nms")


def _cfg(cfg: dict | None) -> dict:
    from ..config import default_test_settings

    base = default_test_settings(CENTER_OFFSET_KEYS)
    base.update(cfg or {})
    return base


def center_offset_candidates(heatmaps: torch.Tensor, offsets: torch.Tensor, cfg: dict | None = None,
                             stride: int = 4, heatmaps_up: torch.Tensor | None = None) -> dict:
    """Heatmaps [B, K+1, h, w] + offsets [B, 2K, h, w] -> candidate poses (no scoring, no NMS).

    Returns dict(heatmaps_up [B, K+1, H, W], centers [B, T, 2], center_scores [B, T],
    poses [B, T, K, 2] input px, valid [B, T], nonfinite [B] (long)). Shared with the LOGO-CAP
    decoder. A candidate whose offsets are NaN / Inf is dropped (not valid, its joints parked on
    its center so later steps stay finite) and counted in ``nonfinite``; an image can then be
    left with no valid candidate. ``heatmaps_up``: ``upsample_heatmaps(heatmaps, stride,
    cfg["upsample"])`` when the caller has it already (the LOGO-CAP criterion), else made here.
    """
    cfg = _cfg(cfg)
    k = offsets.shape[1] // 2
    if heatmaps.shape[1] != k + 1:
        raise ValueError(f"heatmaps have {heatmaps.shape[1]} channels but offsets {offsets.shape[1]}"
                         f"; expected K+1 and 2K")
    up = upsample_heatmaps(heatmaps, stride, cfg["upsample"]) if heatmaps_up is None else heatmaps_up
    centers, cscores, valid = center_nms(up[:, k], cfg["topk"], cfg["center_threshold"],
                                         cfg["center_kernel"])
    poses = offsets_to_poses(centers, offsets, stride)
    finite = torch.isfinite(poses).flatten(2).all(-1)  # [B, T]
    nonfinite = (valid & ~finite).sum(1)
    poses = torch.where(finite[..., None, None], poses, centers[:, :, None, :].to(poses.dtype))
    return {"heatmaps_up": up, "centers": centers, "center_scores": cscores, "poses": poses,
            "valid": valid & finite, "nonfinite": nonfinite}


def decode_center_offset(outputs: dict, meta, cfg: dict | None = None, stride: int = 4) -> dict:
    """Fused network outputs -> scored center-offset poses in input px (before pose NMS).

    Returns dict(poses [B, T, K, 3] (x, y, joint score), scores [B, T], valid [B, T], centers,
    center_scores, heatmaps_up).
    """
    k = meta.num_keypoints
    if outputs["offsets"].shape[1] != 2 * k:
        raise ValueError(f"model predicts {outputs['offsets'].shape[1] // 2} keypoints, "
                         f"meta '{meta.name}' has {k}")
    cand = center_offset_candidates(outputs["heatmaps"], outputs["offsets"], cfg, stride)
    js, scores = joint_scores(cand["heatmaps_up"], cand["poses"], cand["center_scores"])
    return {"poses": torch.cat([cand["poses"], js[..., None]], dim=-1), "scores": scores,
            "valid": cand["valid"], "centers": cand["centers"],
            "center_scores": cand["center_scores"], "heatmaps_up": cand["heatmaps_up"],
            "nonfinite": cand["nonfinite"]}


# --------------------------------------------------------------------------- back-projection
def to_original(poses: torch.Tensor, affines: torch.Tensor) -> torch.Tensor:
    """Input px -> original px. poses [B, T, K, >=2], affines [B, 2, 3] (original -> input).

    Each 2x3 affine is inverted in float64 (batched); channels after x, y (scores) are kept.
    """
    a = torch.as_tensor(affines, dtype=torch.float64, device=poses.device)
    lin, t = a[:, :, :2], a[:, :, 2]
    inv = torch.linalg.inv(lin)  # [B, 2, 2]
    xy = poses[..., :2].double() - t[:, None, None, :]
    xy = torch.einsum("bij,btkj->btki", inv, xy).to(poses.dtype)
    return torch.cat([xy, poses[..., 2:]], dim=-1)
