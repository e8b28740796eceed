"""Non-maximum suppression for bottom-up decoding: center peaks and whole poses.

Both functions work on a batch ``[B, ...]`` at once; there is no Python loop over people or images
(the released pose-NMS walk visits the <= topk candidate positions in order, all images at once).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..utils import LogocapError

__all__ = ["center_nms", "pose_nms", "check_pose_nms", "POSE_NMS_METHODS"]

POSE_NMS_METHODS = ("official", "greedy")


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


def check_pose_nms(method: str) -> str:
    """The pose-NMS procedure name, checked (one clear line for a bad ``test.pose_nms``)."""
    if method not in POSE_NMS_METHODS:
        raise LogocapError(f"test.pose_nms must be one of {', '.join(POSE_NMS_METHODS)}, "
                           f"got {method!r}")
    return method


def pose_nms(poses: torch.Tensor, scores: torch.Tensor, valid: torch.Tensor,
             threshold: float = 0.05, num_joints: int | None = None,
             max_people: int = 30, method: str = "official") -> torch.Tensor:
    """Pose NMS, then keep at most ``max_people`` by score (notes 3.15, 10.3).

    poses [B, T, K, 2 or 3] (only x, y are used), scores [B, T] (the ranking score: the pose score
    for LOGO-CAP and the center-offset baseline, the mean heat value for DEKR), valid [B, T] bool.
    ``num_joints=None`` means K // 2 (8 for COCO's 17, the official value; 7 for CrowdPose).
    Pose j duplicates reference pose i when more than ``num_joints`` of its joints lie closer than
    ``threshold`` x the diagonal of pose i's keypoint box. Invalid candidates neither survive nor
    suppress. Returns keep [B, T] bool (input order).

    ``method``:
    - "official": the released procedure (LOGO-CAP and DEKR ``nms_core``), see ``_official_keep``.
    - "greedy": standard score-ordered greedy NMS; the higher-scored pose is the reference.
    """
    check_pose_nms(method)
    b, t, k = poses.shape[:3]
    if num_joints is None:
        num_joints = k // 2
    if t == 0:
        return torch.zeros(b, 0, dtype=torch.bool, device=poses.device)
    # a NaN score must neither win a group nor a place in the cap
    scores = torch.nan_to_num(scores.float(), nan=-float("inf"))
    if method == "official":
        dup = _duplicates(poses[..., :2].float(), threshold, num_joints)
        keep = _official_keep(dup, scores, valid)
        return _cap(keep, scores, max_people)
    return _greedy_keep(poses, scores, valid, threshold, num_joints, max_people)


def _official_keep(dup: torch.Tensor, rank: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """The released suppression walk, batched over images (the walk is over the <= T candidates).

    Candidates are visited in the decoder's order (center-score order), not in score order. For
    candidate i, unless it is already suppressed: its group is every valid pose j with
    dup[i, j] (pose i itself always belongs, even with a zero-size box, where the released code
    would fail on an empty group); the group member with the best ``rank`` (first index on ties)
    is kept unless it is already suppressed, and only then the whole group is marked suppressed.
    So a pose can be kept although it was never a walk position, and a chain A~B~C can keep a
    different set than greedy NMS does.
    """
    b, t = rank.shape
    eye = torch.eye(t, dtype=torch.bool, device=dup.device)
    group = (dup & valid[:, None, :]) | eye  # [B, T(i), T(j)]
    suppressed = ~valid.clone()
    keep = torch.zeros_like(valid)
    rows = torch.arange(b, device=dup.device)
    neg = torch.full_like(rank, -float("inf"))
    for i in range(t):  # over candidate positions, all images at once
        g = group[:, i]  # [B, T]
        best = torch.where(g, rank, neg).argmax(1)  # first maximum, as torch.argmax in the release
        take = ~suppressed[:, i] & ~suppressed[rows, best]
        keep[rows, best] |= take
        suppressed |= g & take[:, None]
    return keep


def _cap(keep: torch.Tensor, rank: torch.Tensor, max_people: int) -> torch.Tensor:
    """Keep the ``max_people`` best-ranked kept poses (stable on ties)."""
    key = torch.where(keep, rank, torch.full_like(rank, -float("inf")))
    order = key.argsort(dim=1, descending=True, stable=True)
    pos = torch.empty_like(order)
    pos.scatter_(1, order, torch.arange(order.shape[1], device=order.device).expand_as(order))
    return keep & (pos < max_people)


def _greedy_keep(poses, scores, valid, threshold, num_joints, max_people) -> torch.Tensor:
    """Greedy NMS in score order, solved as a fixed point (Cluster-NMS, Zheng et al. 2020): with
    S[i, j] = "i ranks above j and j duplicates i", iterate keep_j = not any_i(keep_i and S[i, j])
    from keep = valid. After n rounds the n best ranks are final, so it is exact after at most T
    rounds and in practice stops after 2-3."""
    b, t, k = poses.shape[:3]
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
