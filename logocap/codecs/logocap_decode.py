"""LOGO-CAP decoding: center-offset candidates -> local KEMs -> KAMs -> local-global adaptation.

Follows the released inference (notes §3 steps 4-14), vectorised over images and candidates:
the B*T candidates are flattened and only the *valid* ones (center score >= threshold, or each
image's top-1) go through the KAM network and the adaptation; results are scattered back to
[B, T, ...]. So the cost follows the number of people, as in the paper's Table 4.

Units: everything is in input pixels of the (4x upsampled) heatmap; the 1/4 embedding map is read
at mesh point / 4 (output index i <-> input pixel 4 i).

The only network call is ``model.kam`` (the CMP); the rest are plain functions, shared with the
training criterion (``logocap.losses.logocap``) and the upper bound.
"""
from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from .decode import center_offset_candidates
from .mesh import (global_offsets, local_mesh, sample_per_channel, sample_window, bilinear_sample_at,
                   iter_windows)

__all__ = ["ADAPTATIONS", "IMPLS", "decode_cfg", "sample_mode", "gaussian_window", "local_kems",
           "global_kems", "reweigh", "adapt", "top2", "refine", "decode_logocap"]

ADAPTATIONS = ("none", "kems", "partial", "full")
# Test decoding runs the global stage GLOBAL_CHUNK candidates at a time: each candidate carries
# K x 97 x 97 global KEMs, and for a batch of 8 images (~200 candidates, ~150 MB) one call ran
# 1.5x slower per image than chunks of 16 (synthetic LOGO-CAP checkpoint, 1 thread: 184 vs
# 120 ms per image), so batching images made decoding slower instead of faster.
GLOBAL_CHUNK = 16
# ``impl`` "fast" runs the whole global stage MAP_CHUNK maps (97 x 97 floats, 37 kB each) at a time:
# its buffers then stay in a core's L2 cache (random inputs of benchmarks/global_kams.py, 30
# candidates, 1 thread: 136 maps 57 ms, 510 in one go 84 ms, 17 maps 70 ms from call overheads).
MAP_CHUNK = 136
# Global-KEM sampling: "fast" (separable window gather, ``mesh.sample_window``) or "reference" (the
# per-point gather of every 97x97 grid point, as the released code does). Identical values; the
# reference stays selectable as the baseline of the speed benchmark.
IMPLS = ("fast", "reference")

# the test settings LOGO-CAP decoding reads besides the center-offset ones (defaults:
# config.DEFAULTS["test"])
LOGOCAP_KEYS = ("topk", "center_threshold", "upsample", "adaptation", "local_size", "global_size",
                "gaussian_reweigh", "gaussian_sigma", "top2_lambda", "window_scale", "impl")


def decode_cfg(cfg: dict | None) -> dict:
    """Test config with defaults (``config.DEFAULTS["test"]``) filled in and checked."""
    from ..config import default_test_settings

    out = default_test_settings(LOGOCAP_KEYS)
    out.update(cfg or {})
    if out["adaptation"] not in ADAPTATIONS:
        raise ValueError(f"test.adaptation must be one of {ADAPTATIONS}, got {out['adaptation']!r}")
    if out["impl"] not in IMPLS:
        raise ValueError(f"test.impl must be one of {IMPLS}, got {out['impl']!r}")
    for key in ("local_size", "global_size"):
        if int(out[key]) < 1 or int(out[key]) % 2 == 0:
            raise ValueError(f"test.{key} must be a positive odd number, got {out[key]}")
    if float(out["window_scale"]) <= 0:
        raise ValueError(f"test.window_scale must be > 0, got {out['window_scale']}")
    return out


def sample_mode(cfg: dict) -> str:
    """Bilinear gather edge mode: ``official`` with the official upsampling (the released code,
    needed to match its checkpoints), ``clean`` (border clamp) with the aligned one. An explicit
    ``cfg["sample_mode"]`` wins."""
    if cfg.get("sample_mode"):
        return cfg["sample_mode"]
    return "official" if cfg.get("upsample", "official") == "official" else "clean"


def gaussian_window(size: int, sigma: float, device=None, dtype=torch.float32) -> torch.Tensor:
    """Eqn. 8 Gaussian prior on the a x a global grid (1 px apart), values < 1e-4 zeroed."""
    d = global_offsets(size, 1.0, device).to(dtype)
    g = torch.exp(-(d ** 2).sum(-1) / (2.0 * sigma * sigma))
    return g * (g >= 1e-4)


def local_kems(embedding: torch.Tensor, batch_index: torch.Tensor, mesh: torch.Tensor,
               mode: str = "official", stride: int = 4) -> torch.Tensor:
    """Eqn. 6: embedding [B, d, h, w] read at mesh [N, K, m, m, 2] / stride -> [N, K*d, m, m]
    (channel = joint * d + feature, the layout ``model.kam`` expects)."""
    N, K, m = mesh.shape[:3]
    feats = bilinear_sample_at(embedding, batch_index[:, None, None, None], mesh / stride, mode)
    return feats.permute(0, 1, 4, 2, 3).reshape(N, K * embedding.shape[1], m, m)


def global_kems(heatmaps_up: torch.Tensor, batch_index: torch.Tensor, poses: torch.Tensor,
                size: int = 97, mode: str = "official", impl: str = "fast") -> torch.Tensor:
    """Eqn. 8 (sampling): joint k's upsampled heatmap read on the a x a grid (1 input px apart)
    centred on the initial joint. heatmaps_up [B, >=K, H, W], poses [N, K, 2] -> [N, K, a, a].

    ``impl`` "fast" (``mesh.sample_window``) and "reference" (the per-point gather through
    autograd) give identical values, and in training the same heatmap gradients up to float
    summation order; poses that need a gradient take the reference."""
    if impl == "fast" and not (torch.is_grad_enabled() and poses.requires_grad):
        return sample_window(heatmaps_up, batch_index, poses, size, mode)
    K = poses.shape[1]
    pts = poses[:, :, None, None, :] + global_offsets(size, 1.0, poses.device).to(poses.dtype)
    return sample_per_channel(heatmaps_up[:, :K], batch_index, pts, mode)


def reweigh(global_kem: torch.Tensor, cfg: dict, inplace: bool = False) -> torch.Tensor:
    """Eqn. 8 Gaussian prior on [N, K, a, a] global KEMs (sigma x window_scale), if switched on;
    ``inplace`` multiplies the tensor itself (same values, one allocation less)."""
    g = _prior(global_kem.shape[-1], cfg, global_kem.device, global_kem.dtype)
    if g is None:
        return global_kem
    return global_kem.mul_(g) if inplace else global_kem * g


def _prior(size: int, cfg: dict, device, dtype) -> torch.Tensor | None:
    """The Eqn. 8 Gaussian of the configured sigma x window_scale on the size x size global grid,
    or None where ``gaussian_reweigh`` is off."""
    if not cfg["gaussian_reweigh"]:
        return None
    return gaussian_window(size, float(cfg["gaussian_sigma"]) * float(cfg["window_scale"]),
                           device, dtype)


def adapt(global_kem: torch.Tensor, kams: torch.Tensor, impl: str = "fast") -> torch.Tensor:
    """Eqn. 9 local-global adaptation as a true convolution (notes §3.12):
    out(p) = sum_u KAM(u) / m^2 * in(p - u), u in [-m//2, m//2]^2, zero padding, same size.
    conv2d is a cross-correlation, so the kernel is spatially flipped; groups = N*K.

    Same forward for both ``impl``; with autograd (training) "fast" computes the two gradients
    with forward convolutions (``_GroupedConv``) instead of autograd's conv backward."""
    N, K, a, _ = global_kem.shape
    m = kams.shape[-1]
    if N == 0:
        return global_kem
    kernel = (kams / (m * m)).flip(-1, -2).reshape(N * K, 1, m, m)
    x = global_kem.reshape(1, N * K, a, a)
    if impl == "fast" and torch.is_grad_enabled() and (x.requires_grad or kernel.requires_grad) \
            and not torch.is_autocast_enabled(x.device.type):
        out = _GroupedConv.apply(x, kernel)
    else:
        out = F.conv2d(x, kernel, padding=m // 2, groups=N * K)
    return out.reshape(N, K, a, a)


class _GroupedConv(torch.autograd.Function):
    """conv2d(x [1, G, a, a], kernel [G, 1, m, m], padding m // 2, groups G) whose backward is two
    forward grouped convolutions: on one CPU core autograd's backward of this depthwise 11 x 11
    conv over 97 x 97 maps took ~15x its forward, these take ~3x. Same gradients up to float
    summation order:
      d x      = conv(grad, kernel flipped, padding m // 2)         (the transposed convolution)
      d kernel = conv(x zero-padded by m // 2, grad as a [G, 1, a, a] kernel) -> [1, G, m, m]."""

    @staticmethod
    def forward(ctx, x, kernel):
        ctx.save_for_backward(x, kernel)
        return F.conv2d(x, kernel, padding=kernel.shape[-1] // 2, groups=x.shape[1])

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        x, kernel = ctx.saved_tensors
        G, p = x.shape[1], kernel.shape[-1] // 2
        grad_x = grad_k = None
        if ctx.needs_input_grad[0]:
            grad_x = F.conv2d(grad, kernel.flip(-1, -2), padding=p, groups=G)
        if ctx.needs_input_grad[1]:
            grad_k = F.conv2d(F.pad(x, (p, p, p, p)), grad.reshape(G, 1, *grad.shape[-2:]), groups=G)
            grad_k = grad_k.reshape(kernel.shape)
        return grad_x, grad_k


def top2(maps: torch.Tensor, lam: float = 0.75, impl: str = "reference"):
    """Convex average of the top-2 locations and values of each [..., a, a] map.

    Returns (offset [..., 2] (x, y) from the map centre in grid steps, value [...]):
    lam * top1 + (1 - lam) * top2 for x, y and the value (official lambda 0.75).
    ``impl`` "fast" finds the same two entries without sorting every map (``_top2_entries``).
    """
    a = maps.shape[-1]
    if impl == "fast":
        val, idx = _top2_entries(maps.reshape(-1, a, a))
        val, idx = val.reshape(*maps.shape[:-2], 2), idx.reshape(*maps.shape[:-2], 2)
    else:
        val, idx = maps.flatten(-2).topk(2, dim=-1)
    xy = torch.stack((idx % a, torch.div(idx, a, rounding_mode="floor")), dim=-1).to(maps.dtype)
    w = torch.tensor([lam, 1.0 - lam], dtype=maps.dtype, device=maps.device)
    xy = (xy * w[:, None]).sum(-2) - (a // 2)
    return xy, (val * w).sum(-1)


def _top2_entries(maps: torch.Tensor):
    """``maps.flatten(-2).topk(2)`` of maps [M, h, w] -> (values [M, 2], flat indices [M, 2]),
    the same entries, from the 3 rows with the largest maxima.

    The three largest values of a map lie in those rows (a value in any other row is at most the
    third-largest row maximum). Where they are strictly decreasing, the largest and second are
    unique in the map, so topk must return exactly them. Maps with a tie among them (topk's
    order among equal values is its own) or a NaN take topk itself.
    """
    M, h, w = maps.shape
    if h < 3 or M == 0:
        return maps.flatten(-2).topk(2, dim=-1)
    rows = maps.amax(-1).topk(3, dim=-1).indices  # [M, 3]
    cand = maps.gather(1, rows[:, :, None].expand(-1, -1, w)).flatten(1)  # [M, 3w]
    v, j = cand.topk(3, dim=-1)
    idx = rows.gather(1, torch.div(j[:, :2], w, rounding_mode="floor")) * w + j[:, :2] % w
    val = v[:, :2]
    tie = ~((v[:, 0] > v[:, 1]) & (v[:, 1] > v[:, 2]))  # NaN compares False: a "tie"
    if bool(tie.any()):
        val[tie], idx[tie] = maps[tie].flatten(1).topk(2, dim=-1)
    return val, idx


def refine(model, heatmaps_up: torch.Tensor, embedding: torch.Tensor, batch_index: torch.Tensor,
           poses: torch.Tensor, sigmas, cfg: dict, clamp: bool = True, timings: dict | None = None,
           level: str = "full", mesh: torch.Tensor | None = None, chunk: int | None = None) -> dict:
    """The LOGO-CAP refinement of N candidates (steps 7-13), the one used by test decoding and by
    the training criterion. poses [N, K, 2] input px; heatmaps_up [B, >=K, H, W]; embedding
    [B, d, h, w]; batch_index [N] (the image of each candidate).

    ``level`` (Table 7, ``test.adaptation``): "none" = the initial joints, value = heat value at
    the joint; "partial" ("KAMs only") = per joint the local mesh point of largest KAM, value =
    that KAM; "kems" ("KEMs only") = top-2 of the Gaussian-reweighed global KEM (no KAM);
    "full" = top-2 of the global KEM adapted by the KAM kernel (LOGO-CAP).
    Test decoding clamps the KAMs to [0, 1] and reads the global KEMs with ``cfg["impl"]``;
    training passes ``clamp=False`` (raw KAMs) and non-detached heatmaps; both ``impl`` are
    differentiable there (same values, same gradients up to summation order). ``mesh`` [N, K, m, m, 2]:
    the local meshes when the caller has them already (training), else built here.
    ``chunk`` (inference only): the global stage (sampling, reweighing, adaptation, top-2) runs
    that many candidates at a time (``impl`` "reference"), or ``MAP_CHUNK`` maps at a time with
    ``impl`` "fast" (``_global_stage_fast``), with the same values; ``global_kem`` / ``refined``
    are then not returned. The CMP stays one call over all N candidates.

    Returns dict(joints [N,K,2], values [N,K]) plus what the level computed: mesh [N,K,m,m,2],
    kams [N,K,m,m], global_kem [N,K,a,a] (after reweighing), refined [N,K,a,a].
    ``window_scale`` multiplies the local mesh step and the Gaussian sigma.
    """
    if level not in ADAPTATIONS:
        raise ValueError(f"adaptation level must be one of {ADAPTATIONS}, got {level!r}")
    mode = sample_mode(cfg)
    tick = _Ticker(timings, poses.device)
    out = {}
    if level == "none":
        K = poses.shape[1]
        values = sample_per_channel(heatmaps_up[:, :K], batch_index, poses[:, :, None, :], mode)[..., 0]
        return {"joints": poses, "values": values}
    if level in ("partial", "full"):
        if mesh is None:
            mesh = local_mesh(poses, sigmas, int(cfg["local_size"]), float(cfg["window_scale"]))
        kams = model.kam(local_kems(embedding, batch_index, mesh, mode))
        if clamp:
            kams = kams.clamp(0.0, 1.0)
        out.update(mesh=mesh, kams=kams)
        tick("local_kams")
        if level == "partial":
            values, best = kams.flatten(-2).max(-1)  # [N, K]
            joints = mesh.flatten(2, 3).gather(2, best[..., None, None].expand(-1, -1, 1, 2))[:, :, 0]
            return {**out, "joints": joints, "values": values}
    n = poses.shape[0]
    inference = not (torch.is_grad_enabled() and heatmaps_up.requires_grad)
    if chunk and inference and cfg["impl"] == "fast":
        off, values = _global_stage_fast(heatmaps_up, batch_index, poses,
                                         out["kams"] if level == "full" else None, cfg, mode)
    elif chunk and n > chunk and inference:
        parts = [_global_stage(heatmaps_up, batch_index[s:s + chunk], poses[s:s + chunk],
                               out["kams"][s:s + chunk] if level == "full" else None, cfg, mode)
                 for s in range(0, n, chunk)]
        off = torch.cat([p[0] for p in parts])
        values = torch.cat([p[1] for p in parts])
    else:
        off, values, gk, refined = _global_stage(heatmaps_up, batch_index, poses,
                                                 out.get("kams") if level == "full" else None,
                                                 cfg, mode, keep=True)
        out["global_kem"] = gk
        if refined is not None:
            out["refined"] = refined
    tick("global_kams")
    return {**out, "joints": poses + off, "values": values}


def _global_stage(heatmaps_up, batch_index, poses, kams, cfg, mode, keep: bool = False):
    """Global KEMs -> reweighing -> adaptation by ``kams`` (None: "kems" level) -> top-2.
    Returns (offset [N, K, 2], value [N, K]) plus, with ``keep``, (global KEM, refined)."""
    gk = global_kems(heatmaps_up, batch_index, poses, int(cfg["global_size"]), mode, cfg["impl"])
    gk = reweigh(gk, cfg, inplace=cfg["impl"] == "fast" and not gk.requires_grad)
    refined = adapt(gk, kams, cfg["impl"]) if kams is not None else None
    off, values = top2(refined if refined is not None else gk, float(cfg["top2_lambda"]))
    return (off, values, gk, refined) if keep else (off, values)


@torch.no_grad()
def _global_stage_fast(heatmaps_up, batch_index, poses, kams, cfg, mode, chunk: int = MAP_CHUNK):
    """``_global_stage`` for inference with ``impl`` "fast": the same offsets and values, one
    chunk of ``chunk`` maps at a time through all four steps (sampling, reweighing, adaptation,
    top-2) so that each chunk stays in the cache; the top-2 without sorting (``top2`` "fast").
    The adaptation is the same grouped convolution on fewer groups: each group is computed on its
    own, so its values do not depend on the chunk."""
    N, K = poses.shape[:2]
    a = int(cfg["global_size"])
    lam = float(cfg["top2_lambda"])
    off = poses.new_empty(N * K, 2)
    values = poses.new_empty(N * K)
    g = _prior(a, cfg, heatmaps_up.device, heatmaps_up.dtype)
    kams = None if kams is None else kams.flatten(0, 1)  # [N*K, m, m], window order
    for s, e, gk in iter_windows(heatmaps_up, batch_index, poses, a, mode, chunk, scale=g):
        if kams is not None:
            gk = adapt(gk[None], kams[None, s:e])[0]
        off[s:e], values[s:e] = top2(gk, lam, "fast")
    return off.view(N, K, 2), values.view(N, K)


class _Ticker:
    """Adds the time since the last call to timings[name] (CUDA synchronised); no-op if None."""

    def __init__(self, timings, device):
        self.timings, self.cuda = timings, torch.device(device).type == "cuda"
        self.t = self._now() if timings is not None else 0.0

    def _now(self):
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter()

    def __call__(self, name):
        if self.timings is None:
            return
        now = self._now()
        self.timings[name] = self.timings.get(name, 0.0) + now - self.t
        self.t = now


@torch.no_grad()
def decode_logocap(model, fused: dict, embedding: torch.Tensor, meta, cfg: dict | None = None,
                   timings: dict | None = None) -> dict:
    """Fused (flip-averaged) heatmaps/offsets + unflipped embedding -> scored poses in input px.

    fused: {"heatmaps" [B,K+1,h,w], "offsets" [B,2K,h,w]}; embedding [B,d,h,w] (unflipped pass).
    cfg: test config (``decode_cfg``). ``timings`` (optional dict) accumulates seconds for
    "local_kems" (center NMS, top-T, offsets, 0.01 filter), "local_kams" (mesh, embedding gather,
    CMP) and "global_kams" (global sampling, reweighing, adaptation, top-2).

    Returns dict(poses [B,T,K,3] (x, y, joint score) input px, scores [B,T], valid [B,T] (valid
    candidate with score > 0), centers [B,T,2], center_scores [B,T], initial_poses [B,T,K,2],
    heatmaps_up [B,K+1,H,W]). Invalid candidates keep their initial pose with score 0.
    Adaptation (Table 7): none = initial pose, joint score = heat value x center score;
    kems = Table 7 "KEMs only": top-2 of the Gaussian-reweighed global KEM (no KAM),
    score = that value x center score;
    partial = per joint the mesh point of largest KAM ("KAMs only"), score = that KAM x center score;
    full = LOGO-CAP, score = top-2 refined response x center score. Pose score = mean of joints.
    """
    cfg = decode_cfg(cfg)
    K = meta.num_keypoints
    if fused["offsets"].shape[1] != 2 * K:
        raise ValueError(f"model predicts {fused['offsets'].shape[1] // 2} keypoints, "
                         f"meta '{meta.name}' has {K}")
    tick = _Ticker(timings, embedding.device)
    cand = center_offset_candidates(fused["heatmaps"], fused["offsets"], cfg)
    up, init, cs, valid = cand["heatmaps_up"], cand["poses"], cand["center_scores"], cand["valid"]
    bi, ti = valid.nonzero(as_tuple=True)  # the N valid candidates, all images at once
    poses0 = init[bi, ti]  # [N, K, 2]
    tick("local_kems")
    r = refine(model, up, embedding, bi, poses0, meta.sigmas, cfg, clamp=True, timings=timings,
               level=cfg["adaptation"], chunk=GLOBAL_CHUNK)
    joints, values = r["joints"], r["values"]
    tick.t = tick._now() if timings is not None else 0.0  # refine timed its own stages
    joint_scores = values * cs[bi, ti][:, None]
    poses = torch.cat((init, torch.zeros_like(init[..., :1])), dim=-1)
    poses[bi, ti] = torch.cat((joints, joint_scores[..., None]), dim=-1)
    scores = poses[..., 2].mean(-1)
    return {"poses": poses, "scores": scores, "valid": valid & (scores > 0),
            "centers": cand["centers"], "center_scores": cs, "initial_poses": init,
            "heatmaps_up": up, "nonfinite": cand["nonfinite"]}
