"""Adaptive convolution in pure PyTorch: the DEKR AdaptBlock (the "ART" unit of the HRNet
bottom-up paper, a pixel-wise spatial transformer), with no torchvision and no compiled extension.

At every output pixel p a 3x3 conv predicts a 2x2 matrix A(p) and another a translation t(p); the
nine taps of a 3x3 kernel are read at p + A(p) r_k + t(p) instead of p + r_k, where
r_k = (dy_k, dx_k) in {-1, 0, 1}^2 is the regular grid R (tap k = 3 i + j for kernel row i,
column j). In the offset form of a deformable convolution this is offset_k = A r_k - r_k + t
(DEKR issue #21: the regular grid is subtracted because a deformable conv adds it back).

Sampling is bilinear with zeros outside the map (the deformable-conv rule: a corner outside the
map contributes 0). Implementation: ONE ``grid_sample`` call reads all nine taps of every pixel
(``[B, C, 9 H, W]``), then ONE batched matmul mixes them with the kernel (im2col of the sampled
taps). Both ops are differentiable in the input and the sampling positions, run on CPU and GPU,
and export to ONNX (GridSample, opset >= 16).

Training speed (the backward of ``grid_sample`` is the floor: a scatter of every tap's gradient):
- the sampling grid comes from ONE small matmul of the six predicted numbers per pixel
  (A, t) with a fixed [6, 2 k*k] matrix that already holds R and the pixel -> [-1, 1]
  normalisation (:func:`adaptive_grid`), instead of a chain of full-size elementwise ops;
- the block predicts A and t with ONE 3x3 conv of 6 channels (the two released convs'
  weights concatenated on the fly, so the parameters and state_dict keys are unchanged);
- the kernel mix is a ``bmm`` whose operands are used as laid out: a 2-D @ 3-D ``matmul``
  made a transposed copy of the taps in the forward and of their gradient in the backward.

Vector convention: A and t act on (dy, dx) vectors, as in the released module: channel 2 r + c
of ``transform_matrix_conv`` is A[r, c], channel 0 / 1 of ``translation_conv`` is t_y / t_x.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import BN_MOMENTUM

__all__ = ["regular_grid", "sample_taps", "adaptive_grid", "deform_conv2d", "adaptive_conv2d",
           "DeformConv2d", "AdaptBlock"]


def regular_grid(kernel_size: int = 3, dtype=torch.float32, device=None) -> torch.Tensor:
    """The regular kernel grid R [2, k*k]: row 0 = dy, row 1 = dx, tap index = i * k + j.

    For k = 3: dy = [-1,-1,-1, 0,0,0, 1,1,1], dx = [-1,0,1, -1,0,1, -1,0,1] (the released
    ``regular_matrix`` buffer).
    """
    r = torch.arange(kernel_size, dtype=dtype, device=device) - (kernel_size - 1) / 2
    dy = r.repeat_interleave(kernel_size)
    dx = r.repeat(kernel_size)
    return torch.stack([dy, dx])


def sample_taps(x: torch.Tensor, py: torch.Tensor, px: torch.Tensor) -> torch.Tensor:
    """Bilinear samples of every channel of ``x`` at the positions (py, px), zeros outside.

    x [B, C, H, W]; py, px [B, T, H', W'] in pixels of ``x`` (pixel centres at integers).
    Returns [B, C, T, H', W'] in x's dtype. One ``grid_sample`` (align_corners=False, so the
    pixel -> normalised mapping is (2 p + 1) / size - 1 and works for maps of width or height 1).
    Positions and sampling run in at least float32: in bfloat16 a position near 100 px would be
    rounded to 0.5 px.
    """
    b, c, h, w = x.shape
    t, ho, wo = py.shape[1:]
    dt = _position_dtype(x)
    gx = (2.0 * px.to(dt) + 1.0) / w - 1.0
    gy = (2.0 * py.to(dt) + 1.0) / h - 1.0
    grid = torch.stack([gx, gy], dim=-1).reshape(b, t * ho, wo, 2)
    out = F.grid_sample(x.to(dt), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.reshape(b, c, t, ho, wo).to(x.dtype)


def _position_dtype(x: torch.Tensor) -> torch.dtype:
    """float64 for float64 inputs, float32 otherwise (also under bf16 / fp16 autocast)."""
    return torch.promote_types(x.dtype, torch.float32)


def _mix(taps: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """taps [B, C, k*k, H, W] x weight [O, C, k, k] -> [B, O, H, W]: one matmul (im2col form)."""
    b, c, kk, h, w = taps.shape
    o = weight.shape[0]
    # bmm with a broadcast (stride-0) kernel: no transposed copy of the taps or their gradient
    wm = weight.reshape(1, o, c * kk).expand(b, o, c * kk)
    out = torch.bmm(wm, taps.reshape(b, c * kk, h * w))
    out = out.view(b, o, h, w)
    return out if bias is None else out + bias.view(1, o, 1, 1)


def _check(x: torch.Tensor, weight: torch.Tensor) -> int:
    if x.dim() != 4:
        raise ValueError(f"adaptive conv expects [B, C, H, W] input, got {tuple(x.shape)}")
    if weight.dim() != 4 or weight.shape[1] != x.shape[1] or weight.shape[2] != weight.shape[3] \
            or weight.shape[2] % 2 == 0:
        raise ValueError(f"kernel {tuple(weight.shape)} does not fit an input of {x.shape[1]} "
                         "channels (expected [O, C, k, k] with odd k)")
    return weight.shape[2]


def _base(x: torch.Tensor):
    h, w = x.shape[-2:]
    dt = _position_dtype(x)
    ys = torch.arange(h, dtype=dt, device=x.device).view(1, 1, h, 1)
    xs = torch.arange(w, dtype=dt, device=x.device).view(1, 1, 1, w)
    return ys, xs


def deform_conv2d(x: torch.Tensor, offset: torch.Tensor, weight: torch.Tensor,
                  bias: torch.Tensor | None = None, dilation: int = 1) -> torch.Tensor:
    """Deformable k x k convolution (stride 1, padding = dilation * (k // 2): same-size output).

    offset [B, 2 k*k, H, W] in the torchvision layout: channels (2 n, 2 n + 1) = (dy, dx) of tap n.
    Tap n of pixel p is read at p + dilation * r_n + offset_n. With a zero offset this is
    ``F.conv2d(x, weight, bias, padding=dilation * (k // 2), dilation=dilation)``.
    """
    k = _check(x, weight)
    b, _, h, w = x.shape
    if offset.shape != (b, 2 * k * k, h, w):
        raise ValueError(f"offset must be [{b}, {2 * k * k}, {h}, {w}], got {tuple(offset.shape)}")
    r = regular_grid(k, _position_dtype(x), x.device) * dilation  # [2, kk]
    off = offset.reshape(b, k * k, 2, h, w).to(r.dtype)
    ys, xs = _base(x)
    py = ys + r[0].view(1, -1, 1, 1) + off[:, :, 0]
    px = xs + r[1].view(1, -1, 1, 1) + off[:, :, 1]
    return _mix(sample_taps(x, py, px), weight, bias)


def adaptive_conv2d(x: torch.Tensor, transform: torch.Tensor, translation: torch.Tensor,
                    weight: torch.Tensor, bias: torch.Tensor | None = None,
                    grid: torch.Tensor | None = None) -> torch.Tensor:
    """The adaptive convolution: tap n of pixel p is read at p + A(p) r_n + t(p).

    transform [B, 4, H, W] (channel 2 r + c = A[r, c], acting on (dy, dx)); translation
    [B, 2, H, W] (t_y, t_x); weight [O, C, k, k]; ``grid`` = R [2, k*k] (default
    :func:`regular_grid`; a dilated grid is 2 R). Equals :func:`deform_conv2d` with
    offset_n = A r_n - r_n + t, but forms the positions directly. A = I, t = 0 is a plain conv.
    """
    k = _check(x, weight)
    b, _, h, w = x.shape
    if transform.shape != (b, 4, h, w) or translation.shape != (b, 2, h, w):
        raise ValueError(f"transform / translation must be [{b}, 4 / 2, {h}, {w}], got "
                         f"{tuple(transform.shape)} / {tuple(translation.shape)}")
    r = regular_grid(k, _position_dtype(x), x.device) if grid is None else grid
    return _adaptive(x, torch.cat([transform, translation], dim=1), weight, bias, r)


def adaptive_grid(at: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """The ``grid_sample`` grid of the adaptive conv: tap n of pixel p at p + A(p) r_n + t(p).

    at [B, 6, H, W]: channels (A00, A01, A10, A11, t_y, t_x) on (dy, dx) vectors; grid = R
    [2, k*k]. Returns [B, k*k H, W, 2] (x, y) in grid_sample's normalised coordinates
    (align_corners=False: g = (2 p + 1) / size - 1), in float32 at least. One matmul with a
    fixed [6, 2 k*k] matrix M: g_x = base_x + (2 / W) (A10 r_y + A11 r_x + t_x), g_y likewise.
    """
    b, _, h, w = at.shape
    dt = _position_dtype(at)
    r = grid.to(dt)
    kk = r.shape[1]
    m = torch.zeros(6, kk, 2, dtype=dt, device=at.device)  # last dim: (x, y)
    m[0, :, 1], m[1, :, 1], m[4, :, 1] = r[0] * (2.0 / h), r[1] * (2.0 / h), 2.0 / h
    m[2, :, 0], m[3, :, 0], m[5, :, 0] = r[0] * (2.0 / w), r[1] * (2.0 / w), 2.0 / w
    # [B H W, 6] @ [6, 2 kk]: a view of a channels_last ``at``, one small copy otherwise
    g = at.to(dt).permute(0, 2, 3, 1).reshape(b * h * w, 6) @ m.view(6, 2 * kk)
    gy = (2.0 * torch.arange(h, dtype=dt, device=at.device) + 1.0) / h - 1.0
    gx = (2.0 * torch.arange(w, dtype=dt, device=at.device) + 1.0) / w - 1.0
    base = torch.stack([gx.view(1, w).expand(h, w), gy.view(h, 1).expand(h, w)], dim=-1)
    g = g.view(b, h, w, kk, 2).permute(0, 3, 1, 2, 4) + base  # [B, kk, H, W, 2]
    return g.reshape(b, kk * h, w, 2)


def _adaptive(x: torch.Tensor, at: torch.Tensor, weight: torch.Tensor,
              bias: torch.Tensor | None, r: torch.Tensor) -> torch.Tensor:
    """:func:`adaptive_conv2d` with A and t stacked: at [B, 6, H, W]."""
    b, c, h, w = x.shape
    kk = r.shape[1]
    dt = _position_dtype(x)
    taps = F.grid_sample(x.to(dt), adaptive_grid(at, r), mode="bilinear", padding_mode="zeros",
                         align_corners=False)
    return _mix(taps.view(b, c, kk, h, w).to(x.dtype), weight, bias)


class DeformConv2d(nn.Module):
    """A k x k deformable conv (stride 1, same-size output) holding only ``weight`` (+ ``bias``),
    so its state_dict keys match torchvision's ``DeformConv2d`` (``adapt_conv.weight``).

    ``forward(x, offset)`` takes torchvision-layout offsets; :class:`AdaptBlock` uses its weight
    directly (the adaptive form of :func:`adaptive_conv2d`).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3,
                 dilation: int = 1, bias: bool = False):
        super().__init__()
        self.dilation = int(dilation)
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        # the initialisation of nn.Conv2d / torchvision's DeformConv2d
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1.0 / math.sqrt(in_channels * kernel_size * kernel_size)
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
        return deform_conv2d(x, offset, self.weight, self.bias, self.dilation)


class AdaptBlock(nn.Module):
    """DEKR's adaptive residual block: adaptive 3x3 conv (no bias) -> BN -> + x -> ReLU.

    Attribute names are the released ones (``regular_matrix``, ``transform_matrix_conv``,
    ``translation_conv``, ``adapt_conv``, ``bn``), so DEKR checkpoints load strictly.

    Released init (``zero_transform=True``): A and t convs at zero, i.e. A = 0 and t = 0, which
    reads all nine taps at p itself: the block starts as a 1x1 conv with the summed kernel
    (not as a plain 3x3 conv). The deformation is then learnt. Dilation 1 only (every released
    DEKR config).
    """

    def __init__(self, in_channels: int, out_channels: int | None = None,
                 zero_transform: bool = True):
        super().__init__()
        out_channels = out_channels or in_channels
        if out_channels != in_channels:
            raise ValueError(f"AdaptBlock is residual: in and out channels must match, got "
                             f"{in_channels} -> {out_channels}")
        self.register_buffer("regular_matrix", regular_grid(3))
        self.transform_matrix_conv = nn.Conv2d(in_channels, 4, 3, 1, 1, bias=True)
        self.translation_conv = nn.Conv2d(in_channels, 2, 3, 1, 1, bias=True)
        self.adapt_conv = DeformConv2d(in_channels, out_channels, 3)
        self.bn = nn.BatchNorm2d(out_channels, momentum=BN_MOMENTUM)
        self.relu = nn.ReLU(inplace=True)
        if zero_transform:
            self.zero_transform_()

    def zero_transform_(self) -> None:
        """Zero the convs that predict A and t (the released init)."""
        for m in (self.transform_matrix_conv, self.translation_conv):
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)

    def offsets(self, x: torch.Tensor) -> torch.Tensor:
        """The torchvision-layout offsets A r - r + t [B, 18, H, W] (for inspection and tests)."""
        b, _, h, w = x.shape
        a = self.transform_matrix_conv(x).reshape(b, 2, 2, 1, h, w)
        r = self.regular_matrix
        ar = (a * r.view(1, 1, 2, -1, 1, 1)).sum(2)  # [B, 2, 9, H, W]
        off = ar - r.view(1, 2, -1, 1, 1) + self.translation_conv(x).view(b, 2, 1, h, w)
        return off.permute(0, 2, 1, 3, 4).reshape(b, 18, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            raise ValueError(f"AdaptBlock expects [B, C, H, W] input, got {tuple(x.shape)}")
        # A and t from one 6-channel conv: the released convs' weights, concatenated
        tm, tr = self.transform_matrix_conv, self.translation_conv
        at = F.conv2d(x, torch.cat([tm.weight, tr.weight]), torch.cat([tm.bias, tr.bias]),
                      padding=1)
        out = _adaptive(x, at, self.adapt_conv.weight, None, self.regular_matrix)
        return self.relu(self.bn(out) + x)
