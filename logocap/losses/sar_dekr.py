"""Bottom-up SAR on the DEKR trunk (SAR notes §7): the multi-person pose-level SAR loss.

Every cell t of the output map holds a whole-pose hypothesis K_t = (K_t^1..K_t^K) (DEKR's pose
map: location - offset) and a selector logit s_t (channel K of ``heatmaps``). Each person i of an
image (visible joints V_i, :func:`~logocap.codecs.sar_dekr.sar_pose_targets`) is one sample of a
mixture of Laplace distributions whose components are the cells:

    d_t^(i) = (1 / |V_i|) sum_{j in V_i} (|Kx_t^j - x*_ij| / W + |Ky_t^j - y*_ij| / H)  (z_i = 1)
    d_t^(i) = (1 / |V_i|) sum_{j in V_i} (|Kx_t^j - x*_ij| + |Ky_t^j - y*_ij|) / diag_i
                                                       (``loss.sar_scale_norm``; map px)
    r_t^(i) = exp(-lambda d_t^(i))                       the pose-level Laplacian kernel
    w_t     = sigmoid(s_t) / sum_{u in D} sigmoid(s_u)   D = every cell of the image that is not
                                                       ignored (default A, ``sar_normalise: image``)
                                                       or the cells within 4 of person i's center
                                                       (option B, ``sar_normalise: person``)
    L_i     = -log(sum_t w_t r_t^(i) + 1e-6)             (``loss.sar_form``; or the log-sum-exp form)

L_sar is the mean of L_i over the people of the batch (an image without people adds nothing; a
batch without any gives 0 with finite, zero selector gradients). W, H are the map's width and
height (SAR's normalised units, lambda 16); diag_i is the diagonal of the person's visible-joint
box (output px). Ignored cells (weight 0 in the heatmap weights: crowds, people without
keypoints, outside the augmented image) are outside the normalisation domain, as they are outside
DEKR's center-heatmap loss.

The criterion adds DEKR's keypoint-heatmap MSE on channels 0..K-1 (per-channel weights, factor
``loss.heatmap``) and, for a model with the auxiliary center head, SAR's quality focal loss of
that head against DEKR's center Gaussian (factor ``loss.center``).
"""
from __future__ import annotations

import torch

from ..codecs.dekr_decode import posemap_from_offsets
from ..codecs.sar_dekr import MIN_AREA, sar_pose_targets
from .center_offset import heatmap_loss
from .sar import EPS, LAMBDA, SAR_FORMS, _at_least_f32, laplace_mixture_nll, quality_focal_loss

__all__ = ["sar_pose_loss", "pose_distances", "SarDekrCriterion", "TARGET_DEFAULTS",
           "NORMALISATIONS", "REGION_RADIUS"]

# dataset target options: DEKR's (per-channel keypoint-heatmap weights, its offset area)
TARGET_DEFAULTS = {"heatmap_weights": "per_channel", "offset_area": "keypoint_box"}
NORMALISATIONS = ("image", "person")
REGION_RADIUS = 4  # option B: cells within this Chebyshev distance of the center (DEKR's radius)


def pose_distances(posemap: torch.Tensor, joints: torch.Tensor, visible: torch.Tensor,
                   diag: torch.Tensor | None = None) -> torch.Tensor:
    """Kernel distance d_t^(i) of every cell's pose hypothesis to every person.

    posemap [B, K, 2, h, w] output px; joints [B, M, K, 2] output px; visible [B, M, K] bool;
    diag [B, M] output px or None. Returns [B, M, h*w]: the mean over the visible joints of the
    L1 distance, x over the map width and y over its height (``diag`` None), or both over diag
    (person-scale normalisation). Invisible joints are masked out (their coordinates, NaN
    included, never enter the graph); a person without visible joints gets 0.
    """
    b, k, _, h, w = posemap.shape
    hyp = posemap.reshape(b, 1, k, 2, h * w)
    tgt = torch.where(visible[..., None], joints, torch.zeros_like(joints))
    diff = (hyp - tgt[..., None]).abs()  # [B, M, K, 2, T]
    if diag is None:
        scale = torch.tensor([1.0 / w, 1.0 / h], dtype=diff.dtype, device=diff.device)
        l1 = (diff * scale.view(1, 1, 1, 2, 1)).sum(3)
    else:
        l1 = diff.sum(3) / diag[..., None, None]
    vf = visible.to(l1.dtype)
    return (l1 * vf[..., None]).sum(2) / vf.sum(2).clamp(min=1.0)[..., None]


def _person_regions(center: torch.Tensor, hw: tuple[int, int], radius: int) -> torch.Tensor:
    """[B, M, h*w] bool: cells within ``radius`` (Chebyshev) of floor(center), DEKR's window."""
    h, w = hw
    c = center.floor()
    xs = torch.arange(w, device=center.device, dtype=center.dtype)
    ys = torch.arange(h, device=center.device, dtype=center.dtype)
    inx = (xs.view(1, 1, 1, w) - c[..., 0, None, None]).abs() <= radius
    iny = (ys.view(1, 1, h, 1) - c[..., 1, None, None]).abs() <= radius
    return (inx & iny).flatten(2)


def sar_pose_loss(posemap: torch.Tensor, logits: torch.Tensor, targets: dict,
                  cell_mask: torch.Tensor | None = None, lam: float = LAMBDA,
                  form: str = "reference", normalise: str = "image", scale_norm: bool = False,
                  radius: int = REGION_RADIUS, eps: float = EPS) -> torch.Tensor:
    """The multi-person pose-level SAR loss (module docstring), a scalar.

    posemap [B, K, 2, h, w] pose hypotheses (output px); logits [B, h, w] selector logits;
    ``targets`` from :func:`~logocap.codecs.sar_dekr.sar_pose_targets` (``joints``, ``visible``,
    ``person``, ``center``, ``diag``); cell_mask [B, h, w] bool (False = ignored cell; None = all
    cells). ``normalise``: ``image`` (default A) or ``person`` (option B, the cells within
    ``radius`` of the person's center). Returns the mean over the counted people; 0 if none.
    """
    if normalise not in NORMALISATIONS:
        raise ValueError(f"loss.sar_normalise must be one of {', '.join(NORMALISATIONS)}, "
                         f"got {normalise!r}")
    if form not in SAR_FORMS:
        raise ValueError(f"loss.sar_form must be one of {', '.join(SAR_FORMS)}, got {form!r}")
    b, k, _, h, w = posemap.shape
    if logits.shape != (b, h, w):
        raise ValueError(f"selector logits {tuple(logits.shape)} do not match the pose map "
                         f"{tuple(posemap.shape)}")
    joints, visible, person = targets["joints"], targets["visible"], targets["person"]
    if joints.shape[0] != b or joints.shape[2] != k:
        raise ValueError(f"targets for {tuple(joints.shape[:3])} people/joints, pose map has "
                         f"batch {b} and {k} joints")
    dist = pose_distances(posemap, joints.to(posemap.dtype), visible,
                          targets["diag"].to(posemap.dtype) if scale_norm else None)
    domain = torch.ones(b, 1, h * w, dtype=torch.bool, device=posemap.device)
    if cell_mask is not None:
        domain = domain & cell_mask.reshape(b, 1, h * w).bool()
    if normalise == "person":
        domain = domain & _person_regions(targets["center"].to(posemap.dtype), (h, w), radius)
    counted = person & domain.any(-1)  # a person whose whole domain is ignored is no sample
    per = laplace_mixture_nll(dist, logits.reshape(b, 1, h * w), lam, eps, form, domain)
    weight = counted.to(per.dtype)
    return (per * weight).sum() / weight.sum().clamp(min=1.0)


class SarDekrCriterion:
    """criterion(model, batch) -> {"loss", "heatmap", "sar"} (+ "aux" with the aux center head).

    ``batch``: the collated bottom-up training batch (``image``, ``heatmaps`` [B, K+1, h, w],
    ``heatmap_weights`` [B, K+1 or 1, h, w], ``gt_keypoints`` [B, M, K, 3] input px, ``gt_areas``,
    ``gt_mask``). ``loss_cfg`` keys: ``heatmap`` (1.0, DEKR's), ``sar_lambda`` (16),
    ``sar_form`` (reference), ``sar_normalise`` (image), ``sar_scale_norm`` (false),
    ``sar_min_area`` (1024 input px^2, DEKR's center rule), ``center`` (1.0, the aux factor).
    """

    def __init__(self, loss_cfg: dict | None = None):
        cfg = dict(loss_cfg or {})
        self.heatmap_factor = float(cfg.get("heatmap", 1.0))
        self.lam = float(cfg.get("sar_lambda") or LAMBDA)
        self.form = cfg.get("sar_form") or "reference"
        self.normalise = cfg.get("sar_normalise") or "image"
        self.scale_norm = bool(cfg.get("sar_scale_norm", False))
        area = cfg.get("sar_min_area")
        self.min_area = MIN_AREA if area is None else float(area)
        center = cfg.get("center")
        self.aux_factor = 1.0 if center is None else float(center)
        if self.form not in SAR_FORMS:
            raise ValueError(f"loss.sar_form must be one of {', '.join(SAR_FORMS)}, got {self.form!r}")
        if self.normalise not in NORMALISATIONS:
            raise ValueError(f"loss.sar_normalise must be one of {', '.join(NORMALISATIONS)}, "
                             f"got {self.normalise!r}")

    def __call__(self, model, batch: dict) -> dict:
        out = model(batch["image"])
        heat = _at_least_f32(out["heatmaps"])
        offsets = _at_least_f32(out["offsets"])
        k = heat.shape[1] - 1
        hm_w = batch["heatmap_weights"]
        kp_w = hm_w[:, :k] if hm_w.shape[1] > 1 else hm_w
        terms = {"heatmap": self.heatmap_factor * heatmap_loss(
            heat[:, :k], batch["heatmaps"][:, :k].to(heat.dtype), kp_w.to(heat.dtype))}
        stride = batch["image"].shape[-1] / offsets.shape[-1]
        targets = sar_pose_targets(batch["gt_keypoints"], batch["gt_areas"], batch["gt_mask"],
                                   tuple(batch["image"].shape[-2:]), stride, self.min_area)
        terms["sar"] = sar_pose_loss(posemap_from_offsets(offsets), heat[:, k], targets,
                                     hm_w[:, -1] > 0, self.lam, self.form, self.normalise,
                                     self.scale_norm)
        if out.get("aux_center") is not None and self.aux_factor:
            terms["aux"] = self.aux_factor * quality_focal_loss(
                _at_least_f32(out["aux_center"]), batch["heatmaps"][:, k:].to(heat.dtype))
        return {"loss": sum(terms.values()), **terms}
