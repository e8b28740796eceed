"""LOGO-CAP training losses (notes §4.3-4.4; CVPR §3.2, NeurIPS Eqns. 11-13).

Terms (each already multiplied by its factor from ``loss_cfg``):
- ``heatmap``, ``offset``: the center-offset losses (``losses.center_offset``).
- ``kam`` (factor 0.01, Eqn. 13 as released): per kept candidate c and joint j,
  w_cj * mean over the mesh of (KAM - OKS_target)^2, summed over candidates and divided by their
  number. OKS_target = per-joint OKS of each local mesh point vs the assigned GT.
- ``refined`` (factor 1.0): mean of w_cj * (refined heatmap - Gaussian target)^2 over the kept
  candidates, joints and the a x a global grid; target sigma ``refined_sigma`` (4 input px).
Weights (the released code's "hard example" weighting, not in the paper): w_cj = max over the
mesh of the OKS of joint j - its OKS at the initial estimate (mesh centre); 0 for unlabelled
joints and for joints already at their best point.

Candidates: the network's own top-T centers on the *detached* maps, no score threshold, and
their center-offset poses (no gradient into the offsets from these losses). Each goes to the GT
of best best-in-window OKS (``codecs.oks.oracle_assign``) and is kept if its whole-person OKS
(same mesh index for all joints) is >= 0.5. If no candidate in the batch is kept, one zero-weight
placeholder keeps the graph connected (every parameter gets a gradient, as DDP requires).

Frame: OKS is computed in the augmented *input* frame with ``gt_keypoints`` (input px) and
``gt_areas`` (input px^2). The released code maps the mesh back to original pixels instead; both
give the same OKS because OKS is invariant to a similarity transform applied to the prediction,
the GT and sqrt(area) together (our augmentation is a similarity: scale, rotation, shift, flip).

The global crops read the *non-detached* upsampled heatmaps, so the refined loss reaches the
heatmap head; the KAMs are raw (no clamp) in training.
"""
from __future__ import annotations

import torch

from ..codecs.decode import center_offset_candidates, upsample_heatmaps
from ..codecs.logocap_decode import decode_cfg, refine
from ..codecs.mesh import global_offsets, local_mesh
from ..codecs.oks import mesh_oks, oracle_assign
from .center_offset import CenterOffsetCriterion

__all__ = ["LogoCapCriterion", "OKS_KEEP"]

OKS_KEEP = 0.5  # whole-person OKS gate for training candidates (notes §4.3)


class LogoCapCriterion:
    """criterion(model, batch) -> {"loss", "heatmap", "offset", "kam", "refined"}.

    loss_cfg keys: heatmap, offset, kam, refined, oks_loss (False: no KAM loss, Table 5 (b)),
    refined_sigma. decode_cfg: the ``test`` section (topk, upsample, local_size, global_size,
    gaussian_reweigh, gaussian_sigma, window_scale). The sigmas come from the batch's keypoint
    count: pass ``sigmas=meta.sigmas``; without it a ``model.meta`` is used, else COCO's (17 only).
    ``last_num_kept`` holds the number of candidates that passed the OKS gate in the last call.
    """

    def __init__(self, loss_cfg: dict | None = None, decode_cfg_: dict | None = None, sigmas=None):
        cfg = dict(loss_cfg or {})
        self.base = CenterOffsetCriterion(cfg)
        self.kam_factor = float(cfg.get("kam", 0.01))
        self.refined_factor = float(cfg.get("refined", 1.0))
        self.oks_loss = bool(cfg.get("oks_loss", True))
        self.refined_sigma = float(cfg.get("refined_sigma", 4.0))
        self.dcfg = decode_cfg(decode_cfg_)
        self.sigmas = sigmas
        self.last_num_kept = 0

    def _sigmas(self, model, k: int):
        if self.sigmas is not None:
            return self.sigmas
        meta = getattr(model, "meta", None)
        if meta is not None:
            return meta.sigmas
        from ..meta import COCO
        if k != COCO.num_keypoints:
            raise ValueError(f"LogoCapCriterion needs sigmas for {k} keypoints; pass sigmas=meta.sigmas")
        return COCO.sigmas

    def __call__(self, model, batch: dict) -> dict:
        out = model(batch["image"])
        terms = self.base.terms(out, batch)
        cfg = self.dcfg
        K = out["offsets"].shape[1] // 2
        sigmas = self._sigmas(getattr(model, "module", model), K)
        ws = float(cfg["window_scale"])

        # candidates from the detached maps: top-T, no threshold (notes §4.3); the upsampled
        # heatmaps are made once: the global crops read them with gradient, the candidates without
        up = upsample_heatmaps(out["heatmaps"], 4, cfg["upsample"])
        cand_cfg = {**cfg, "center_threshold": -float("inf")}
        cand = center_offset_candidates(out["heatmaps"].detach(), out["offsets"].detach(), cand_cfg,
                                        heatmaps_up=up.detach())
        poses = cand["poses"]  # [B, T, K, 2]
        mesh = local_mesh(poses, sigmas, int(cfg["local_size"]), ws)  # [B, T, K, m, m, 2]

        gt, areas = batch["gt_keypoints"].to(poses), batch["gt_areas"].to(poses)
        gt_mask = batch.get("gt_mask")
        gt_mask = gt_mask.bool() if gt_mask is not None else torch.ones_like(areas, dtype=torch.bool)
        info = oracle_assign(mesh_oks(mesh, gt, areas, sigmas), gt, gt_mask)
        keep = info["person_best"] >= OKS_KEEP  # [B, T]
        gate = keep.to(poses.dtype)
        if not bool(keep.any()):
            keep = keep.clone()
            keep[0, 0] = True  # zero-weight placeholder (gate stays 0)
        bi, ti = keep.nonzero(as_tuple=True)
        n_valid = gate[bi, ti].sum().clamp_min(1.0)

        # targets of the kept candidates
        m = mesh.shape[-2]
        oks_t = info["joint_oks"][bi, ti]  # [N, K, m, m]
        centre = oks_t[:, :, m // 2, m // 2]
        w = (oks_t.flatten(-2).amax(-1) - centre) * gate[bi, ti, None]  # [N, K]

        # forward of the refinement (notes §3 steps 8-12): the test-time function with raw KAMs
        # and the non-detached upsampled heatmaps (the refined loss reaches the heatmap head)
        p0 = poses[bi, ti]
        r = refine(model, up, out["embedding"], bi, p0, sigmas, cfg, clamp=False, mesh=mesh[bi, ti])
        kams, refined = r["kams"], r["refined"]
        size = int(cfg["global_size"])

        # refined-heatmap target: Gaussian at the assigned GT joint on the global grid
        # (global_offsets: column j at x + t[j], row i at y + t[i]; d2 = dy^2 + dx^2 per axis)
        gt_a = gt[bi, info["assignment"][bi, ti]]  # [N, K, 3]
        t = global_offsets(size, 1.0, p0.device).to(p0.dtype)[0, :, 0]  # [a]
        dx2 = (p0[..., 0:1] + t - gt_a[..., 0:1]) ** 2  # [N, K, a]
        dy2 = (p0[..., 1:2] + t - gt_a[..., 1:2]) ** 2
        d2 = dy2[..., :, None] + dx2[..., None, :]  # [N, K, a, a]
        target_hm = torch.exp(-d2 / (2.0 * (self.refined_sigma * ws) ** 2))

        w4 = w[..., None, None]
        kam_l = (w4 * (kams - oks_t) ** 2).mean((1, 2, 3)).sum() / n_valid
        ref_l = (w4 * (refined - target_hm) ** 2).mean()
        terms["kam"] = self.kam_factor * kam_l if self.oks_loss else kam_l * 0.0
        terms["refined"] = self.refined_factor * ref_l
        total = terms["heatmap"] + terms["offset"] + terms["kam"] + terms["refined"]
        self.last_num_kept = int(gate.sum())  # for logging / tests; not a loss term
        return {"loss": total, **terms}
