"""Per-keypoint OKS and the oracle best-in-window assignment (training targets + upper bound).

COCO keypoint similarity of joint k against GT person g (area A_g, sigma_k):
    ks = exp(-d^2 / (2 * A_g * (2 sigma_k)^2)),  0 where the GT joint is unlabelled (v = 0).
OKS is invariant to a common similarity transform of predictions, GT and sqrt(area), so it may
be computed in any frame where both live (we use the network input frame with input-px^2 areas).

Oracle (notes §4.3, suppl. §2): a candidate's local mesh [K, m, m, 2] is compared with every GT;
the candidate goes to the GT maximising the mean over visible joints of (max over the mesh of the
per-joint OKS); its whole-person OKS is the best, over the m*m mesh indices, of the mean per-joint
OKS with all joints at the *same* index.
"""
from __future__ import annotations

import torch

__all__ = ["keypoint_oks", "keypoint_oks_batched", "mesh_oks", "oracle_assign", "oracle_refine",
           "oracle_refine_batched", "exp_underflow"]

# float32 exp(x) rounds to 0 below -103.98 (its smallest subnormal is e^-103.28)
_EXP_ZERO = -104.0


def exp_underflow(x: torch.Tensor) -> torch.Tensor:
    """``torch.exp(x)`` value for value, fast where many arguments are far below 0.

    On CPU torch's float32 exp takes a slow path for every argument below about -87 (results
    subnormal or 0): ~100 ns per element instead of ~1 (one core, torch 2.13, AVX-512), and OKS
    and Gaussians over whole windows are full of them. The arguments whose result is 0 anyway
    (below -104) are evaluated at 0 and their result set to 0; the few with a subnormal result
    keep torch's own value. Other dtypes / devices and inputs that need a gradient: ``torch.exp``.
    """
    if x.dtype != torch.float32 or x.device.type != "cpu" or (x.requires_grad and torch.is_grad_enabled()):
        return torch.exp(x)
    zero = x < _EXP_ZERO
    return torch.exp(x.masked_fill(zero, 0.0)).masked_fill_(zero, 0.0)


def keypoint_oks_batched(pred: torch.Tensor, gt: torch.Tensor, areas: torch.Tensor,
                         sigmas) -> torch.Tensor:
    """pred [B, P, K, 2], gt [B, G, K, 3], areas [B, G] -> per-joint OKS [B, P, G, K]."""
    sig = torch.as_tensor(sigmas, dtype=pred.dtype, device=pred.device)
    var = (2 * sig) ** 2  # [K]
    d2 = ((pred[:, :, None] - gt[:, None, :, :, :2]) ** 2).sum(-1)  # [B, P, G, K]
    denom = (2 * areas[:, None, :, None] * var).clamp_min(1e-6)  # the released code's floor
    vis = (gt[:, None, :, :, 2] > 0).to(pred.dtype)
    return exp_underflow(-d2 / denom) * vis


def keypoint_oks(pred: torch.Tensor, gt: torch.Tensor, areas: torch.Tensor, sigmas) -> torch.Tensor:
    """pred [..., K, 2], gt [G, K, 3], areas [G] -> per-joint OKS [..., G, K]."""
    K = pred.shape[-2]
    lead = pred.shape[:-2]
    out = keypoint_oks_batched(pred.reshape(1, -1, K, 2), gt[None], areas[None], sigmas)
    return out.reshape(*lead, gt.shape[0], K)


def mesh_oks(mesh: torch.Tensor, gt: torch.Tensor, areas: torch.Tensor, sigmas) -> torch.Tensor:
    """Per-joint OKS over the mesh: mesh [B, T, K, m, m, 2], gt [B, G, K, 3], areas [B, G]
    -> [B, T, G, K, m, m]."""
    B, T, K, m, m2, _ = mesh.shape
    G = gt.shape[1]
    mx, my = mesh[..., 0, :, 0], mesh[..., :, 0, 1]  # [B, T, K, m]: column x, row y
    if m == m2 and torch.equal(mesh[..., 0], mx[..., None, :].expand(mesh.shape[:-1])) \
            and torch.equal(mesh[..., 1], my[..., :, None].expand(mesh.shape[:-1])):
        # a separable grid (every ``local_mesh``): d2 = dy^2 + dx^2 from the m x- and m
        # y-coordinates, the same float operations on the same numbers as the general path
        gxy = gt[:, None, :, :, None, :2]  # [B, 1, G, K, 1, 2]
        dx2 = (mx[:, :, None] - gxy[..., 0]) ** 2  # [B, T, G, K, m]
        dy2 = (my[:, :, None] - gxy[..., 1]) ** 2
        d2 = dy2[..., :, None] + dx2[..., None, :]  # [B, T, G, K, m, m]
        sig = torch.as_tensor(sigmas, dtype=mesh.dtype, device=mesh.device)
        denom = (2 * areas[:, None, :, None] * (2 * sig) ** 2).clamp_min(1e-6)  # [B, 1, G, K]
        vis = (gt[:, None, :, :, 2] > 0).to(mesh.dtype)
        return exp_underflow(-d2 / denom[..., None, None]) * vis[..., None, None]
    pts = mesh.permute(0, 1, 3, 4, 2, 5).reshape(B, T * m * m2, K, 2)
    oks = keypoint_oks_batched(pts, gt, areas, sigmas)  # [B, T*m*m, G, K]
    return oks.reshape(B, T, m, m2, G, K).permute(0, 1, 4, 5, 2, 3)


def _take_gt(x: torch.Tensor, assignment: torch.Tensor) -> torch.Tensor:
    """x [B, T, G, ...], assignment [B, T] -> x[b, t, assignment[b, t]] as [B, T, ...]."""
    idx = assignment.reshape(*assignment.shape, 1, *([1] * (x.dim() - 3)))
    idx = idx.expand(*assignment.shape, 1, *x.shape[3:])
    return x.gather(2, idx).squeeze(2)


def oracle_assign(joint_oks: torch.Tensor, gt: torch.Tensor, gt_mask: torch.Tensor | None = None) -> dict:
    """Oracle best-in-window assignment.

    joint_oks [B, T, G, K, m, m] (from ``mesh_oks``), gt [B, G, K, 3], gt_mask [B, G] (True =
    real person; padding rows never win). Returns a dict:
      assignment [B, T] (GT index), match [B, T] (best-in-window mean over visible joints, -1 when
      the image has no GT), joint_oks [B, T, K, m, m] (against the assigned GT), person_oks
      [B, T, m, m] (whole person at the same mesh index), person_best [B, T] (its max),
      visible [B, T, K] (assigned GT joint labelled).
    """
    B, T, G, K, m, _ = joint_oks.shape
    vis = gt[..., 2] > 0  # [B, G, K]
    if gt_mask is None:
        gt_mask = torch.ones(B, G, dtype=torch.bool, device=gt.device)
    cnt = vis.sum(-1).clamp_min(1).to(joint_oks.dtype)  # [B, G]
    best_joint = joint_oks.flatten(-2).amax(-1)  # [B, T, G, K]
    match = (best_joint * vis[:, None]).sum(-1) / cnt[:, None]  # [B, T, G]
    match = match.masked_fill(~gt_mask.bool()[:, None], -1.0)
    if G == 0:
        z = joint_oks.new_zeros(B, T)
        return {"assignment": torch.zeros(B, T, dtype=torch.long, device=gt.device), "match": z - 1,
                "joint_oks": joint_oks.new_zeros(B, T, K, m, m), "person_oks": joint_oks.new_zeros(B, T, m, m),
                "person_best": z, "visible": torch.zeros(B, T, K, dtype=torch.bool, device=gt.device)}
    match, assignment = match.max(-1)
    oks_a = _take_gt(joint_oks, assignment)  # [B, T, K, m, m]
    vis_a = _take_gt(vis[:, None].expand(B, T, G, K), assignment)  # [B, T, K]
    cnt_a = vis_a.sum(-1).clamp_min(1).to(oks_a.dtype)
    person = (oks_a * vis_a[..., None, None]).sum(2) / cnt_a[..., None, None]  # [B, T, m, m]
    person = person * (match >= 0)[..., None, None]  # images without GT: 0
    return {"assignment": assignment, "match": match, "joint_oks": oks_a, "person_oks": person,
            "person_best": person.flatten(-2).amax(-1), "visible": vis_a}


def oracle_refine_batched(mesh: torch.Tensor, gt: torch.Tensor, areas: torch.Tensor, sigmas,
                          gt_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Replace each joint by its best mesh point against the oracle-assigned GT.

    mesh [B, T, K, m, m, 2] -> joints [B, T, K, 2]. A joint keeps the mesh centre (the initial
    estimate) when no mesh point beats it (unlabelled GT joint, no GT, or ties).
    """
    B, T, K, m, _, _ = mesh.shape
    info = oracle_assign(mesh_oks(mesh, gt, areas, sigmas), gt, gt_mask)
    oks = info["joint_oks"].flatten(-2)  # [B, T, K, m*m]
    centre = (m // 2) * m + m // 2
    best_val, best_idx = oks.max(-1)
    best_idx = torch.where(best_val > oks[..., centre], best_idx, torch.full_like(best_idx, centre))
    flat = mesh.flatten(3, 4)  # [B, T, K, m*m, 2]
    return flat.gather(3, best_idx[..., None, None].expand(B, T, K, 1, 2)).squeeze(3)


def oracle_refine(mesh: torch.Tensor, gt: torch.Tensor, areas: torch.Tensor, sigmas) -> torch.Tensor:
    """Unbatched form: mesh [N, K, m, m, 2], gt [G, K, 3], areas [G] -> best joints [N, K, 2]."""
    return oracle_refine_batched(mesh[None], gt[None], areas[None], sigmas)[0]
