"""HGR decoding (the seed paper, §3.2): heatmap-guided grouping, then the naive score.

Batched torch (batch > 1, no Python loop over people or joints); any keypoint set. Steps:

1. Network maps as DEKR's decoder makes them (``codecs.dekr_decode``): flip test with the 3 px
   shift and pose-map averaging, aligned resampling of the heatmaps to the scale-1 input, test
   scales (``test.scales``) with the center scores of the other scales rescaled to the scale-1
   maximum x ``scale_decrease``. The paper averages the heatmaps and regressions of the original
   and flipped images and tests at 0.5, 1, 2 (§4.1), which this reproduces.
2. Grouping cues G_1..G_M: center NMS (top ``topk`` = 30, center score > ``center_threshold``
   = 0.01), the regressed pose at each center.
3. Keypoint candidates S_k: per keypoint type, the top-30 local maxima (3x3) with heat > 0.01
   of the averaged heatmap read on the output grid (:func:`heatmap_candidates`), each refined to
   sub-pixel precision by a Gaussian (log-parabola) fit through its grid neighbours.
4. Grouping (:func:`group_keypoints`): every regressed joint p_k of every cue absorbs the nearest
   candidate of S_k when it is within ``group_radius`` (75 input px), else keeps p_k. One distance
   tensor [B, M, K, 30]; a type without any candidate keeps all its regressed joints.
   ``group_radius = 0`` gives the regressed poses alone (Table 4's regression quality).
5. Naive score (§3.2, Scoring): joint score = h_k(p_k) o(p) (the candidate's heat value when
   absorbed, else the heat value read at the joint's pixel; o(p) the center score of the cue),
   pose score = their mean. The learned scoring net is applied by the Predictor
   (``test.rescore``, ``models/rescore.py``) to these poses and scores.
6. Pose NMS (``codecs.nms.pose_nms``, ``test.pose_nms``) ranked by the pose score, at most
   ``max_people``: two cues that absorbed the same candidates would otherwise both be reported.

Heatmap quality (Table 4): :func:`group_with_cues` groups the candidates with given poses (the
ground truth, in input px) as the cues instead of the regressed ones; ``decode_hgr(..., cues=)``
runs it on a model's maps. A joint with no candidate within the radius takes the nearest one of
its type, or counts as missed (``fallback``): the heatmaps alone are measured.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..config import default_test_settings
from ..utils import LogocapError
from .dekr_decode import DEKR_TEST_DEFAULTS, dekr_test_cfg, merge_scales, run_scales
from .nms import pose_nms

__all__ = ["HGR_TEST_DEFAULTS", "hgr_test_cfg", "heatmap_candidates", "group_keypoints",
           "read_heat", "decode_hgr_outputs", "group_with_cues", "decode_hgr"]

NUM_CANDIDATES = 30  # keypoint candidates per type (§3.2)
CANDIDATE_THRESHOLD = 0.01  # candidates with a smaller heat value are removed (§3.2)
GROUP_RADIUS = 75.0  # input px (§3.2)
PEAK_KERNEL = 3  # max-pool of the candidate NMS on the output grid
STRIDE = 4

HGR_TEST_DEFAULTS = {**{k: v for k, v in DEKR_TEST_DEFAULTS.items() if k != "match_heatmap"},
                     **default_test_settings(["group_radius"])}  # config.DEFAULTS["test"]


def hgr_test_cfg(cfg: dict | None = None) -> dict:
    """The HGR test settings: :data:`HGR_TEST_DEFAULTS` updated with the keys of ``cfg`` that HGR
    reads, checked (LogocapError naming the key)."""
    out = dekr_test_cfg(cfg)
    out.pop("match_heatmap", None)
    radius = (cfg or {}).get("group_radius")
    radius = HGR_TEST_DEFAULTS["group_radius"] if radius is None else radius
    try:
        radius = float(radius)
    except (TypeError, ValueError):
        radius = float("nan")
    if isinstance((cfg or {}).get("group_radius"), bool) or not math.isfinite(radius) or radius < 0:
        raise LogocapError(f"test.group_radius must be a number >= 0 (input px), got "
                           f"{(cfg or {}).get('group_radius')!r}")
    out["group_radius"] = radius
    return out


# --------------------------------------------------------------------------- candidates
def read_heat(heat: torch.Tensor, xy: torch.Tensor) -> torch.Tensor:
    """Value of channel k of heat [B, K, H, W] at (floor x, floor y) of xy [B, N, K, 2], clamped
    to the map. Returns [B, N, K]."""
    b, k, hh, ww = heat.shape
    n = xy.shape[1]
    ix = xy[..., 0].floor().clamp(0, ww - 1).long()
    iy = xy[..., 1].floor().clamp(0, hh - 1).long()
    flat = (iy * ww + ix).permute(0, 2, 1).reshape(b, k, n)  # [B, K, N]
    return heat.reshape(b, k, hh * ww).gather(2, flat).permute(0, 2, 1)


def _log_parabola(lo: torch.Tensor, mid: torch.Tensor, hi: torch.Tensor):
    """Vertex of the parabola through the logarithms of samples at -1, 0, +1 (exact for a
    Gaussian): (shift clamped to +-0.5, log gain of the vertex over ``mid``); 0, 0 where the
    samples are not positive or not concave."""
    ok = (lo > 0) & (mid > 0) & (hi > 0)
    tiny = torch.finfo(mid.dtype).tiny
    llo, lmid, lhi = (torch.log(v.clamp(min=tiny)) for v in (lo, mid, hi))
    den = llo - 2 * lmid + lhi
    ok = ok & (den < 0)
    den = torch.where(ok, den, -torch.ones_like(den))
    shift = (0.5 * (llo - lhi) / den).clamp(-0.5, 0.5)
    gain = shift * (lhi - llo) / 2 + shift ** 2 * den / 2
    zero = torch.zeros_like(shift)
    return torch.where(ok, shift, zero), torch.where(ok, gain, zero)


def heatmap_candidates(heat: torch.Tensor, num: int = NUM_CANDIDATES,
                       threshold: float = CANDIDATE_THRESHOLD, kernel: int = PEAK_KERNEL,
                       stride: int = STRIDE, refine: bool = True):
    """Keypoint candidates S_k of every type (§3.2).

    heat [B, K, H, W] input-resolution heatmaps, read on the output grid (every ``stride``-th
    pixel: for the aligned resampling of the decoder these are exactly the network's 1/4 values,
    and the replicated border of the upsampled map cannot form flat false peaks). Local maxima
    (``kernel`` x ``kernel`` on that grid) with heat > ``threshold``, the ``num`` highest per
    channel, each moved to the vertex of a log-parabola through its grid neighbours in x and in y
    (exact for a Gaussian; ``refine=False`` keeps the grid point). Returns (xy [B, K, P, 2] input
    px, value [B, K, P] the heat at that vertex, ok [B, K, P] bool), P = min(num, grid size);
    slots without a candidate have ok False.
    """
    grid = heat[..., ::stride, ::stride]
    b, k, hh, ww = grid.shape
    pooled = F.max_pool2d(grid, kernel, 1, kernel // 2)
    peak = (grid == pooled) & (grid > threshold)
    flat = torch.where(peak, grid, torch.full_like(grid, -float("inf"))).reshape(b, k, -1)
    val, idx = flat.topk(min(int(num), hh * ww), dim=2)
    ok = torch.isfinite(val)
    ix, iy = idx % ww, idx // ww
    xy = torch.stack([ix, iy], dim=-1).to(heat.dtype)
    if refine:
        maps = grid.reshape(b, k, hh * ww)

        def at(x, y):
            return maps.gather(2, y.clamp(0, hh - 1) * ww + x.clamp(0, ww - 1))

        dx, gx = _log_parabola(at(ix - 1, iy), at(ix, iy), at(ix + 1, iy))
        dy, gy = _log_parabola(at(ix, iy - 1), at(ix, iy), at(ix, iy + 1))
        # on the grid border a clamped neighbour is the peak itself: no shift on that axis
        inx, iny = (ix >= 1) & (ix + 1 < ww), (iy >= 1) & (iy + 1 < hh)
        xy = xy + torch.stack([torch.where(inx, dx, torch.zeros_like(dx)),
                               torch.where(iny, dy, torch.zeros_like(dy))], dim=-1)
        val = val * torch.exp(torch.where(inx, gx, torch.zeros_like(gx))
                              + torch.where(iny, gy, torch.zeros_like(gy)))
    val = torch.where(ok, val, torch.zeros_like(val))
    return xy * stride, val, ok


def group_keypoints(cues: torch.Tensor, cand_xy: torch.Tensor, cand_ok: torch.Tensor,
                    radius: float = GROUP_RADIUS):
    """Heatmap-guided grouping (§3.2): each joint of each cue absorbs the nearest candidate of
    its type within ``radius``, else stays.

    cues [B, N, K, 2]; cand_xy [B, K, P, 2]; cand_ok [B, K, P]. Returns (xy [B, N, K, 2],
    absorbed [B, N, K] bool, index [B, N, K] of the absorbed candidate, -1 where none).
    """
    b, n, k, _ = cues.shape
    p = cand_xy.shape[2]
    if n == 0 or p == 0:
        return cues.clone(), cues.new_zeros((b, n, k), dtype=torch.bool), \
            torch.full((b, n, k), -1, dtype=torch.long, device=cues.device)
    d = (cues[:, :, :, None, :] - cand_xy[:, None]).norm(dim=-1)  # [B, N, K, P]
    d = torch.where(cand_ok[:, None], d, torch.full_like(d, float("inf")))
    dmin, j = d.min(-1)
    absorbed = dmin <= radius  # inf (no candidate of that type) never passes
    near = cand_xy[:, None].expand(b, n, k, p, 2).gather(
        3, j[..., None, None].expand(b, n, k, 1, 2))[:, :, :, 0]
    xy = torch.where(absorbed[..., None], near, cues)
    return xy, absorbed, torch.where(absorbed, j, torch.full_like(j, -1))


def _joint_heat(heat, xy, absorbed, index, cand_val):
    """h_k(p_k) [B, N, K]: the candidate's value where absorbed, else the map at the joint."""
    b, n, k = absorbed.shape
    from_cand = cand_val[:, None].expand(b, n, k, cand_val.shape[-1]).gather(
        3, index.clamp(min=0)[..., None])[..., 0]
    return torch.where(absorbed, from_cand, read_heat(heat, xy))


# --------------------------------------------------------------------------- decoding
def decode_hgr_outputs(per_scale: list[tuple[float, torch.Tensor, torch.Tensor]],
                       input_hw: tuple[int, int], meta, cfg: dict | None = None) -> dict:
    """Maps of every test scale -> grouped, scored poses and the pose-NMS ``keep`` (input px).

    ``per_scale``: [(scale, heatmaps [B, K+1, h_s, w_s], posemap [B, K, 2, h_s, w_s])];
    ``input_hw``: the scale-1 input size (H, W). Returns dict(poses [B, N, K, 3] (x, y, joint
    score), scores [B, N], valid [B, N], keep [B, N], regressed [B, N, K, 2] (the cues),
    absorbed [B, N, K], center_scores [B, N], heatmaps_avg [B, K+1, H, W]).
    """
    cfg = hgr_test_cfg(cfg)
    k = meta.num_keypoints
    regressed, cscore, valid, heat_avg = merge_scales(per_scale, input_hw, cfg)  # as DEKR

    heat = heat_avg[:, :k]
    cand_xy, cand_val, cand_ok = heatmap_candidates(heat)
    xy, absorbed, index = group_keypoints(regressed, cand_xy, cand_ok, cfg["group_radius"])
    joint = cscore[..., None] * _joint_heat(heat, xy, absorbed, index, cand_val)
    scores = joint.mean(-1)
    keep = pose_nms(xy, scores, valid, cfg["nms_threshold"], cfg["nms_num_joints"],
                    cfg["max_people"], cfg["pose_nms"])
    return {"poses": torch.cat([xy, joint[..., None]], dim=-1), "scores": scores, "valid": valid,
            "keep": keep, "regressed": regressed, "absorbed": absorbed & valid[..., None],
            "center_scores": cscore, "heatmaps_avg": heat_avg}


MISSED_JOINT_PX = 1.0e4  # where the heatmap quality puts a joint whose type has no candidate


def group_with_cues(heat: torch.Tensor, cues: torch.Tensor, radius: float = GROUP_RADIUS,
                    fallback: str = "nearest") -> dict:
    """Heatmap quality (Table 4): group the keypoint candidates with given poses as the cues.

    heat [B, K, H, W] input-resolution keypoint heatmaps; cues [B, M, K, 3] (x, y, v) input px,
    e.g. the ground-truth poses (v > 0 labelled; unlabelled joints start at the centroid of the
    labelled ones, and cues with no labelled joint are invalid). Each joint absorbs the nearest
    candidate of its type within ``radius``. A joint with none within the radius:

    - ``fallback="nearest"`` (default): takes the nearest candidate of its type at any distance,
      and where the heatmaps have no candidate of that type at all it is reported
      ``MISSED_JOINT_PX`` px from its cue with heat 0, so that OKS counts it as missed. This
      measures the heatmaps alone: with ground-truth cues, keeping the cue's joint would score
      the ground truth wherever the heatmaps found nothing (an untrained model scores AP 1).
    - ``fallback="cue"``: stays at the cue, the literal §3.2 rule (right for regressed cues, the
      final quality; with ground-truth cues it rewards heatmaps that miss).

    Score = mean heat value of the grouped joints (no center map: only the heatmaps are
    measured). Returns dict(poses [B, M, K, 3] (x, y, heat), scores [B, M], valid [B, M],
    keep (= valid), absorbed [B, M, K]).
    """
    if cues.dim() != 4 or cues.shape[-1] != 3 or cues.shape[2] != heat.shape[1]:
        raise LogocapError(f"cues must be [B, M, {heat.shape[1]}, 3] (x, y, v), got "
                           f"{tuple(cues.shape)}")
    if fallback not in ("nearest", "cue"):
        raise LogocapError(f"fallback must be 'nearest' or 'cue', got {fallback!r}")
    cues = cues.to(heat.dtype)
    lab = cues[..., 2] > 0
    valid = lab.any(-1)
    w = lab[..., None].to(heat.dtype)
    centroid = (cues[..., :2] * w).sum(2, keepdim=True) / w.sum(2, keepdim=True).clamp(min=1)
    start = torch.where(lab[..., None], cues[..., :2], centroid)
    cand_xy, cand_val, cand_ok = heatmap_candidates(heat)
    # one nearest-candidate search at any distance; the radius then decides what is absorbed
    near, _, index = group_keypoints(start, cand_xy, cand_ok, math.inf)
    has_type = cand_ok.any(-1)[:, None, :].expand(index.shape)  # [B, M, K]
    absorbed = has_type & ((near - start).norm(dim=-1) <= float(radius))
    take = has_type if fallback == "nearest" else absorbed
    xy = torch.where(take[..., None], near, start)
    h = _joint_heat(heat, xy, take, index, cand_val)
    if fallback == "nearest":  # no candidate of the type at all: a miss, far away, heat 0
        xy = torch.where(has_type[..., None], xy, start + MISSED_JOINT_PX)
        h = torch.where(has_type, h, torch.zeros_like(h))
    return {"poses": torch.cat([xy, h[..., None]], dim=-1), "scores": h.mean(-1),
            "valid": valid, "keep": valid, "absorbed": absorbed & valid[..., None]}


def decode_hgr(model, images_by_scale: dict, meta, cfg: dict | None = None,
               cues: torch.Tensor | None = None, tick=None, cue_fallback: str = "nearest") -> dict:
    """Run an HGR model on the images of every test scale and decode (module docstring).

    ``images_by_scale``: {scale: normalised batch [B, 3, H_s, W_s]} (the scale-1 batch defines the
    output frame). ``cues`` [B, M, K, 3] (scale-1 input px): group with these poses instead of the
    regressed ones (:func:`group_with_cues`, the heatmap quality). Returns
    :func:`decode_hgr_outputs`'s dict (or :func:`group_with_cues`'s plus ``heatmaps_avg``) and
    ``raw`` (the scale-1 network outputs). ``tick``: the stage timer of ``run_scales``.
    """
    cfg = hgr_test_cfg(cfg)
    per_scale, raw, (h1, w1) = run_scales(model, images_by_scale, meta, cfg, tick)
    res = decode_hgr_outputs(per_scale, (h1, w1), meta, cfg)
    if cues is not None:
        heat = res["heatmaps_avg"]
        res = group_with_cues(heat[:, :meta.num_keypoints], cues.to(heat.device),
                              cfg["group_radius"], cue_fallback)
        res["heatmaps_avg"] = heat
    res["raw"] = raw
    return res
