"""DEKR decoding as released (notes 10.3): network maps -> scored poses in input pixels.

Batched torch (batch > 1, no Python loop over people); any keypoint set (the flip indices come
from the ``KeypointMeta``). Steps:

1. Flip test: the mirrored image is shifted LEFT by 3 px before the forward pass, which makes
   the flipped-back maps exactly aligned (output index i <-> input px 4 i, see
   :func:`shift_mirror`). Heatmaps are flipped back and averaged; the offsets are turned into
   absolute pose maps (location - offset) and the POSE maps are averaged.
2. Heatmaps are resampled to the scale-1 input frame with aligned interpolation (pixel X <-> map
   coordinate X s / 4, :func:`resample_aligned`; DEKR's ``up_interpolate``).
3. Center NMS on the 1/4-resolution center map with a 3, 5 or 7 max-pool when the map's mean
   side exceeds 200 / 300 (:func:`center_pool_kernel`), top-``topk``, score > ``center_threshold``.
4. Poses = (4 / s) x pose map at the centers; per-joint score = center score x heat value, the
   heat value read at (floor x, floor y) of the scale-averaged upsampled heatmap; pose score =
   mean joint score. Multi-scale (``scales``, e.g. 0.5, 1, 2): heatmaps averaged, candidates of
   every scale pooled (in descending scale order, as released), center scores of the other scales
   rescaled to the scale-1 maximum x ``scale_decrease``.
5. Pose NMS (``codecs.nms.pose_nms``, ``test.pose_nms``) ranked by the mean heat value, then at
   most ``max_people`` by that rank.
6. Optional ``match_heatmap`` (``TEST.MATCH_HMP``): each joint snaps to the nearest heat peak of
   its channel within 75 px, then a Gaussian fit refines it (:func:`match_heatmap`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..config import default_test_settings
from ..utils import LogocapError
from .nms import center_nms, check_pose_nms, pose_nms

__all__ = ["DEKR_TEST_DEFAULTS", "dekr_test_cfg", "shift_mirror", "posemap_from_offsets",
           "dekr_outputs", "resample_aligned", "center_pool_kernel", "scale_candidates",
           "decode_dekr_outputs", "match_heatmap", "decode_dekr"]

FLIP_SHIFT_PX = 3  # the mirrored input is moved 3 px left (stride 4 minus 1)
POOL_THRESHOLDS = (300, 200)  # TEST.POOL_THRESHOLD1 / 2: 7x7 above the first, 5x5 above the second
# MATCH_HMP settings of the released configs (input px)
ABSORB_DISTANCE = 75.0  # TEST.MAX_ABSORB_DISTANCE
ADJUST_THRESHOLD = 0.05  # TEST.ADJUST_THRESHOLD: joints above this score are refined by the fit
FIT_RADIUS = 6  # TEST.GUASSIAN_KERNEL: the fit window is (2 r + 1)^2
FIT_SIGMA = 2.0  # initial Gaussian sigma of the fit (DATASET.SIGMA)
PEAK_KERNEL = 5  # max-pool of the per-joint peaks

# the test settings DEKR reads, with their defaults (config.DEFAULTS["test"], the one home)
DEKR_KEYS = ("flip", "topk", "center_threshold", "nms_threshold", "nms_num_joints", "max_people",
             "pose_nms", "scales", "scale_decrease", "match_heatmap")
DEKR_TEST_DEFAULTS = default_test_settings(DEKR_KEYS)


def dekr_test_cfg(cfg: dict | None = None) -> dict:
    """The DEKR test settings: :data:`DEKR_TEST_DEFAULTS` updated with the keys of ``cfg`` that
    DEKR reads (others, e.g. LOGO-CAP's upsample mode, do not apply), checked."""
    out = default_test_settings(DEKR_KEYS)
    out.update({k: v for k, v in (cfg or {}).items() if k in DEKR_TEST_DEFAULTS and v is not None
                or k == "nms_num_joints"})
    scales = [float(s) for s in (out["scales"] if isinstance(out["scales"], (list, tuple))
                                 else [out["scales"]])]
    if not scales or any(s <= 0 for s in scales) or 1.0 not in scales or len(set(scales)) != len(scales):
        raise LogocapError(f"test.scales must be distinct positive scales including 1.0, got "
                           f"{out['scales']}")
    out["scales"] = sorted(scales, reverse=True)  # the released candidate order
    check_pose_nms(out["pose_nms"])
    return out


# --------------------------------------------------------------------------- network outputs
def shift_mirror(images: torch.Tensor, shift: int = FLIP_SHIFT_PX) -> torch.Tensor:
    """Mirror [B, 3, H, W] images and move them ``shift`` px left (the last columns repeat).

    A mirrored input maps pixel x to W-1-x; the network's output index i' then holds input px
    4 i'. Shifted by 3, index i' holds mirrored px 4 i' + 3 = original px W-4-4 i', and flipping
    the map back (i = w-1-i') gives original px 4 i exactly: no interpolation is needed.
    """
    m = images.flip(-1)
    return torch.cat([m[..., shift:], m[..., -shift:]], dim=-1)


def posemap_from_offsets(offsets: torch.Tensor) -> torch.Tensor:
    """Offsets [B, 2K, h, w] (location - joint) -> absolute pose maps [B, K, 2, h, w] (output px)."""
    b, c2, h, w = offsets.shape
    ys = torch.arange(h, dtype=offsets.dtype, device=offsets.device).view(1, 1, h, 1)
    xs = torch.arange(w, dtype=offsets.dtype, device=offsets.device).view(1, 1, 1, w)
    loc = torch.stack([xs.expand(1, 1, h, w), ys.expand(1, 1, h, w)], dim=2)  # [1, 1, 2, h, w]
    return loc - offsets.reshape(b, c2 // 2, 2, h, w)


def dekr_outputs(model, images: torch.Tensor, meta, flip: bool = True) -> dict:
    """One (optionally flip-fused) DEKR forward pass.

    Returns dict(heatmaps [B, K+1, h, w], posemap [B, K, 2, h, w] output px, raw = the model's
    outputs on the unflipped images). Image and mirror go through the network as ONE batch.
    """
    b = images.shape[0]
    out = model(torch.cat([images, shift_mirror(images)]) if flip else images)
    plain = {k: v[:b] for k, v in out.items()}
    heat, pose = plain["heatmaps"], posemap_from_offsets(plain["offsets"])
    k = pose.shape[1]
    if heat.shape[1] != k + 1 or k != meta.num_keypoints:
        raise LogocapError(f"model predicts {heat.shape[1]} heatmaps and {k} offset pairs; the "
                           f"keypoint set '{meta.name}' needs {meta.num_keypoints + 1} and "
                           f"{meta.num_keypoints}")
    if flip:
        dev = heat.device
        hm_f = out["heatmaps"][b:].flip(-1).index_select(
            1, torch.as_tensor(meta.flip_index_with_center, device=dev))
        heat = 0.5 * (heat + hm_f)
        pm_f = posemap_from_offsets(out["offsets"][b:])
        pm_f = pm_f.index_select(1, torch.as_tensor(meta.flip_index, device=dev))
        w = pm_f.shape[-1]
        pm_f = torch.stack([w - 1 - pm_f[:, :, 0], pm_f[:, :, 1]], dim=2).flip(-1)
        pose = 0.5 * (pose + pm_f)
    return {"heatmaps": heat, "posemap": pose, "raw": plain}


# --------------------------------------------------------------------------- maps
def resample_aligned(maps: torch.Tensor, size: tuple[int, int], factor: float) -> torch.Tensor:
    """Aligned bilinear resampling: output pixel X <-> map coordinate X / factor, edge-clamped.

    maps [B, C, h, w] -> [B, C, H, W] (``size`` = (H, W)). For an integer factor f this is DEKR's
    ``up_interpolate`` (align_corners=True to f h - f + 1, then replicate the last f - 1 rows /
    columns), i.e. ``codecs.decode.upsample_heatmaps(maps, f, "aligned")``; other factors work
    the same way (e.g. the 4 / 0.75 of a 0.75 test scale).
    """
    b, c, h, w = maps.shape
    hh, ww = int(size[0]), int(size[1])
    u = torch.arange(ww, dtype=maps.dtype, device=maps.device) / factor
    v = torch.arange(hh, dtype=maps.dtype, device=maps.device) / factor
    gx = ((2.0 * u + 1.0) / w - 1.0).view(1, 1, ww).expand(b, hh, ww)
    gy = ((2.0 * v + 1.0) / h - 1.0).view(1, hh, 1).expand(b, hh, ww)
    grid = torch.stack([gx, gy], dim=-1)
    return F.grid_sample(maps, grid, mode="bilinear", padding_mode="border", align_corners=False)


def center_pool_kernel(h: int, w: int) -> int:
    """DEKR's center max-pool size from the 1/4 map: 7 if (h + w) / 2 > 300, 5 if > 200, else 3."""
    size = (h + w) / 2.0
    return 7 if size > POOL_THRESHOLDS[0] else 5 if size > POOL_THRESHOLDS[1] else 3


def _read_floor(maps: torch.Tensor, xy: torch.Tensor) -> torch.Tensor:
    """Value of channel k of maps [B, K, H, W] at (floor x, floor y) of xy [B, N, K, 2], clamped
    to the map (DEKR's ``get_heat_value``). Returns [B, N, K]."""
    b, k, hh, ww = maps.shape
    n = xy.shape[1]
    ix = xy[..., 0].floor().clamp(0, ww - 1).long()
    iy = xy[..., 1].floor().clamp(0, hh - 1).long()
    flat = (iy * ww + ix).permute(0, 2, 1)  # [B, K, N]
    return maps.reshape(b, k, hh * ww).gather(2, flat).permute(0, 2, 1).reshape(b, n, k)


def scale_candidates(heatmaps: torch.Tensor, posemap: torch.Tensor, scale: float,
                     input_hw: tuple[int, int], topk: int = 30, threshold: float = 0.01,
                     stride: int = 4) -> dict:
    """Candidates of one test scale, in the scale-1 input frame.

    heatmaps [B, K+1, h, w], posemap [B, K, 2, h, w] of the scale-``scale`` image; ``input_hw``
    the scale-1 input size. Returns dict(heatmaps_up [B, K+1, H, W], poses [B, T, K, 2] px,
    center_scores [B, T], valid [B, T]).
    """
    b, k1, h, w = heatmaps.shape
    factor = stride / scale
    up = resample_aligned(heatmaps, input_hw, factor)
    centers, cscores, valid = center_nms(heatmaps[:, -1], topk, threshold, center_pool_kernel(h, w))
    valid = valid & (cscores > threshold)  # the released test is strict and keeps no fallback
    idx = (centers[..., 1] * w + centers[..., 0]).long()  # [B, T]
    t = idx.shape[1]
    flat = posemap.reshape(b, (k1 - 1) * 2, h * w)
    pose = flat.gather(2, idx[:, None, :].expand(b, flat.shape[1], t))  # [B, 2K, T]
    pose = pose.permute(0, 2, 1).reshape(b, t, k1 - 1, 2) * factor
    return {"heatmaps_up": up, "poses": pose, "center_scores": cscores, "valid": valid}


def _masked_max(x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Per-row max of x [B, T] over valid entries; 1 where a row has none (as released)."""
    m = torch.where(valid, x, torch.full_like(x, -float("inf"))).amax(1)
    return torch.where(valid.any(1), m, torch.ones_like(m))


def merge_scales(per_scale, input_hw: tuple[int, int], cfg: dict):
    """The candidates of every test scale as one set (DEKR's multi-scale rule, also HGR's).

    Returns (poses [B, N, K, 2] regressed, center scores [B, N], valid [B, N], heatmaps averaged
    over the scales [B, K+1, H, W]); the center scores of scales other than 1 are rescaled to
    the scale-1 maximum x ``scale_decrease`` (per image).
    """
    by_scale = {float(s): (hm, pm) for s, hm, pm in per_scale}
    if sorted(by_scale, reverse=True) != cfg["scales"]:
        raise LogocapError(f"decoder got scales {sorted(by_scale)}, test.scales is {cfg['scales']}")
    cands = [scale_candidates(*by_scale[s], s, input_hw, cfg["topk"], cfg["center_threshold"])
             for s in cfg["scales"]]
    heat_avg = torch.stack([c["heatmaps_up"] for c in cands]).mean(0)
    ref = cands[cfg["scales"].index(1.0)]
    ref_max = _masked_max(ref["center_scores"], ref["valid"])
    cscores = []
    for s, c in zip(cfg["scales"], cands):
        cs = c["center_scores"]
        if s != 1.0:
            cs = cs / _masked_max(cs, c["valid"])[:, None] * ref_max[:, None] * cfg["scale_decrease"]
        cscores.append(cs)
    poses = torch.cat([c["poses"] for c in cands], dim=1)
    return poses, torch.cat(cscores, dim=1), torch.cat([c["valid"] for c in cands], dim=1), heat_avg


def run_scales(model, images_by_scale: dict, meta, cfg: dict, tick=None):
    """The network on every test scale (DEKR's, also HGR's and bottom-up SAR's):
    ([(scale, heatmaps, posemap)], the scale-1 raw outputs, the scale-1 input size (H, W)).

    ``tick`` (optional, the decoders' stage timer): the network's own stages
    (``models.stages``: DEKR's backbone / heads / adaptive_convs) are ticked inside each forward
    pass, and the flip fusion after it as "decode". None: nothing is timed or hooked."""
    from ..models.stages import network_stages

    missing = [s for s in cfg["scales"] if s not in images_by_scale]
    if missing:
        raise LogocapError(f"no input batch for test scale(s) {missing}")
    per_scale, raw = [], None
    with network_stages(model, tick):
        for s in cfg["scales"]:
            o = dekr_outputs(model, images_by_scale[s], meta, cfg["flip"])
            per_scale.append((s, o["heatmaps"], o["posemap"]))
            if s == 1.0:
                raw = o["raw"]
            if tick is not None:
                tick("decode")
    h1, w1 = images_by_scale[1.0].shape[-2:]
    return per_scale, raw, (h1, w1)


def decode_dekr_outputs(per_scale: list[tuple[float, torch.Tensor, torch.Tensor]],
                        input_hw: tuple[int, int], meta, cfg: dict | None = None) -> dict:
    """Maps of every test scale -> scored candidates and the pose-NMS ``keep`` (input px).

    ``per_scale``: [(scale, heatmaps [B, K+1, h_s, w_s], posemap [B, K, 2, h_s, w_s])] (any order);
    ``input_hw`` = the scale-1 input size (H, W). Returns dict(poses [B, N, K, 3] (x, y, joint
    score), scores [B, N] (mean joint score), rank [B, N] (mean heat value, the NMS key),
    valid [B, N], keep [B, N], heatmaps_avg [B, K+1, H, W]); N = topk x number of scales.
    """
    cfg = dekr_test_cfg(cfg)
    k = meta.num_keypoints
    poses, cscore, valid, heat_avg = merge_scales(per_scale, input_hw, cfg)
    heat = _read_floor(heat_avg[:, :k], poses)  # [B, N, K]
    joint = cscore[..., None] * heat
    rank = heat.mean(-1)
    keep = pose_nms(poses, rank, valid, cfg["nms_threshold"], cfg["nms_num_joints"],
                    cfg["max_people"], cfg["pose_nms"])
    out = {"poses": torch.cat([poses, joint[..., None]], dim=-1), "scores": joint.mean(-1),
           "rank": rank, "valid": valid, "keep": keep, "heatmaps_avg": heat_avg}
    if cfg["match_heatmap"]:
        out["poses"] = match_heatmap(out["poses"], keep, heat_avg[:, :k], cfg["max_people"])
    return out


# --------------------------------------------------------------------------- heatmap matching
def _joint_peaks(heat: torch.Tensor, num: int):
    """Top-``num`` positive 5x5 local maxima per channel: (xy [B, K, P, 2], ok [B, K, P])."""
    b, k, h, w = heat.shape
    pooled = F.max_pool2d(heat, PEAK_KERNEL, 1, PEAK_KERNEL // 2)
    peak = (heat == pooled) & (heat > 0)  # a flat zero plateau is no peak
    flat = torch.where(peak, heat, torch.full_like(heat, -float("inf"))).reshape(b, k, -1)
    p = min(int(num), h * w)
    val, idx = flat.topk(p, dim=2)
    xy = torch.stack([idx % w, idx // w], dim=-1).to(heat.dtype)
    return xy, torch.isfinite(val)


def _fit_gaussians(win: torch.Tensor, mask: torch.Tensor, init: torch.Tensor,
                   iters: int = 50) -> tuple[torch.Tensor, torch.Tensor]:
    """Least-squares fit of A exp(-|p - c|^2 / (2 s^2)) to windows, Levenberg-Marquardt, batched.

    win, mask [N, S, S] (mask: pixel inside the map); init [N, 4] = (A, cx, cy, s) in window px.
    Returns (params [N, 4], converged [N] bool: finite, s > 0 and the centre inside the window).
    """
    n, s = win.shape[0], win.shape[-1]
    r = torch.arange(s, dtype=win.dtype, device=win.device)
    px = r.view(1, 1, s).expand(n, s, s).reshape(n, -1)
    py = r.view(1, s, 1).expand(n, s, s).reshape(n, -1)
    y, m = win.reshape(n, -1), mask.reshape(n, -1).to(win.dtype)

    def residual_and_jacobian(p):
        a, cx, cy, sg = p.unbind(-1)
        d2 = (px - cx[:, None]) ** 2 + (py - cy[:, None]) ** 2
        e = torch.exp(-d2 / (2 * sg[:, None] ** 2))
        f = a[:, None] * e
        jac = torch.stack([e, f * (px - cx[:, None]) / sg[:, None] ** 2,
                           f * (py - cy[:, None]) / sg[:, None] ** 2,
                           f * d2 / sg[:, None] ** 3], dim=-1)  # d f / d (a, cx, cy, s)
        return (y - f) * m, jac * m[..., None]

    p = init.clone()
    lam = torch.full((n,), 1e-3, dtype=win.dtype, device=win.device)
    res, jac = residual_and_jacobian(p)
    cost = (res ** 2).sum(1)
    eye = torch.eye(4, dtype=win.dtype, device=win.device)
    for _ in range(iters):  # a fixed number of rounds over all windows at once
        jtj = jac.transpose(1, 2) @ jac
        g = (jac.transpose(1, 2) @ res[..., None])[..., 0]
        damp = jtj + lam[:, None, None] * (jtj * eye + 1e-9 * eye)
        step = torch.linalg.solve(damp, g[..., None])[..., 0]
        cand = p + step
        r2, j2 = residual_and_jacobian(cand)
        c2 = (r2 ** 2).sum(1)
        better = torch.isfinite(c2) & (c2 < cost)
        p = torch.where(better[:, None], cand, p)
        res = torch.where(better[:, None], r2, res)
        jac = torch.where(better[:, None, None], j2, jac)
        cost = torch.where(better, c2, cost)
        lam = torch.where(better, lam * 0.3, lam * 10.0).clamp(1e-9, 1e9)
    ok = torch.isfinite(p).all(1) & (p[:, 3] > 0) & (p[:, 1] >= 0) & (p[:, 1] <= s - 1) \
        & (p[:, 2] >= 0) & (p[:, 2] <= s - 1)
    return p, ok


def match_heatmap(poses: torch.Tensor, keep: torch.Tensor, heat: torch.Tensor,
                  num_peaks: int = 30, absorb_distance: float = ABSORB_DISTANCE,
                  threshold: float = ADJUST_THRESHOLD, radius: int = FIT_RADIUS,
                  sigma: float = FIT_SIGMA) -> torch.Tensor:
    """DEKR's ``TEST.MATCH_HMP``: snap each joint to a heat peak, then refine it by a Gaussian fit.

    poses [B, N, K, 3] (x, y, score) input px; keep [B, N]; heat [B, K, H, W] the averaged
    upsampled keypoint heatmaps. For kept poses only:
    1. absorb: the nearest of the top-``num_peaks`` 5x5 peaks of the joint's channel replaces the
       joint when closer than ``absorb_distance`` px (the peak's integer pixel);
    2. adjust: joints with score > ``threshold`` are refined by fitting A exp(-d^2 / 2 s^2) on the
       (2 r + 1)^2 window around the rounded joint (cut at the map border), started at
       (peak value, the pixel, ``sigma``); the joint moves to the fitted centre when the fit
       converges inside the window (the released scipy ``curve_fit`` keeps the joint when it
       fails). Differences from the release: only positive peaks are absorbed (the release can
       pick a zero-valued non-peak pixel when fewer than 30 peaks exist), and border windows are fitted
       with their real shape (the release mixes rows and columns on non-square border windows).
    Scores are unchanged. Returns the new poses.
    """
    b, n, k, _ = poses.shape
    hh, ww = heat.shape[-2:]
    out = poses.clone()
    xy = out[..., :2]
    # 1. absorb
    peaks, ok = _joint_peaks(heat, num_peaks)  # [B, K, P, 2]
    d = (xy.permute(0, 2, 1, 3)[:, :, :, None, :] - peaks[:, :, None]).norm(dim=-1)  # [B,K,N,P]
    d = torch.where(ok[:, :, None, :], d, torch.full_like(d, float("inf")))
    dmin, j = d.min(-1)
    near = peaks.gather(2, j[..., None].expand(b, k, n, 2))  # [B, K, N, 2]
    snap = (dmin < absorb_distance) & keep[:, None, :]
    xy = torch.where(snap[..., None], near, xy.permute(0, 2, 1, 3)).permute(0, 2, 1, 3)
    # 2. adjust: gather the windows of the selected joints (one batch of fits)
    sel = keep[:, :, None] & (out[..., 2] > threshold)  # [B, N, K]
    bi, ni, ki = sel.nonzero(as_tuple=True)
    if bi.numel():
        cx = (xy[bi, ni, ki, 0] + 0.5).floor().long().clamp(0, ww - 1)
        cy = (xy[bi, ni, ki, 1] + 0.5).floor().long().clamp(0, hh - 1)
        off = torch.arange(-radius, radius + 1, device=heat.device)
        gx, gy = cx[:, None] + off, cy[:, None] + off  # [M, S]
        inside = ((gx >= 0) & (gx < ww))[:, None, :] & ((gy >= 0) & (gy < hh))[:, :, None]
        flat = heat.reshape(-1)
        base = (bi * k + ki) * (hh * ww)  # start of each selected joint's channel
        idx = gy.clamp(0, hh - 1)[:, :, None] * ww + gx.clamp(0, ww - 1)[:, None, :]  # [M, S, S]
        win = flat[base[:, None, None] + idx]
        peak = flat[base + cy * ww + cx]
        init = torch.stack([peak, torch.full_like(peak, radius), torch.full_like(peak, radius),
                            torch.full_like(peak, sigma)], dim=-1)
        p, conv = _fit_gaussians(win.double(), inside, init.double())
        fx = (cx - radius).to(p.dtype) + p[:, 1]
        fy = (cy - radius).to(p.dtype) + p[:, 2]
        new = torch.stack([fx, fy], -1).to(xy.dtype)
        cur = xy[bi, ni, ki]
        xy = xy.clone()
        xy[bi, ni, ki] = torch.where(conv[:, None], new, cur)
    out[..., :2] = xy
    return out


# --------------------------------------------------------------------------- whole decoder
def decode_dekr(model, images_by_scale: dict, meta, cfg: dict | None = None, tick=None) -> dict:
    """Run a DEKR model on the images of every test scale and decode (see the module docstring).

    ``images_by_scale``: {scale: normalised batch [B, 3, H_s, W_s]} with H_s = s H_1 (the scale-1
    batch defines the output frame). Returns :func:`decode_dekr_outputs`'s dict plus ``raw``
    (the scale-1 network outputs, for checks). ``tick``: the stage timer of :func:`run_scales`.
    """
    cfg = dekr_test_cfg(cfg)
    per_scale, raw, (h1, w1) = run_scales(model, images_by_scale, meta, cfg, tick)
    res = decode_dekr_outputs(per_scale, (h1, w1), meta, cfg)
    res["raw"] = raw
    return res
