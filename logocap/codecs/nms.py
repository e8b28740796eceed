"""Non-maximum suppression for bottom-up decoding: center peaks and whole poses.

Both functions work on a batch ``[B, ...]`` at once; there is no Python loop over people or images.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["center_nms", "pose_nms"]


def center_nms(center: torch.Tensor, topk: int = 30, threshold: float = 0.01, kernel: int = 3):
    """Peaks of the input-resolution center map (notes 3.4 and 3.6).

    center: [B, H, W]. A pixel is a peak when it equals the max of its ``kernel`` x ``kernel``
    neighbourhood (negatives are clamped to 0 for the pooling only, so a negative pixel is never a
    peak). Every pixel of a flat plateau equals its local max and survives, as in the official code;
    the duplicates this makes are removed later by pose NMS.

    Returns centers [B, T, 2] float (x, y) in input px, scores [B, T] (the raw map value),
    valid [B, T] bool (a peak with score >= threshold). An image with no valid peak keeps its
    top-1 (its global maximum) so every image gets at least one candidate. T = min(topk, H*W).
    """
    if center.dim() != 3:
        raise ValueError(f"center_nms expects [B, H, W], got {tuple(center.shape)}")
    b, h, w = center.shape
    t = min(int(topk), h * w)
    pooled = F.max_pool2d(center.clamp(min=0)[:, None], kernel, stride=1, padding=kernel // 2)[:, 0]
    is_peak = center == pooled
    flat = center.reshape(b, -1)
    # Rank peaks by value; non-peaks go last (they can only be picked when T exceeds the peaks).
    key = torch.where(is_peak.reshape(b, -1), flat, torch.full_like(flat, -float("inf")))
    _, idx = key.topk(t, dim=1)
    peak = is_peak.reshape(b, -1).gather(1, idx)
    # Top-1 fallback (notes 3.6): rank 0 is the best peak; if the image has no peak at all
    # (an all-negative map) use the raw argmax instead.
    idx[:, 0] = torch.where(peak[:, 0], idx[:, 0], flat.argmax(1))
    scores = flat.gather(1, idx)
    valid = peak & (scores >= threshold)
    valid[:, 0] |= ~valid.any(1)
    centers = torch.stack([idx % w, idx // w], dim=-1).to(center.dtype)
    return centers, scores, valid


def _duplicates(xy: torch.Tensor, threshold: float, num_joints: int) -> torch.Tensor:
    """dup[b, i, j]: pose j duplicates reference pose i (more than ``num_joints`` joints closer
    than ``threshold`` x the diagonal of pose i's keypoint box; DEKR / notes 3.15)."""
    box = xy.amax(2) - xy.amin(2)  # [B, T, 2]
    diag = box.norm(dim=-1)  # [B, T]
    dist = (xy[:, :, None] - xy[:, None]).norm(dim=-1)  # [B, T(ref), T, K]
    close = (dist < threshold * diag[:, :, None, None]).sum(-1)
    return close > num_joints


def pose_nms(poses: torch.Tensor, scores: torch.Tensor, valid: torch.Tensor,
             threshold: float = 0.05, num_joints: int | None = None,
             max_people: int = 30) -> torch.Tensor:
    """Greedy pose NMS in score order, then keep at most ``max_people`` (notes 3.15).

    poses [B, T, K, 2 or 3] (only x, y are used), scores [B, T], valid [B, T] bool.
    ``num_joints=None`` means K // 2 (8 for COCO's 17, the official value; 7 for CrowdPose).
    The higher-scored pose is the reference whose box diagonal sets the distance threshold.
    Invalid candidates neither survive nor suppress. Returns keep [B, T] bool (input order).

    Greedy NMS is solved as a fixed point (Cluster-NMS, Zheng et al. 2020): with S[i, j] =
    "i ranks above j and j duplicates i", iterate keep_j = not any_i(keep_i and S[i, j]) from
    keep = valid. After n rounds the n best ranks are final, so it is exact after at most T
    rounds and in practice stops after 2-3.
    """
    b, t, k = poses.shape[:3]
    if num_joints is None:
        num_joints = k // 2
    if t == 0:
        return torch.zeros(b, 0, dtype=torch.bool, device=poses.device)
    key = torch.where(valid, scores, torch.full_like(scores, -float("inf")))
    order = key.argsort(dim=1, descending=True, stable=True)
    xy = poses[..., :2].gather(1, order[:, :, None, None].expand(b, t, k, 2)).float()
    ok = valid.gather(1, order)
    dup = _duplicates(xy, threshold, num_joints)
    above = torch.ones(t, t, dtype=torch.bool, device=poses.device).triu(1)  # rank i < rank j
    sup = dup & above & ok[:, :, None]
    keep = ok.clone()
    for _ in range(t):  # loop over rounds, not people; usually breaks after 2-3
        new = ok & ~(sup & keep[:, :, None]).any(1)
        if torch.equal(new, keep):
            break
        keep = new
    # Cap: the first ``max_people`` kept poses in score order.
    keep &= keep.cumsum(1) <= max_people
    out = torch.zeros_like(keep)
    out.scatter_(1, order, keep)
    return out
