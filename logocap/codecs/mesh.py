"""Keypoint expansion meshes (KEMs) and the bilinear gather used to read maps at mesh points.

All coordinates are (x, y) in input pixels unless said otherwise; pixel i sits at coordinate i.

- ``local_mesh``: the 11x11 local KEM of every joint (CVPR Alg. 1 / suppl. Alg. 1), with the
  *inclusive* grid linspace(-r, r, m) of the released code (the pseudo-code's arange(-r, r) gives
  an off-centre 10x10 grid). Joint j's step is sigma_j / min(sigma) input px.
- ``global_offsets``: the a x a (97) global KEM offsets, 1 input px apart, not sigma-scaled.
- ``bilinear_sample`` / ``bilinear_sample_at`` / ``sample_per_channel``: batched gathers with two
  edge behaviours, ``official`` (the released gather, see below) and ``clean`` (border clamp).
"""
from __future__ import annotations

import torch

__all__ = ["mesh_steps", "local_mesh", "global_offsets", "bilinear_sample", "bilinear_sample_at",
           "sample_per_channel", "SAMPLE_MODES"]

SAMPLE_MODES = ("official", "clean")


def mesh_steps(sigmas, scale: float = 1.0, device=None) -> torch.Tensor:
    """Per-joint local mesh step in input px: sigma_j / min(sigma) * scale -> [K]."""
    s = torch.as_tensor(sigmas, dtype=torch.float32, device=device)
    return s / s.min() * float(scale)


def _grid(size: int, device=None) -> torch.Tensor:
    """Inclusive integer grid offsets [m, m, 2] (x, y), rows = dy, cols = dx, centre = (0, 0)."""
    if size < 1 or size % 2 == 0:
        raise ValueError(f"mesh size must be a positive odd number, got {size}")
    r = size // 2
    t = torch.linspace(-r, r, size, device=device)
    dy, dx = torch.meshgrid(t, t, indexing="ij")
    return torch.stack((dx, dy), dim=-1)


def local_mesh(poses: torch.Tensor, sigmas, size: int = 11, scale: float = 1.0) -> torch.Tensor:
    """Local KEMs (Alg. 1, inclusive): poses [..., K, 2] -> [..., K, m, m, 2].

    Mesh point (K, m//2, m//2) is the initial pose; neighbouring points of joint j are
    sigma_j / min(sigma) * scale input px apart.
    """
    grid = _grid(size, poses.device).to(poses.dtype)  # [m, m, 2]
    steps = mesh_steps(sigmas, scale, poses.device).to(poses.dtype)  # [K]
    return poses[..., None, None, :] + steps[:, None, None, None] * grid


def global_offsets(size: int = 97, step: float = 1.0, device=None) -> torch.Tensor:
    """Global KEM offsets [a, a, 2] (x, y): integers -a//2 .. a//2 inclusive times ``step``."""
    return _grid(size, device) * float(step)


# ---------------------------------------------------------------------------------------------
# Bilinear gather
def _axis(coord: torch.Tensor, n: int, mode: str):
    """Neighbour indices and weights along one axis of length n.

    official: i0 = clamp(floor(c)), i1 = clamp(i0 + 1), w0 = clamp(i1 - c, 0, 1),
      w1 = clamp(c - i0, 0, 1) with clamps to [0, n-1]. Consequences (notes §8): replicate
      below 0 and from n on; exactly at n-1 both weights are 0 (value 0); in (n-1, n) the border
      value is scaled by the fractional part.
    clean: clamp c to [0, n-1] first, then ordinary bilinear (border replicate everywhere).
    """
    if mode == "official":
        i0 = coord.floor().clamp(0, n - 1)
        i1 = (i0 + 1).clamp(0, n - 1)
        w0 = (i1 - coord).clamp(0, 1)
        w1 = (coord - i0).clamp(0, 1)
    elif mode == "clean":
        c = coord.clamp(0, n - 1)
        i0 = c.floor()
        i1 = (i0 + 1).clamp(max=n - 1)
        w1 = c - i0
        w0 = 1 - w1
    else:
        raise ValueError(f"unknown sampling mode {mode!r}; use one of {SAMPLE_MODES}")
    return i0.long(), i1.long(), w0, w1


def _gather(flat: torch.Tensor, W: int, H: int, rows: torch.Tensor, pts: torch.Tensor,
            mode: str) -> torch.Tensor:
    """flat [R, H*W, C]; rows [...] (long, broadcastable to pts[..., 0]); pts [..., 2] -> [..., C]."""
    x0, x1, wx0, wx1 = _axis(pts[..., 0], W, mode)
    y0, y1, wy0, wy1 = _axis(pts[..., 1], H, mode)
    rows = rows.expand_as(x0)

    def tap(yi, xi):
        return flat[rows, yi * W + xi]  # [..., C]

    return (tap(y0, x0) * (wy0 * wx0)[..., None] + tap(y0, x1) * (wy0 * wx1)[..., None]
            + tap(y1, x0) * (wy1 * wx0)[..., None] + tap(y1, x1) * (wy1 * wx1)[..., None])


def bilinear_sample_at(maps: torch.Tensor, batch_index: torch.Tensor, points: torch.Tensor,
                       mode: str = "official") -> torch.Tensor:
    """maps [B, C, H, W]; batch_index [...] (which image each point reads, broadcastable to
    points[..., 0]); points [..., 2] in map pixel coords -> [..., C]."""
    B, C, H, W = maps.shape
    flat = maps.permute(0, 2, 3, 1).reshape(B, H * W, C)
    return _gather(flat, W, H, batch_index.long(), points, mode)


def bilinear_sample(maps: torch.Tensor, points: torch.Tensor, mode: str = "official") -> torch.Tensor:
    """maps [B, C, H, W], points [B, N, 2] (x, y in map pixels) -> [B, N, C]."""
    bidx = torch.arange(maps.shape[0], device=maps.device)[:, None]
    return bilinear_sample_at(maps, bidx, points, mode)


def sample_per_channel(maps: torch.Tensor, batch_index: torch.Tensor, points: torch.Tensor,
                       mode: str = "official") -> torch.Tensor:
    """Read channel k at its own points: maps [B, K, H, W]; batch_index [N]; points
    [N, K, ..., 2] -> [N, K, ...] (used for the global KEMs: joint k reads heatmap k)."""
    B, K, H, W = maps.shape
    flat = maps.reshape(B * K, H * W, 1)
    N = points.shape[0]
    extra = points.dim() - 3
    rows = (batch_index.long()[:, None] * K + torch.arange(K, device=maps.device)[None, :])
    rows = rows.reshape(N, K, *([1] * extra))
    return _gather(flat, W, H, rows, points, mode)[..., 0]
