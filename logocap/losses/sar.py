"""SAR (Wang & Zhang, CVPR 2024, "Spatial-Aware Regression for Keypoint Localization") losses.

Notes: ../shared/reference/sar_notes.md §3 (the released top-down code).

- :func:`sar_loss`: the unified objective, the negative log-likelihood of a mixture of Laplace
  distributions. Every cell t of a map regresses a keypoint K_t and scores it with a selector
  logit s_t:

      r_t = exp(-lambda * (|Kx_t - x*| + |Ky_t - y*|))   coordinates normalised by the MAP size
      w_t = sigmoid(s_t) / sum_u sigmoid(s_u)              (the two-step normalisation)
      L   = -log(sum_t w_t r_t + 1e-6)                     ("reference", as released)
      L   = -logsumexp_t(log w_t - lambda * L1_t)          ("logsumexp", the switch)

  averaged over the valid (sample, keypoint) pairs. The two forms differ only where every cell
  is far from K* (the reference saturates at -log(1e-6) ~ 13.8, the log-sum-exp form does not).
- :func:`quality_focal_loss`: the auxiliary heatmap loss (GFL-style quality focal loss) with a
  guard for a batch without any positive pixel (the released code divides by 0 there).
- :class:`SarTopDownCriterion`: L_sar + factor * L_heatmap for the top-down model.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["LAMBDA", "EPS", "SAR_FORMS", "sar_loss", "laplace_mixture_nll", "sar_candidates",
           "quality_focal_loss", "SarTopDownCriterion"]

LAMBDA = 16.0  # Laplacian kernel sharpness in map-normalised units (a constant in the release)
EPS = 1e-6  # inside the reference log
SAR_FORMS = ("reference", "logsumexp")
POS_THRESHOLD = 0.7  # quality focal loss: normaliser = number of target pixels above this
_LOG_ZERO = -1.0e4  # log-weight of a cell outside the normalisation domain (exp underflows to 0)


def sar_loss(coords: torch.Tensor, logits: torch.Tensor, target: torch.Tensor,
             weight: torch.Tensor, lam: float = LAMBDA, eps: float = EPS,
             form: str = "reference") -> torch.Tensor:
    """The SAR mixture-of-Laplace loss (notes §3), a scalar.

    Args:
        coords: [..., T, 2] candidate keypoints K_t (x, y), normalised by the map size
            (x / W_map, y / H_map); see :func:`sar_candidates`.
        logits: [..., T] selector logits s_t.
        target: [..., 2] ground truth K*, normalised the same way.
        weight: [...] > 0 for a valid (sample, keypoint); invisible keypoints are 0 and masked
            out entirely (their target may hold anything, NaN included).
        lam: kernel sharpness lambda (16, as released).
        eps: the epsilon of the reference form (ignored by ``logsumexp``).
        form: ``reference`` -log(sum_t w_t r_t + eps) as released, or ``logsumexp``
            -logsumexp_t(log w_t - lam L1_t) (no epsilon, unbounded when every cell is far off).
    Returns:
        the mean over valid (sample, keypoint) pairs; 0 (with zero, finite gradients) if none.
    """
    if form not in SAR_FORMS:
        raise ValueError(f"SAR loss form must be one of {', '.join(SAR_FORMS)}, got {form!r}")
    if coords.shape[-1] != 2 or coords.shape[:-1] != logits.shape:
        raise ValueError(f"SAR loss: coords {tuple(coords.shape)} must be logits "
                         f"{tuple(logits.shape)} + (2,)")
    if target.shape != coords.shape[:-2] + (2,) or weight.shape != coords.shape[:-2]:
        raise ValueError(f"SAR loss: target {tuple(target.shape)} / weight {tuple(weight.shape)} "
                         f"do not match coords {tuple(coords.shape)}")
    valid = weight > 0
    # masked entries get a harmless target, so nothing non-finite enters the graph
    tgt = torch.where(valid[..., None], target, torch.zeros_like(target))
    l1 = (coords - tgt[..., None, :]).abs().sum(-1)  # [..., T]
    per = laplace_mixture_nll(l1, logits, lam, eps, form)
    mask = valid.to(per.dtype)
    return (per * mask).sum() / mask.sum().clamp(min=1.0)


def laplace_mixture_nll(dist: torch.Tensor, logits: torch.Tensor, lam: float = LAMBDA,
                        eps: float = EPS, form: str = "reference",
                        domain: torch.Tensor | None = None) -> torch.Tensor:
    """-log sum_t w_t exp(-lam dist_t) per mixture: the core of every SAR loss (notes §3, §7).

    ``dist`` [..., T] the kernel distance of each cell's hypothesis (L1 in normalised units);
    ``logits`` [..., T] the selector logits (broadcast against ``dist``); ``domain`` [..., T] bool
    (broadcast; None = every cell): the cells w is normalised over, w_t = c_t / sum_{u in domain}
    c_u, and cells outside it carry no weight. Returns [...] (no reduction); a row with an empty
    domain gives the finite -log(eps) (reference) or a large finite value (logsumexp), never NaN.
    """
    if form not in SAR_FORMS:
        raise ValueError(f"SAR loss form must be one of {', '.join(SAR_FORMS)}, got {form!r}")
    if form == "reference":
        c = torch.sigmoid(logits)
        if domain is not None:
            c = c * domain.to(c.dtype)
        w = c / c.sum(-1, keepdim=True).clamp(min=torch.finfo(c.dtype).tiny)
        return -torch.log((w * torch.exp(-lam * dist)).sum(-1) + eps)
    log_c = F.logsigmoid(logits)
    if domain is not None:  # a finite stand-in for log 0 keeps every gradient finite
        log_c = torch.where(domain, log_c, torch.full_like(log_c, _LOG_ZERO))
    log_w = log_c - torch.logsumexp(log_c, -1, keepdim=True)
    return -torch.logsumexp(log_w - lam * dist, -1)


def sar_candidates(offsets: torch.Tensor) -> torch.Tensor:
    """Per-cell keypoint hypotheses K_t = p_t - o_t in map-normalised units.

    ``offsets`` [B, 2K, H, W] in output px (channel 2j = x, 2j+1 = y, value = location - joint,
    the library convention) -> [B, K, H*W, 2] with x / W and y / H, i.e. the released
    p_t = (ix / W, iy / H) minus the released (normalised) offset.
    """
    b, c, h, w = offsets.shape
    k = c // 2
    ys, xs = torch.meshgrid(torch.arange(h, device=offsets.device, dtype=offsets.dtype),
                            torch.arange(w, device=offsets.device, dtype=offsets.dtype),
                            indexing="ij")
    loc = torch.stack([xs, ys]).view(1, 1, 2, h, w)
    joints = loc - offsets.view(b, k, 2, h, w)  # map px
    scale = torch.tensor([w, h], dtype=offsets.dtype, device=offsets.device).view(1, 1, 2, 1)
    return (joints.flatten(3) / scale).transpose(2, 3)


def quality_focal_loss(logits: torch.Tensor, target: torch.Tensor, beta: float = 2.0,
                       pos_threshold: float = POS_THRESHOLD) -> torch.Tensor:
    """The auxiliary heatmap loss of the released SAR head (GFL quality focal loss), a scalar.

    Every pixel: BCE-with-logits against 0, weighted by sigmoid(z)^beta; pixels with target > 0
    instead: BCE against the soft target, weighted by |target - sigmoid(z)|^beta. The sum is
    divided by the number of pixels with target > ``pos_threshold`` (0.7) -- guarded: at least 1,
    where the release divides by 0 when no keypoint of the batch is visible.
    """
    if logits.shape != target.shape:
        raise ValueError(f"quality focal loss: logits {tuple(logits.shape)} vs target "
                         f"{tuple(target.shape)}")
    p = torch.sigmoid(logits)
    neg = F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits),
                                             reduction="none") * p.pow(beta)
    pos = F.binary_cross_entropy_with_logits(logits, target, reduction="none") * \
        (target - p).abs().pow(beta)
    per = torch.where(target > 0, pos, neg)
    count = (target > pos_threshold).sum().clamp(min=1)
    return per.sum() / count


def _at_least_f32(t: torch.Tensor) -> torch.Tensor:
    """Losses in float32 under bf16 / fp16 autocast, float64 kept (fp64 training)."""
    return t if t.dtype == torch.float64 else t.float()


class SarTopDownCriterion:
    """criterion(model, batch) -> {"loss", "sar", "heatmap"} for the top-down SAR model.

    ``batch`` (``data.topdown.collate_topdown``): ``image`` [B, 3, H, W], ``keypoints`` [B, K, 2]
    (crop px), ``keypoint_weights`` [B, K] (1 = visible and inside the crop), ``heatmaps``
    [B, K, H/4, W/4] (the auxiliary Gaussian targets). ``loss_cfg`` keys: ``heatmap`` (factor of
    the auxiliary loss, 1.0 as released), ``sar_lambda`` (16), ``sar_form`` (reference).
    """

    def __init__(self, loss_cfg: dict | None = None):
        cfg = dict(loss_cfg or {})
        self.heatmap_factor = float(cfg.get("heatmap", 1.0))
        self.lam = float(cfg.get("sar_lambda", LAMBDA) or LAMBDA)
        self.form = cfg.get("sar_form") or "reference"
        if self.form not in SAR_FORMS:
            raise ValueError(f"loss.sar_form must be one of {', '.join(SAR_FORMS)}, got {self.form!r}")

    def __call__(self, model, batch: dict) -> dict:
        out = model(batch["image"])
        offsets = _at_least_f32(out["offsets"])
        h, w = offsets.shape[-2:]
        stride = batch["image"].shape[-1] / w
        coords = sar_candidates(offsets)
        logits = _at_least_f32(out["selector"]).flatten(2)
        # crop px -> map px (/ stride) -> normalised (/ map size)
        norm = torch.tensor([w * stride, h * stride], dtype=coords.dtype, device=coords.device)
        target = batch["keypoints"].to(coords.dtype) / norm
        sar = sar_loss(coords, logits, target, batch["keypoint_weights"], self.lam, form=self.form)
        terms = {"sar": sar}
        if out.get("aux_heatmaps") is not None and self.heatmap_factor:
            terms["heatmap"] = self.heatmap_factor * quality_focal_loss(
                _at_least_f32(out["aux_heatmaps"]), batch["heatmaps"].to(coords.dtype))
        return {"loss": sum(terms.values()), **terms}
