"""Top-down geometry and SAR decoding, vectorised over boxes (notes §5).

Geometry (the library's convention, docs/DESIGN.md: pixel centres at integer coordinates):
- a person box (x, y, w, h) is widened or heightened to the crop aspect (w : h = 3 : 4) about its
  centre, then padded by 1.25 (:func:`box_to_crop`);
- the crop affine maps that region onto an ``out_w x out_h`` crop: the box centre goes to the crop
  centre ((out_w - 1) / 2, (out_h - 1) / 2), the region's width to ``out_w`` pixels
  (:func:`crop_affines`); the same map as ``data.transforms.random_affine`` uses for images;
- crops are sampled from the image in one ``grid_sample`` call for all boxes (bilinear, zero
  outside the image, like ``warp_image``) (:func:`crop_images`);
- back-projection with the exact inverse (:func:`crop_to_original`).

Decoding (released inference): per box and keypoint, w = sigmoid(s) / sum sigmoid(s) over the
map, hard argmax t, coordinate K_t (map px) x stride -> crop px, keypoint score w_t. Flip test:
the mirrored crop is decoded the same way, x -> out_w - 1 - x (in normalised units the released
x -> 1 - x - 1 / (stride W)), left / right swapped, coordinates and scores averaged. Pose score =
box score x mean keypoint score.

``data.input_size`` of a top-down model is the crop height; the width is 3/4 of it
(:func:`crop_size`: 256 -> 256x192, 384 -> 384x288, 128 -> 128x96).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["ASPECT", "PADDING", "crop_size", "box_to_crop", "crop_affines", "invert_affines",
           "crop_images", "crop_to_original", "sar_decode", "sar_flip_fuse", "pose_scores"]

ASPECT = 0.75  # crop width / height (192 / 256)
PADDING = 1.25  # the box is enlarged by this factor


def crop_size(input_size) -> tuple[int, int]:
    """(height, width) of the crops: ``input_size`` is the height (an int) or (h, w) already."""
    if isinstance(input_size, (tuple, list)):
        h, w = (int(v) for v in input_size)
    else:
        h = int(input_size)
        w = int(round(h * ASPECT))
    if h < 32 or w < 32 or h % 32 or w % 32:
        from ..utils import LogocapError
        raise LogocapError(f"top-down crops must be multiples of 32 px; input size {input_size} "
                           f"gives {h}x{w} (height x 3/4): use a multiple of 128 (128, 256, 384)")
    return h, w


def box_to_crop(boxes, aspect: float = ASPECT, padding: float = PADDING):
    """Boxes [N, 4] (x, y, w, h, original px) -> (centres [N, 2], region sizes [N, 2] = (w, h)).

    The shorter side (relative to ``aspect`` = w / h) is extended so that w / h = aspect, then
    both are multiplied by ``padding``. float64 numpy.
    """
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    centres = b[:, :2] + 0.5 * b[:, 2:]
    w, h = b[:, 2].copy(), b[:, 3].copy()
    wide = w > aspect * h
    h = np.where(wide, w / aspect, h)
    w = np.where(wide, w, h * aspect)
    return centres, np.stack([w, h], 1) * padding


def crop_affines(centres, sizes, out_hw, flip: np.ndarray | None = None,
                 rotation: np.ndarray | None = None) -> np.ndarray:
    """[N, 2, 3] float64 affines original px -> crop px (see the module doc).

    ``sizes`` [N, 2] is the (w, h) of each region in original px; the crop is ``out_hw`` =
    (out_h, out_w). The x and y zooms are out_w / w and out_h / h (equal for regions of the crop
    aspect). Optional per-box ``rotation`` (degrees, about the centre, as ``random_affine``) and
    ``flip`` (bool; x -> out_w - 1 - x, the caller reorders the joints) for training.
    """
    c = np.asarray(centres, dtype=np.float64).reshape(-1, 2)
    s = np.asarray(sizes, dtype=np.float64).reshape(-1, 2)
    out_h, out_w = int(out_hw[0]), int(out_hw[1])
    n = c.shape[0]
    zx, zy = out_w / s[:, 0], out_h / s[:, 1]
    a = np.radians(np.zeros(n) if rotation is None else np.asarray(rotation, np.float64))
    cos, sin = np.cos(a), np.sin(a)
    lin = np.empty((n, 2, 2))
    lin[:, 0, 0], lin[:, 0, 1] = cos * zx, sin * zx
    lin[:, 1, 0], lin[:, 1, 1] = -sin * zy, cos * zy
    dst = np.array([(out_w - 1) / 2.0, (out_h - 1) / 2.0])
    t = dst[None] - np.einsum("nij,nj->ni", lin, c)
    m = np.concatenate([lin, t[:, :, None]], 2)
    if flip is not None:
        f = np.asarray(flip, bool)
        m[f, 0, :] = -m[f, 0, :]
        m[f, 0, 2] += out_w - 1.0
    return m


def invert_affines(m) -> np.ndarray:
    """Exact inverses of [N, 2, 3] affines (closed form, float64)."""
    m = np.asarray(m, dtype=np.float64).reshape(-1, 2, 3)
    a, b, c, d = m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1]
    det = a * d - b * c
    if np.any(np.abs(det) < 1e-12):
        raise ValueError("a crop affine is singular")
    inv = np.stack([np.stack([d, -b], 1), np.stack([-c, a], 1)], 1) / det[:, None, None]
    t = -np.einsum("nij,nj->ni", inv, m[:, :, 2])
    return np.concatenate([inv, t[:, :, None]], 2)


def crop_images(image: torch.Tensor, affines, out_hw) -> torch.Tensor:
    """Sample N crops from one image in one ``grid_sample`` call.

    ``image`` [C, H, W] float (e.g. RGB 0..255); ``affines`` [N, 2, 3] original -> crop px.
    Returns [N, C, out_h, out_w]; bilinear, zero outside the image (as ``warp_image``).
    """
    out_h, out_w = int(out_hw[0]), int(out_hw[1])
    c, h, w = image.shape
    n = len(affines)
    if n == 0:
        return image.new_zeros((0, c, out_h, out_w))
    inv = torch.as_tensor(invert_affines(affines), dtype=torch.float64, device=image.device)
    ys, xs = torch.meshgrid(torch.arange(out_h, dtype=torch.float64, device=image.device),
                            torch.arange(out_w, dtype=torch.float64, device=image.device),
                            indexing="ij")
    uv1 = torch.stack([xs, ys, torch.ones_like(xs)], -1)  # [h, w, 3]
    src = torch.einsum("nij,hwj->nhwi", inv, uv1)  # original px, [N, h, w, 2]
    # pixel centre x <-> (2x + 1) / W - 1 with align_corners=False (any W, even 1)
    size = torch.tensor([w, h], dtype=torch.float64, device=image.device)
    grid = (2.0 * src + 1.0) / size - 1.0
    # the N grids side by side in one sampling call: [1, h, N*w, 2]
    grid = grid.permute(1, 0, 2, 3).reshape(1, out_h, n * out_w, 2).to(image.dtype)
    out = F.grid_sample(image[None], grid, mode="bilinear", padding_mode="zeros",
                        align_corners=False)  # [1, C, h, N*w]
    return out.view(c, out_h, n, out_w).permute(2, 0, 1, 3).contiguous()


def crop_to_original(points: torch.Tensor, affines) -> torch.Tensor:
    """Crop px [N, K, >=2] -> original px with the inverse of each box's affine [N, 2, 3]
    (float64 arithmetic; channels after x, y are kept)."""
    inv = torch.as_tensor(invert_affines(affines), dtype=torch.float64, device=points.device)
    xy = torch.einsum("nij,nkj->nki", inv[:, :, :2], points[..., :2].double()) + inv[:, None, :, 2]
    return torch.cat([xy.to(points.dtype), points[..., 2:]], -1)


@torch.no_grad()
def sar_decode(selector: torch.Tensor, offsets: torch.Tensor, stride: int = 4):
    """Hard-argmax SAR decoding (notes §5) for a batch of crops.

    ``selector`` [N, K, h, w] logits, ``offsets`` [N, 2K, h, w] output px (location - joint).
    Returns ``(coords [N, K, 2] crop px, scores [N, K])``: the coordinate of the cell with the
    largest normalised weight w = sigmoid(s) / sum sigmoid(s), and that weight (the normalised
    value, not the sigmoid).
    """
    n, k, h, w = selector.shape
    c = torch.sigmoid(selector.float()).flatten(2)
    wts = c / c.sum(-1, keepdim=True)
    score, idx = wts.max(-1)  # [N, K]
    off = offsets.float().view(n, k, 2, h * w)
    o = torch.gather(off, 3, idx[:, :, None, None].expand(n, k, 2, 1)).squeeze(-1)  # [N, K, 2]
    loc = torch.stack([idx % w, torch.div(idx, w, rounding_mode="floor")], -1).to(o.dtype)
    return (loc - o) * stride, score


def sar_flip_fuse(coords: torch.Tensor, scores: torch.Tensor, coords_flip: torch.Tensor,
                  scores_flip: torch.Tensor, flip_index, crop_w: int):
    """Average a crop's decoding with that of its mirror image.

    The mirrored crop's joints are swapped left / right (``flip_index``) and mirrored back with
    x -> crop_w - 1 - x (pixel centres), i.e. the released x -> 1 - x - 1 / (stride W) in units
    of the map width W. Returns ``(coords, scores)``.
    """
    idx = torch.as_tensor(list(flip_index), device=coords.device)
    cf = coords_flip[:, idx].clone()
    cf[..., 0] = (crop_w - 1) - cf[..., 0]
    return (coords + cf) / 2, (scores + scores_flip[:, idx]) / 2


def pose_scores(box_scores: torch.Tensor, keypoint_scores: torch.Tensor) -> torch.Tensor:
    """Pose score = box score x mean keypoint score ([N], [N, K] -> [N])."""
    return box_scores.to(keypoint_scores.dtype) * keypoint_scores.mean(-1)
