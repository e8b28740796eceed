"""Image geometry: one 2x3 affine per image (original px -> input px), its inverse, warping,
loading and ImageNet normalisation.

Conventions (docs/DESIGN.md): pixel centres sit at integer coordinates; ``M`` is a float64
[2, 3] matrix with ``x_in = M @ [x, y, 1]``; a horizontal flip is folded into ``M`` (the caller
reorders keypoints with ``meta.flip_index``); output maps have stride 4 (input pixel 4 i <->
output index i), so ``output_affine(M)`` = ``M / 4``.
"""
from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import torch

from ..utils import LogocapError

__all__ = ["MEAN", "STD", "load_image", "jpeg_is_truncated", "normalize", "test_transform", "random_affine",
           "warp_image", "apply_affine", "invert_affine", "compose_affine", "output_affine",
           "affine_scale"]

# ImageNet statistics, RGB order, for images scaled to [0, 1].
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


# --------------------------------------------------------------------------- images
def jpeg_is_truncated(path) -> bool:
    """True for a JPEG file cut short: no end-of-image marker (FF D9) after the image's first scan.

    libjpeg decodes such a file anyway, fills the missing part grey and only prints "Premature
    end of JPEG file" on stderr, so the caller could not tell otherwise. The usual file ends with
    FF D9 and costs a 2-byte read; anything else is walked marker by marker (APPn segments, which
    may hold a thumbnail with its own FF D9, are skipped by their length). Entropy-coded data
    never contains FF D9, so the check has no false alarm on intact files, also with trailing
    data after the image. Non-JPEG files and unparsable headers answer False (the decoder judges).
    """
    with open(path, "rb") as f:
        if f.read(2) != b"\xff\xd8":
            return False
        f.seek(0, 2)
        if f.tell() >= 4:
            f.seek(-2, 2)
            if f.read(2) == b"\xff\xd9":
                return False
        f.seek(0)
        data = f.read()
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            return False  # not a marker where one should be: leave it to the decoder
        m = data[i + 1]
        if m == 0xFF:  # fill byte
            i += 1
        elif m == 0xDA:  # start of scan: the compressed data runs up to FF D9
            return data.find(b"\xff\xd9", i) < 0
        elif m == 0x01 or 0xD0 <= m <= 0xD8:  # markers without a length
            i += 2
        else:
            i += 2 + int.from_bytes(data[i + 2:i + 4], "big")
    return False  # cut inside the headers: the decoder fails on its own


def load_image(path, problems: list | None = None) -> np.ndarray:
    """Read an image file as an RGB uint8 array [H, W, 3]; LogocapError if missing or unreadable.

    A truncated JPEG (decoded in part, the rest grey) is returned with a warning naming the file:
    appended to ``problems`` when a list is given (the caller reports it), else a Python warning.
    """
    path = Path(path)
    if not path.is_file():
        raise LogocapError(f"image file not found: {path}")
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)  # None for corrupt / unsupported files
    if img is None:
        raise LogocapError(f"cannot decode image file (corrupt or not an image): {path}")
    if jpeg_is_truncated(path):
        msg = f"truncated JPEG file (decoded in part, the rest is grey): {path}"
        if problems is None:
            import warnings
            warnings.warn(msg, stacklevel=2)
        else:
            problems.append(msg)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def normalize(img_rgb_uint8: np.ndarray) -> torch.Tensor:
    """RGB uint8 [H, W, 3] -> float32 tensor [3, H, W]: /255, then ImageNet mean/std."""
    x = torch.from_numpy(np.ascontiguousarray(img_rgb_uint8)).permute(2, 0, 1).float().div_(255.0)
    mean = torch.tensor(MEAN, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(STD, dtype=torch.float32).view(3, 1, 1)
    return (x - mean) / std


# --------------------------------------------------------------------------- affine algebra
def _as3x3(M: np.ndarray) -> np.ndarray:
    return np.vstack([np.asarray(M, dtype=np.float64), [0.0, 0.0, 1.0]])


def compose_affine(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """The affine that applies B first, then A (i.e. A @ B)."""
    return (_as3x3(A) @ _as3x3(B))[:2]


def invert_affine(M: np.ndarray) -> np.ndarray:
    """Exact inverse of a 2x3 affine (closed form, float64)."""
    M = np.asarray(M, dtype=np.float64)
    A, t = M[:, :2], M[:, 2]
    det = A[0, 0] * A[1, 1] - A[0, 1] * A[1, 0]
    if abs(det) < 1e-12:
        raise ValueError("affine matrix is singular")
    Ainv = np.array([[A[1, 1], -A[0, 1]], [-A[1, 0], A[0, 0]]]) / det
    return np.hstack([Ainv, -(Ainv @ t)[:, None]])


def apply_affine(points: np.ndarray, M: np.ndarray) -> np.ndarray:
    """Map points [..., 2] with a 2x3 affine; returns float64 [..., 2]."""
    p = np.asarray(points, dtype=np.float64)
    M = np.asarray(M, dtype=np.float64)
    return p @ M[:, :2].T + M[:, 2]


def affine_scale(M: np.ndarray) -> float:
    """Linear zoom of an affine (sqrt |det|): lengths scale by it, areas by its square."""
    M = np.asarray(M, dtype=np.float64)
    return math.sqrt(abs(M[0, 0] * M[1, 1] - M[0, 1] * M[1, 0]))


def output_affine(M: np.ndarray, stride: int = 4) -> np.ndarray:
    """Original px -> output-map px for maps of the given stride (input pixel s*i <-> index i)."""
    return np.asarray(M, dtype=np.float64) / float(stride)


def warp_image(img: np.ndarray, M: np.ndarray, size: tuple[int, int],
               interpolation: int = cv2.INTER_LINEAR, border_value=0) -> np.ndarray:
    """Warp with M (source -> destination) to ``size = (w, h)``; outside pixels = border_value."""
    return cv2.warpAffine(img, np.asarray(M, dtype=np.float64), (int(size[0]), int(size[1])),
                          flags=interpolation, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=border_value)


# --------------------------------------------------------------------------- test time
def test_transform(h: int, w: int, size: int, stride: int = 64):
    """Resize as the official test code (notes 3.1): short side -> ``size``, long side scaled by the
    same factor and rounded UP to a multiple of ``stride``, content centred (padding split on
    both sides of the long axis).

    As in the official code the image centre (w/2, h/2) maps to the canvas centre
    (out_w/2, out_h/2), so x_in = s * x along the short axis (no half-pixel shift).
    Returns ``(M, (out_w, out_h))``.
    """
    if h <= 0 or w <= 0 or size <= 0:
        raise LogocapError(f"bad test_transform arguments: image {w}x{h}, size {size}")
    s = float(size) / min(h, w)
    if w <= h:
        out_w, out_h = int(size), int(math.ceil(h * s / stride) * stride)
    else:
        out_w, out_h = int(math.ceil(w * s / stride) * stride), int(size)
    M = np.array([[s, 0.0, out_w / 2.0 - s * w / 2.0],
                  [0.0, s, out_h / 2.0 - s * h / 2.0]], dtype=np.float64)
    return M, (out_w, out_h)


test_transform.__test__ = False  # not a pytest test, even when imported into a test module


# --------------------------------------------------------------------------- training
def random_affine(h: int, w: int, out_size: int, rng: np.random.Generator,
                  max_rotation: float = 30.0, min_scale: float = 0.75, max_scale: float = 1.5,
                  max_translate: float = 40.0, flip_prob: float = 0.5):
    """Random training crop (papers / notes 4.1) as one affine plus a flip flag.

    - scale s ~ U[min_scale, max_scale]: the square crop of side ``out_size`` covers
      short_side / s original pixels, i.e. at s = 1 the short side maps exactly to out_size and
      s > 1 zooms in;
    - rotation ~ U[-max_rotation, max_rotation] degrees about the crop centre;
    - translation: the crop centre moves by up to ``max_translate * s_200`` original pixels per
      axis, where s_200 = (crop side in original px) / 200 is the official code's scale unit; so
      the shift is at most ``max_translate / 200`` of the crop (20% for 40), whatever the zoom;
    - horizontal flip with probability ``flip_prob``, folded into M as x -> out_size - 1 - x
      (the caller reorders joints with ``meta.flip_index``).
    Returns ``(M, flipped)`` with M float64 [2, 3] mapping original px -> input px.
    """
    scale = rng.uniform(min_scale, max_scale)
    angle = rng.uniform(-max_rotation, max_rotation)
    crop = min(h, w) / scale  # crop side in original pixels
    shift = max_translate * crop / 200.0
    dx, dy = rng.uniform(-shift, shift, size=2)
    flipped = bool(rng.random() < flip_prob)

    zoom = out_size / crop
    a = math.radians(angle)
    c, s = math.cos(a) * zoom, math.sin(a) * zoom
    # rotate+zoom about the (shifted) image centre, then put it at the canvas centre
    src_c = np.array([(w - 1) / 2.0 + dx, (h - 1) / 2.0 + dy])
    dst_c = np.array([(out_size - 1) / 2.0, (out_size - 1) / 2.0])
    A = np.array([[c, s], [-s, c]])
    M = np.hstack([A, (dst_c - A @ src_c)[:, None]])
    if flipped:
        F = np.array([[-1.0, 0.0, out_size - 1.0], [0.0, 1.0, 0.0]])
        M = compose_affine(F, M)
    return M, flipped
