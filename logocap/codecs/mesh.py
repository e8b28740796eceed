"""Keypoint expansion meshes (KEMs) and the bilinear gather used to read maps at mesh points.

All coordinates are (x, y) in input pixels unless said otherwise; pixel i sits at coordinate i.

- ``local_mesh``: the 11x11 local KEM of every joint (CVPR Alg. 1 / suppl. Alg. 1), with the
  *inclusive* grid linspace(-r, r, m) of the released code (the pseudo-code's arange(-r, r) gives
  an off-centre 10x10 grid). Joint j's step is sigma_j / min(sigma) input px.
- ``global_offsets``: the a x a (97) global KEM offsets, 1 input px apart, not sigma-scaled.
- ``bilinear_sample`` / ``bilinear_sample_at`` / ``sample_per_channel``: batched gathers with two
  edge behaviours, ``official`` (the released gather, see below) and ``clean`` (border clamp).
- ``sample_window``: the same gather on an a x a integer-offset window (the global KEMs), computed
  separably; bit-identical to ``sample_per_channel`` on that grid and several times faster, with
  its own backward (training reads the global KEMs on the non-detached heatmaps).
"""
from __future__ import annotations

import torch

__all__ = ["mesh_steps", "local_mesh", "global_offsets", "bilinear_sample", "bilinear_sample_at",
           "sample_per_channel", "sample_window", "iter_windows", "SAMPLE_MODES"]

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


# ---------------------------------------------------------------------------------------------
# The global KEM window, separably
def _weighted_taps(t00, t01, t10, t11, wy0, wy1, wx0, wx1, out=None, buf=None) -> torch.Tensor:
    """sum_ab t_ab * (wy_a * wx_b) with the rounding and order of ``_gather`` (so bit-identical):
    t_ab [..., a, a] (views are fine); w [..., a]. Reuses one buffer, no autograd; ``out`` and
    ``buf`` (optional, the result's shape) are written instead of new tensors."""
    out = torch.mul(wy0[..., :, None], wx0[..., None, :], out=out).mul_(t00)
    buf = torch.mul(wy0[..., :, None], wx1[..., None, :], out=buf).mul_(t01)
    out.add_(buf)
    torch.mul(wy1[..., :, None], wx0[..., None, :], out=buf).mul_(t10)
    out.add_(buf)
    torch.mul(wy1[..., :, None], wx1[..., None, :], out=buf).mul_(t11)
    return out.add_(buf)


def sample_window(maps: torch.Tensor, batch_index: torch.Tensor, centers: torch.Tensor,
                  size: int = 97, mode: str = "official") -> torch.Tensor:
    """Channel k of image ``batch_index[n]`` read on the ``size`` x ``size`` grid of integer offsets
    (``global_offsets``) around centers[n, k]: maps [B, C, H, W], batch_index [N], centers [N, K, 2]
    (x, y; K <= C) -> [N, K, a, a]. Differentiable in ``maps`` (training), not in ``centers``.

    Equal to ``sample_per_channel(maps[:, :K], batch_index, centers[:, :, None, None] +
    global_offsets(size))`` value for value: the grid is separable, so the neighbour indices and
    weights of ``_axis`` are computed on the a x- and a y-coordinates only (the same float
    operations on the same numbers), and each tap is multiplied by wy * wx and summed in the same
    order.

    Taps: where the second neighbour x1[i] of point i is the first neighbour x0[i + 1] of point
    i + 1 (true inside the map, and at the borders wherever x1 differs its weight is exactly 0)
    the columns x0 and x1 are the first and last a of the a+1 columns xc = (x0, x1[-1]), the same
    for rows, so the four taps are shifted views of ONE (a+1) x (a+1) crop: a copy of the block
    that holds the window (``_crop_plan``), read by index for windows clamped at a
    border. A weight-0 tap may then read another pixel than the reference, which can change only
    the sign of an exact 0 (a sum x + (+-0) is x). Windows where float rounding broke the pattern
    and maps smaller than the window take four explicit gathers of exactly the reference's indices.

    Gradient (``_WindowGather``): the transpose of the same taps, scattered once per crop pixel
    (one index_add of (a+1)^2 values per window instead of the reference's four of a^2 through
    autograd); equal to the reference's gradient up to float summation order.
    """
    if torch.is_grad_enabled() and maps.requires_grad:
        if centers.requires_grad:
            raise ValueError("sample_window is not differentiable in centers; use "
                             "sample_per_channel for gradients with respect to the points")
        return _WindowGather.apply(maps, batch_index, centers, int(size), mode)
    return _window_forward(maps, _window_plan(maps.shape, batch_index, centers, size, mode))


def _window_plan(shape, batch_index: torch.Tensor, centers: torch.Tensor, size: int, mode: str):
    """Indices and weights of ``sample_window``: the per-axis taps of ``_axis`` on the a offsets,
    the channel row of each window and which windows take the one-crop path (``ok``)."""
    B, C, H, W = shape
    N, K = centers.shape[:2]
    a = int(size)
    r = a // 2
    dev = centers.device
    t = torch.linspace(-r, r, a, device=dev).to(centers.dtype)  # the offsets of _grid
    ax = [v.flatten(0, 1) for v in _axis(centers[..., 0:1] + t, W, mode)]  # x0, x1, wx0, wx1 [M, a]
    ay = [v.flatten(0, 1) for v in _axis(centers[..., 1:2] + t, H, mode)]
    img = batch_index.long()[:, None].expand(N, K).flatten()  # [M] image and channel of each window
    chan = torch.arange(K, device=dev).repeat(N)
    (x0, x1, wx0, wx1), (y0, y1, wy0, wy1) = ax, ay
    xc = torch.cat((x0, x1[:, -1:]), -1)  # [M, a+1]
    yc = torch.cat((y0, y1[:, -1:]), -1)
    ok = (((x1[:, :-1] == x0[:, 1:]) | (wx1[:, :-1] == 0)).all(-1)
          & ((y1[:, :-1] == y0[:, 1:]) | (wy1[:, :-1] == 0)).all(-1)
          & (xc[:, -1] - xc[:, 0] <= a) & (yc[:, -1] - yc[:, 0] <= a))
    if H <= a or W <= a:
        ok.zero_()
    return dict(shape=(B, C, H, W), N=N, K=K, a=a, img=img, chan=chan, x=ax, y=ay, xc=xc, yc=yc,
                ok=ok)


def _storage_view(maps: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(1-D view of the memory ``maps`` spans, its length): element (b, c, y, x) is at
    b*sb + c*sc + y*sh + x*sw of the view, whatever the strides (contiguous, channels_last)."""
    span = 1 + sum((n - 1) * st for n, st in zip(maps.shape, maps.stride()))
    return maps.as_strided((span,), (1,)), span


def _crop_plan(maps: torch.Tensor, plan: dict) -> dict:
    """How ``_crops`` reads the (a+1) x (a+1) crop of each window of ``plan`` (all must be
    ``ok``): rows yc, columns xc of its channel. Windows inside the map are contiguous blocks,
    copied by index_select from an overlapping view of every block start (``blocks``,
    ``starts``); windows clamped at a border (repeated border pixels) then re-read their columns
    and rows within the block (``remap``: per axis, the windows and their indices)."""
    B, C, H, W = plan["shape"]
    a = plan["a"]
    xc, yc = plan["xc"], plan["yc"]
    sb, sc, sh, sw = maps.stride()
    flat, span = _storage_view(maps)
    sx = xc[:, 0].clamp(max=W - a - 1)  # the (a+1)-block holding the window
    sy = yc[:, 0].clamp(max=H - a - 1)
    reach = a * sh + a * sw  # from a block's first to its last element
    blocks = flat.as_strided((span - reach, a + 1, a + 1), (1, sh, sw))
    starts = plan["img"] * sb + plan["chan"] * sc + sy * sh + sx * sw
    ar = torch.arange(a + 1, device=maps.device)
    remap = []
    for dim, rel in ((2, xc - sx[:, None]), (1, yc - sy[:, None])):  # columns, rows in the block
        rows = (rel != ar).any(-1).nonzero()[:, 0]
        if len(rows):
            remap.append((dim, rows, rel[rows]))
    return {"a": a, "blocks": blocks, "starts": starts, "remap": remap}


def _crops(cp: dict, start: int = 0, end: int | None = None, out: torch.Tensor | None = None
           ) -> torch.Tensor:
    """The crops of windows start:end of a ``_crop_plan`` -> [end - start, a+1, a+1] (into
    ``out`` if given)."""
    a = cp["a"]
    end = len(cp["starts"]) if end is None else end
    crop = torch.index_select(cp["blocks"], 0, cp["starts"][start:end], out=out)
    for dim, rows, rel in cp["remap"]:
        bounds = torch.tensor([start, end], device=rows.device)
        lo, hi = (int(v) for v in torch.searchsorted(rows, bounds))
        if hi > lo:
            idx = rel[lo:hi][:, None, :] if dim == 2 else rel[lo:hi][:, :, None]
            sel = rows[lo:hi] - start
            moved = crop.index_select(0, sel).gather(dim, idx.expand(-1, a + 1, a + 1))
            crop.index_copy_(0, sel, moved)
    return crop


def _windows(plan: dict, index) -> dict:
    """The windows ``index`` (a slice or a boolean mask over the N*K windows, flattened n-major)
    of a plan, as a plan of their own (N = their number, K = 1)."""
    sub = {key: plan[key][index] for key in ("img", "chan", "xc", "yc", "ok")}
    sub.update({key: [v[index] for v in plan[key]] for key in ("x", "y")})
    return dict(plan, **sub, N=len(sub["img"]), K=1)


def iter_windows(maps: torch.Tensor, batch_index: torch.Tensor, centers: torch.Tensor,
                 size: int = 97, mode: str = "official", chunk: int = 128,
                 scale: torch.Tensor | None = None, block: int = 16):
    """``sample_window`` (no gradient) ``chunk`` windows at a time: yields (start, end, windows
    [end - start, a, a]) over the N*K windows flattened n-major (window n*K + k is joint k of
    centre n), each times ``scale`` [a, a] if given (the same float product as multiplying
    afterwards). The same values; the inference global stage works on each chunk while it is in
    the cache, and the crops and taps run ``block`` windows at a time, within a core's L2 cache
    (per 136 windows on one core: 4.7 ms in one go, 3.5 ms in blocks of 16). A chunk's tensor is
    overwritten by the next: use it before asking for more."""
    plan = _window_plan(maps.shape, batch_index, centers, size, mode)
    a, M = plan["a"], plan["img"].shape[0]
    if M == 0:
        return
    ok = plan["ok"]
    every = bool(ok.all())
    # the crop path's windows (those where ok), in order; none where the maps are smaller
    cp = _crop_plan(maps, plan if every else _windows(plan, ok)) if every or bool(ok.any()) else None
    rank = None if every else (ok.cumsum(0) - 1).tolist()  # window -> its row in cp
    ok_list = None if every else ok.tolist()
    (x0, x1, wx0, wx1), (y0, y1, wy0, wy1) = plan["x"], plan["y"]
    n = min(chunk, M)
    out, buf = maps.new_empty(n, a, a), maps.new_empty(block, a, a)
    crop = maps.new_empty(block, a + 1, a + 1)
    for s in range(0, M, chunk):
        e = min(M, s + chunk)
        if not every and not all(ok_list[s:e]):
            res = _window_forward(maps, _windows(plan, slice(s, e))).view(e - s, a, a)
            yield s, e, res.mul_(scale) if scale is not None else res
            continue
        # buffers reused block after block and chunk after chunk: no page faults of fresh
        # large allocations, and the block's crop is still in the cache for its taps
        for b in range(s, e, block):
            f = min(e, b + block)
            cb = b if every else rank[b]
            cr = _crops(cp, cb, cb + f - b, crop[: f - b])
            res = _weighted_taps(cr[:, :a, :a], cr[:, :a, 1:], cr[:, 1:, :a], cr[:, 1:, 1:],
                                 wy0[b:f], wy1[b:f], wx0[b:f], wx1[b:f], out[b - s: f - s],
                                 buf[: f - b])
            if scale is not None:
                res.mul_(scale)
        yield s, e, out[: e - s]


def _window_forward(maps: torch.Tensor, plan: dict) -> torch.Tensor:
    N, K, a, img, chan, ok = plan["N"], plan["K"], plan["a"], plan["img"], plan["chan"], plan["ok"]
    (x0, x1, wx0, wx1), (y0, y1, wy0, wy1) = plan["x"], plan["y"]
    out = torch.empty(N, K, a, a, dtype=maps.dtype, device=maps.device)
    if N == 0:
        return out
    flat_out = out.view(N * K, a, a)
    every = bool(ok.all())
    if every or bool(ok.any()):
        sel = slice(None) if every else ok
        crop = _crops(_crop_plan(maps, plan if every else _windows(plan, ok)))
        res = _weighted_taps(crop[:, :a, :a], crop[:, :a, 1:], crop[:, 1:, :a], crop[:, 1:, 1:],
                             wy0[sel], wy1[sel], wx0[sel], wx1[sel])
        if every:
            return res.view(N, K, a, a)
        flat_out[ok] = res
    rest = ~ok
    bi, ci = img[rest][:, None, None], chan[rest][:, None, None]

    def tap(yi, xi):
        return maps[bi, ci, yi[rest][:, :, None], xi[rest][:, None, :]]

    flat_out[rest] = _weighted_taps(tap(y0, x0), tap(y0, x1), tap(y1, x0), tap(y1, x1),
                                    wy0[rest], wy1[rest], wx0[rest], wx1[rest])
    return out


def _window_backward(grad: torch.Tensor, plan: dict, strides) -> torch.Tensor:
    """d(sum grad * sample_window(maps)) / d maps: each window's a x a gradient spread back on its
    taps (the transpose of ``_window_forward``) -> [B, C, H, W] with the maps' ``strides``: the
    backward of the upsampling before it runs ~4x faster on channels_last gradients when its
    input was channels_last (the training heatmaps are)."""
    B, C, H, W = plan["shape"]
    a, ok = plan["a"], plan["ok"]
    (x0, x1, wx0, wx1), (y0, y1, wy0, wy1) = plan["x"], plan["y"]
    out = torch.empty_strided((B, C, H, W), strides, dtype=grad.dtype, device=grad.device).zero_()
    flat = out.as_strided((out.numel(),), (1,))  # memory order
    sb, sc, sy, sx = strides
    itype = torch.int32 if out.numel() < 2 ** 31 else torch.long
    base = (plan["img"] * sb + plan["chan"] * sc).to(itype)[:, None, None]  # [M, 1, 1]
    g = grad.reshape(-1, a, a)
    every = bool(ok.all())
    if every or bool(ok.any()):
        sel = slice(None) if every else ok
        gs = g[sel]
        # rows first (y taps), then columns (x taps): the (a+1) x (a+1) crop gradient
        rows = gs.new_empty(gs.shape[0], a + 1, a)
        torch.mul(gs, wy0[sel][:, :, None], out=rows[:, :a])
        rows[:, a:].zero_()
        rows[:, 1:].addcmul_(gs, wy1[sel][:, :, None])
        crop = gs.new_empty(gs.shape[0], a + 1, a + 1)
        torch.mul(rows, wx0[sel][:, None, :], out=crop[..., :a])
        crop[..., a:].zero_()
        crop[..., 1:].addcmul_(rows, wx1[sel][:, None, :])
        idx = (base[sel] + (plan["yc"][sel] * sy).to(itype)[:, :, None]
               + (plan["xc"][sel] * sx).to(itype)[:, None, :])
        flat.index_add_(0, idx.flatten(), crop.flatten())
    if not every:
        rest = ~ok
        gr = g[rest]
        for yi, wy in ((y0, wy0), (y1, wy1)):
            for xi, wx in ((x0, wx0), (x1, wx1)):
                idx = (base[rest] + (yi[rest] * sy).to(itype)[:, :, None]
                       + (xi[rest] * sx).to(itype)[:, None, :])
                val = gr * (wy[rest][:, :, None] * wx[rest][:, None, :])
                flat.index_add_(0, idx.flatten(), val.flatten())
    return out


class _WindowGather(torch.autograd.Function):
    """``sample_window`` with a gradient for the maps (the window centres are constants)."""

    @staticmethod
    def forward(ctx, maps, batch_index, centers, size, mode):
        plan = _window_plan(maps.shape, batch_index, centers, size, mode)
        ctx.plan = plan
        # the gradient's layout: the maps' own when dense (contiguous or channels_last)
        ctx.strides = torch.empty_like(maps, device="meta").stride()
        return _window_forward(maps, plan)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        return _window_backward(grad, ctx.plan, ctx.strides), None, None, None, None
